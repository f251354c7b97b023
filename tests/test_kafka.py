"""The Kafka source, offsets and replay against a real broker (no mocks)."""

import json
from datetime import datetime, timedelta, timezone
import logging
import time
import uuid

import pyarrow.dataset as ds
import pytest
from kafka import KafkaConsumer, KafkaProducer

from connectors.kafka_source import NO_END, KafkaSpec, parse_start_time, parse_stop
from connectors.replay import event_times_ms, replay
from pipeline.graph import run
from tests.conftest import SEEDS, committed, wait_until


def rows(path):
    if not path.exists():
        return []
    return ds.dataset(path, format="parquet", partitioning="hive").to_table().to_pylist()


def run_kafka(broker, topic, out, *extra):
    return run(["--bootstrap-servers", broker.bootstrap_servers, "--topic", topic,
                "--output", str(out), *extra])


def fresh_topic():
    return f"t-{uuid.uuid4().hex[:8]}"


def test_replayed_seeds_match_the_file_source_run(kafka_broker, tmp_path):
    topic = fresh_topic()
    report = replay(str(SEEDS), kafka_broker.bootstrap_servers, topic, partitions=3,
                    progress=False)
    assert (report.sent, report.skipped) == (4, 0)
    from_kafka = run_kafka(kafka_broker, topic, tmp_path / "kafka", "--group_id", "g",
                           "--stop", "end")
    run(["--input", str(SEEDS), "--output", str(tmp_path / "files")])
    kafka_rows = {r["article_id"]: r for r in rows(tmp_path / "kafka" / "articles")}
    file_rows = {r["article_id"]: r for r in rows(tmp_path / "files" / "articles")}
    assert from_kafka["read"] == 4
    assert set(kafka_rows) == set(file_rows)
    for article_id, row in kafka_rows.items():
        assert (row["lang"], row["story_id"], row["body"]) == (
            file_rows[article_id]["lang"], file_rows[article_id]["story_id"],
            file_rows[article_id]["body"])
        assert row["origin"] == f"kafka://{topic}" and row["origin_partition"] in (0, 1, 2)
    assert len({r["origin_partition"] for r in kafka_rows.values()}) >= 2


def test_second_run_of_the_group_reads_only_new_messages(kafka_broker, tmp_path):
    topic = fresh_topic()
    replay(str(SEEDS), kafka_broker.bootstrap_servers, topic, partitions=3, progress=False)
    out = tmp_path / "out"
    first = run_kafka(kafka_broker, topic, out, "--group_id", "readers")
    assert first["read"] == 4
    assert sum(o or 0 for o in committed(kafka_broker, topic, "readers").values()) == 4
    more = tmp_path / "more.jsonl"
    more.write_text("\n".join(json.dumps({"id": f"new-{i}", "body": f"Fresh report number {i} "
                                          "about the flood in the northern districts."})
                              for i in range(3)) + "\n")
    replay(str(more), kafka_broker.bootstrap_servers, topic, progress=False)
    second = run_kafka(kafka_broker, topic, out, "--group_id", "readers")
    assert second["read"] == 3 and second["articles"] == 3
    assert sum(o or 0 for o in committed(kafka_broker, topic, "readers").values()) == 7
    assert sorted(r["article_id"] for r in rows(out / "articles")) == sorted(
        [p.stem for p in SEEDS.glob("*.txt")] + ["new-0", "new-1", "new-2"])


def test_rerun_from_the_start_adds_no_duplicate_rows(kafka_broker, tmp_path):
    topic = fresh_topic()
    replay(str(SEEDS), kafka_broker.bootstrap_servers, topic, partitions=3, progress=False)
    out = tmp_path / "out"
    run_kafka(kafka_broker, topic, out, "--start", "earliest")
    again = run_kafka(kafka_broker, topic, out, "--start", "earliest")
    # The ids are in the output's last story window: repeats, before any row is made.
    assert again["read"] == 4 and again["articles"] == 0
    assert again["dead_letters_by_reason"] == {"duplicate_article_id": 4}
    ids = [r["article_id"] for r in rows(out / "articles")]
    assert len(ids) == len(set(ids)) == 4


