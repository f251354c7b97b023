"""newsloom on a Flink session cluster of separate processes (one JobManager, two
TaskManagers, a Python worker pool beside each), with checkpoints on local disk.

Slow: run with ``python -m pytest -m slow``.
"""

import json
import os
import signal
import urllib.request
from collections import Counter
from contextlib import contextmanager

import pytest
from apache_beam.runners.runner import PipelineState

from connectors.replay import replay
from pipeline.graph import run
from pipeline.options import normalise_argv
from pipeline.runners.flink_cluster import FlinkCluster
from pipeline.runners.local import local_runner
from tests.conftest import SEEDS, Background, broker_outage, committed
from tests.test_streaming_runners import (dataset_rows, listening_on_every_interface, start_job,
                                          synthetic_articles, wait_for, write_feed)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flink_cluster(tmp_path_factory):
    with FlinkCluster(tmp_path_factory.mktemp("flink-cluster"), task_managers=2) as cluster:
        yield cluster


def rest(cluster, path):
    with urllib.request.urlopen(f"http://{cluster.rest_address}{path}", timeout=10) as response:
        return json.load(response)


def test_a_checkpointed_stream_on_two_taskmanagers_survives_one_killed_as_a_batch_run_would(
        flink_cluster, kafka_broker, sib200, tmp_path):
    before = listening_on_every_interface()
    topic, out = "cluster-stream", tmp_path / "out"
    feed = fault_feed(kafka_broker, sib200, topic, tmp_path)
    with cluster_job(flink_cluster, kafka_broker, topic, out, "--start=earliest") as jid:
        publishing = Background(lambda: feed.publish(range(0, 1000), with_seeds=True,
                                                     raw=BAD_MESSAGES))
        # A checkpoint has completed (its offsets are committed), on disk.
        assert wait_for(lambda: feed.committed_total() > 0, timeout=300)
        assert any((flink_cluster.folder / "checkpoints" / jid).rglob("_metadata"))
        # The job's tasks run on both TaskManagers; nothing listens beyond 127.0.0.1.
        hosts = {tm["taskmanager-id"] for vertex in rest(flink_cluster, f"/jobs/{jid}")["vertices"]
                 for tm in rest(flink_cluster, f"/jobs/{jid}/vertices/{vertex['id']}"
                                               f"/taskmanagers")["taskmanagers"]}
        assert hosts == {"tm0", "tm1"}
        assert listening_on_every_interface() - before == set()
        # A TaskManager killed mid-stream; the job restarts from its last checkpoint.
        flink_cluster.task_manager_processes[1].kill()  # SIGKILL
        flink_cluster.task_manager_processes[1].wait()
        flink_cluster.start_task_manager(1)
        publishing.result()
        feed.publish(range(1000, 2000))
        each_message_written_once_and_committed(out, feed)
        assert checkpoint_counts(flink_cluster, jid)["restored"] > 0
        assert rest(flink_cluster, f"/jobs/{jid}")["state"] == "RUNNING"
    stories_as_a_batch_run(kafka_broker, topic, out, tmp_path / "batch")


# The faults' stream: 3 partitions, 15 s windows, checkpoints every 5 s, the hashing
# embedder (the default engine's ONNX model does not keep up on 2 shared cores).
FAULT_WINDOW_SECONDS = 15
FAULT_RATE = 20.0  # articles published a second
BAD_MESSAGES = {f"bad-{n}": b'{"id": "bad", "body": ' for n in range(3)}


def cluster_argv(cluster, kafka_broker, topic, out, *extra):
    return normalise_argv([
        "--runner=FlinkRunner", f"--flink_master={cluster.rest_address}", "--streaming",
        "--parallelism=4", "--checkpointing_interval=5000",
        "--environment_type=EXTERNAL", f"--environment_config={cluster.worker_pool_address}",
        f"--output={out}", f"--bootstrap-servers={kafka_broker.bootstrap_servers}",
        f"--topic={topic}", f"--group_id={topic}", "--stop=never",
        f"--window_seconds={FAULT_WINDOW_SECONDS}", "--embedder=none", *extra])


@contextmanager
def cluster_job(cluster, kafka_broker, topic, out, *extra):
    """The faults' stream on ``cluster`` (``cluster_argv``), running: yields its Flink
    job id, and cancels it at the end unless it has ended."""
    with local_runner(cluster_argv(cluster, kafka_broker, topic, out, *extra)) as runner_argv:
        result = start_job(runner_argv)
        try:
            assert wait_for(lambda: running_job(cluster), timeout=300)
            yield running_job(cluster)
        finally:
            cancel_jobs(cluster, result)


def cancel_jobs(cluster, result):
    """Cancels ``result``'s job and, through Flink's REST API, every job still on the
    cluster, and waits until none runs: Beam's cancel may not reach a job that has
    failed over, which would keep its slots from the next test's job."""
    if not PipelineState.is_terminal(result.state):
        result.cancel()
    for job in rest(cluster, "/jobs/overview")["jobs"]:
        if job["state"] not in ("FINISHED", "CANCELED", "FAILED"):
            request = urllib.request.Request(
                f"http://{cluster.rest_address}/jobs/{job['jid']}?mode=cancel", method="PATCH")
            urllib.request.urlopen(request, timeout=10).close()
    assert wait_for(lambda: all(j["state"] in ("FINISHED", "CANCELED", "FAILED")
                                for j in rest(cluster, "/jobs/overview")["jobs"]), timeout=120)


