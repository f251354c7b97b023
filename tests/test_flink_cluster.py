"""newsloom on a Flink session cluster of separate processes (one JobManager, two
TaskManagers, a Python worker pool beside each), with checkpoints on local disk.

Slow: run with ``python -m pytest -m slow``.
"""

import json
import urllib.request

import pytest
from apache_beam.runners.runner import PipelineState

from connectors.replay import replay
from pipeline.options import normalise_argv
from pipeline.runners.flink_cluster import FlinkCluster
from pipeline.runners.local import local_runner
from tests.conftest import SEEDS, committed
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


def test_a_checkpointed_stream_on_a_two_taskmanager_cluster_writes_and_commits_while_running(
        flink_cluster, kafka_broker, sib200, tmp_path):
    before = listening_on_every_interface()
    topic = group = "cluster-stream"
    kafka_broker.create_topic(topic, partitions=3)
    feed = tmp_path / "feed"
    write_feed(feed, synthetic_articles(sib200, range(300)))
    for seed in SEEDS.glob("*.txt"):
        (feed / seed.name).write_bytes(seed.read_bytes())
    out = tmp_path / "out"
    argv = normalise_argv([
        "--runner=FlinkRunner", f"--flink_master={flink_cluster.rest_address}", "--streaming",
        "--parallelism=4", "--checkpointing_interval=5000",
        "--environment_type=EXTERNAL", f"--environment_config={flink_cluster.worker_pool_address}",
        f"--output={out}", f"--bootstrap-servers={kafka_broker.bootstrap_servers}",
        f"--topic={topic}", f"--group_id={group}", "--start=earliest", "--stop=never",
        "--window_seconds=15"])
    with local_runner(argv) as runner_argv:
        result = start_job(runner_argv)
        try:
            sent = replay(str(feed), kafka_broker.bootstrap_servers, topic, partitions=3,
                          timestamps="now", progress=False).sent

            def all_written():
                return (len(dataset_rows(out / "articles"))
                        + len(dataset_rows(out / "deadletter"))) >= sent

            assert wait_for(all_written, timeout=300), (
                f"{len(dataset_rows(out / 'articles'))} articles and "
                f"{len(dataset_rows(out / 'deadletter'))} dead letters of {sent} records")
            assert wait_for(lambda: sum(o or 0 for o in committed(
                kafka_broker, topic, group).values()) == sent, timeout=60)
            assert result.state == PipelineState.RUNNING
            job, = rest(flink_cluster, "/jobs/overview")["jobs"]
            assert job["state"] == "RUNNING"
            # The job's tasks ran on both TaskManagers, and its checkpoints on disk.
            hosts = {tm["taskmanager-id"] for vertex in rest(flink_cluster, f"/jobs/{job['jid']}")[
                "vertices"] for tm in rest(flink_cluster, f"/jobs/{job['jid']}/vertices/"
                                                          f"{vertex['id']}/taskmanagers")[
                "taskmanagers"]}
            assert hosts == {"tm0", "tm1"}
            assert rest(flink_cluster, f"/jobs/{job['jid']}/checkpoints")["counts"]["completed"] > 0
            assert any((flink_cluster.folder / "checkpoints").rglob("_metadata"))
            assert listening_on_every_interface() - before == set()
        finally:
            result.cancel()
    articles = dataset_rows(out / "articles")
    assert len(articles) == len({a["article_id"] for a in articles}) == sent
