"""The arguments of a local Prism or Flink run: its runner parts and a loopback worker pool."""

import os
from contextlib import contextmanager
from typing import Iterator, List, Optional

from pipeline.options import flag_value
from pipeline.runners.flink import flink_job_server_jar, flink_local_conf_dir, loopback_java_launcher
from pipeline.runners.prism import PRISM_NO_SPLITS, prism_binary
from pipeline.runners.worker_pool import STATE_CACHE_MB, LocalWorkerPool

# How long Beam's client follows a Prism or Flink job (seconds): a stream runs for good.
JOB_STREAM_DEADLINE = 365 * 24 * 3600


def runner_kind(runner: Optional[str]) -> Optional[str]:
    """``prism`` or ``flink`` when ``runner`` (a ``--runner`` value) names one, else None."""
    return {"prismrunner": "prism", "prism": "prism",
            "flinkrunner": "flink", "flink": "flink"}.get((runner or "").lower())


@contextmanager
def local_runner(argv: List[str]) -> Iterator[List[str]]:
    """``argv``, for a Prism or Flink run with its binary or job server and a
    127.0.0.1 worker pool added unless given, and Prism's splits off; the pool
    runs until the block ends."""
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
    if kind == "flink":
        if flag_value(argv, "--flink_job_server_jar") is None:
            argv.append(f"--flink_job_server_jar={flink_job_server_jar()}")
        if flag_value(argv, "--flink_master") is None:
            argv.append("--flink_master=[local]")
        if flag_value(argv, "--flink_master") == "[local]":
            if flag_value(argv, "--job_server_java_launcher") is None:
                argv.append(f"--job_server_java_launcher={loopback_java_launcher()}")
            # The job server JVM inherits this; Flink reads its configuration there.
            os.environ.setdefault("FLINK_CONF_DIR", str(flink_local_conf_dir()))
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
