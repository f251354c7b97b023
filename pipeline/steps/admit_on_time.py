"""Event-time windows on a stream, and the AdmitOnTime step that turns away late articles.

A stream's output is cut into fixed windows of article time (``--window_seconds``,
default one minute): each window's rows go to their own Parquet files, written
once the watermark has passed the window's end. An article whose window closed
long ago still arrives sometimes (a feed catching up, a publication time far
behind its ingestion). Up to ``--allowed_lateness_hours`` after its window's end
it is still processed and written, in a further file for that window; later
than that it becomes a dead-letter row with reason ``late``.

Why not ``WindowInto`` with ``allowed_lateness``: a ``GroupByKey`` drops data
past the lateness silently, and nothing may be dropped silently here. So the
windows are arithmetic on the event time (``EventWindows``), the sink groups by
them in keyed state, and this step sends late articles to the dead letter.
"""

import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Tuple

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from common.event_timers import arm_at
from schemas.dead_letter import DEAD_LETTER_OUTPUT, rejected_article

SECOND = 1_000_000  # microseconds, Beam's timestamp unit


def micros_of(moment: datetime) -> int:
    """A UTC time in Beam's microseconds since the epoch."""
    return Timestamp.from_utc_datetime(moment).micros


@dataclass(frozen=True)
class EventWindows:
    """Fixed windows of ``size`` microseconds, from the epoch, and their lateness."""

    size: int
    allowed_lateness: int

    def __post_init__(self):
        if self.size <= 0:
            raise ValueError(f"the window length must be positive, got {self.size} µs")
        if self.allowed_lateness < 0:
            raise ValueError(f"the allowed lateness cannot be negative, got "
                             f"{self.allowed_lateness} µs")

    @classmethod
    def of(cls, window_seconds: float, allowed_lateness_seconds: float) -> "EventWindows":
        return cls(round(window_seconds * SECOND), round(allowed_lateness_seconds * SECOND))

    def start(self, micros: int) -> int:
        """The start of the window holding event time ``micros``."""
        return micros - micros % self.size

    def end(self, micros: int) -> int:
        return self.start(micros) + self.size

    def closes(self, micros: int) -> int:
        """When the window holding ``micros`` stops taking articles: its end plus the lateness."""
        return self.end(micros) + self.allowed_lateness

    def is_late(self, micros: int, watermark: int) -> bool:
        """Whether an article of event time ``micros`` is late once the watermark is at ``watermark``."""
        return self.closes(micros) <= watermark


class _AdmitOnTimeFn(beam.DoFn):
    # A Python DoFn cannot read the watermark, but an event-time timer that fires
    # at T proves the watermark has reached T. Each admitted article arms two
    # (``arm_at``: one window's articles share them): at its window's end and
    # at its window's close (end plus lateness).
    WATERMARK = ReadModifyWriteStateSpec("watermark_at_least", VarIntCoder())
    TICK = TimerSpec("tick", TimeDomain.WATERMARK)

    def __init__(self, windows: EventWindows, max_dead_letter_bytes: int):
        self.windows = windows
        self.max_dead_letter_bytes = max_dead_letter_bytes
        self.late = Metrics.counter("AdmitOnTime", "late_articles")

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                watermark_state=beam.DoFn.StateParam(WATERMARK), tick=beam.DoFn.TimerParam(TICK)):
        _, article = element
        watermark = watermark_state.read()
        if watermark is not None and self.windows.is_late(timestamp.micros, watermark):
            self.late.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_OUTPUT, rejected_article(
                article, reason="late", max_raw_bytes=self.max_dead_letter_bytes,
                error=f"event time {timestamp.to_utc_datetime().isoformat()}Z is more than the "
                      f"allowed lateness behind the watermark "
                      f"({Timestamp(micros=watermark).to_utc_datetime().isoformat()}Z)"))
            return
        for due in {self.windows.end(timestamp.micros), self.windows.closes(timestamp.micros)}:
            if watermark is None or due > watermark:
                arm_at(tick, due)
        yield article

    @on_timer(TICK)
    def learn_watermark(self, fired=beam.DoFn.TimestampParam,
                        watermark_state=beam.DoFn.StateParam(WATERMARK)):
        # Tagged timers may fire in any order within a bundle: keep the latest.
        known = watermark_state.read()
        if known is None or fired.micros > known:
            watermark_state.write(fired.micros)


class AdmitOnTime(beam.PTransform):
    """Articles stamped with their event time in; ``articles`` on time, and
    ``dead_letter`` rows (reason ``late``) for those past the allowed lateness.

    Guarantee: an article is turned away only if its window closed (end plus
    allowed lateness) before the watermark it arrived at, which the step knows
    to within one window; one admitted is never dropped downstream. Memory: one
    number for each of ``shards`` keys, and two timers for each window of the
    allowed lateness that has articles.

    One key by default: a key knows the watermark only once it has seen an
    article, and the check is one comparison, which one worker does at far
    more articles a second than a news stream brings.
    """

    def __init__(self, windows: EventWindows, max_dead_letter_bytes: int, shards: int = 1):
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self.windows = windows
        self.max_dead_letter_bytes = max_dead_letter_bytes
        self.shards = shards

    def expand(self, articles):
        shards = self.shards
        return (articles
                | "KeyByShard" >> beam.Map(
                    lambda a: (zlib.crc32(a["article_id"].encode("utf-8")) % shards, a))
                .with_output_types(Tuple[int, Any])  # a typed key gets a deterministic coder
                | "TurnAwayLate" >> beam.ParDo(_AdmitOnTimeFn(
                    self.windows, self.max_dead_letter_bytes)).with_outputs(
                        DEAD_LETTER_OUTPUT, main="articles"))
