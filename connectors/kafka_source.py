"""The Kafka source: a pure-Python splittable DoFn over kafka-python.

Beam's own ``ReadFromKafka`` is a Java transform that needs an expansion
service and jars at run time. This one is plain Python, so the same code runs
on the DirectRunner, Prism, Flink and Dataflow.

How it reads:

1. ``PlanTopic`` (once, on a worker) lists the topic's partitions and turns
   ``start`` and ``stop`` into one offset range per partition
   (``plan_partitions``); together they make one element, the whole topic.
2. ``ReadTopic``, a splittable DoFn, reads all those ranges with ``assign()``
   and ``seek()`` (no consumer-group rebalancing inside workers), polling with
   a timeout. When no partition has anything new, or a read has gone on for
   ``max_read_seconds``, it checkpoints itself (``defer_remainder``) and the
   runner resumes it later; a checkpoint is the only split it accepts. Its
   watermark is the minimum of one watermark per partition: each follows its
   partition's message timestamps and, once the partition is caught up,
   advances with the clock (less ``idle_slack_seconds``) so that an idle
   partition does not hold windows open.
3. ``ParseMessages`` turns each message into an article, or a dead-letter row
   naming its topic, partition and offset (``parse_message``).

A bounded read in event-time slices (``pipeline.graph.batch_slices``) is planned
once instead: ``read_event_times`` plans it, reads the ranges with a plain
consumer for the articles' event times, and pins the offsets it covered, which
every slice's read is given in place of ``PlanTopic``.

Start positions: ``committed`` (the consumer group's offsets, else the
earliest), ``earliest``, ``latest``, or a time (ISO 8601 or epoch
milliseconds: the first offset at or after it). Stop conditions: ``end`` (the
end offsets seen at start: bounded, for batch runs and backfills), ``never``
(unbounded, for streaming runners), ``N`` (at most N messages per partition)
or ``Ns`` (read for N seconds).

Offsets are committed to the consumer group only once the runner holds what
was read, so the read is at-least-once; the article sink skips ids already in
the dataset, so the dataset is effectively once. A bounded read commits with
``CommitOffsets`` after the rows have reached the Parquet files. An unbounded
read with a group commits as the runner finalizes its bundles (see
``KafkaSpec.commit_on_finalize``). A sliced read commits its pinned stops once
the last slice has written (``commit_read``).

Planning, reading and committing each wait out a broker outage of up to
``KafkaSpec.wait_seconds`` (``wait_for_broker``), then fail with
``BrokerUnavailable``.
"""

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import (Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple,
                    TypeVar)

import apache_beam as beam
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker, WatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.utils.timestamp import Duration, Timestamp

from connectors.file_source import ARTICLE, DEAD_LETTER, WHOLE, EventSlice
from connectors.records import (READ_COUNT_OUTPUT, RejectedRecord, article_from_json_bytes,
                                check_size)
from schemas.article import event_time
from schemas.dead_letter import DEAD_LETTER_OUTPUT, make_dead_letter

log = logging.getLogger(__name__)

# An offset range with no end: Kafka offsets are signed 64-bit.
NO_END = 2**63 - 1
START_MODES = ("committed", "earliest", "latest")
# How long one attempt at a Kafka call may take (bootstrapping a client, asking
# for offsets, committing): during an outage each attempt fails after this long,
# so the wait's deadline and its log lines keep to about this much.
ATTEMPT_MS = 10_000
WAIT_LOG_EVERY_SECONDS = 5.0
RETRY_PAUSE_SECONDS = 0.5
# A prefix that marks an article id made from a message key that is not UTF-8.
HEX_KEY_PREFIX = "hex:"
T = TypeVar("T")


