"""The DropRepeatedIds step: one article row per article_id.

Two input records with the same id (a file listed twice, a re-sent message)
would otherwise give two rows for one article. Every repeat becomes a
dead-letter row naming the id, so the counts still reconcile.

Which record is kept:

* Bounded input: the first by publication time, ingestion time, origin and
  offset, whatever order the records were read in (a ``GroupByKey`` per id).
* A stream: the first to arrive. Its id is remembered for ``forget_after``
  seconds of event time (keyed state with an expiry timer), so memory holds
  the ids of one such span; a repeat arriving later than that is kept again.

Ids that earlier runs wrote (the last story window of the dataset's story
state, ``connectors.story_state``) are repeats too, whatever their partition.
"""

from typing import Any, Optional, Tuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration

from schemas.article import Article
from schemas.dead_letter import DEAD_LETTER_OUTPUT, rejected_article
from pipeline.logic.stories import order_key

# ``(article_id, value)``: the records and the ``earlier_ids`` side input alike.
# A typed key gets a deterministic coder, and both inputs must have this one:
# Beam's Python SDK (up to 2.77 at least, ``ParDo._get_key_and_window_coder``)
# takes the key coder of a stateful DoFn's timers from whichever of its inputs,
# side inputs included, a set of their tag names lists first (``PYTHONHASHSEED``
# decides). Flink keys each timer with the main input's coder: a timer key
# pickled as the side input's ``Any`` failed the job with a ClassCastException
# in about half of the streaming runs, before any row was written.
KEYED_BY_ID = Tuple[str, Any]


def record_order(article: Article):
    """Earliest first, ties broken by where the record was read."""
    return (order_key(article.get("published_at"), article["ingested_at"], article["article_id"]),
            article["origin"], article.get("origin_partition") or 0, article["origin_offset"])


def repeat_dead_letter(repeat: Article, first: Article, max_raw_bytes: int,
                       earlier_run: bool = False):
    return beam.pvalue.TaggedOutput(DEAD_LETTER_OUTPUT, rejected_article(
        repeat, reason="duplicate_article_id", max_raw_bytes=max_raw_bytes,
        error=f"article_id {repeat['article_id']!r} was already "
              f"{'written by an earlier run, read' if earlier_run else 'read'} at "
              f"{first['origin']} offset {first['origin_offset']}"))


class _KeepFirstArrivalFn(beam.DoFn):
    FIRST = ReadModifyWriteStateSpec("first", PickleCoder())
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)

    def __init__(self, forget_after: float, max_raw_bytes: int):
        self.forget_after = Duration.of(forget_after)
        self.max_raw_bytes = max_raw_bytes

    def process(self, element, earlier_ids, timestamp=beam.DoFn.TimestampParam,
                first_state=beam.DoFn.StateParam(FIRST), forget=beam.DoFn.TimerParam(FORGET)):
        article_id, article = element
        if article_id in earlier_ids:
            yield repeat_dead_letter(article, earlier_ids[article_id], self.max_raw_bytes, True)
            return
        first = first_state.read()
        if first is not None:
            yield repeat_dead_letter(article, first, self.max_raw_bytes)
            return
        # Only where it was read is kept: enough to name it in a repeat's dead letter.
        first_state.write({"origin": article["origin"], "origin_offset": article["origin_offset"]})
        forget.set(timestamp + self.forget_after)
        yield article

    @on_timer(FORGET)
    def forget_id(self, first_state=beam.DoFn.StateParam(FIRST)):
        first_state.clear()


class DropRepeatedIds(beam.PTransform):
    """Keeps one record of each ``article_id``; the others go to ``dead_letter``.

    Returns a ``DoOutputsTuple`` with ``articles`` and ``dead_letter`` outputs.
    Memory: bounded input, one group of records per id (normally one record);
    a stream (``forget_after`` set), one small record per id seen in the last
    ``forget_after`` seconds of event time. Besides, on every worker, the
    ``earlier_ids``: ``(article_id, {"origin", "origin_offset"})`` of articles
    that earlier runs wrote, typed ``KEYED_BY_ID`` (a side input, so a stream
    checks none of its records before they are all known), which make every
    record of their id a repeat.
    """

    def __init__(self, max_dead_letter_bytes: int, earlier_ids,
                 forget_after: Optional[float] = None):
        super().__init__()
        if forget_after is not None and forget_after <= 0:
            raise ValueError(f"forget_after must be positive seconds, got {forget_after}")
        self.max_dead_letter_bytes = max_dead_letter_bytes
        self.forget_after = forget_after
        self.earlier_ids = earlier_ids

    def expand(self, articles):
        keyed = articles | "KeyById" >> beam.Map(lambda a: (a["article_id"], a)) \
            .with_output_types(KEYED_BY_ID)
        earlier_ids = beam.pvalue.AsDict(self.earlier_ids)
        if self.forget_after is not None:
            return keyed | "KeepFirstArrival" >> beam.ParDo(_KeepFirstArrivalFn(
                self.forget_after, self.max_dead_letter_bytes), earlier_ids).with_outputs(
                    DEAD_LETTER_OUTPUT, main="articles")
        max_raw = self.max_dead_letter_bytes

        def keep_first(keyed, earlier_ids):
            article_id, records = keyed
            records = sorted(records, key=record_order)
            if article_id in earlier_ids:
                for repeat in records:
                    yield repeat_dead_letter(repeat, earlier_ids[article_id], max_raw, True)
                return
            first, *repeats = records
            yield first
            for repeat in repeats:
                yield repeat_dead_letter(repeat, first, max_raw)

        return (keyed
                | "GroupById" >> beam.GroupByKey()
                | "KeepFirst" >> beam.FlatMap(keep_first, earlier_ids).with_outputs(
                    DEAD_LETTER_OUTPUT, main="articles"))
