"""Broker outages while a Kafka read plans, reads and commits, with a real broker stopped
and restarted on the same port and data directory: each step waits for it and logs that
it waits; a broker that stays away fails the run with one clear line."""

import json
import logging
import subprocess
import sys

import pytest
from kafka import KafkaProducer

from common.ports import free_port
from connectors.kafka_source import KafkaSpec, _commit, _commit_forward, _PlanTopicFn
from connectors.replay import replay
from tests.conftest import ROOT, SEEDS, Background, broker_outage, committed, wait_until
from tests.test_kafka import fresh_topic, rows, run_kafka

WAITING = "waiting for the Kafka broker"


@pytest.fixture
def kafka_log(caplog):
    """The Kafka source's log records, INFO and up (its plan and its waits)."""
    caplog.set_level(logging.INFO, logger="connectors.kafka_source")
    return caplog


def logged(caplog, *words) -> bool:
    return any(all(w in r.getMessage() for w in words) for r in list(caplog.records))


def produce(broker, topic, values_by_partition):
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    for partition, values in values_by_partition.items():
        for value in values:
            producer.send(topic, partition=partition, value=value)
    producer.flush()
    producer.close()


def test_planning_waits_for_the_broker_and_then_plans_from_the_committed_offsets(
        kafka_broker, kafka_log):
    topic = fresh_topic()
    kafka_broker.create_topic(topic, partitions=2)
    produce(kafka_broker, topic, {0: [b"{}"] * 3, 1: [b"{}"] * 2})
    spec = KafkaSpec(kafka_broker.bootstrap_servers, topic, group_id="planner")
    _commit(spec, {0: 2, 1: 1})
    with broker_outage(kafka_broker):
        planning = Background(lambda: list(_PlanTopicFn(spec).process(None)))
        wait_until(lambda: logged(kafka_log, WAITING, "planning the read"),
                   "log line of planning waiting for the broker", alive=planning)
    (plan,) = planning.result()
    assert plan.ranges == ((0, 2, 3), (1, 1, 2))
    assert logged(kafka_log, "answers again")
    # A mistake is not an outage: it fails at once.
    missing = KafkaSpec(kafka_broker.bootstrap_servers, "no-such-topic", start="earliest")
    with pytest.raises(ValueError, match="does not exist"):
        list(_PlanTopicFn(missing).process(None))


def test_committing_waits_for_the_broker_and_then_commits(kafka_broker, kafka_log):
    topic = fresh_topic()
    kafka_broker.create_topic(topic, partitions=2)
    produce(kafka_broker, topic, {0: [b"{}"] * 3, 1: [b"{}"] * 2})
    spec = KafkaSpec(kafka_broker.bootstrap_servers, topic, group_id="committer")
    with broker_outage(kafka_broker, kill=True):
        committing = Background(lambda: _commit(spec, {0: 3, 1: 2}))
        wait_until(lambda: logged(kafka_log, WAITING, "committing the offsets"),
                   "log line of committing waiting for the broker", alive=committing)
    committing.result()
    assert committed(kafka_broker, topic, "committer") == {0: 3, 1: 2}


def test_a_run_started_while_the_broker_is_down_waits_for_it_and_reads_everything(
        kafka_broker, tmp_path, kafka_log):
    topic = fresh_topic()
    replay(str(SEEDS), kafka_broker.bootstrap_servers, topic, partitions=3, progress=False)
    with broker_outage(kafka_broker, kill=True):
        run = Background(lambda: run_kafka(kafka_broker, topic, tmp_path / "out",
                                           "--group_id", "late", "--embedder", "none"))
        wait_until(lambda: logged(kafka_log, WAITING),
                   "log line of the run waiting for the broker", alive=run)
    assert run.result()["articles"] == 4
    assert sum(o or 0 for o in committed(kafka_broker, topic, "late").values()) == 4


def test_a_run_whose_broker_stops_while_it_reads_waits_and_loses_and_duplicates_nothing(
        kafka_broker, sib200, tmp_path, kafka_log):
    """The run must read 400 messages per partition; only half exist when it starts, and
    the broker is stopped once the read is planned and restarted before the rest are
    produced."""
    topic = fresh_topic()
    kafka_broker.create_topic(topic, partitions=3)
    with open(sib200 / "eng_Latn" / "train.tsv", encoding="utf-8") as f:
        sentences = [line.split("\t")[2].strip() for line in f][1:]
    per_partition, total = 400, 1200

    def articles(numbers):
        by_partition = {0: [], 1: [], 2: []}
        for i in numbers:
            body = f"{sentences[i % len(sentences)]} (report {i})"
            by_partition[i % 3].append(json.dumps({"id": f"k{i}", "body": body}).encode())
        return by_partition

    produce(kafka_broker, topic, articles(range(0, total // 2)))
    run = Background(lambda: run_kafka(
        kafka_broker, topic, tmp_path / "out", "--group_id", "crash", "--start", "earliest",
        "--stop", str(per_partition), "--embedder", "none"))
    wait_until(lambda: logged(kafka_log, f"reading Kafka topic {topic}"), "planned read",
               alive=run)
    with broker_outage(kafka_broker):
        wait_until(lambda: logged(kafka_log, WAITING, f"reading topic {topic}"),
                   "log line of the reader waiting for the broker", alive=run)
    produce(kafka_broker, topic, articles(range(total // 2, total)))
    result = run.result()
    assert result["read"] == total and result["dead_letters"] == 0
    ids = [r["article_id"] for r in rows(tmp_path / "out" / "articles")]
    assert len(ids) == len(set(ids)) == total
    assert committed(kafka_broker, topic, "crash") == {0: 400, 1: 400, 2: 400}


def test_a_broker_that_stays_away_fails_the_run_with_one_clear_line(tmp_path):
    port = free_port()  # nothing listens there
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--bootstrap-servers",
         f"127.0.0.1:{port}", "--topic", "articles", "--start", "earliest",
         "--output", str(tmp_path / "out"), "--embedder", "none",
         "--kafka_wait_seconds", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"newsloom run: error: the Kafka broker at 127.0.0.1:{port} did not "
                           "answer for "), done.stderr
    assert "(--kafka_wait_seconds=2)" in last


def test_a_streams_commits_in_the_wrong_order_never_move_the_group_back(kafka_broker):
    # Flink finalizes a checkpoint's bundles together, and their commits run in
    # parallel threads: the later bundle's may land first.
    topic = fresh_topic()
    kafka_broker.create_topic(topic, partitions=2)
    spec = KafkaSpec(kafka_broker.bootstrap_servers, topic, group_id="stream")
    _commit_forward(spec, {0: 5, 1: 2})
    _commit_forward(spec, {0: 3, 1: 4})
    assert committed(kafka_broker, topic, "stream") == {0: 5, 1: 4}
