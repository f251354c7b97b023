"""Local streaming runners, fetched with ordinary clients and bound to 127.0.0.1.

Beam downloads Prism from GitHub at run time, which fails offline, and both
Prism's job server and Beam's LOOPBACK worker pool listen on every interface.
So newsloom prepares a Prism run itself:

* ``prism_binary()`` builds Prism from the Go module proxy, at the installed
  Beam version, with its one listener on 127.0.0.1. Upstream has no flag for
  the address, so the build vendors the module and changes that one
  ``net.Listen`` line; it is cached under ``~/.cache/newsloom/`` (about 4
  minutes the first time).
* ``LocalWorkerPool`` is the LOOPBACK worker pool (SDK harnesses as threads of
  this process), listening on 127.0.0.1; a pipeline reaches it with
  ``--environment_type=EXTERNAL --environment_config=127.0.0.1:PORT``.
* ``local_runner`` adds both to a Prism run's arguments unless given.
"""

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from contextlib import contextmanager
from typing import Iterator, List, Optional

import apache_beam

CACHE_DIR = Path(os.environ.get("NEWSLOOM_CACHE", Path.home() / ".cache" / "newsloom"))
BEAM_MODULE = "github.com/apache/beam/sdks/v2"
# The file and the line that choose Prism's listen address, in the Beam Go module.
LISTENER_FILE = "go/pkg/beam/runners/prism/internal/jobservices/server.go"
ALL_INTERFACES = 'net.Listen("tcp", fmt.Sprintf(":%d", port))'
LOOPBACK_ONLY = 'net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))'
# The SDK harness's state cache (the stateful steps read their state through it).
STATE_CACHE_BYTES = 100 << 20

log = logging.getLogger(__name__)


def prism_binary(cache_dir: Path = CACHE_DIR, version: str = apache_beam.__version__) -> Path:
    """The path of a Prism binary for Beam ``version`` listening on 127.0.0.1 (built if needed)."""
    binary = cache_dir / f"prism-{version}-localhost" / "prism"
    if binary.exists():
        return binary
    if shutil.which("go") is None:
        raise RuntimeError("building Prism needs Go (https://go.dev/dl/) on the PATH")
    log.warning("building Prism %s from the Go module proxy into %s (once, a few minutes)",
                version, binary)
    with tempfile.TemporaryDirectory(prefix="prism-build-") as work:
        go = _go(Path(work))
        go("mod", "init", "newsloom.local/prism")
        go("mod", "download", f"{BEAM_MODULE}@v{version}")
        source = Path(go("env", "GOMODCACHE").strip()) / f"{BEAM_MODULE}@v{version}"
        main = Path(work) / "main.go"
        main.write_text((source / "go/cmd/prism/prism.go").read_text())
        go("get", f"{BEAM_MODULE}@v{version}")
        go("mod", "tidy")
        go("mod", "vendor")
        listener = Path(work) / "vendor" / BEAM_MODULE / LISTENER_FILE
        text = listener.read_text()
        if ALL_INTERFACES not in text:
            raise RuntimeError(f"Prism {version}: {LISTENER_FILE} no longer has the line "
                               f"newsloom rewrites ({ALL_INTERFACES})")
        listener.chmod(0o644)
        listener.write_text(text.replace(ALL_INTERFACES, LOOPBACK_ONLY))
        staged = Path(work) / "prism"
        go("build", "-mod=vendor", "-trimpath", "-o", str(staged), ".")
        binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), binary)
    return binary


def _go(work: Path):
    def go(*args: str) -> str:
        done = subprocess.run(["go", *args], cwd=work, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"go {' '.join(args)} failed:\n{done.stderr[-2000:]}")
        return done.stdout
    return go


class LocalWorkerPool:
    """Beam's Python SDK worker pool, in this process, on 127.0.0.1 (a context manager)."""

    def __init__(self):
        self.address: Optional[str] = None
        self._server = None

    def __enter__(self) -> "LocalWorkerPool":
        import grpc
        from apache_beam.portability.api import beam_fn_api_pb2_grpc
        from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
        from apache_beam.utils import thread_pool_executor
        # The settings LOOPBACK uses, but the address (LOOPBACK binds [::]).
        self._server = grpc.server(thread_pool_executor.shared_unbounded_instance(),
                                   options=[("grpc.http2.max_pings_without_data", 0),
                                            ("grpc.http2.max_ping_strikes", 0)])
        port = self._server.add_insecure_port("127.0.0.1:0")
        beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
            BeamFnExternalWorkerPoolServicer(state_cache_size=STATE_CACHE_BYTES,
                                             data_buffer_time_limit_ms=-1), self._server)
        self._server.start()
        self.address = f"127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop(grace=1)


def runner_of(argv: List[str]) -> Optional[str]:
    for i, arg in enumerate(argv):
        if arg.startswith("--runner="):
            return arg.split("=", 1)[1]
        if arg == "--runner" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _given(argv: List[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def is_prism(argv: List[str]) -> bool:
    return (runner_of(argv) or "").lower() in ("prismrunner", "prism")


@contextmanager
def local_runner(argv: List[str]) -> Iterator[List[str]]:
    """``argv``, for a Prism run with its binary and a 127.0.0.1 worker pool added
    unless given; the pool runs until the block ends."""
    if not is_prism(argv):
        yield argv
        return
    argv = list(argv)
    if not _given(argv, "--prism_location"):
        argv.append(f"--prism_location={prism_binary()}")
    if _given(argv, "--environment_type"):
        yield argv
        return
    with LocalWorkerPool() as pool:
        yield argv + ["--environment_type=EXTERNAL", f"--environment_config={pool.address}"]
