"""The local runner's arguments and what it leaves behind."""

import subprocess
import sys

from tests.conftest import ROOT

# A run's embedded Flink, as Beam starts it: its job server is stopped at exit by an
# atexit handler registered when the run starts it, and a checkpoint may still be
# written then (stood in for here by a handler that writes one at exit).
LATE_CHECKPOINT = """
import atexit, os, sys, tempfile
tempfile.tempdir = sys.argv[1]
from pipeline.runners.local import local_runner
with local_runner(["--runner=FlinkRunner", "--streaming", "--checkpointing_interval=5000",
                   "--flink_job_server_jar=unused.jar", "--job_server_java_launcher=java",
                   "--environment_type=EXTERNAL", "--environment_config=127.0.0.1:1"]) as argv:
    folder = next(a for a in argv if a.startswith("--state_backend_storage_path="))
    folder = folder.split("file://", 1)[1]
    atexit.register(lambda: os.makedirs(os.path.join(folder, "job", "chk-21")))
print(folder)
"""


def test_an_embedded_flinks_checkpoints_written_while_its_job_server_stops_do_not_stay(
        tmp_path):
    done = subprocess.run([sys.executable, "-c", LATE_CHECKPOINT, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    folder = done.stdout.strip()
    assert folder.startswith(str(tmp_path / "newsloom-flink-checkpoints-"))
    assert list(tmp_path.iterdir()) == []
