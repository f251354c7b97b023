"""The Kafka source: a pure-Python splittable DoFn over kafka-python.

Beam's own ``ReadFromKafka`` is a Java transform that needs an expansion
service and jars at run time. This one is plain Python, so the same code runs
on the DirectRunner, Prism, Flink and Dataflow.

How it reads:

1. ``PlanPartitions`` (once, on a worker) lists the topic's partitions and
   turns ``start`` and ``stop`` into one offset range per partition.
2. ``ReadPartition``, a splittable DoFn, reads each range with ``assign()`` and
   ``seek()`` (no consumer-group rebalancing inside workers), polling with a
   timeout. When a partition has nothing new, or a read has gone on for
   ``max_read_seconds``, it checkpoints itself (``defer_remainder``) and the
   runner resumes it later. Its watermark follows the message timestamps and,
   once a partition is caught up, advances with the clock so that an idle
   partition does not hold windows open.
3. ``ParseMessages`` turns each message into an article, or a dead-letter row
   naming its topic, partition and offset.

Start positions: ``committed`` (the consumer group's offsets, else the
earliest), ``earliest``, ``latest``, or a time (ISO 8601 or epoch
milliseconds: the first offset at or after it). Stop conditions: ``end`` (the
end offsets seen at start: bounded, for batch runs and backfills), ``never``
(unbounded, for streaming runners), ``N`` (at most N messages per partition)
or ``Ns`` (read for N seconds).

Offsets are committed to the consumer group by ``CommitOffsets`` only after the
rows have reached the Parquet files, so the read is at-least-once; the
article sink skips ids already in the dataset, so the dataset is effectively
once.
"""

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, Optional, Tuple

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, Timestamp

from connectors.records import RejectedRecord, article_from_json_bytes, check_size
from schemas.dead_letter import DEAD_LETTER_OUTPUT, make_dead_letter

# An offset range with no end: Kafka offsets are signed 64-bit.
NO_END = 2**63 - 1
START_MODES = ("committed", "earliest", "latest")


@dataclass(frozen=True)
class KafkaSpec:
    """What to read and how to reach it; ``client_config`` passes through to kafka-python."""

    bootstrap_servers: str
    topic: str
    group_id: Optional[str] = None
    start: str = "committed"
    stop: str = "end"
    client_config: Dict[str, Any] = field(default_factory=dict)
    poll_timeout_ms: int = 1000
    max_read_seconds: float = 10.0

    def __post_init__(self):
        if not self.bootstrap_servers or not self.topic:
            raise ValueError("Kafka needs --bootstrap_servers and --topic")
        if self.start == "committed" and not self.group_id:
            raise ValueError("--start=committed needs a --group_id")
        if self.start not in START_MODES:
            parse_start_time(self.start)  # raises on a bad value
        parse_stop(self.stop)

    @property
    def unbounded(self) -> bool:
        return self.stop == "never"

    def consumer(self, **overrides):
        from kafka import KafkaConsumer
        settings = {"bootstrap_servers": self.bootstrap_servers.split(","),
                    "enable_auto_commit": False, "group_id": self.group_id,
                    "auto_offset_reset": "earliest", **self.client_config, **overrides}
        return KafkaConsumer(**settings)


def parse_start_time(start: str) -> int:
    """Epoch milliseconds of a ``--start`` time (ISO 8601, naive = UTC, or epoch ms)."""
    if start.isdigit():
        return int(start)
    moment = datetime.fromisoformat(start)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def parse_stop(stop: str) -> Tuple[str, float]:
    """``("end"|"never", 0)``, ``("count", N)`` or ``("seconds", N)`` from ``--stop``."""
    if stop in ("end", "never"):
        return stop, 0
    try:
        if stop.endswith("s"):
            return "seconds", float(stop[:-1])
        return "count", int(stop)
    except ValueError:
        raise ValueError(f"--stop must be end, never, N (messages per partition) or Ns "
                         f"(seconds), got {stop!r}") from None


@dataclass(frozen=True)
class PartitionRead:
    """One partition's share of the read: offsets [start, stop), and a wall-clock deadline."""

    topic: str
    partition: int
    start: int
    stop: int
    deadline: Optional[float] = None  # epoch seconds


@dataclass(frozen=True)
class KafkaMessage:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: Optional[bytes]
    value: Optional[bytes]


