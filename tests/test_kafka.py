"""The Kafka source, offsets and replay against a real broker (no mocks)."""

import json
import threading
import time
import uuid

import pyarrow.dataset as ds
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from connectors.kafka_source import KafkaSpec, parse_start_time, parse_stop
from connectors.replay import replay
from pipeline.graph import run
from tests.conftest import SEEDS


def rows(path):
    if not path.exists():
        return []
    return ds.dataset(path, format="parquet", partitioning="hive").to_table().to_pylist()


def run_kafka(broker, topic, out, *extra):
    return run(["--bootstrap-servers", broker.bootstrap_servers, "--topic", topic,
                "--output", str(out), *extra])


def fresh_topic():
    return f"t-{uuid.uuid4().hex[:8]}"


def committed(broker, topic, group):
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, group_id=group)
    try:
        partitions = consumer.partitions_for_topic(topic)
        return {p: consumer.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        consumer.close()


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
    assert again["read"] == 4 and again["rows_already_present"] == {"articles": 4}
    ids = [r["article_id"] for r in rows(out / "articles")]
    assert len(ids) == len(set(ids)) == 4


def test_broker_killed_and_restarted_mid_read_loses_and_duplicates_nothing(
        kafka_broker, sib200, tmp_path):
    """The run must read 400 messages per partition; only half exist when it starts, and
    the broker is killed and restarted before the rest are produced."""
    topic = fresh_topic()
    kafka_broker.create_topic(topic, partitions=3)
    with open(sib200 / "eng_Latn" / "train.tsv", encoding="utf-8") as f:
        sentences = [line.split("\t")[2].strip() for line in f][1:]
    per_partition, total = 400, 1200

    def produce(numbers):
        producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
        for i in numbers:
            body = f"{sentences[i % len(sentences)]} (report {i})"
            producer.send(topic, partition=i % 3, key=f"k{i}".encode(),
                          value=json.dumps({"id": f"k{i}", "body": body}).encode())
        producer.flush()
        producer.close()

    produce(range(0, total // 2))
    result = {}
    reader = threading.Thread(target=lambda: result.update(run_kafka(
        kafka_broker, topic, tmp_path / "out", "--group_id", "crash", "--start", "earliest",
        "--stop", str(per_partition), "--embedder", "none")))
    reader.start()
    time.sleep(8)
    assert reader.is_alive(), "the read ended before all its messages existed"
    kafka_broker.kill()
    time.sleep(3)
    kafka_broker.restart()
    produce(range(total // 2, total))
    reader.join(timeout=300)
    assert not reader.is_alive()
    assert result["read"] == total and result["dead_letters"] == 0
    ids = [r["article_id"] for r in rows(tmp_path / "out" / "articles")]
    assert len(ids) == len(set(ids)) == total
    assert committed(kafka_broker, topic, "crash") == {0: 400, 1: 400, 2: 400}


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
    kafka_broker.create_topic(topic, partitions=1)
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


def test_a_partition_range_is_checkpointed_but_never_split_in_the_middle():
    from apache_beam.io.restriction_trackers import OffsetRange

    from connectors.kafka_source import CheckpointOnlyOffsetTracker
    tracker = CheckpointOnlyOffsetTracker(OffsetRange(10, 2**63 - 1))
    assert tracker.try_claim(10)
    assert tracker.try_split(0.5) is None  # a runner's dynamic split is refused
    primary, residual = tracker.try_split(0)  # a checkpoint resumes at the next offset
    assert (primary.start, primary.stop) == (10, 11)
    assert (residual.start, residual.stop) == (11, 2**63 - 1)