class BrokerUnavailable(RuntimeError):
    """The Kafka brokers did not answer for the whole ``KafkaSpec.wait_seconds``."""


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
    idle_slack_seconds: float = 2.0  # how far a caught-up partition's watermark trails the clock
    wait_seconds: float = 300.0  # how long a broker outage is waited out (--kafka_wait_seconds)

    def __post_init__(self):
        if not self.bootstrap_servers or not self.topic:
            raise ValueError("Kafka needs --bootstrap_servers and --topic")
        if not self.wait_seconds >= 0:
            raise ValueError(f"--kafka_wait_seconds must be 0 or more, got {self.wait_seconds}")
        if self.start == "committed" and not self.group_id:
            raise ValueError("--start=committed needs a --group_id")
        if self.start not in START_MODES:
            parse_start_time(self.start)  # raises on a bad value
        parse_stop(self.stop)

    @property
    def unbounded(self) -> bool:
        return is_endless(self.stop)

    @property
    def commit_on_finalize(self) -> bool:
        """Whether the reader itself commits the group's offsets: unbounded reads with a group.

        It commits as the runner finalizes each bundle, which the runner does
        only after it has durably committed the bundle's output (the semantic
        of Beam's KafkaIO ``commitOffsetsInFinalize``), so the group's offsets
        never run ahead of what the runner holds. A finalization that comes late
        can only move the group back (re-reads), never ahead. Elements the
        runner holds are lost if the job is cancelled rather than drained.
        Flink finalizes bundles only when a checkpoint completes, so there it
        needs ``--checkpointing_interval`` (``pipeline.graph.build`` checks).
        Bounded reads commit with ``CommitOffsets`` once the rows are written.
        """
        return self.unbounded and bool(self.group_id)

    def consumer(self, **overrides):
        """A kafka-python consumer; ``client_config`` overrides its defaults here.

        Its reconnection backoff is capped at 1 s (kafka-python's own cap is
        30 s), so a broker that comes back is seen within about a second, and
        it gives up bootstrapping after one attempt's time, or the whole wait
        if that is shorter (at least 1 s).
        """
        from kafka import KafkaConsumer
        bootstrap_ms = min(ATTEMPT_MS, max(1000, int(self.wait_seconds * 1000)))
        settings = {"bootstrap_servers": self.bootstrap_servers.split(","),
                    "enable_auto_commit": False, "group_id": self.group_id,
                    "auto_offset_reset": "earliest", "reconnect_backoff_max_ms": 1000,
                    "bootstrap_timeout_ms": bootstrap_ms, **self.client_config, **overrides}
        return KafkaConsumer(**settings)


def _is_outage(error: Exception) -> bool:
    """Whether ``error`` says the brokers are away or not ready (a retry may work),
    rather than that the request is wrong."""
    from kafka.errors import KafkaError
    return (isinstance(error, ConnectionError)
            or (isinstance(error, KafkaError) and error.retriable))


def wait_for_broker(spec: KafkaSpec, doing: str, operation: Callable[[], T]) -> T:
    """``operation()``, tried again while the brokers are away, for up to ``spec.wait_seconds``.

    While it waits it logs a warning naming the brokers and ``doing`` at most
    every ``WAIT_LOG_EVERY_SECONDS``; once the wait is over it raises
    ``BrokerUnavailable``. An error that is not an outage is raised at once.
    ``operation`` must be safe to repeat.
    """
    began = time.monotonic()
    logged = None
    while True:
        try:
            result = operation()
        except Exception as error:
            if not _is_outage(error):
                raise
            waited = time.monotonic() - began
            if waited >= spec.wait_seconds:
                raise BrokerUnavailable(
                    f"the Kafka broker at {spec.bootstrap_servers} did not answer for "
                    f"{waited:.0f} s while {doing} (--kafka_wait_seconds="
                    f"{spec.wait_seconds:g}); the last error: {error!r}") from error
            if logged is None or time.monotonic() - logged >= WAIT_LOG_EVERY_SECONDS:
                log.warning("waiting for the Kafka broker at %s while %s: %r "
                            "(%.0f s of --kafka_wait_seconds=%g)", spec.bootstrap_servers,
                            doing, error, waited, spec.wait_seconds)
                logged = time.monotonic()
            time.sleep(min(RETRY_PAUSE_SECONDS, spec.wait_seconds - waited))
            continue
        if logged is not None:
            log.info("the Kafka broker at %s answers again after %.0f s (%s)",
                        spec.bootstrap_servers, time.monotonic() - began, doing)
        return result


