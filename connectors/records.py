"""Turning raw bytes into incoming article records, or into the reason they can't be.

Shared by every source (files, Kafka): each raw record becomes either an
article dict with the incoming fields of ``schemas.article.ARTICLE`` filled, or
a :class:`RejectedRecord` that the source turns into a dead-letter row.
"""

import codecs
import json
import sys
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Optional

from common.text import content_hash
from schemas.article import ARTICLE, SCHEMA_VERSION, Article

# Python types accepted for each JSON Schema type name.
_JSON_TYPES = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "null": (type(None),),
}
# Epoch numbers above this are taken as milliseconds (it is 5138 AD in seconds).
_EPOCH_MILLIS_FROM = 1e11
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# The publication times kept: from 1900 to a day past ingestion (time zones and
# clock skew). Outside it a time is a mistake (year 1, epoch 1e20), and each
# such day would make a partition of its own.
EARLIEST_PUBLISHED = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST_PUBLISHED_AFTER_INGESTION = timedelta(days=1)


# The tagged output on which every source emits how many records it read (ints to
# be summed): the run summary's ``read``, counted before anything can lose a record.
READ_COUNT_OUTPUT = "read_count"


class RejectedRecord(Exception):
    """A record that cannot become an article; ``reason`` is a dead-letter reason."""

    def __init__(self, reason: str, message: str, article_id: Optional[str] = None):
        super().__init__(message)
        self.reason = reason
        self.article_id = article_id


