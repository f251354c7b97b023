"""The story record: one row per story and run, in ``OUTPUT/stories/``.

A story seen again in a later run (stories continue across runs, see
``schemas.story_state``) gets a new row from that run, counting that run's
members; on a stream, a row per window with the run's totals so far. A story's
current state adds up the latest row of each run (the README's query).

Versions:
    1: first version.
    2: ``topics``: the story's topics, from its members'.
"""

import pyarrow as pa

from schemas.article import TOPIC_SCORE
from schemas.record import UTC_TIMESTAMP, Field, RecordSchema

SCHEMA_VERSION = 2

STORY = RecordSchema("story", SCHEMA_VERSION, [
    Field("schema_version", pa.int16(), "version of this record layout", nullable=False),
    Field("story_id", pa.string(), "the canonical article's id", nullable=False),
    Field("canonical_article_id", pa.string(), "the story's earliest article", nullable=False),
    Field("member_count", pa.int32(), "articles of the story in this run", nullable=False),
    Field("duplicate_count", pa.int32(), "members that copy another member", nullable=False),
    Field("languages", pa.list_(pa.string()), "primary languages of its members, sorted",
          nullable=False),
    Field("first_seen", UTC_TIMESTAMP,
          "earliest member time (publication, else ingestion)", nullable=False),
    Field("last_seen", UTC_TIMESTAMP, "latest member time", nullable=False),
    Field("topics", pa.list_(TOPIC_SCORE),
          "each topic's member scores averaged over all members, best first, cut like an "
          "article's; null when topics were not tagged"),
    Field("run_id", pa.string(), "the run that wrote this row", nullable=False),
    Field("updated_at", UTC_TIMESTAMP, "when the run started", nullable=False),
])

PARTITION_COLUMNS = ("dt",)