def article_id_from_key(key: Optional[bytes]) -> Optional[str]:
    """The article id a message key gives: the key itself when it is UTF-8 text, else
    ``hex:`` and its bytes in hex, so that no two keys give one id (a UTF-8 key that
    itself begins with ``hex:`` is written in hex too). None for no key or an empty one."""
    if not key:
        return None
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or text.startswith(HEX_KEY_PREFIX):
        return HEX_KEY_PREFIX + key.hex()
    return text


def parse_start_time(start: str) -> int:
    """Epoch milliseconds of a ``--start`` time (ISO 8601, naive = UTC, or epoch ms)."""
    if start.isdigit():
        return int(start)
    moment = datetime.fromisoformat(start)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def is_endless(stop: str) -> bool:
    """Whether ``--stop`` asks for a read that never ends (a stream)."""
    return stop == "never"


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
    earliest = consumer.beginning_offsets(tps, timeout_ms=ATTEMPT_MS)
    latest = consumer.end_offsets(tps, timeout_ms=ATTEMPT_MS)
    if spec.start == "earliest":
        starts = earliest
    elif spec.start == "latest":
        starts = latest
    elif spec.start == "committed":
        starts = {tp: consumer.committed(tp, timeout_ms=ATTEMPT_MS) or earliest[tp]
                  for tp in tps}
    else:
        at = consumer.offsets_for_times({tp: parse_start_time(spec.start) for tp in tps},
                                        timeout_ms=ATTEMPT_MS)
        starts = {tp: at[tp].offset if at.get(tp) else latest[tp] for tp in tps}
    mode, amount = parse_stop(spec.stop)
    for tp in tps:
        start = max(starts[tp], earliest[tp])
        stop = {"end": latest[tp], "count": start + int(amount)}.get(mode, NO_END)
        deadline = now + amount if mode == "seconds" else None
        yield PartitionRead(tp.topic, tp.partition, start, max(start, stop), deadline)


class PartitionRange(NamedTuple):
    """Offsets [start, stop) of one partition."""

    partition: int
    start: int
    stop: int


@dataclass(frozen=True)
class TopicRead:
    """The element a topic is read as: every partition's range, and a wall-clock deadline."""

    topic: str
    ranges: Tuple[PartitionRange, ...]
    deadline: Optional[float] = None  # epoch seconds


def plan_topic(spec: KafkaSpec) -> TopicRead:
    """The read of ``spec.topic`` as one element (``plan_partitions`` now), waiting out
    a broker outage."""
    def plan():
        consumer = spec.consumer(group_id=spec.group_id)
        try:
            return list(plan_partitions(spec, consumer, time.time()))
        finally:
            consumer.close()

    partitions = wait_for_broker(spec, f"planning the read of topic {spec.topic}", plan)
    log.info("reading Kafka topic %s at %s: %s", spec.topic, spec.bootstrap_servers,
             ", ".join(f"partition {r.partition} offsets {r.start}.."
                       f"{'' if r.stop == NO_END else r.stop}" for r in partitions))
    return TopicRead(spec.topic,
                     tuple(PartitionRange(r.partition, r.start, r.stop) for r in partitions),
                     deadline=partitions[0].deadline)


def _assign_at(consumer, topic: str, starts: Dict[int, int]) -> Dict[int, Any]:
    """Assigns ``consumer`` the partitions of ``starts`` (partition: offset), each
    resumed (an earlier read may have paused it) and at its offset; returns their
    ``TopicPartition`` by partition."""
    from kafka import TopicPartition
    tps = {p: TopicPartition(topic, p) for p in starts}
    consumer.assign(list(tps.values()))
    consumer.resume(*tps.values())
    for p, start in starts.items():
        consumer.seek(tps[p], start)
    return tps


def _positions(spec: KafkaSpec, consumer, tps: Dict[int, Any], doing: str
               ) -> Dict[int, Optional[int]]:
    """``consumer``'s next offset in each partition of ``tps``. position() may ask the
    broker (to validate an offset), so an outage is waited out here."""
    return wait_for_broker(spec, doing, lambda: {p: consumer.position(tp)
                                                 for p, tp in tps.items()})


def _reached(positions: Dict[int, Optional[int]], stops: Dict[int, int]) -> List[int]:
    """The partitions whose next offset has reached their stop."""
    return [p for p, position in positions.items()
            if position is not None and position >= stops[p]]