# Byte-order marks of the encodings besides UTF-8 that text may come in; UTF-32's
# first, since UTF-32-LE's begins with UTF-16-LE's.
_BYTE_ORDER_MARKS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                     (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def text_encoding(head: bytes, is_json: bool = False) -> str:
    """The encoding of text that starts with ``head`` (its first 4 bytes or more).

    UTF-16 or UTF-32 when a byte-order mark says so, or for JSON also the
    pattern of NUL bytes its ASCII first character leaves (RFC 8259); else UTF-8.
    """
    if is_json:
        return json.detect_encoding(head[:4])
    return next((encoding for mark, encoding in _BYTE_ORDER_MARKS if head.startswith(mark)),
                "utf-8")


def decode_text(raw: bytes, encoding: str = "utf-8") -> str:
    """The text of ``raw`` in ``encoding`` (see ``text_encoding``); a leading
    byte-order mark is dropped. UTF-8 text must hold no NUL byte."""
    if encoding.startswith("utf-8"):
        if b"\x00" in raw:
            raise RejectedRecord("binary", "content holds NUL bytes: a binary file, not text")
        encoding = "utf-8-sig"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        name = "UTF-8" if encoding == "utf-8-sig" else encoding.upper()
        raise RejectedRecord(
            "invalid_utf8", f"not valid {name} at byte {e.start}: {e.reason}") from None


def parse_timestamp(value: Any) -> datetime:
    """A UTC datetime from ISO 8601 text (naive means UTC) or epoch seconds/milliseconds.

    Raises ``ValueError`` for what is not a time, ``OverflowError`` for a time
    past what ``datetime`` holds (years 1 to 9999).
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, (int, float)):
        seconds = value / 1000 if abs(value) >= _EPOCH_MILLIS_FROM else value
        # Not fromtimestamp: its range and errors depend on the platform's time_t.
        return _EPOCH + timedelta(seconds=seconds)
    moment = datetime.fromisoformat(value.strip())
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def check_size(size: int, max_article_bytes: int, what: str = "record",
               article_id: Optional[str] = None) -> None:
    """Reject anything over the article size cap before it is decoded or parsed."""
    if size > max_article_bytes:
        raise RejectedRecord(
            "too_large", f"{what} is {size} bytes, over --max_article_bytes={max_article_bytes}",
            article_id)


def new_article(*, body: str, origin: str, origin_offset: int, ingested_at: datetime,
                max_article_bytes: int, article_id: Optional[str] = None,
                origin_partition: Optional[int] = None, **incoming: Any) -> Article:
    """An article record with its incoming fields, checked for emptiness and size.

    ``incoming`` holds the optional incoming fields (title, url, source,
    published_at, lang_hint). Without an id, the article's id is the first 16
    hex digits of the hash of its normalised body, so the same text always
    gets the same id.
    """
    check_size(len(body.encode("utf-8")), max_article_bytes, "body", article_id)
    if not body.strip():
        raise RejectedRecord("empty", "the body is empty or white space only", article_id)
    digest = content_hash(body)
    return {
        "schema_version": SCHEMA_VERSION,
        "article_id": article_id or digest[:16],
        "body": body,
        "content_hash": digest,
        "ingested_at": ingested_at,
        "origin": origin,
        "origin_partition": origin_partition,
        "origin_offset": origin_offset,
        **incoming,
    }


def published_time(published: Any, ingested_at: datetime,
                   article_id: Optional[str] = None) -> datetime:
    """The UTC publication time of a JSON ``published_at`` value, checked against the
    kept range (``EARLIEST_PUBLISHED`` to a day past ``ingested_at``)."""
    latest = ingested_at + LATEST_PUBLISHED_AFTER_INGESTION
    out_of_range = RejectedRecord(
        "time_out_of_range", f"published_at {published!r:.80} is outside the kept range "
        f"{EARLIEST_PUBLISHED:%Y-%m-%d} to {latest.isoformat()} (a day past ingestion)",
        article_id)
    try:
        moment = parse_timestamp(published)
    except OverflowError:
        raise out_of_range from None
    except ValueError as e:
        raise RejectedRecord("invalid_field", f"published_at {published!r:.80} is not a time: {e}",
                             article_id) from None
    if not EARLIEST_PUBLISHED <= moment <= latest:
        raise out_of_range
    return moment


# Each incoming JSON key with the Python types it accepts and their JSON names.
_ACCEPTED = {key: (tuple(t for name in f.json_type for t in _JSON_TYPES[name]), f.json_type)
             for f in ARTICLE.fields for key in f.json_names}


def _check_json_types(record: Dict[str, Any]) -> None:
    for key, value in record.items():
        if key in _ACCEPTED:
            accepted, names = _ACCEPTED[key]
            if not isinstance(value, accepted) or isinstance(value, bool):
                raise RejectedRecord(
                    "invalid_field",
                    f"field {key!r} must be {' or '.join(names)}, got {type(value).__name__}")
            if isinstance(value, str):
                _check_encodable(key, value)


def _check_encodable(key: str, value: str) -> None:
    # JSON's \ud800 escapes decode to lone surrogates, which no UTF-8 writer takes.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RejectedRecord(
            "invalid_unicode", f"field {key!r} holds a lone surrogate "
            f"\\u{ord(value[e.start]):04x} at character {e.start}: not encodable as UTF-8"
        ) from None


def article_from_json(record: Any, *, origin: str, origin_offset: int,
                      ingested_at: datetime, max_article_bytes: int,
                      origin_partition: Optional[int] = None,
                      default_id: Optional[str] = None) -> Article:
    """An article from one decoded JSON value (see ``schemas.article.INCOMING_JSON_SCHEMA``).

    Without an id in the record, ``default_id`` (a Kafka message key) is the
    id, else the hash of the body.
    """
    if not isinstance(record, dict):
        raise RejectedRecord("malformed_json",
                             f"a JSON article must be an object, got {type(record).__name__}")
    _check_json_types(record)
    given_id = ARTICLE.json_value(record, "article_id")
    article_id = (str(given_id).strip() if given_id is not None else None) or default_id
    body = ARTICLE.json_value(record, "body")
    if body is None or not body.strip():
        raise RejectedRecord("missing_body", "no non-empty 'body' or 'text' field", article_id)
    published = ARTICLE.json_value(record, "published_at")
    published_at = (published_time(published, ingested_at, article_id)
                    if published is not None else None)
    return new_article(
        body=body, article_id=article_id, origin=origin, origin_offset=origin_offset,
        origin_partition=origin_partition, ingested_at=ingested_at,
        max_article_bytes=max_article_bytes,
        title=ARTICLE.json_value(record, "title"),
        url=ARTICLE.json_value(record, "url"),
        source=ARTICLE.json_value(record, "source"),
        lang_hint=ARTICLE.json_value(record, "lang_hint"),
        published_at=published_at)


def parse_json(text: str) -> Any:
    """The JSON value of ``text``; a ``RejectedRecord`` if it does not parse."""
    try:
        return json.loads(text)
    except ValueError as e:  # JSONDecodeError, or an integer of over 4,300 digits
        raise RejectedRecord("malformed_json", f"invalid JSON: {e}") from None
    except RecursionError:
        raise RejectedRecord("too_deep", "the JSON is nested deeper than the parser's "
                             f"recursion limit ({sys.getrecursionlimit()})") from None


def article_from_json_bytes(raw: bytes, **where: Any) -> Article:
    """An article from one JSON document's bytes (a JSONL line, a Kafka message)."""
    return article_from_json(parse_json(decode_text(raw, text_encoding(raw, is_json=True))),
                             **where)