def plan_partitions(spec: KafkaSpec, consumer, now: float) -> Iterable[PartitionRead]:
    """The offset range of each partition of ``spec.topic``, from ``start`` and ``stop``."""
    from kafka import TopicPartition
    partitions = consumer.partitions_for_topic(spec.topic)
    if not partitions:
        raise ValueError(f"Kafka topic {spec.topic!r} does not exist at {spec.bootstrap_servers}")
    tps = [TopicPartition(spec.topic, p) for p in sorted(partitions)]
    earliest = consumer.beginning_offsets(tps)
    latest = consumer.end_offsets(tps)
    if spec.start == "earliest":
        starts = earliest
    elif spec.start == "latest":
        starts = latest
    elif spec.start == "committed":
        starts = {tp: consumer.committed(tp) or earliest[tp] for tp in tps}
    else:
        at = consumer.offsets_for_times({tp: parse_start_time(spec.start) for tp in tps})
        starts = {tp: at[tp].offset if at.get(tp) else latest[tp] for tp in tps}
    mode, amount = parse_stop(spec.stop)
    for tp in tps:
        start = max(starts[tp], earliest[tp])
        stop = {"end": latest[tp], "count": start + int(amount)}.get(mode, NO_END)
        deadline = now + amount if mode == "seconds" else None
        yield PartitionRead(tp.topic, tp.partition, start, max(start, stop), deadline)


class _PlanPartitionsFn(beam.DoFn):
    def __init__(self, spec: KafkaSpec):
        self.spec = spec

    def process(self, _):
        consumer = self.spec.consumer(group_id=self.spec.group_id)
        try:
            yield from plan_partitions(self.spec, consumer, time.time())
        finally:
            consumer.close()


class CheckpointOnlyOffsetTracker(OffsetRestrictionTracker):
    """An offset range that may be checkpointed (split at the next offset), never split
    in the middle. A runner's dynamic split of an open range ``[pos, 2**63-1)``
    would start a residual near offset 4.6e18; Kafka answers a seek past the
    end by resetting to the earliest offset, and the claim fails. Prism
    splits this way under a backlog."""

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder > 0:
            return None
        return super().try_split(0)


class _PartitionRestrictions(RestrictionProvider):
    """One offset range per partition, not split further (a partition is read in order)."""

    def initial_restriction(self, element: PartitionRead) -> OffsetRange:
        return OffsetRange(element.start, element.stop)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return CheckpointOnlyOffsetTracker(restriction)

    def restriction_size(self, element, restriction: OffsetRange) -> int:
        return min(restriction.size(), 1 << 32)

    def split(self, element, restriction):
        yield restriction


class _WatermarkFromMessages(beam.transforms.core.WatermarkEstimatorProvider):
    def initial_estimator_state(self, element, restriction):
        return None

    def create_watermark_estimator(self, estimator_state):
        return ManualWatermarkEstimator(estimator_state)


def _advance(watermark_estimator, timestamp: Timestamp) -> None:
    current = watermark_estimator.current_watermark()
    if current is None or timestamp > current:
        watermark_estimator.set_watermark(timestamp)


class ReadPartitionFn(beam.DoFn):
    """Reads one partition's offset range; checkpoints when idle or after ``max_read_seconds``."""

    def __init__(self, spec: KafkaSpec, idle_resume_seconds: float = 1.0):
        self.spec = spec
        self.idle_resume_seconds = idle_resume_seconds
        self._consumer = None

    def setup(self):
        # One consumer per worker thread, re-assigned per partition: no group
        # membership, so no rebalancing while workers come and go.
        self._consumer = self.spec.consumer(group_id=None)

    def teardown(self):
        if self._consumer is not None:
            self._consumer.close()

    def process(self, element: PartitionRead,
                tracker=beam.DoFn.RestrictionParam(_PartitionRestrictions()),
                watermark_estimator=beam.DoFn.WatermarkEstimatorParam(_WatermarkFromMessages())):
        from kafka import TopicPartition
        tp = TopicPartition(element.topic, element.partition)
        restriction = tracker.current_restriction()
        self._consumer.assign([tp])
        self._consumer.seek(tp, restriction.start)
        began = time.monotonic()
        while True:
            if element.deadline is not None and time.time() >= element.deadline:
                tracker.try_claim(restriction.stop)  # past the deadline: the range is done
                return
            batch = self._consumer.poll(timeout_ms=self.spec.poll_timeout_ms,
                                        max_records=500).get(tp, [])
            if not batch:
                position = self._consumer.position(tp)
                if position is not None and position >= restriction.stop:
                    tracker.try_claim(restriction.stop)  # nothing left in the range
                    return
                if position is not None and self._caught_up(tp, position):
                    _advance(watermark_estimator, Timestamp.now())
                tracker.defer_remainder(Duration.of(self.idle_resume_seconds))
                return
            for message in batch:
                if not tracker.try_claim(message.offset):
                    return
                timestamp = Timestamp.of(message.timestamp / 1000)
                _advance(watermark_estimator, timestamp)
                yield beam.window.TimestampedValue(KafkaMessage(
                    message.topic, message.partition, message.offset, message.timestamp,
                    message.key, message.value), timestamp)
            if time.monotonic() - began >= self.spec.max_read_seconds:
                tracker.defer_remainder()  # let the runner commit this much output
                return

    def _caught_up(self, tp, position: int) -> bool:
        try:
            return position >= self._consumer.end_offsets([tp])[tp]
        except Exception:  # the broker is away: not caught up as far as we know
            return False


