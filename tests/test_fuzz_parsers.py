"""Fuzzing the parsers of the file source and the Kafka source with Hypothesis.

Whatever the bytes, encoding, line ends, nesting or field values: no exception
leaves parsing, and every record becomes exactly one article or one dead-letter
row that the Parquet schema takes.
"""

import gzip
import io
import json
import re
from datetime import datetime, timedelta, timezone

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.file_source import ARTICLE, ArticleFileParser
from connectors.kafka_source import KafkaMessage, ParseMessagesFn
from connectors.records import EARLIEST_PUBLISHED, READ_COUNT_OUTPUT
from schemas.dead_letter import DEAD_LETTER, DEAD_LETTER_OUTPUT, REASONS

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
MAX_ARTICLE_BYTES = 1 << 20
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Text with every code point, and lone surrogates often (JSON can escape them).
any_text = st.text(st.characters(codec=None, exclude_categories=())
                   | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF,
                                   exclude_categories=()), max_size=40)
json_scalars = (st.none() | st.booleans() | st.integers() | any_text
                | st.floats(allow_nan=True, allow_infinity=True))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(any_text, inner, max_size=4), max_leaves=12)
time_values = (st.integers() | st.floats(allow_nan=True, allow_infinity=True) | any_text
               | st.datetimes(timezones=st.just(timezone.utc)).map(datetime.isoformat))
articles = st.fixed_dictionaries(
    {"body": any_text | json_values},
    optional={"id": any_text | st.integers() | json_values, "title": any_text | json_values,
              "published_at": time_values, "lang": any_text, "url": any_text,
              "extra": json_values})


class RawJSON(str):
    """JSON text to be written as it is, not as a JSON string."""


# Nesting far past the parser's recursion limit, in an array or an object.
deep = st.integers(500, 20_000).map(lambda depth: RawJSON("[" * depth + "]" * depth)) | st.integers(
    500, 20_000).map(lambda depth: RawJSON('{"body": "x", "a": ' + "[" * depth + "]" * depth + "}"))
encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be",
                             "utf-32"])
line_ends = st.sampled_from(["\n", "\r\n", "\r"])


def json_text(value, ascii_only: bool) -> str:
    """``value`` as JSON, one line; a lone surrogate is always written as an escape."""
    if isinstance(value, RawJSON):
        return value
    text = json.dumps(value, ensure_ascii=ascii_only)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value)  # only escapes can carry a lone surrogate
    return text


def check_row(kind, row) -> None:
    """A row the sinks can write: a dead letter in the Parquet schema, or a clean article."""
    if kind == ARTICLE:
        for key, value in row.items():
            if isinstance(value, str):
                value.encode("utf-8")  # raises on a lone surrogate
        assert row["body"].strip()
        published = row.get("published_at")
        assert published is None or EARLIEST_PUBLISHED <= published <= NOW + timedelta(days=1)
    else:
        assert row["reason"] in REASONS and row["error"]
        pa.Table.from_pylist([row], schema=DEAD_LETTER.arrow_schema())


def parse(name: str, data: bytes):
    parser = ArticleFileParser(NOW, MAX_ARTICLE_BYTES, 4096)
    rows = list(parser.parse(f"/in/{name}", io.BytesIO(data), len(data)))
    for kind, row in rows:
        check_row(kind, row)
    return rows


@FUZZ
@given(st.lists(articles | json_values | deep, min_size=1, max_size=8), encodings, line_ends,
       st.booleans(), st.booleans())
def test_json_lines_give_one_row_per_line(values, encoding, line_end, ascii_only, gzipped):
    text = line_end.join(json_text(v, ascii_only) for v in values) + line_end
    data = text.encode(encoding)
    rows = parse("feed.jsonl.gz" if gzipped else "feed.jsonl",
                 gzip.compress(data) if gzipped else data)
    assert [row["origin_offset"] for _, row in rows] == list(range(1, len(values) + 1))


@FUZZ
@given(st.lists(articles | json_values, max_size=8), encodings, st.booleans())
def test_a_json_array_gives_one_row_per_element(values, encoding, ascii_only):
    rows = parse("feed.json", json_text(values, ascii_only).encode(encoding))
    assert [row["origin_offset"] for _, row in rows] == list(range(len(values)))


@FUZZ
@given((articles | json_values | deep).filter(lambda v: not isinstance(v, list)), encodings)
def test_a_json_file_of_one_value_gives_one_row(value, encoding):
    assert len(parse("one.json", json_text(value, False).encode(encoding))) == 1


@FUZZ
@given(st.binary(max_size=2000), st.sampled_from(["txt", "json", "jsonl", "csv"]),
       st.sampled_from(["none", "gzip", "truncated"]))
def test_any_bytes_in_any_file_give_rows_and_never_an_exception(data, extension, compression):
    if compression != "none":
        packed = gzip.compress(data)
        data = packed[:len(packed) // 2] if compression == "truncated" else packed
        extension += ".gz"
    rows = parse(f"x.{extension}", data)
    if extension in ("txt", "json", "csv", "txt.gz", "json.gz", "csv.gz"):
        assert len(rows) == 1  # a whole file is one record
    elif extension == "jsonl" and json.detect_encoding(data[:4]).startswith("utf-8"):
        lines = [line for line in re.split(rb"\r\n|\r|\n", data) if line.strip()]
        assert len(rows) == len(lines)


@FUZZ
@given(st.binary(max_size=2000) | (articles | json_values | deep).map(
    lambda v: json_text(v, False).encode("utf-8")), st.none() | st.binary(max_size=20),
    st.integers(-(1 << 40), 1 << 43))
def test_a_kafka_message_gives_one_row(value, key, timestamp_ms):
    message = KafkaMessage("articles", 0, 7, timestamp_ms, key, value)
    outputs = list(ParseMessagesFn(MAX_ARTICLE_BYTES, 4096).process(message))
    counts = [o.value for o in outputs if getattr(o, "tag", None) == READ_COUNT_OUTPUT]
    rows = [o for o in outputs if getattr(o, "tag", None) != READ_COUNT_OUTPUT]
    assert counts == [1] and len(rows) == 1
    row = rows[0]
    if getattr(row, "tag", None) == DEAD_LETTER_OUTPUT:
        pa.Table.from_pylist([row.value], schema=DEAD_LETTER.arrow_schema())
        assert row.value["origin_offset"] == 7 and row.value["reason"] in REASONS
    else:
        assert row["origin_offset"] == 7
        row["body"].encode("utf-8")
