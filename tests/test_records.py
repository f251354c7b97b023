"""Parsing raw records into articles, and the reasons for rejecting them."""

import gzip
import io
import json
from datetime import datetime, timezone

import pytest

from connectors.file_source import article_id_from_path, file_kind, iter_lines
from connectors.records import (RejectedRecord, article_from_json, article_from_json_bytes,
                                decode_text, parse_timestamp)
from schemas.article import ARTICLE, INCOMING_JSON_SCHEMA

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
WHERE = dict(origin="feed.jsonl", origin_offset=3, ingested_at=NOW, max_article_bytes=10_000)


def reason_of(raw: bytes) -> str:
    with pytest.raises(RejectedRecord) as caught:
        article_from_json_bytes(raw, **WHERE)
    return caught.value.reason


def test_full_json_record():
    article = article_from_json({"id": "a1", "title": "T", "text": "Body text.",
                                 "url": "u", "source": "s", "language": "en",
                                 "published_at": "2025-08-19T12:00:00+02:00"}, **WHERE)
    assert article["article_id"] == "a1" and article["body"] == "Body text."
    assert article["lang_hint"] == "en" and article["title"] == "T"
    assert article["published_at"] == datetime(2025, 8, 19, 10, tzinfo=timezone.utc)
    assert article["origin_offset"] == 3 and article["ingested_at"] == NOW


def test_a_default_id_stands_in_only_for_a_missing_id():
    assert article_from_json({"body": "x"}, default_id="key-7", **WHERE)["article_id"] == "key-7"
    assert article_from_json({"id": "own", "body": "x"}, default_id="key-7",
                             **WHERE)["article_id"] == "own"


def test_missing_id_is_a_stable_hash_of_the_normalised_body():
    one = article_from_json({"body": "Same  Text"}, **WHERE)
    two = article_from_json({"body": "same text"}, **WHERE)
    assert one["article_id"] == two["article_id"] == one["content_hash"][:16]


@pytest.mark.parametrize("value,expected", [
    ("2025-08-19T10:00:00Z", datetime(2025, 8, 19, 10, tzinfo=timezone.utc)),
    ("2025-08-19 10:00:00", datetime(2025, 8, 19, 10, tzinfo=timezone.utc)),
    (1755597600, datetime(2025, 8, 19, 10, tzinfo=timezone.utc)),
    (1755597600000, datetime(2025, 8, 19, 10, tzinfo=timezone.utc)),
])
def test_timestamps(value, expected):
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize("raw,reason", [
    (b'{"body": "unterminated', "malformed_json"),
    (b'[1, 2]', "malformed_json"),
    (b'{"title": "no body"}', "missing_body"),
    (b'{"body": "   "}', "missing_body"),
    (b'{"body": 5}', "invalid_field"),
    (b'{"body": "x", "title": true}', "invalid_field"),
    (b'{"body": "x", "published_at": "last week"}', "invalid_field"),
    (b'{"body": "caf\xe9"}', "invalid_utf8"),
    (b'{"body": "a\x00b"}', "binary"),
    (b'{"body": "' + b"x" * 20_000 + b'"}', "too_large"),
    (b'{"body": "a\\ud800b"}', "invalid_unicode"),
    (b'{"body": "fine", "title": "\\udfff"}', "invalid_unicode"),
    (b"[" * 10_000 + b"]" * 10_000, "too_deep"),
    (b'{"body": "x", "extra": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "too_deep"),
])
def test_rejections(raw, reason):
    assert reason_of(raw) == reason


@pytest.mark.parametrize("published", [
    "0001-01-01T00:00:00Z", "1677-09-21T00:12:43Z", "1899-12-31T23:59:59Z", "2262-04-11",
    "9999-12-31T23:59:59-05:00", "2026-01-02T00:00:01Z", 1e20, -1e300, 10 ** 400,
])
def test_publication_times_outside_1900_to_a_day_past_ingestion_are_rejected(published):
    raw = json.dumps({"body": "x", "published_at": published}).encode()
    assert reason_of(raw) == "time_out_of_range"


@pytest.mark.parametrize("published,expected", [
    ("1900-01-01T00:00:00Z", datetime(1900, 1, 1, tzinfo=timezone.utc)),
    (0, datetime(1970, 1, 1, tzinfo=timezone.utc)),
    (-1, datetime(1969, 12, 31, 23, 59, 59, tzinfo=timezone.utc)),
    ("2026-01-02T00:00:00Z", datetime(2026, 1, 2, tzinfo=timezone.utc)),  # ingestion + 1 day
])
def test_publication_times_inside_the_range_are_kept(published, expected):
    article = article_from_json({"body": "x", "published_at": published}, **WHERE)
    assert article["published_at"] == expected


def test_an_unbounded_number_or_nan_is_a_rejection_not_a_crash():
    assert reason_of(b'{"body": "x", "published_at": NaN}') == "invalid_field"
    assert reason_of(b'{"body": "x", "published_at": ' + b"9" * 5000 + b"}") == "malformed_json"


def test_byte_order_mark_is_dropped():
    assert decode_text("\ufeffhello".encode("utf-8")) == "hello"


def test_json_schema_is_derived_from_the_one_definition():
    keys = {k for f in ARTICLE.fields for k in f.json_names}
    assert set(INCOMING_JSON_SCHEMA["properties"]) == keys
    assert {"required": ["text"]} in INCOMING_JSON_SCHEMA["anyOf"]
    json.dumps(INCOMING_JSON_SCHEMA)  # serialisable as published


def test_iter_lines_reports_offsets_and_skips_overlong_lines_without_holding_them():
    data = b"short\n" + b"x" * 5000 + b"\nlast"
    lines = list(iter_lines(io.BytesIO(data), max_line_bytes=100))
    assert [(n, off, size) for n, off, _, size in lines] == [(1, 0, 6), (2, 6, 5001), (3, 5007, 4)]
    assert len(lines[1][2]) == 101  # only a prefix was kept


def test_iter_lines_reads_gzip():
    stream = gzip.GzipFile(fileobj=io.BytesIO(gzip.compress(b"a\nb\n")))
    assert [line for _, _, line, _ in iter_lines(stream, 10)] == [b"a\n", b"b\n"]


def test_file_names():
    assert file_kind("/x/feed.JSONL.gz") == (".jsonl", True)
    assert file_kind("/x/a.txt") == (".txt", False)
    assert article_id_from_path("000_ec83a21fc30a0c64.txt") == "000_ec83a21fc30a0c64"
    assert article_id_from_path("x/a.b.txt.gz") == "x/a.b"
    assert article_id_from_path("a.b/c.TXT") == "a.b/c"
