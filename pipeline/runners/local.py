"""The arguments of a local Prism or Flink run: its runner parts and a loopback worker pool."""

import atexit
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator, List, Optional

from pipeline.options import flag_value
from pipeline.runners.flink import flink_job_server_jar, flink_local_conf_dir, loopback_java_launcher
from pipeline.runners.prism import PRISM_NO_SPLITS, prism_binary
from pipeline.runners.worker_pool import STATE_CACHE_MB, LocalWorkerPool

# How long Beam's client follows a Prism or Flink job (seconds): a stream runs for good.
JOB_STREAM_DEADLINE = 365 * 24 * 3600
# Without it, Beam's Flink operators (2.62) hold back what a bundle emits while a
# checkpoint is taken and let it go when their next bundle starts. The Kafka
# plan's stage gets one element in its life, so when the first checkpoint fell
# in its one bundle, the topic's ranges never reached the reader and the job
# read nothing (1 of 2 runs here, with 5-second checkpoints).
FINISH_BUNDLE_BEFORE_CHECKPOINTING = "--finish_bundle_before_checkpointing"

# The embedded Flinks' temporary checkpoint folders, removed again at exit. Beam's
# job server JVM (the embedded Flink) lives until this process exits, and its
# tasks may still write a checkpoint after the job is cancelled and the folder
# removed (four such folders, chk-20 or chk-21 inside, were left in /tmp here).
# Registered at import, before any run starts a job server, this handler runs
# after Beam's handlers have stopped them (atexit runs the last registered first).
_EMBEDDED_CHECKPOINTS: List[str] = []


@atexit.register
def _remove_embedded_checkpoints() -> None:
    for folder in _EMBEDDED_CHECKPOINTS:
        shutil.rmtree(folder, ignore_errors=True)


def runner_kind(runner: Optional[str]) -> Optional[str]:
    """``prism`` or ``flink`` when ``runner`` (a ``--runner`` value) names one, else None."""
    return {"prismrunner": "prism", "prism": "prism",
            "flinkrunner": "flink", "flink": "flink"}.get((runner or "").lower())


@contextmanager
def local_runner(argv: List[str]) -> Iterator[List[str]]:
    """``argv``, for a Prism or Flink run with its binary or job server and a
    127.0.0.1 worker pool added unless given, and Prism's splits off; the pool
    runs until the block ends. A checkpointed embedded Flink keeps its
    checkpoints in a temporary folder, removed when the block ends and again
    when this process exits, once its job server has stopped."""
    kind = runner_kind(flag_value(argv, "--runner"))
    if kind is None:
        yield argv
        return
    argv = list(argv)
    if kind == "prism":
        if flag_value(argv, "--prism_location") is None:
            argv.append(f"--prism_location={prism_binary()}")
        if PRISM_NO_SPLITS not in argv:
            argv.append(PRISM_NO_SPLITS)
    if flag_value(argv, "--job_server_timeout") is None:
        # Beam's client reads the job's state and messages as gRPC streams with
        # this deadline (300 s by default): a longer job would be torn down.
        argv.append(f"--job_server_timeout={JOB_STREAM_DEADLINE}")
    previous_conf_dir = os.environ.get("FLINK_CONF_DIR")
    checkpoints = None
    if kind == "flink":
        if (flag_value(argv, "--checkpointing_interval") is not None
                and FINISH_BUNDLE_BEFORE_CHECKPOINTING not in argv):
            argv.append(FINISH_BUNDLE_BEFORE_CHECKPOINTING)
        if flag_value(argv, "--flink_job_server_jar") is None:
            argv.append(f"--flink_job_server_jar={flink_job_server_jar()}")
        if flag_value(argv, "--flink_master") is None:
            argv.append("--flink_master=[local]")
        if flag_value(argv, "--job_server_java_launcher") is None:
            # The job server runs here, whatever the cluster: its servers on loopback.
            argv.append(f"--job_server_java_launcher={loopback_java_launcher()}")
        if flag_value(argv, "--flink_master") == "[local]":
            # The job server JVM inherits this; Flink reads its configuration there.
            os.environ.setdefault("FLINK_CONF_DIR", str(flink_local_conf_dir()))
            if (flag_value(argv, "--checkpointing_interval") is not None
                    and flag_value(argv, "--state_backend") is None):
                # Flink's default keeps checkpoints in the JobManager's memory, at most
                # 5 MB of state a task: the ids and stories of a few hundred articles
                # already exceed it, every checkpoint fails, the job restarts from the
                # last good one, and no window is ever written. An embedded Flink
                # ends with its run, and so do its checkpoints, on disk meanwhile.
                checkpoints = tempfile.mkdtemp(prefix="newsloom-flink-checkpoints-")
                _EMBEDDED_CHECKPOINTS.append(checkpoints)
                argv += ["--state_backend=filesystem",
                         f"--state_backend_storage_path=file://{checkpoints}"]
    try:
        if flag_value(argv, "--environment_type") is not None:
            yield argv
        else:
            cache_mb = flag_value(argv, "--max_cache_memory_usage_mb")
            with LocalWorkerPool(int(cache_mb) if cache_mb else STATE_CACHE_MB) as pool:
                yield argv + ["--environment_type=EXTERNAL",
                              f"--environment_config={pool.address}"]
    finally:
        if previous_conf_dir is None:
            os.environ.pop("FLINK_CONF_DIR", None)
        if checkpoints is not None:
            shutil.rmtree(checkpoints, ignore_errors=True)