def read_topic_plainly(spec: KafkaSpec, planned: TopicRead,
                       reached: Dict[int, int]) -> Iterator[KafkaMessage]:
    """The messages of ``planned``'s ranges, with one consumer outside Beam, until every
    range is read to its stop or the deadline has passed. ``reached`` gets each partition's
    next offset as it goes: where the read ended, once it has."""
    unfinished = {r.partition: r.stop for r in planned.ranges if r.start < r.stop}
    reached.update({r.partition: r.start for r in planned.ranges})
    if not unfinished:
        return
    consumer = wait_for_broker(spec, "connecting the reader",
                               lambda: spec.consumer(group_id=None))
    doing = f"reading topic {planned.topic}"
    try:
        starts = {r.partition: r.start for r in planned.ranges if r.partition in unfinished}
        tps = _assign_at(consumer, planned.topic, starts)

        def finish(partition):
            reached[partition] = unfinished.pop(partition)
            consumer.pause(tps[partition])

        while unfinished:
            if planned.deadline is not None and time.time() >= planned.deadline:
                return
            records = wait_for_broker(spec, doing, lambda: consumer.poll(
                timeout_ms=spec.poll_timeout_ms, max_records=500))
            if not records:
                # A poll just comes back empty in an outage: asking for the end offsets
                # is how it is noticed, and waited out.
                wait_for_broker(spec, doing, lambda: consumer.end_offsets(
                    [tps[p] for p in unfinished], timeout_ms=ATTEMPT_MS))
                for p in _reached(_positions(spec, consumer, {p: tps[p] for p in unfinished},
                                             doing), unfinished):
                    finish(p)
                continue
            for tp, batch in records.items():
                for message in batch if tp.partition in unfinished else ():
                    if message.offset >= unfinished[tp.partition]:
                        finish(tp.partition)
                        break
                    reached[tp.partition] = message.offset + 1
                    yield KafkaMessage(message.topic, message.partition, message.offset,
                                       message.timestamp, message.key, message.value)
    finally:
        consumer.close()


def commit_read(spec: KafkaSpec, read: TopicRead) -> None:
    """Commits, to ``spec.group_id``, the stop of every range of ``read`` that held any
    offsets: what ``CommitOffsets`` commits once a read's rows are written."""
    _commit(spec, {r.partition: r.stop for r in read.ranges if r.start < r.stop})


class _PlanTopicFn(beam.DoFn):
    def __init__(self, spec: KafkaSpec):
        self.spec = spec

    def process(self, _):
        yield plan_topic(self.spec)


class TopicRangesTracker(RestrictionTracker):
    """Claims ``(partition, offset)`` positions in a topic's ranges; each partition in order.

    The restriction is a tuple of ``PartitionRange``. Claiming an offset at or
    past a partition's stop fails and marks that partition read to its end.

    It splits only at the current positions (a checkpoint), never in the middle
    of a range: a runner's dynamic split of an open range ``[pos, 2**63-1)``
    would start a residual near offset 4.6e18; Kafka answers a seek past the
    end by resetting to the earliest offset, and the claim fails. Prism splits
    this way under a backlog.
    """

    def __init__(self, ranges: Tuple[PartitionRange, ...]):
        self._ranges = ranges
        self._next = {r.partition: r.start for r in ranges}  # the next offset to claim

    def current_restriction(self) -> Tuple[PartitionRange, ...]:
        return self._ranges

    def try_claim(self, position: Tuple[int, int]) -> bool:
        partition, offset = position
        if partition not in self._next:
            raise ValueError(f"partition {partition} is not in {self._ranges}")
        if offset < self._next[partition]:
            raise ValueError(f"partition {partition}: offset {offset} claimed after "
                             f"{self._next[partition] - 1}")
        stop = next(r.stop for r in self._ranges if r.partition == partition)
        if offset >= stop:
            self._next[partition] = stop
            return False
        self._next[partition] = offset + 1
        return True

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder > 0:
            return None
        primary = tuple(r._replace(stop=self._next[r.partition]) for r in self._ranges)
        residual = tuple(r._replace(start=self._next[r.partition]) for r in self._ranges)
        if all(r.start >= r.stop for r in residual):
            return None
        self._ranges = primary
        return primary, residual

    def check_done(self):
        unread = [r._replace(start=self._next[r.partition]) for r in self._ranges
                  if self._next[r.partition] < r.stop]
        if unread:
            raise ValueError(f"offsets left unread: {unread}")

    def current_progress(self) -> RestrictionProgress:
        # A fraction, as OffsetRestrictionTracker reports it: reported as completed
        # and remaining work instead, Prism's split requests failed in the SDK
        # (a NaN split point).
        done = sum(self._next[r.partition] - r.start for r in self._ranges)
        left = sum(_size(r.stop - self._next[r.partition]) for r in self._ranges)
        return RestrictionProgress(fraction=done / (done + left) if done + left else 1.0)

    def is_bounded(self) -> bool:
        return all(r.stop != NO_END for r in self._ranges)


