"""A bounded Kafka read in event-time slices (issue 23, item 1), against a real broker: the
read is planned once and every slice reads those offsets, keeping its own articles; the
group's offsets are committed once the last slice has written."""

import json
import logging
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from pipeline.graph import run
from tests.conftest import committed, seed_text
from tests.test_batch_slices import at, story_fields
from tests.test_pipeline import read_dataset

SLICE_HOURS = "2.5"  # two slices: up to 2.5 h, and after


def messages_over_hours():
    """(key, value, timestamp in ms) of the seeds an hour apart, an exact copy and a near
    copy of 000 in the second slice, a message that is not JSON, a tombstone, and an
    undated article (its event time is its message's time, 4.9 h)."""
    first = seed_text("000")
    near = "\n".join(first.split("\n")[:-1])
    dated = [(f"s{prefix}", seed_text(prefix), h)
             for prefix, h in (("000", 0), ("001", 1.1), ("002", 2.2), ("003", 3.3))]
    dated += [("copy", first, 2.6), ("near", near, 4.4)]
    messages = [(i.encode(), json.dumps({"id": i, "body": body, "published_at":
                                         at(h).isoformat()}, ensure_ascii=False).encode(), h)
                for i, body, h in dated]
    messages += [(b"broken", b"{not json", 1.5), (b"gone", None, 3.0),
                 (b"undated", json.dumps({"body": seed_text("001")}).encode(), 4.9)]
    return [(key, value, int(at(h).timestamp() * 1000)) for key, value, h in messages]


def publish(broker, topic, messages, partitions=2):
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    try:
        for n, (key, value, timestamp_ms) in enumerate(messages):
            producer.send(topic, key=key, value=value, partition=n % partitions,
                          timestamp_ms=timestamp_ms).get(30)
    finally:
        producer.close()


def end_offsets(broker, topic):
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


@pytest.fixture
def topic(kafka_broker):
    name = f"slices-{uuid.uuid4().hex[:8]}"
    # Times of November 2026 would be past the default 7-day retention.
    kafka_broker.create_topic(name, partitions=2, config={"retention.ms": "-1"})
    publish(kafka_broker, name, messages_over_hours())
    return name


def run_kafka(broker, topic, out, *extra):
    return run(["--bootstrap-servers", broker.bootstrap_servers, "--topic", topic,
                "--output", str(out), "--start", "earliest", "--stop", "end",
                "--embedder", "none", "--quiet", *extra])


def rows_by_offset(out):
    """``[(partition, offset)]`` of every article and dead-letter row written."""
    return sorted((row["origin_partition"], row["origin_offset"])
                  for folder in ("articles", "deadletter")
                  for row in read_dataset(out / folder))


def test_sliced_kafka_read_gives_the_rows_of_one_pass_each_message_once(
        kafka_broker, topic, tmp_path):
    ends = end_offsets(kafka_broker, topic)
    one_pass = run_kafka(kafka_broker, topic, tmp_path / "one", "--slice_hours", "0")
    sliced = run_kafka(kafka_broker, topic, tmp_path / "sliced", "--slice_hours", SLICE_HOURS,
                       "--group_id", "sliced")
    assert "slices" not in one_pass
    assert len(sliced["slices"]) == 2
    for summary in (one_pass, sliced):
        assert (summary["read"], summary["articles"], summary["dead_letters"],
                summary["unaccounted"]) == (9, 7, 2, 0)
        assert summary["dead_letters_by_reason"] == {"malformed_json": 1, "empty": 1}
    assert sliced["stories"] == one_pass["stories"]
    expected = story_fields(tmp_path / "one")
    assert expected["copy"][1:4] == ("s000", True, "exact")  # s000 is in the first slice
    assert expected["near"][1:4] == ("s000", True, "near")
    assert story_fields(tmp_path / "sliced") == expected
    every_offset = sorted((p, o) for p, end in ends.items() for o in range(end))
    assert rows_by_offset(tmp_path / "sliced") == rows_by_offset(tmp_path / "one") == every_offset
    # Committed once the last slice had written: the stops planned at the start.
    assert committed(kafka_broker, topic, "sliced") == ends


class WhenLogged(logging.Handler):
    """Calls ``actions[prefix]()`` in the run's own thread when the run logs a message
    starting with ``prefix`` ("slice 1 of": after the read is planned, before any slice
    reads); ``results[prefix]`` is what it returned."""

    def __init__(self, actions):
        super().__init__()
        self.actions, self.results = actions, {}

    def emit(self, record):
        for prefix, action in self.actions.items():
            if prefix not in self.results and record.getMessage().startswith(prefix):
                self.results[prefix] = action()


def test_messages_published_after_the_plan_wait_for_the_next_run(kafka_broker, topic, tmp_path):
    ends = end_offsets(kafka_broker, topic)
    late = [(f"late-{n}".encode(), json.dumps({"id": f"late-{n}", "body": f"Late report {n} "
             "on the flood in the northern districts.", "published_at": at(4).isoformat()}
             ).encode(), int(at(4).timestamp() * 1000)) for n in range(4)]
    hook = WhenLogged({"slice 1 of": lambda: publish(kafka_broker, topic, late) or "published",
                       "slice 2 of": lambda: committed(kafka_broker, topic, "g")})
    graph_log = logging.getLogger("pipeline.graph")
    level = graph_log.level
    graph_log.addHandler(hook)
    graph_log.setLevel(logging.INFO)
    try:
        first = run_kafka(kafka_broker, topic, tmp_path / "out", "--slice_hours", SLICE_HOURS,
                          "--group_id", "g")
    finally:
        graph_log.removeHandler(hook)
        graph_log.setLevel(level)
    assert hook.results["slice 1 of"] == "published" and len(first["slices"]) == 2
    assert first["read"] == 9 and first["articles"] == 7
    assert not [r for r in read_dataset(tmp_path / "out" / "articles")
                if r["article_id"].startswith("late-")]
    # Nothing committed while the last slice had yet to write; then the planned stops.
    assert hook.results["slice 2 of"] == {0: None, 1: None}
    assert committed(kafka_broker, topic, "g") == ends
    # The group's next run starts where this one stopped: the late messages, and only them.
    second = run(["--bootstrap-servers", kafka_broker.bootstrap_servers, "--topic", topic,
                  "--output", str(tmp_path / "out"), "--group_id", "g", "--embedder", "none",
                  "--quiet"])
    assert second["read"] == 4 and second["articles"] == 4
    assert committed(kafka_broker, topic, "g") == {p: end + 2 for p, end in ends.items()}