def fault_feed(kafka_broker, sib200, topic, tmp_path):
    """A fresh 3-partition ``topic`` and its Feed."""
    kafka_broker.create_topic(topic, partitions=3)
    return Feed(kafka_broker, sib200, topic, tmp_path)


def running_job(cluster):
    jobs = [j for j in rest(cluster, "/jobs/overview")["jobs"] if j["state"] == "RUNNING"]
    return jobs[0]["jid"] if len(jobs) == 1 else None


def checkpoint_counts(cluster, jid):
    return rest(cluster, f"/jobs/{jid}/checkpoints")["counts"]


def pool_log_lines(cluster, words):
    return [line for path in sorted(cluster.folder.glob("worker-pool*.log"))
            for line in path.read_text(errors="replace").splitlines() if words in line]


class Feed:
    """The messages of the faults' stream, published at FAULT_RATE: SIB-200 articles by
    number (article n + 670 repeats article n's text) and raw messages by key."""

    def __init__(self, broker, sib200, topic, folder):
        self.broker, self.sib200, self.topic, self.folder = broker, sib200, topic, folder
        self.sent = []  # the ids published, in order

    def publish(self, numbers, with_seeds=False, raw=None):
        folder = self.folder / f"part{len(list(self.folder.glob('part*')))}"
        articles = synthetic_articles(self.sib200, numbers)
        write_feed(folder, articles)
        if with_seeds:
            for seed in SEEDS.glob("*.txt"):
                (folder / seed.name).write_bytes(seed.read_bytes())
        sent = replay(str(folder), self.broker.bootstrap_servers, self.topic, partitions=3,
                      rate=FAULT_RATE, timestamps="now", progress=False).sent
        assert sent == len(articles) + (4 if with_seeds else 0)
        self.sent += [a["id"] for a in articles] + (
            [p.stem for p in SEEDS.glob("*.txt")] if with_seeds else [])
        if raw:
            from kafka import KafkaProducer
            producer = KafkaProducer(bootstrap_servers=self.broker.bootstrap_servers)
            for key, value in raw.items():
                producer.send(self.topic, key=key.encode(), value=value)
            producer.flush()
            producer.close()
            self.sent += list(raw)

    def committed_total(self):
        """The offsets the stream's group (named as the topic) has committed, added up."""
        return sum(o or 0 for o in committed(self.broker, self.topic, self.topic).values())


def each_message_once(out, feed):
    """Every message published is one article or dead-letter row by now, none twice."""
    rows = [a["article_id"] for a in dataset_rows(out / "articles")] + [
        d["article_id"] for d in dataset_rows(out / "deadletter")]
    return len(rows) >= len(feed.sent) and Counter(rows) == Counter(feed.sent)


def each_message_written_once_and_committed(out, feed, commit_seconds=120):
    assert wait_for(lambda: each_message_once(out, feed), timeout=400), (
        Counter(a["article_id"] for a in dataset_rows(out / "articles")).most_common(3),
        len(dataset_rows(out / "articles")), len(feed.sent))
    seen = []  # the group's offsets as they were committed, for the message

    def all_committed():
        seen.append(committed(feed.broker, feed.topic, feed.topic))
        return sum(o or 0 for o in seen[-1].values()) == len(feed.sent)

    assert wait_for(all_committed, timeout=commit_seconds, every=5), (
        len(feed.sent), [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]])