def _size(offsets: int) -> int:
    """An open range counts as 2**32 offsets: big, and still summable."""
    return min(offsets, 1 << 32)


class _TopicRestrictions(RestrictionProvider):
    """The topic's ranges, read as one restriction (never split up front)."""

    def initial_restriction(self, element: TopicRead) -> Tuple[PartitionRange, ...]:
        return element.ranges

    def create_tracker(self, restriction) -> TopicRangesTracker:
        return TopicRangesTracker(restriction)

    def restriction_size(self, element, restriction) -> int:
        return sum(_size(r.stop - r.start) for r in restriction)

    def split(self, element, restriction):
        yield restriction


class PartitionWatermarks(WatermarkEstimator):
    """One watermark per partition; the read's watermark is their minimum.

    A partition with no watermark yet (nothing read from it, and not known to
    be caught up) holds the read's watermark back: it is None until every
    partition has one.
    """

    def __init__(self, state: Dict[int, Optional[Timestamp]]):
        self._watermarks = dict(state)

    def advance(self, partition: int, timestamp: Timestamp) -> None:
        current = self._watermarks[partition]
        if current is None or timestamp > current:
            self._watermarks[partition] = timestamp

    def observe_timestamp(self, timestamp):
        """Unused: the reader advances each partition's watermark itself."""

    def current_watermark(self) -> Optional[Timestamp]:
        watermarks = list(self._watermarks.values())
        if not watermarks or any(w is None for w in watermarks):
            return None
        return min(watermarks)

    def get_estimator_state(self) -> Dict[int, Optional[Timestamp]]:
        return dict(self._watermarks)


class _PartitionWatermarksProvider(WatermarkEstimatorProvider):
    def initial_estimator_state(self, element: TopicRead, restriction):
        return {r.partition: None for r in element.ranges}

    def create_watermark_estimator(self, estimator_state) -> PartitionWatermarks:
        return PartitionWatermarks(estimator_state)