class _ReadUnboundedPartitionFn(ReadPartitionFn):
    """The same reader, declared unbounded for ``stop=never`` (streaming runners)."""

    @beam.DoFn.unbounded_per_element()
    def process(self, element: PartitionRead,
                tracker=beam.DoFn.RestrictionParam(_PartitionRestrictions()),
                watermark_estimator=beam.DoFn.WatermarkEstimatorParam(_WatermarkFromMessages())):
        yield from super().process(element, tracker, watermark_estimator)


class ParseMessagesFn(beam.DoFn):
    """Kafka messages in, articles out; rejects to the ``dead_letter`` output."""

    def __init__(self, max_article_bytes: int, max_dead_letter_bytes: int):
        self.max_article_bytes = max_article_bytes
        self.max_dead_letter_bytes = max_dead_letter_bytes

    def process(self, message: KafkaMessage):
        origin = f"kafka://{message.topic}"
        ingested_at = datetime.fromtimestamp(message.timestamp_ms / 1000, tz=timezone.utc)
        raw = message.value or b""
        key = message.key.decode("utf-8", "replace") if message.key else None
        try:
            check_size(len(raw), self.max_article_bytes, "message", key)
            if not raw.strip():
                raise RejectedRecord("empty", "the message has no value (empty or tombstone)", key)
            article = article_from_json_bytes(
                raw, origin=origin, origin_offset=message.offset,
                origin_partition=message.partition, ingested_at=ingested_at,
                max_article_bytes=self.max_article_bytes, default_id=key)
        except RejectedRecord as e:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_OUTPUT, make_dead_letter(
                reason=e.reason, error=str(e), origin=origin, origin_partition=message.partition,
                origin_offset=message.offset, article_id=e.article_id or key, raw=raw,
                raw_size=len(raw), ingested_at=ingested_at,
                max_raw_bytes=self.max_dead_letter_bytes))
            return
        yield article


class ReadKafkaMessages(beam.PTransform):
    """Reads a topic's raw messages as ``KafkaMessage`` elements stamped with their times."""

    def __init__(self, spec: KafkaSpec):
        super().__init__()
        self.spec = spec

    def expand(self, pbegin):
        reader = _ReadUnboundedPartitionFn if self.spec.unbounded else ReadPartitionFn
        return (pbegin
                | "Impulse" >> beam.Impulse()
                | "PlanPartitions" >> beam.ParDo(_PlanPartitionsFn(self.spec))
                | "SpreadPartitions" >> beam.Reshuffle()
                | "ReadPartitions" >> beam.ParDo(reader(self.spec)))


class ReadKafkaArticles(beam.PTransform):
    """Reads articles from a Kafka topic.

    Returns a ``DoOutputsTuple`` with ``articles`` and ``dead_letter`` outputs;
    both carry the message's partition and offset (``origin_partition``,
    ``origin_offset``), which ``CommitOffsets`` commits once they are written.
    """

    def __init__(self, spec: KafkaSpec, max_article_bytes: int, max_dead_letter_bytes: int):
        super().__init__()
        self.spec = spec
        self.parse = ParseMessagesFn(max_article_bytes, max_dead_letter_bytes)

    def expand(self, pbegin):
        return (pbegin
                | "ReadMessages" >> ReadKafkaMessages(self.spec)
                | "ParseMessages" >> beam.ParDo(self.parse).with_outputs(
                    DEAD_LETTER_OUTPUT, main="articles"))


class CommitOffsets(beam.PTransform):
    """Commits the consumer group's offsets once the rows they cover are written.

    Input: every article and dead-letter row of the read. ``written`` is the
    sinks' output: this step waits for it (as a side input), so an offset is
    committed only after the rows before it are in finalised Parquet files.
    Output: the committed ``{partition: offset}`` as JSON.
    """

    def __init__(self, spec: KafkaSpec, written):
        super().__init__()
        if not spec.group_id:
            raise ValueError("committing offsets needs a --group_id")
        self.spec = spec
        self.written = written

    def expand(self, rows):
        spec = self.spec

        def commit(next_offsets, _written):
            from kafka import TopicPartition
            from kafka.structs import OffsetAndMetadata
            offsets = dict(next_offsets)
            if not offsets:
                return
            consumer = spec.consumer()
            try:
                consumer.commit({TopicPartition(spec.topic, p): OffsetAndMetadata(o, "", -1)
                                 for p, o in offsets.items()})
            finally:
                consumer.close()
            yield json.dumps(offsets, sort_keys=True)

        return (rows
                | "NextOffset" >> beam.Map(
                    lambda row: (row["origin_partition"], row["origin_offset"] + 1))
                | "HighestPerPartition" >> beam.CombinePerKey(max)
                | "Gather" >> beam.combiners.ToList()
                | "Commit" >> beam.FlatMap(commit, beam.pvalue.AsList(self.written)))
