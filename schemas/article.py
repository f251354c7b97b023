"""The article record: newsloom's one output row per accepted input article.

Every other form of the record is derived from ``ARTICLE`` below: the Arrow
schema of the Parquet dataset, the JSON Schema of incoming JSON articles, and
the keys that the file and Kafka sources accept. The in-flight form inside the
pipeline is a plain ``dict`` keyed by these field names.

Versions (bump ``SCHEMA_VERSION`` and add a line when a column changes):
    1: first version.
    2: ``duplicate_kind`` and ``dup_evidence``: how a duplicate matched and the
       names and numbers it shares with the article it copies.
    3: ``topics``: the article's topics under the run's taxonomy.
    4: ``linked_to``, ``link_score`` and ``link_evidence``: a different report
       of the same event that the article's story was joined through.
"""

from datetime import datetime
from typing import Any, Dict

import pyarrow as pa

from schemas.record import UTC_TIMESTAMP, Field, RecordSchema

SCHEMA_VERSION = 4

# Type alias for the in-flight record, so signatures say what flows.
Article = Dict[str, Any]

TOPIC_SCORE = pa.struct([
    pa.field("id", pa.string(), nullable=False),
    pa.field("score", pa.float32(), nullable=False),
])

LANG_SPAN = pa.struct([
    pa.field("lang", pa.string(), nullable=False),
    pa.field("start", pa.int32(), nullable=False),
    pa.field("end", pa.int32(), nullable=False),
    pa.field("share", pa.float32(), nullable=False),
])

ARTICLE = RecordSchema("article", SCHEMA_VERSION, [
    Field("schema_version", pa.int16(), "version of this record layout",
          nullable=False),
    Field("article_id", pa.string(),
          "the id the source gave, else the first 16 hex digits of content_hash",
          nullable=False, json_names=("id", "article_id"),
          json_type=("string", "integer")),
    Field("source", pa.string(), "the outlet or feed the article came from",
          json_names=("source",)),
    Field("url", pa.string(), "the article's address", json_names=("url",)),
    Field("title", pa.string(), "headline", json_names=("title",)),
    Field("body", pa.string(), "the article text, paragraphs separated by newlines",
          nullable=False, json_names=("body", "text")),
    Field("published_at", UTC_TIMESTAMP,
          "publication time in UTC (ISO 8601 or epoch seconds in JSON)",
          json_names=("published_at",), json_type=("string", "number", "null")),
    Field("ingested_at", UTC_TIMESTAMP,
          "when newsloom read it: the run's start for files, the message time for Kafka",
          nullable=False),
    Field("lang_hint", pa.string(), "the language the source declared, if any",
          json_names=("lang", "language")),
    Field("lang", pa.string(),
          "primary language, ISO 639-1 (639-3 where no 2-letter code exists); und if unknown",
          nullable=False),
    Field("lang_confidence", pa.float32(),
          "detector confidence of the primary language, 0..1", nullable=False),
    Field("lang_spans", pa.list_(LANG_SPAN),
          "each language's runs of the body: character start, end, share of letters",
          nullable=False),
    Field("content_hash", pa.string(),
          "sha256 of the normalised body: equal hashes are exact duplicates",
          nullable=False),
    Field("story_id", pa.string(),
          "the article_id of the story's canonical (earliest) article", nullable=False),
    Field("is_duplicate", pa.bool_(),
          "true when the article copies an earlier one (exactly or nearly)",
          nullable=False),
    Field("duplicate_of", pa.string(),
          "the earlier article it copies most closely, when is_duplicate"),
    Field("dup_score", pa.float32(),
          "similarity to duplicate_of (1.0 for an exact copy), when is_duplicate"),
    Field("duplicate_kind", pa.string(),
          "exact, near (same-language wording) or translation (aligned paragraphs "
          "across languages), when is_duplicate"),
    Field("dup_evidence", pa.list_(pa.string()),
          "names (@consonant skeleton) and numbers (#n) shared with duplicate_of"),
    Field("linked_to", pa.string(),
          "when the article is no duplicate but joined a story as a different report of "
          "the same event: the earlier report it was linked to"),
    Field("link_score", pa.float32(),
          "the story model's probability that the article and linked_to tell one event, "
          "when linked_to is set"),
    Field("link_evidence", pa.list_(pa.string()),
          "the specific names and numbers shared with linked_to"),
    Field("topics", pa.list_(TOPIC_SCORE),
          "topics of the run's taxonomy (--taxonomy): id and score 0..1, best first; "
          "null when topics were not tagged (--embedder none)"),
    Field("origin", pa.string(),
          "where the record was read: a file path or kafka topic", nullable=False),
    Field("origin_partition", pa.int32(), "Kafka partition, null for files"),
    Field("origin_offset", pa.int64(),
          "Kafka offset, or the line (JSONL, 1-based) or index (JSON array) in the file",
          nullable=False),
])

# Columns carried in the Hive path rather than in the Parquet files.
PARTITION_COLUMNS = ("dt", "lang")

INCOMING_JSON_SCHEMA = ARTICLE.json_schema(required_any_of=("body",))


def event_time(article: Article) -> datetime:
    """When the article happened, for windows and the story window: its
    publication time, else its ingestion time."""
    return article.get("published_at") or article["ingested_at"]