# Why one element per topic, not one per partition: Prism (2.77) keeps ONE
# output watermark per stage and overwrites it with the residual watermarks of
# whichever bundle finished last. With an element per partition, an idle
# partition's watermark ("now") then overtakes another partition's unread
# backlog, which arrives late and is dropped by every window downstream (5,534
# of 6,000 backlog messages in a test). One element carries the minimum over
# all partitions in every residual, which is right on every runner. The price:
# one worker reads the whole topic.
class ReadTopicFn(beam.DoFn):
    """Reads a topic's partition ranges; checkpoints when idle or after ``max_read_seconds``."""

    def __init__(self, spec: KafkaSpec, idle_resume_seconds: float = 1.0):
        self.spec = spec
        self.idle_resume_seconds = idle_resume_seconds
        self._consumer = None

    def setup(self):
        # One consumer per worker thread, re-assigned per element: no group
        # membership, so no rebalancing while workers come and go.
        self._consumer = wait_for_broker(self.spec, "connecting the reader",
                                         lambda: self.spec.consumer(group_id=None))

    def teardown(self):
        if self._consumer is not None:
            self._consumer.close()

    def process(self, element: TopicRead,
                tracker=beam.DoFn.RestrictionParam(_TopicRestrictions()),
                watermarks=beam.DoFn.WatermarkEstimatorParam(_PartitionWatermarksProvider())):
        yield from self._read(element, tracker, watermarks, claimed={})

    def _read(self, element: TopicRead, tracker, watermarks, claimed: Dict[int, int]):
        """Yields the messages; ``claimed`` gets each partition's next offset as it goes."""
        unfinished = {r.partition: r for r in tracker.current_restriction() if r.start < r.stop}
        if not unfinished:
            return
        tps = _assign_at(self._consumer, element.topic,
                         {p: r.start for p, r in unfinished.items()})

        def finish(partition):
            tracker.try_claim((partition, unfinished.pop(partition).stop))  # marks it read
            self._consumer.pause(tps[partition])

        doing = f"reading topic {element.topic}"
        began = time.monotonic()
        while unfinished:
            if element.deadline is not None and time.time() >= element.deadline:
                for p in list(unfinished):  # past the deadline: every range is done
                    finish(p)
                return
            records = wait_for_broker(self.spec, doing, lambda: self._consumer.poll(
                timeout_ms=self.spec.poll_timeout_ms, max_records=500))
            if not records:
                positions = _positions(self.spec, self._consumer,
                                       {p: tps[p] for p in unfinished}, doing)
                for p in _reached(positions, {p: r.stop for p, r in unfinished.items()}):
                    finish(p)  # nothing left in the range
                if unfinished:
                    self._advance_caught_up(tps, unfinished, watermarks)
                    tracker.defer_remainder(Duration.of(self.idle_resume_seconds))
                return
            for tp, batch in records.items():
                for message in batch:
                    if not tracker.try_claim((tp.partition, message.offset)):
                        finish(tp.partition)  # past its stop
                        break
                    claimed[tp.partition] = message.offset + 1
                    timestamp = Timestamp.of(message.timestamp / 1000)
                    watermarks.advance(tp.partition, timestamp)
                    yield beam.window.TimestampedValue(KafkaMessage(
                        message.topic, message.partition, message.offset, message.timestamp,
                        message.key, message.value), timestamp)
            if unfinished and time.monotonic() - began >= self.spec.max_read_seconds:
                self._advance_caught_up(tps, unfinished, watermarks)
                tracker.defer_remainder()  # let the runner commit this much output
                return

    def _advance_caught_up(self, tps, unfinished, watermarks) -> None:
        """Moves the watermark of each caught-up partition to the clock, less the slack.

        The slack leaves room for messages produced just now whose (producer
        or broker) timestamps are slightly earlier than this worker's clock.
        Asking for the end offsets is also how the reader notices an outage (a
        poll just comes back empty): it waits here until the broker answers.
        """
        now = Timestamp.now() - Duration.of(self.spec.idle_slack_seconds)
        doing = f"reading topic {self.spec.topic}"
        positions = _positions(self.spec, self._consumer, {p: tps[p] for p in unfinished}, doing)
        ends = wait_for_broker(
            self.spec, doing, lambda: self._consumer.end_offsets([tps[p] for p in unfinished],
                                                                 timeout_ms=ATTEMPT_MS))
        for p in _reached(positions, {p: ends[tps[p]] for p in unfinished}):
            watermarks.advance(p, now)


class _ReadUnboundedTopicFn(ReadTopicFn):
    """The same reader, declared unbounded for ``stop=never`` (streaming runners)."""

    @beam.DoFn.unbounded_per_element()
    def process(self, element: TopicRead,
                tracker=beam.DoFn.RestrictionParam(_TopicRestrictions()),
                watermarks=beam.DoFn.WatermarkEstimatorParam(_PartitionWatermarksProvider())):
        yield from self._read(element, tracker, watermarks, claimed={})