def test_bad_messages_are_dead_lettered_with_their_offsets(kafka_broker, tmp_path):
    topic = fresh_topic()
    kafka_broker.create_topic(topic, partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all",
                             max_request_size=16 << 20)
    messages = {
        "ok": json.dumps({"id": "ok", "body": "A normal article about the harvest."}).encode(),
        "malformed_json": b'{"id": "broken", "body": ',
        "empty": b"",
        "invalid_utf8": b'{"id": "latin", "body": "caf\xe9"}',
        "too_large": json.dumps({"id": "big", "body": "x" * (5 << 20)}).encode(),
        "missing_body": b'{"id": "nobody"}',
    }
    offsets = {}
    for name, value in messages.items():
        offsets[name] = producer.send(topic, key=name.encode(), value=value).get(30).offset
    producer.send(topic, key=b"tombstone", value=None).get(30)
    producer.close()

    summary = run_kafka(kafka_broker, topic, tmp_path / "out", "--start", "earliest")
    dead = {r["reason"]: r for r in rows(tmp_path / "out" / "deadletter")}
    assert summary["read"] == len(messages) + 1
    assert summary["articles"] == 1 and summary["dead_letters"] == len(messages)
    assert summary["dead_letters_by_reason"] == {
        "malformed_json": 1, "empty": 2, "invalid_utf8": 1, "too_large": 1, "missing_body": 1}
    for reason in ("malformed_json", "invalid_utf8", "too_large", "missing_body"):
        assert dead[reason]["origin_offset"] == offsets[reason]
        assert dead[reason]["origin"] == f"kafka://{topic}"
        assert dead[reason]["origin_partition"] == 0
    assert dead["too_large"]["raw_size"] == len(messages["too_large"])
    assert dead["too_large"]["raw_truncated"]
    assert dead["malformed_json"]["raw"] == messages["malformed_json"]


def test_binary_keys_give_distinct_article_ids_and_text_keys_stay_as_they_are(
        kafka_broker, tmp_path):
    topic = fresh_topic()
    kafka_broker.create_topic(topic, partitions=1)
    keys = [b"\xff\xfe\x00\x01\xc3", b"\xfe\xff\x00\x01\xc3", "Dhaka-7 ঢাকা".encode(),
            b"hex:fffe0001c3"]  # text that looks like the first key's id
    subjects = ["harvest", "election", "flood", "budget"]
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
    for key, subject in zip(keys, subjects):
        producer.send(topic, key=key, value=json.dumps(
            {"body": f"A report about the {subject} in the northern districts."}).encode())
    producer.flush()
    producer.close()
    summary = run_kafka(kafka_broker, topic, tmp_path / "out", "--start", "earliest",
                        "--embedder", "none")
    assert (summary["articles"], summary["dead_letters"]) == (4, 0)
    by_id = {r["article_id"]: r["body"] for r in rows(tmp_path / "out" / "articles")}
    assert sorted(by_id) == sorted(["hex:fffe0001c3", "hex:feff0001c3", "Dhaka-7 ঢাকা",
                                    "hex:" + b"hex:fffe0001c3".hex()])
    assert "harvest" in by_id["hex:fffe0001c3"] and "election" in by_id["hex:feff0001c3"]


def test_replay_creates_a_topic_that_keeps_old_articles_and_warns_of_one_that_would_not(
        tmp_path, caplog):
    from kafka import TopicPartition

    from connectors.local_kafka import LocalKafkaBroker
    a_year_ago = datetime.now(timezone.utc) - timedelta(days=365)
    feed = tmp_path / "old.jsonl"
    feed.write_text("\n".join(json.dumps({
        "id": f"old-{i}", "body": f"Archived report {i} on the river levels.",
        "published_at": (a_year_ago + timedelta(hours=i)).isoformat()}) for i in range(3)) + "\n")
    # A broker that checks retention every second instead of every 5 minutes.
    checks_often = {"log.retention.check.interval.ms": "1000", "log.initial.task.delay.ms": "0"}
    with LocalKafkaBroker(extra_properties=checks_often) as broker:
        replay(str(feed), broker.bootstrap_servers, "replayed", partitions=1, progress=False)
        # A topic that keeps messages for 1 s shows when a retention check has run.
        broker.create_topic("control", config={"retention.ms": "1000"})
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
        producer.send("control", value=b"{}",
                      timestamp_ms=int(a_year_ago.timestamp() * 1000)).get(30)
        producer.close()
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
        try:
            control, replayed = TopicPartition("control", 0), TopicPartition("replayed", 0)
            wait_until(lambda: consumer.beginning_offsets([control])[control] == 1,
                       "retention check deleting the control topic's message")
            assert consumer.beginning_offsets([replayed])[replayed] == 0
            assert consumer.end_offsets([replayed])[replayed] == 3
        finally:
            consumer.close()

        broker.create_topic("keeps-a-week")  # the broker's default retention: 7 days
        caplog.set_level(logging.WARNING, logger="connectors.replay")
        replay(str(feed), broker.bootstrap_servers, "keeps-a-week", progress=False)
        (warning,) = [r.getMessage() for r in caplog.records if r.name == "connectors.replay"]
        assert "topic keeps-a-week keeps messages for 7.0 days" in warning
        assert "stamped 365.0 days ago" in warning


