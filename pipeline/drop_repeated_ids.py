"""The DropRepeatedIds step: one article row per article_id.

Two input records with the same id (a file listed twice, a re-sent message)
would otherwise give two rows for one article. The first record, by
publication time, ingestion time, origin and offset, is kept; every other one
becomes a dead-letter row naming the id, so the counts still reconcile.
"""

import apache_beam as beam

from schemas.article import Article
from schemas.dead_letter import DEAD_LETTER_OUTPUT, make_dead_letter
from pipeline.stories import order_key


def record_order(article: Article):
    """Earliest first, ties broken by where the record was read."""
    return (order_key(article.get("published_at"), article["ingested_at"], article["article_id"]),
            article["origin"], article.get("origin_partition") or 0, article["origin_offset"])


class DropRepeatedIds(beam.PTransform):
    """Keeps the first record of each ``article_id``; the others go to ``dead_letter``.

    Returns a ``DoOutputsTuple`` with ``articles`` and ``dead_letter`` outputs.
    Memory: one group of records per id (normally one record).
    """

    def __init__(self, max_dead_letter_bytes: int):
        super().__init__()
        self.max_dead_letter_bytes = max_dead_letter_bytes

    def expand(self, articles):
        max_raw = self.max_dead_letter_bytes

        def keep_first(keyed):
            article_id, records = keyed
            first, *repeats = sorted(records, key=record_order)
            yield first
            for repeat in repeats:
                raw = repeat["body"].encode("utf-8")
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_OUTPUT, make_dead_letter(
                    reason="duplicate_article_id",
                    error=f"article_id {article_id!r} was already read at "
                          f"{first['origin']} offset {first['origin_offset']}",
                    origin=repeat["origin"], origin_partition=repeat.get("origin_partition"),
                    origin_offset=repeat["origin_offset"], article_id=article_id, raw=raw,
                    raw_size=len(raw), ingested_at=repeat["ingested_at"], max_raw_bytes=max_raw))

        return (articles
                | "KeyById" >> beam.Map(lambda a: (a["article_id"], a))
                | "GroupById" >> beam.GroupByKey()
                | "KeepFirst" >> beam.FlatMap(keep_first).with_outputs(
                    DEAD_LETTER_OUTPUT, main="articles"))