# Only a read with a group declares a bundle finalizer. The SDK worker keeps a
# bundle that asked to be finalized, with its whole bundle processor (this
# DoFn, its consumer, every step fused with it), until the runner finalizes it;
# Flink does so only when a checkpoint completes, so without checkpointing a
# finalizer on every read (one a second when idle) grew the worker by about
# 30 KB an article on a live stream, and never committed.
class _ReadAndCommitTopicFn(ReadTopicFn):
    """The unbounded reader that commits, as the runner finalizes each bundle, the
    next offset of the last message the bundle claimed in each partition
    (``KafkaSpec.commit_on_finalize``)."""

    # The finalizer comes before the tracker: Beam passes it by position and
    # the tracker and watermark estimator by name.
    @beam.DoFn.unbounded_per_element()
    def process(self, element: TopicRead, finalizer=beam.DoFn.BundleFinalizerParam,
                tracker=beam.DoFn.RestrictionParam(_TopicRestrictions()),
                watermarks=beam.DoFn.WatermarkEstimatorParam(_PartitionWatermarksProvider())):
        claimed = {}
        # Registered even when the bundle claims nothing: declaring a finalizer
        # makes Prism ask to finalize every bundle, and the SDK answers that
        # request with an error for a bundle that registered no callback.
        finalizer.register(lambda: _commit_forward(self.spec, claimed))
        yield from self._read(element, tracker, watermarks, claimed)


# Flink finalizes every bundle finished before a checkpoint when it completes,
# and the SDK worker runs their callbacks in parallel threads, so an earlier
# bundle's commit could land after a later one's and leave the group behind
# the end once the stream goes quiet. (The cluster test once saw the group stay
# at 1,351 of 1,407 for two minutes after a broker restart while checkpoints
# went on completing; this is the one cause we found.)
_COMMIT_LOCK = threading.Lock()
_COMMITTED_HERE: Dict[Tuple[str, str, str, int], int] = {}


def _commit_forward(spec: KafkaSpec, next_offsets: Dict[int, int]) -> None:
    """``_commit`` of the partitions whose next offset is past the one this process
    last committed for the group, in one commit at a time."""
    with _COMMIT_LOCK:
        key = (spec.bootstrap_servers, spec.group_id, spec.topic)
        ahead = {p: o for p, o in next_offsets.items() if o > _COMMITTED_HERE.get((*key, p), -1)}
        _commit(spec, ahead)
        for p, o in ahead.items():
            _COMMITTED_HERE[(*key, p)] = o


def _commit(spec: KafkaSpec, next_offsets: Dict[int, int]) -> None:
    """Commits ``{partition: next offset}`` to ``spec.group_id`` with a short-lived
    consumer, waiting out a broker outage (``wait_for_broker``)."""
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata
    if not next_offsets:
        return
    offsets = {TopicPartition(spec.topic, p): OffsetAndMetadata(o, "", -1)
               for p, o in next_offsets.items()}

    def commit_once():
        consumer = spec.consumer()
        try:
            consumer.commit(offsets, timeout_ms=ATTEMPT_MS)
        finally:
            consumer.close()

    wait_for_broker(spec, f"committing the offsets of group {spec.group_id} on topic "
                          f"{spec.topic}", commit_once)


def parse_message(message: KafkaMessage, max_article_bytes: int,
                  max_dead_letter_bytes: int) -> Tuple[str, dict]:
    """``(ARTICLE, article)``, or ``(DEAD_LETTER, its dead-letter row)`` naming its
    topic, partition and offset."""
    origin = f"kafka://{message.topic}"
    ingested_at = datetime.fromtimestamp(message.timestamp_ms / 1000, tz=timezone.utc)
    raw = message.value or b""
    key = article_id_from_key(message.key)
    try:
        check_size(len(raw), max_article_bytes, "message", key)
        if not raw.strip():
            raise RejectedRecord("empty", "the message has no value (empty or tombstone)", key)
        return ARTICLE, article_from_json_bytes(
            raw, origin=origin, origin_offset=message.offset,
            origin_partition=message.partition, ingested_at=ingested_at,
            max_article_bytes=max_article_bytes, default_id=key)
    except RejectedRecord as e:
        return DEAD_LETTER, make_dead_letter(
            reason=e.reason, error=str(e), origin=origin, origin_partition=message.partition,
            origin_offset=message.offset, article_id=e.article_id or key, raw=raw,
            raw_size=len(raw), ingested_at=ingested_at, max_raw_bytes=max_dead_letter_bytes)


