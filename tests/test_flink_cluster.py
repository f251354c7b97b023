"""newsloom on a Flink session cluster of separate processes (one JobManager, two
TaskManagers, a Python worker pool beside each), with checkpoints on local disk.

Slow: run with ``python -m pytest -m slow``.
"""

import json
import urllib.request

import pytest

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


def test_a_checkpointed_stream_on_two_taskmanagers_survives_one_killed_writing_each_message_once(
        flink_cluster, kafka_broker, sib200, tmp_path):
    before = listening_on_every_interface()
    topic = group = "cluster-stream"
    kafka_broker.create_topic(topic, partitions=3)
    first, second = tmp_path / "first", tmp_path / "second"
    write_feed(first, synthetic_articles(sib200, range(150)))
    for seed in SEEDS.glob("*.txt"):
        (first / seed.name).write_bytes(seed.read_bytes())
    write_feed(second, synthetic_articles(sib200, range(150, 300)))
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
            sent = replay(str(first), kafka_broker.bootstrap_servers, topic, partitions=3,
                          timestamps="now", progress=False).sent
            assert wait_for(lambda: len(dataset_rows(out / "articles")) > 0, timeout=300)
            job, = (j for j in rest(flink_cluster, "/jobs/overview")["jobs"]
                    if j["state"] == "RUNNING")
            # The job's tasks run on both TaskManagers, its checkpoints go to disk.
            hosts = {tm["taskmanager-id"] for vertex in rest(flink_cluster, f"/jobs/{job['jid']}")[
                "vertices"] for tm in rest(flink_cluster, f"/jobs/{job['jid']}/vertices/"
                                                          f"{vertex['id']}/taskmanagers")[
                "taskmanagers"]}
            assert hosts == {"tm0", "tm1"}
            assert wait_for(lambda: any((flink_cluster.folder / "checkpoints").rglob("_metadata")),
                            timeout=60)
            assert listening_on_every_interface() - before == set()
            # A TaskManager killed mid-stream; the job restarts from its last checkpoint.
            flink_cluster.task_manager_processes[1].kill()  # SIGKILL
            flink_cluster.task_manager_processes[1].wait()
            flink_cluster.start_task_manager(1)
            sent += replay(str(second), kafka_broker.bootstrap_servers, topic, partitions=3,
                           timestamps="now", progress=False).sent

            def all_written():
                return len(dataset_rows(out / "articles")) >= sent

            assert wait_for(all_written, timeout=400), (
                f"{len(dataset_rows(out / 'articles'))} articles of {sent}")
            assert wait_for(lambda: sum(o or 0 for o in committed(
                kafka_broker, topic, group).values()) == sent, timeout=120)
            # The job failed over (restarted from a checkpoint) and runs again.
            assert rest(flink_cluster, f"/jobs/{job['jid']}/exceptions")[
                "exceptionHistory"]["entries"]
            assert rest(flink_cluster, f"/jobs/{job['jid']}")["state"] == "RUNNING"
        finally:
            result.cancel()
    ids = [a["article_id"] for a in dataset_rows(out / "articles")]
    assert len(ids) == len(set(ids)) == sent == 304
