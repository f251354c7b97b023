"""A Flink session cluster of separate processes on 127.0.0.1, for tests and developers.

One JobManager (``StandaloneSessionClusterEntrypoint``) and N TaskManagers
(``TaskManagerRunner``), each a JVM of its own, run from the jars that
``flink_job_server_jar()`` assembled with ``mvn`` (Flink 1.19's runtime and
clients, and Beam's Flink runner, so the TaskManagers run Beam's operators
without a job jar). Maven Central does not serve ``flink-dist``, whose scripts
would work out a TaskManager's memory; ``FlinkCluster`` passes those sizes
itself. Every JVM runs through the loopback ``java`` wrapper, so Flink's RPC,
BLOB, data and REST servers and the TaskManagers' Fn API servers listen on
127.0.0.1 only. Checkpoints and savepoints go to ``folder/checkpoints`` and
``folder/savepoints``.

Beside each TaskManager runs a Python SDK worker pool
(``python -m pipeline.runners.worker_pool``), the EXTERNAL environment of a
cluster without Docker; it starts each SDK worker as a child process in its
own process group. On one machine the pools share one port, so a
TaskManager's workers start in either pool.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import List, Optional

from common.ports import free_port
from pipeline.runners import CACHE_DIR
from pipeline.runners.flink import flink_job_server_jar, loopback_java_launcher

# A TaskManager's memory, as flink-dist's scripts would derive it from a 1.2 GB process.
TASK_MANAGER_MEMORY = {
    "taskmanager.memory.framework.heap.size": "128m",
    "taskmanager.memory.task.heap.size": "512m",
    "taskmanager.memory.managed.size": "128m",
    "taskmanager.memory.network.min": "64m",
    "taskmanager.memory.network.max": "64m",
    "taskmanager.memory.framework.off-heap.size": "128m",
    "taskmanager.memory.task.off-heap.size": "0m",
    "taskmanager.memory.jvm-metaspace.size": "256m",
    "taskmanager.memory.jvm-overhead.min": "192m",
    "taskmanager.memory.jvm-overhead.max": "192m",
}
TASK_MANAGER_JVM = ["-Xmx640m", "-Xms640m", "-XX:MaxMetaspaceSize=256m"]
JOB_MANAGER_JVM = ["-Xmx512m"]
START_SECONDS = 120.0


class FlinkCluster:
    """A session cluster in ``folder`` (a context manager): ``rest_address`` is the
    ``--flink_master``, ``worker_pool_address`` the ``--environment_config``."""

    def __init__(self, folder: Path, task_managers: int = 2, slots: int = 2,
                 cache_dir: Path = CACHE_DIR):
        self.folder = Path(folder)
        self.task_managers = task_managers
        self.slots = slots
        self.rest_port = free_port()
        self.worker_pool_port = free_port()
        self.job_managers: List[subprocess.Popen] = []
        self.task_manager_processes: List[subprocess.Popen] = []
        self.worker_pools: List[subprocess.Popen] = []
        # Found once: each call rewrites the wrapper, which a starting JVM may be reading.
        self.java = loopback_java_launcher(cache_dir)
        self.lib = flink_job_server_jar(cache_dir).parent / "lib"

    @property
    def rest_address(self) -> str:
        return f"127.0.0.1:{self.rest_port}"

    @property
    def worker_pool_address(self) -> str:
        return f"127.0.0.1:{self.worker_pool_port}"

    def _write_config(self) -> Path:
        conf = self.folder / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        settings = {
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": free_port(),
            "jobmanager.bind-host": "127.0.0.1",
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.host": "127.0.0.1",
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": self.rest_port,
            "taskmanager.numberOfTaskSlots": self.slots,
            "state.checkpoint-storage": "filesystem",
            "state.checkpoints.dir": (self.folder / "checkpoints").resolve().as_uri(),
            "state.savepoints.dir": (self.folder / "savepoints").resolve().as_uri(),
            # A killed TaskManager is noticed within seconds, not the default 50.
            "heartbeat.timeout": 10000,
            "heartbeat.interval": 2000,
        }
        (conf / "config.yaml").write_text(
            "".join(f"{key}: {value}\n" for key, value in settings.items()))
        return conf

    def _java(self, jvm: List[str], main: str, arguments: List[str], log: str) -> subprocess.Popen:
        with open(self.folder / log, "ab") as out:
            return subprocess.Popen([str(self.java), *jvm, "-cp", f"{self.lib}/*", main, *arguments],
                                    stdout=out, stderr=subprocess.STDOUT)

    def start_task_manager(self, number: int) -> subprocess.Popen:
        """Starts TaskManager ``number`` (again, after a kill) and returns its process."""
        properties = dict(TASK_MANAGER_MEMORY, **{"taskmanager.cpu.cores": self.slots,
                                                  "taskmanager.resource-id": f"tm{number}"})
        process = self._java(TASK_MANAGER_JVM, "org.apache.flink.runtime.taskexecutor.TaskManagerRunner",
                             ["--configDir", str(self.folder / "conf")]
                             + [a for k, v in properties.items() for a in ("-D", f"{k}={v}")],
                             f"taskmanager{number}.log")
        if number < len(self.task_manager_processes):
            self.task_manager_processes[number] = process
        else:
            self.task_manager_processes.append(process)
        return process

    def start_worker_pool(self) -> subprocess.Popen:
        with open(self.folder / f"worker-pool{len(self.worker_pools)}.log", "ab") as out:
            pool = subprocess.Popen([sys.executable, "-m", "pipeline.runners.worker_pool",
                                     str(self.worker_pool_port)], stdout=out,
                                    stderr=subprocess.STDOUT, env=dict(os.environ),
                                    start_new_session=True)
        self.worker_pools.append(pool)
        return pool

    def python_workers(self) -> List[int]:
        """The process ids of the SDK workers the pools have started (and not yet lost)."""
        pools = {pool.pid for pool in self.worker_pools}
        workers = []
        for entry in Path("/proc").iterdir():
            try:
                # Fields after the command's closing parenthesis: state, ppid, pgrp, ...
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
                command = (entry / "cmdline").read_bytes()
                program = os.readlink(entry / "exe")
            except (OSError, ValueError):  # not a process, or one that just ended
                continue
            # The program and command, not only the group: a shim (pyenv's) may run
            # shells on its way to Python.
            if (int(fields[2]) in pools and b"SdkHarness" in command
                    and "python" in Path(program).name and fields[0] != "Z"):
                workers.append(int(entry.name))
        return workers

    def overview(self) -> Optional[dict]:
        """Flink's ``/overview`` (task managers, slots, jobs), or None while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://{self.rest_address}/overview", timeout=5) as r:
                return json.load(r)
        except OSError:
            return None

    def wait_for_task_managers(self, count: int, timeout: float = START_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            overview = self.overview()
            if overview and overview["taskmanagers"] >= count:
                return
            for process in self.job_managers + self.task_manager_processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a Flink process exited ({process.returncode}); "
                                       f"see the logs in {self.folder}")
            time.sleep(1)
        raise RuntimeError(f"{count} TaskManagers did not register within {timeout:.0f} s; "
                           f"see the logs in {self.folder}")

    def __enter__(self) -> "FlinkCluster":
        conf = self._write_config()
        try:
            self.job_managers.append(self._java(
                JOB_MANAGER_JVM, "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint",
                ["--configDir", str(conf)], "jobmanager.log"))
            for number in range(self.task_managers):
                self.start_task_manager(number)
                self.start_worker_pool()
            self.wait_for_task_managers(self.task_managers)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        processes = self.worker_pools + self.task_manager_processes + self.job_managers
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pool in self.worker_pools:
            # The pool's SDK workers, in its process group, outlive it otherwise.
            try:
                os.killpg(pool.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