def test_start_and_stop_settings_are_checked():
    assert parse_stop("end") == ("end", 0)
    assert parse_stop("100") == ("count", 100)
    assert parse_stop("2.5s") == ("seconds", 2.5)
    with pytest.raises(ValueError):
        parse_stop("soon")
    assert parse_start_time("2025-01-01T00:00:00Z") == 1735689600000
    with pytest.raises(ValueError):
        KafkaSpec("127.0.0.1:1", "t", start="committed")  # committed needs a group
    with pytest.raises(ValueError):
        KafkaSpec("127.0.0.1:1", "t", group_id="g", start="whenever")
    with pytest.raises(ValueError, match="kafka_wait_seconds"):
        KafkaSpec("127.0.0.1:1", "t", start="earliest", wait_seconds=-1)


def test_replay_timestamps_are_spread_over_the_past_or_the_send_time():
    articles = [{"published_at": None}] * 3
    now = 1_800_000_000_000
    assert event_times_ms(articles, "spread:60", now) == [now - 60_000, now - 30_000, now]
    assert event_times_ms(articles, "now", now) == [None, None, None]
    with pytest.raises(ValueError, match="spread:SECONDS"):
        event_times_ms(articles, "hourly", now)


def test_replay_command_publishes_the_seeds_with_spread_timestamps(kafka_broker):
    import shutil
    import subprocess
    topic = fresh_topic()
    done = subprocess.run(
        [shutil.which("newsloom"), "replay", "--bootstrap-servers", kafka_broker.bootstrap_servers,
         "--topic", topic, "--partitions", "2", "--rate", "20", "--timestamps", "spread:60"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"sent": 4, "skipped": 0}
    assert "4 sent" in done.stderr  # the progress line's final count
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    consumer.subscribe([topic])
    messages = list(consumer)
    consumer.close()
    assert sorted(m.key.decode() for m in messages) == sorted(p.stem for p in SEEDS.glob("*.txt"))
    stamps = sorted(m.timestamp for m in messages)
    assert 59_000 <= stamps[-1] - stamps[0] <= 61_000
    assert all(json.loads(m.value)["body"] for m in messages)


def test_start_positions_and_stop_limits_plan_the_right_offsets(kafka_broker):
    from connectors.kafka_source import plan_partitions
    topic = fresh_topic()
    # Messages stamped in 2023 are past the default 7-day retention: the broker's
    # retention check (every few minutes) would delete them mid-test.
    kafka_broker.create_topic(topic, partitions=1, config={"retention.ms": "-1"})
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
    base = 1_700_000_000_000
    for i in range(10):
        producer.send(topic, value=b"{}", timestamp_ms=base + i * 1000)
    producer.flush()
    producer.close()

    def plan(**settings):
        spec = KafkaSpec(kafka_broker.bootstrap_servers, topic,
                         client_config={"client_id": "newsloom-test"}, **settings)
        consumer = spec.consumer()
        try:
            (only,) = plan_partitions(spec, consumer, now=1000.0)
            return only
        finally:
            consumer.close()

    assert (plan(start="earliest").start, plan(start="earliest").stop) == (0, 10)
    assert (plan(start="latest").start, plan(start="latest").stop) == (10, 10)
    assert plan(start=str(base + 4500)).start == 5  # first message at or after the time
    assert plan(start="earliest", stop="3").stop == 3
    assert plan(start="earliest", stop="never").stop == 2**63 - 1
    timed = plan(start="earliest", stop="30s")
    assert timed.deadline == 1030.0
    assert plan(start="committed", group_id="nobody-yet").start == 0


@pytest.mark.parametrize("stop,bounded", [("end", True), ("100", True), ("never", False)])
def test_stop_never_makes_an_unbounded_read(stop, bounded):
    import apache_beam as beam
    from connectors.kafka_source import ReadKafkaArticles
    p = beam.Pipeline()
    read = p | ReadKafkaArticles(KafkaSpec("127.0.0.1:1", "t", start="earliest", stop=stop),
                                 1 << 20, 1024)
    assert read.articles.is_bounded is bounded


def test_the_topic_tracker_checkpoints_but_never_splits_a_range_in_the_middle():
    from connectors.kafka_source import PartitionRange, TopicRangesTracker
    tracker = TopicRangesTracker((PartitionRange(0, 10, NO_END), PartitionRange(1, 5, NO_END)))
    assert tracker.try_claim((0, 10)) and tracker.try_claim((0, 12))  # offsets may skip
    assert tracker.try_split(0.5) is None  # a runner's dynamic split is refused
    primary, residual = tracker.try_split(0)  # a checkpoint resumes at the next offsets
    assert primary == ((0, 10, 13), (1, 5, 5))
    assert residual == ((0, 13, NO_END), (1, 5, NO_END))
    tracker.check_done()
    assert not tracker.try_claim((0, 13))  # past the primary's stop
    with pytest.raises(ValueError):
        tracker.try_claim((2, 0))  # not a partition of the read


def test_the_topic_tracker_finishes_partitions_at_their_stop_and_knows_what_is_unread():
    from connectors.kafka_source import PartitionRange, TopicRangesTracker
    tracker = TopicRangesTracker((PartitionRange(0, 0, 3), PartitionRange(1, 0, NO_END)))
    assert tracker.try_claim((0, 0)) and tracker.try_claim((1, 0))
    with pytest.raises(ValueError, match=r"offsets left unread: .*partition=0, start=1, stop=3"):
        tracker.check_done()
    with pytest.raises(ValueError):
        tracker.try_claim((0, 0))  # claimed twice
    assert not tracker.try_claim((0, 3))  # the end offset: partition 0 is read
    assert not tracker.try_claim((1, NO_END))  # the deadline: partition 1 is done too
    tracker.check_done()
    assert tracker.try_split(0) is None  # nothing left to resume
    assert tracker.is_bounded() is False


def test_the_read_watermark_is_the_minimum_over_partitions():
    from apache_beam.utils.timestamp import Timestamp

    from connectors.kafka_source import PartitionWatermarks
    watermarks = PartitionWatermarks({0: None, 1: None})
    watermarks.advance(0, Timestamp(100))
    assert watermarks.current_watermark() is None  # partition 1 holds it back
    watermarks.advance(1, Timestamp(500))
    assert watermarks.current_watermark() == Timestamp(100)
    watermarks.advance(0, Timestamp(50))  # a partition's watermark never goes back
    assert watermarks.current_watermark() == Timestamp(100)
    watermarks.advance(0, Timestamp(900))
    assert watermarks.current_watermark() == Timestamp(500)
    state = watermarks.get_estimator_state()
    assert state == {0: Timestamp(900), 1: Timestamp(500)}
    assert PartitionWatermarks(state).current_watermark() == Timestamp(500)


class FakeFinalizer:
    def __init__(self):
        self.callbacks = []

    def register(self, callback):
        self.callbacks.append(callback)


def read_once(reader, element, restriction, state, **params):
    """One process() call of a Kafka reader, with Beam's own tracker and estimator wrappers;
    returns the messages, the residual restriction and the watermark estimator."""
    from apache_beam.runners.sdf_utils import (RestrictionTrackerView,
                                               ThreadsafeRestrictionTracker,
                                               ThreadsafeWatermarkEstimator)

    from connectors.kafka_source import PartitionWatermarks, TopicRangesTracker
    tracker = ThreadsafeRestrictionTracker(TopicRangesTracker(restriction))
    watermarks = ThreadsafeWatermarkEstimator(PartitionWatermarks(state))
    messages = list(reader.process(element, tracker=RestrictionTrackerView(tracker),
                                   watermarks=watermarks, **params))
    deferred = tracker.deferred_status()
    return messages, deferred[0] if deferred else None, watermarks


def test_an_idle_partition_does_not_move_the_watermark_past_another_ones_backlog(
        kafka_broker):
    from apache_beam.utils.timestamp import Timestamp

    from connectors.kafka_source import PartitionRange, ReadTopicFn, TopicRead
    topic = fresh_topic()
    kafka_broker.create_topic(topic, partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    for i in range(2000):  # a backlog on partition 0 only; partition 1 stays empty
        producer.send(topic, partition=0, value=b"{}", timestamp_ms=an_hour_ago + i)
    producer.flush()
    producer.close()
    spec = KafkaSpec(kafka_broker.bootstrap_servers, topic, start="earliest", stop="never",
                     max_read_seconds=0)
    reader = ReadTopicFn(spec)
    reader.setup()
    try:
        ranges = (PartitionRange(0, 0, NO_END), PartitionRange(1, 0, NO_END))
        element = TopicRead(topic, ranges)
        messages, residual, watermarks = read_once(reader, element, ranges, {0: None, 1: None})
        assert 0 < len(messages) < 2000
        last = messages[-1].value
        assert residual == ((0, last.offset + 1, NO_END), (1, 0, NO_END))
        # Partition 1 is caught up, its watermark is the clock; the read's is partition 0's.
        assert watermarks.current_watermark() == Timestamp.of(last.timestamp_ms / 1000)
        state = watermarks.get_estimator_state()
        assert state[1] > Timestamp.now() - 60

        seen = len(messages)
        while residual is not None and seen < 2000:
            messages, residual, watermarks = read_once(reader, element, residual, state)
            state = watermarks.get_estimator_state()
            seen += len(messages)
        assert seen == 2000
    finally:
        reader.teardown()


def test_an_unbounded_read_with_a_group_commits_what_each_finalized_bundle_claimed(
        kafka_broker):
    from connectors.kafka_source import PartitionRange, TopicRead, _ReadAndCommitTopicFn
    topic = fresh_topic()
    kafka_broker.create_topic(topic, partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
    for i in range(5):
        producer.send(topic, partition=i % 2, value=b"{}")
    producer.flush()
    producer.close()
    spec = KafkaSpec(kafka_broker.bootstrap_servers, topic, group_id="finalized",
                     start="earliest", stop="never")
    assert spec.commit_on_finalize
    assert not KafkaSpec(kafka_broker.bootstrap_servers, topic, group_id="g").commit_on_finalize
    assert not KafkaSpec(kafka_broker.bootstrap_servers, topic, start="earliest",
                         stop="never").commit_on_finalize
    reader = _ReadAndCommitTopicFn(spec)
    reader.setup()
    try:
        ranges = (PartitionRange(0, 0, NO_END), PartitionRange(1, 1, NO_END))
        finalizer = FakeFinalizer()
        messages, residual, _ = read_once(reader, TopicRead(topic, ranges), ranges,
                                          {0: None, 1: None}, finalizer=finalizer)
        assert sorted((m.value.partition, m.value.offset) for m in messages) == [
            (0, 0), (0, 1), (0, 2), (1, 1)]
        assert residual == ((0, 3, NO_END), (1, 2, NO_END))
        assert committed(kafka_broker, topic, "finalized") == {0: None, 1: None}
        (callback,) = finalizer.callbacks
        callback()  # the runner has committed the bundle
        assert committed(kafka_broker, topic, "finalized") == {0: 3, 1: 2}
    finally:
        reader.teardown()


def test_replay_fails_loudly_when_the_broker_refuses_messages(kafka_broker, tmp_path):
    # Kafka 4 refuses a timestamp more than an hour ahead of its clock by default
    # (newsloom keeps publication times up to a day ahead).
    ahead = datetime.now(timezone.utc) + timedelta(hours=12)
    feed = tmp_path / "ahead.jsonl"
    feed.write_text(json.dumps({"id": "ahead", "body": "From the future.",
                                "published_at": ahead.isoformat()}) + "\n")
    with pytest.raises(RuntimeError, match="refused 1 of 1 messages"):
        replay(str(feed), kafka_broker.bootstrap_servers, fresh_topic(), progress=False)