def stop_with_savepoint(cluster, jid, folder):
    """Stops job ``jid`` with a savepoint in ``folder``; returns the savepoint's path."""
    request = urllib.request.Request(
        f"http://{cluster.rest_address}/jobs/{jid}/stop", method="POST",
        data=json.dumps({"targetDirectory": str(folder), "drain": False}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        trigger = json.load(response)["request-id"]
    assert wait_for(lambda: rest(cluster, f"/jobs/{jid}/savepoints/{trigger}")[
        "status"]["id"] == "COMPLETED", timeout=180)
    operation = rest(cluster, f"/jobs/{jid}/savepoints/{trigger}")["operation"]
    assert "location" in operation, operation
    return operation["location"]


def stories(out):
    """``{article_id: (the set of ids in its story, duplicate_of)}`` of an output."""
    articles = dataset_rows(out / "articles")
    members = {}
    for article in articles:
        members.setdefault(article["story_id"], set()).add(article["article_id"])
    return {a["article_id"]: (frozenset(members[a["story_id"]]), a["duplicate_of"])
            for a in articles}


def stories_as_a_batch_run(kafka_broker, topic, out, batch):
    """The stream's output ``out`` has the stories (members and ``duplicate_of`` of
    every article) of one bounded batch run over the same topic, written to ``batch``."""
    run(["--bootstrap-servers", kafka_broker.bootstrap_servers, "--topic", topic,
         "--start", "earliest", "--stop", "end", "--output", str(batch), "--embedder", "none"])
    streamed, batched = stories(out), stories(batch)
    assert batched.keys() == streamed.keys()
    differ = sorted(i for i in streamed if batched[i] != streamed[i])
    assert not differ, (len(differ), [(i, streamed[i], batched[i]) for i in differ[:3]])


def test_a_stream_on_the_cluster_survives_a_killed_python_worker_and_a_savepoint_as_a_batch_run_would(
        flink_cluster, kafka_broker, sib200, tmp_path):
    topic, out = "cluster-faults", tmp_path / "out"
    feed = fault_feed(kafka_broker, sib200, topic, tmp_path)
    earlier_workers = set(flink_cluster.python_workers())  # an earlier job's, not yet ended
    with cluster_job(flink_cluster, kafka_broker, topic, out, "--start=earliest") as jid:
        # 1. A Python SDK worker killed with SIGKILL once a checkpoint has committed
        # some of the articles streaming in; more arrive while the job recovers.
        publishing = Background(lambda: feed.publish(range(0, 400), with_seeds=True,
                                                     raw=BAD_MESSAGES))
        assert wait_for(lambda: feed.committed_total() > 0, timeout=300)
        assert checkpoint_counts(flink_cluster, jid)["restored"] == 0
        workers = sorted(set(flink_cluster.python_workers()) - earlier_workers)
        assert workers, "no Python SDK worker process of this job"
        os.kill(workers[0], signal.SIGKILL)
        publishing.result()
        feed.publish(range(400, 800))
        assert wait_for(lambda: checkpoint_counts(flink_cluster, jid)["restored"] > 0,
                        timeout=120), "the job did not restart from a checkpoint"
        each_message_written_once_and_committed(out, feed)
        feed.publish(range(800, 1400))
        each_message_written_once_and_committed(out, feed)
        assert rest(flink_cluster, f"/jobs/{jid}")["state"] == "RUNNING"
        # 2. Stopped with a savepoint; more articles arrive before a new job starts.
        savepoint = stop_with_savepoint(flink_cluster, jid,
                                        flink_cluster.folder / "savepoints")
        assert wait_for(lambda: rest(flink_cluster, f"/jobs/{jid}")["state"] == "FINISHED",
                        timeout=60)
    before_savepoint = set(feed.sent)
    feed.publish(range(1400, 1600))
    with cluster_job(flink_cluster, kafka_broker, topic, out,
                     f"--savepoint_path={savepoint}") as resumed:
        assert wait_for(lambda: rest(flink_cluster, f"/jobs/{resumed}/checkpoints")[
            "latest"]["restored"], timeout=120), "the new job did not restore a savepoint"
        restored = rest(flink_cluster, f"/jobs/{resumed}/checkpoints")["latest"]["restored"]
        assert restored["is_savepoint"], restored
        assert restored["external_path"] == savepoint
        feed.publish(range(1600, 2000))
        each_message_written_once_and_committed(out, feed)
    # Each article after the savepoint repeats the text of earlier ones (the texts
    # come round every 320 articles): it joins their story.
    streamed = stories(out)
    texts = {a["id"]: a["body"] for a in synthetic_articles(sib200, range(2000))}
    for n in range(1600, 2000):
        story, duplicate_of = streamed[f"syn-{n}"]
        copies = {i for i in before_savepoint if texts.get(i) == texts[f"syn-{n}"]}
        assert duplicate_of in copies and copies <= story, (n, duplicate_of, copies, story)
    # 3. The same messages in one bounded batch run: the same stories.
    stories_as_a_batch_run(kafka_broker, topic, out, tmp_path / "batch")


def test_a_stream_on_the_cluster_waits_for_a_restarted_broker_and_commits_to_the_end(
        flink_cluster, kafka_broker, sib200, tmp_path):
    topic, out = "cluster-broker", tmp_path / "out"
    feed = fault_feed(kafka_broker, sib200, topic, tmp_path)
    with cluster_job(flink_cluster, kafka_broker, topic, out, "--start=earliest") as jid:
        feed.publish(range(0, 300), with_seeds=True, raw=BAD_MESSAGES)
        each_message_written_once_and_committed(out, feed)
        # The broker stopped and started again on its port and data while the job
        # reads: the job waits for it, without failing over.
        restored = checkpoint_counts(flink_cluster, jid)["restored"]
        waits = len(pool_log_lines(flink_cluster, "waiting for the Kafka broker"))
        with broker_outage(kafka_broker):
            assert wait_for(lambda: len(pool_log_lines(
                flink_cluster, "waiting for the Kafka broker")) > waits, timeout=120)
        feed.publish(range(300, 600))
        each_message_written_once_and_committed(out, feed, commit_seconds=300)
        assert checkpoint_counts(flink_cluster, jid)["restored"] == restored
        assert rest(flink_cluster, f"/jobs/{jid}")["state"] == "RUNNING"
    stories_as_a_batch_run(kafka_broker, topic, out, tmp_path / "batch")
