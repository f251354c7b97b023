"""The story-state record: what a later run needs of each article to continue its
stories, in ``OUTPUT/_state/dt=<event day>/`` beside the dataset.

A run reads the rows of the last story window (``connectors.story_state``) and
seeds its duplicate and story state with them: a new article can then copy or
link an article of an earlier run and join its story, and an id already
written becomes a ``duplicate_article_id`` dead letter. The rows hold no text:
the shingle hashes and the centred paragraph vectors are enough to match.

Versions (bump ``SCHEMA_VERSION`` and add a line when a column changes; a run
refuses state of a version it does not know):
    1: first version.
"""

import pyarrow as pa

from schemas.record import UTC_TIMESTAMP, Field, RecordSchema

SCHEMA_VERSION = 1

STORY_STATE = RecordSchema("story_state", SCHEMA_VERSION, [
    Field("schema_version", pa.int16(), "version of this record layout", nullable=False),
    Field("article_id", pa.string(), "the article's id, as in the articles dataset",
          nullable=False),
    Field("published_at", UTC_TIMESTAMP, "the article's publication time"),
    Field("ingested_at", UTC_TIMESTAMP, "the article's ingestion time", nullable=False),
    Field("origin", pa.string(), "where the article was read", nullable=False),
    Field("origin_offset", pa.int64(), "its offset, line or index there", nullable=False),
    Field("lang", pa.string(), "its primary language", nullable=False),
    Field("content_hash", pa.string(), "sha256 of its normalised body", nullable=False),
    Field("shingles", pa.binary(),
          "its sorted unique word-shingle hashes, uint32 little-endian", nullable=False),
    Field("story_id", pa.string(), "its story", nullable=False),
    Field("story_event_at", UTC_TIMESTAMP,
          "the story's canonical article's event time (publication, else ingestion); with "
          "the next column and story_id, the order that picks the older of two stories",
          nullable=False),
    Field("story_ingested_at", UTC_TIMESTAMP,
          "the story's canonical article's ingestion time", nullable=False),
    Field("embedder", pa.string(),
          "the --embedder the vectors were made with; null when none were"),
    Field("dimension", pa.int32(), "the length of each paragraph vector"),
    Field("paragraph_vectors", pa.binary(),
          "its centred lead-paragraph vectors, float16 rows little-endian"),
    Field("evidence", pa.list_(pa.string()), "its names and numbers (evidence keys)"),
])

PARTITION_COLUMNS = ("dt",)
