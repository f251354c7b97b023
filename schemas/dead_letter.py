"""The dead-letter record: one row for every input that did not become an article.

Together with the article rows this accounts for every input record: each one
ends as exactly one article row or one dead-letter row.

Versions:
    1: first version.
"""

from typing import Any, Dict

import pyarrow as pa

from schemas.record import UTC_TIMESTAMP, Field, RecordSchema

SCHEMA_VERSION = 1

DeadLetter = Dict[str, Any]

DEAD_LETTER = RecordSchema("dead_letter", SCHEMA_VERSION, [
    Field("schema_version", pa.int16(), "version of this record layout", nullable=False),
    Field("reason", pa.string(),
          "machine-readable cause, one of schemas.dead_letter.REASONS", nullable=False),
    Field("error", pa.string(), "human-readable explanation", nullable=False),
    Field("origin", pa.string(), "file path or kafka topic", nullable=False),
    Field("origin_partition", pa.int32(), "Kafka partition, null for files"),
    Field("origin_offset", pa.int64(),
          "Kafka offset, or line (JSONL, 1-based) / index (JSON array) / 0 (whole file)",
          nullable=False),
    Field("byte_offset", pa.int64(), "byte position of the record in its file, if known"),
    Field("article_id", pa.string(), "the article id, when it could be read"),
    Field("raw", pa.binary(), "the raw bytes, up to the dead-letter byte cap", nullable=False),
    Field("raw_size", pa.int64(), "size of the whole raw record in bytes", nullable=False),
    Field("raw_truncated", pa.bool_(), "true when raw holds only a prefix", nullable=False),
    Field("ingested_at", UTC_TIMESTAMP, "when newsloom read it", nullable=False),
])

PARTITION_COLUMNS = ("dt",)

# The name of the tagged output on which Beam steps emit dead-letter rows.
DEAD_LETTER_OUTPUT = "dead_letter"

# Why a record can be dead-lettered. Kept as a closed set so dashboards can rely on it.
REASONS = {
    "invalid_utf8": "bytes are not valid UTF-8 (or the UTF-16 or UTF-32 that a byte-order "
                    "mark declares)",
    "invalid_unicode": "a JSON string holds a lone surrogate escape (\\ud800), which is not "
                       "text",
    "too_deep": "the JSON is nested deeper than the parser's recursion limit",
    "binary": "the content holds NUL bytes: not text",
    "empty": "no text after stripping white space",
    "malformed_json": "the JSON does not parse, or is not an object",
    "missing_body": "a JSON record without a non-empty body or text",
    "invalid_field": "a field has the wrong type or an unparseable value",
    "time_out_of_range": "published_at before 1900 or more than a day after ingestion",
    "too_large": "larger than --max_article_bytes",
    "unsupported_file": "a file type the file source does not read",
    "corrupt_gzip": "a .gz file that is not gzip, or is truncated; its records before the "
                    "damage are kept",
    "unreadable": "a file that could not be opened or read (no permission, an I/O error, "
                  "a dangling symbolic link)",
    "not_regular_file": "a FIFO, device or socket among the input files: only regular "
                        "files are read",
    "outside_input": "a symbolic link whose target is outside the input folder: not followed",
    "duplicate_article_id": "an earlier record in the run has the same article_id",
    "late": "on a stream, its event time was behind the watermark by more than the "
            "allowed lateness",
}


def make_dead_letter(*, reason: str, error: str, origin: str, origin_offset: int,
                     raw: bytes, raw_size: int, ingested_at,
                     max_raw_bytes: int, origin_partition=None,
                     byte_offset=None, article_id=None) -> DeadLetter:
    """Build a dead-letter row, keeping at most ``max_raw_bytes`` of ``raw``."""
    if reason not in REASONS:
        raise ValueError(f"unknown dead-letter reason {reason!r}")
    kept = raw[:max_raw_bytes]
    return {
        "schema_version": SCHEMA_VERSION,
        "reason": reason,
        "error": error,
        "origin": origin,
        "origin_partition": origin_partition,
        "origin_offset": origin_offset,
        "byte_offset": byte_offset,
        "article_id": article_id,
        "raw": kept,
        "raw_size": raw_size,
        "raw_truncated": len(kept) < raw_size,
        "ingested_at": ingested_at,
    }


def rejected_article(article, *, reason: str, error: str, max_raw_bytes: int) -> DeadLetter:
    """The dead-letter row of an article rejected after parsing (a repeat, a late one).

    Its raw bytes are the article's body: the parsed record is all a later step still has.
    """
    raw = article["body"].encode("utf-8")
    return make_dead_letter(
        reason=reason, error=error, origin=article["origin"],
        origin_partition=article.get("origin_partition"), origin_offset=article["origin_offset"],
        article_id=article["article_id"], raw=raw, raw_size=len(raw),
        ingested_at=article["ingested_at"], max_raw_bytes=max_raw_bytes)