def read_event_times(spec: KafkaSpec, max_article_bytes: int,
                     max_dead_letter_bytes: int) -> Tuple[TopicRead, List[datetime]]:
    """Plans the read once and reads it plainly (``read_topic_plainly``): the read pinned
    to the offsets it covered (stops where it ended, no deadline), for every pass over the
    same messages, and the event time of every article in it."""
    planned = plan_topic(spec)
    reached: Dict[int, int] = {}
    times = []
    for message in read_topic_plainly(spec, planned, reached):
        kind, record = parse_message(message, max_article_bytes, max_dead_letter_bytes)
        if kind == ARTICLE:
            times.append(event_time(record))
    pinned = TopicRead(planned.topic, tuple(r._replace(stop=reached[r.partition])
                                            for r in planned.ranges))
    return pinned, times


class ParseMessagesFn(beam.DoFn):
    """Kafka messages in, the articles of ``event_slice`` out; rejects to the
    ``dead_letter`` output (when the slice keeps them), and a 1 per message kept to
    ``read_count``."""

    def __init__(self, max_article_bytes: int, max_dead_letter_bytes: int,
                 event_slice: EventSlice = WHOLE):
        self.max_article_bytes = max_article_bytes
        self.max_dead_letter_bytes = max_dead_letter_bytes
        self.event_slice = event_slice

    def process(self, message: KafkaMessage):
        kind, record = parse_message(message, self.max_article_bytes, self.max_dead_letter_bytes)
        if self.event_slice.keeps(kind, record):  # else another slice's: it reads and counts it
            yield beam.pvalue.TaggedOutput(READ_COUNT_OUTPUT, 1)
            yield (record if kind == ARTICLE
                   else beam.pvalue.TaggedOutput(DEAD_LETTER_OUTPUT, record))


class ReadKafkaMessages(beam.PTransform):
    """Reads a topic's raw messages as ``KafkaMessage`` elements stamped with their times."""

    def __init__(self, spec: KafkaSpec, pinned: Optional[TopicRead] = None):
        super().__init__()
        self.spec = spec
        self.pinned = pinned

    def expand(self, pbegin):
        reader = (ReadTopicFn if not self.spec.unbounded
                  else _ReadAndCommitTopicFn if self.spec.commit_on_finalize
                  else _ReadUnboundedTopicFn)
        pinned = self.pinned
        plan = (beam.Map(lambda _: pinned) if pinned is not None
                else beam.ParDo(_PlanTopicFn(self.spec)))
        return (pbegin
                | "Impulse" >> beam.Impulse()
                | "PlanTopic" >> plan
                | "ReadTopic" >> beam.ParDo(reader(self.spec)))


class ReadKafkaArticles(beam.PTransform):
    """Reads articles from a Kafka topic.

    Returns a ``DoOutputsTuple`` with ``articles``, ``dead_letter`` and
    ``read_count`` (a 1 per message) outputs; the first two carry the message's
    partition and offset (``origin_partition``, ``origin_offset``), which
    ``CommitOffsets`` commits once they are written.
    ``pinned``: read these offsets (``read_event_times``) instead of planning the read;
    ``event_slice``: keep only its articles and dead letters (``read_count`` counts those).
    """

    def __init__(self, spec: KafkaSpec, max_article_bytes: int, max_dead_letter_bytes: int,
                 pinned: Optional[TopicRead] = None, event_slice: EventSlice = WHOLE):
        super().__init__()
        self.spec = spec
        self.pinned = pinned
        self.parse = ParseMessagesFn(max_article_bytes, max_dead_letter_bytes, event_slice)

    def expand(self, pbegin):
        return (pbegin
                | "ReadMessages" >> ReadKafkaMessages(self.spec, self.pinned)
                | "ParseMessages" >> beam.ParDo(self.parse).with_outputs(
                    DEAD_LETTER_OUTPUT, READ_COUNT_OUTPUT, main="articles"))


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
            offsets = dict(next_offsets)
            if offsets:
                _commit(spec, offsets)
                yield json.dumps(offsets, sort_keys=True)

        return (rows
                | "NextOffset" >> beam.Map(
                    lambda row: (row["origin_partition"], row["origin_offset"] + 1))
                | "HighestPerPartition" >> beam.CombinePerKey(max)
                | "Gather" >> beam.combiners.ToList()
                | "Commit" >> beam.FlatMap(commit, beam.pvalue.AsList(self.written)))
