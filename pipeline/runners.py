"""Local streaming runners, fetched with ordinary clients and bound to 127.0.0.1.

Beam downloads Prism from GitHub and Flink's job server from Maven at run
time, which fails offline, and Prism's job server and Beam's LOOPBACK worker
pool listen on every interface. So newsloom prepares these runs itself:

* ``prism_binary()`` builds Prism from the Go module proxy, at the installed
  Beam version, with its one listener on 127.0.0.1. Upstream has no flag for
  the address, so the build vendors the module and changes that one
  ``net.Listen`` line; it is cached under ``~/.cache/newsloom/`` (about 4
  minutes the first time).
* Prism runs with its dynamic splits turned off (``PRISM_NO_SPLITS``): when
  it splits a bundle that makes no progress for a moment, it frees the keys
  of the elements it takes back while the SDK still works on that bundle, so
  a second bundle of one key runs beside the first and whichever ends last
  overwrites the other's state (Beam 2.77, ``stageState.splitBundle`` in
  ``prism/internal/engine/elementmanager.go``). On a stream this lost about
  one article in a hundred without a trace; the cost is parallelism within a
  stage, which newsloom's keyed steps do not need.
* ``LocalWorkerPool`` is the LOOPBACK worker pool (SDK harnesses as threads of
  this process), listening on 127.0.0.1; a pipeline reaches it with
  ``--environment_type=EXTERNAL --environment_config=127.0.0.1:PORT``.
* ``flink_job_server_jar()`` assembles Beam's Flink job server (Flink 1.19,
  an embedded ``[local]`` cluster per job) from Maven Central with ``mvn``:
  Beam publishes it as one shaded jar, which the Maven Central reachable here
  lacks, so newsloom resolves ``beam-runners-flink-1.19`` and its dependencies
  into a folder and writes a launcher jar whose manifest names them. The
  newest Beam release whose Flink runner resolves whole there is
  ``FLINK_JOB_SERVER_VERSION``; the job server speaks Beam's portable API, which
  the installed Python SDK uses across versions.
* A local Flink (``[local]``) listens on 127.0.0.1 only: its own servers by
  configuration (``FLINK_CONF_DIR``), and Beam's Java gRPC servers, which
  ignore any host they are given, through ``loopback_bind.c``, a ``bind()``
  wrapper preloaded into that JVM alone (``--job_server_java_launcher``).
* ``local_runner`` adds all of this to a Prism or Flink run's arguments unless
  given.
"""

import logging
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path
from contextlib import contextmanager
from typing import Iterator, List, Optional

import apache_beam

from pipeline.options import flag_value

CACHE_DIR = Path(os.environ.get("NEWSLOOM_CACHE", Path.home() / ".cache" / "newsloom"))
BEAM_MODULE = "github.com/apache/beam/sdks/v2"
# The file and the line that choose Prism's listen address, in the Beam Go module.
LISTENER_FILE = "go/pkg/beam/runners/prism/internal/jobservices/server.go"
ALL_INTERFACES = 'net.Listen("tcp", fmt.Sprintf(":%d", port))'
LOOPBACK_ONLY = 'net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))'
# The SDK harness's state cache (the stateful steps read their state through it)
# unless ``--max_cache_memory_usage_mb`` sets it: off, as in Beam's own default.
# The cache weighs every value it keeps (objsize walks it, about 1.5 ms a write),
# which cost more than the state reads it saves. Story window benchmark, 2,000
# articles 216 s apart, 100 MB against off: Prism 495 s against 262 s, Flink
# 323 s against 233 s, and the Python worker smaller with it off on both.
STATE_CACHE_MB = 0

# Beam's Flink job server: the Beam release and the Flink it is built for.
FLINK_JOB_SERVER_VERSION = "2.62.0"
FLINK_VERSION = "1.19.0"
FLINK_JOB_SERVER_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>newsloom.local</groupId>
  <artifactId>beam-flink-job-server</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.beam</groupId>
      <artifactId>beam-runners-flink-1.19</artifactId><version>{beam}</version></dependency>
    <dependency><groupId>org.apache.beam</groupId>
      <artifactId>beam-runners-java-job-service</artifactId><version>{beam}</version></dependency>
    <dependency><groupId>org.apache.beam</groupId>
      <artifactId>beam-sdks-java-expansion-service</artifactId><version>{beam}</version></dependency>
    <dependency><groupId>org.apache.flink</groupId>
      <artifactId>flink-clients</artifactId><version>{flink}</version></dependency>
    <dependency><groupId>org.apache.flink</groupId>
      <artifactId>flink-streaming-java</artifactId><version>{flink}</version></dependency>
    <dependency><groupId>org.slf4j</groupId>
      <artifactId>slf4j-simple</artifactId><version>1.7.30</version></dependency>
  </dependencies>
</project>
"""

PRISM_NO_SPLITS = "--experiments=prism_disable_sdf_split"
# How long Beam's client follows a Prism or Flink job (seconds): a stream runs for good.
JOB_STREAM_DEADLINE = 365 * 24 * 3600

# Flink's own listeners (BLOB server, REST endpoint) on loopback; its RPC is in-process.
FLINK_LOCAL_CONFIG = "jobmanager.bind-host: 127.0.0.1\nrest.bind-address: 127.0.0.1\n"

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


def flink_job_server_jar(cache_dir: Path = CACHE_DIR,
                         version: str = FLINK_JOB_SERVER_VERSION) -> Path:
    """A launcher jar for Beam's Flink job server (``java -jar`` runs it), assembled if needed."""
    home = cache_dir / f"flink-job-server-{version}"
    launcher = home / "launcher.jar"
    if launcher.exists():
        return launcher
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise RuntimeError("assembling Flink's job server needs Java 17 and Maven on the PATH")
    log.warning("assembling Beam's Flink job server %s from Maven Central into %s "
                "(once, about 2 minutes)", version, home)
    home.mkdir(parents=True, exist_ok=True)
    (home / "pom.xml").write_text(FLINK_JOB_SERVER_POM.format(beam=version, flink=FLINK_VERSION))
    done = subprocess.run(
        ["mvn", "-B", "-q", f"-Dmaven.repo.local={cache_dir / 'm2'}",
         "dependency:copy-dependencies", "-DoutputDirectory=lib", "-DincludeScope=runtime"],
        cwd=home, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mvn could not fetch the Flink job server:\n{done.stdout[-3000:]}")
    jars = sorted(p.name for p in (home / "lib").glob("*.jar"))
    manifest = "".join(_manifest_line(line) for line in [
        "Manifest-Version: 1.0",
        "Main-Class: org.apache.beam.runners.flink.FlinkJobServerDriver",
        "Class-Path: " + " ".join(f"lib/{jar}" for jar in jars)]) + "\r\n"
    staged = home / "launcher.jar.tmp"
    with zipfile.ZipFile(staged, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", manifest)
    staged.rename(launcher)
    return launcher


def _manifest_line(line: str) -> str:
    # A JAR manifest line holds at most 72 bytes; longer ones continue after a space.
    data = line.encode("utf-8")
    parts = [data[:72]] + [b" " + data[i:i + 71] for i in range(72, len(data), 71)]
    return "".join(part.decode("utf-8") + "\r\n" for part in parts)


def flink_local_conf_dir(cache_dir: Path = CACHE_DIR) -> Path:
    """A Flink configuration folder that keeps a local Flink's own servers on 127.0.0.1."""
    folder = cache_dir / "flink-conf-localhost"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(FLINK_LOCAL_CONFIG)
    return folder


def loopback_java_launcher(cache_dir: Path = CACHE_DIR) -> Path:
    """A ``java`` wrapper whose JVM listens on loopback only (built with gcc if needed)."""
    folder = cache_dir / "loopback-bind"
    library, launcher = folder / "libloopbackbind.so", folder / "java"
    if not library.exists():
        if shutil.which("gcc") is None:
            raise RuntimeError("keeping a local Flink on 127.0.0.1 needs gcc on the PATH")
        folder.mkdir(parents=True, exist_ok=True)
        source = Path(__file__).with_name("loopback_bind.c")
        staged = folder / "libloopbackbind.so.tmp"
        done = subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(staged), str(source),
                               "-ldl"], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"gcc could not build {source.name}:\n{done.stderr}")
        staged.rename(library)
    launcher.write_text(f'#!/bin/sh\nLD_PRELOAD="{library}${{LD_PRELOAD:+:$LD_PRELOAD}}" '
                        'exec java "$@"\n')
    launcher.chmod(0o755)
    return launcher


class LocalWorkerPool:
    """Beam's Python SDK worker pool, in this process, on 127.0.0.1 (a context manager)."""

    def __init__(self, state_cache_mb: int = STATE_CACHE_MB):
        self.address: Optional[str] = None
        self.state_cache_mb = state_cache_mb
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
            BeamFnExternalWorkerPoolServicer(state_cache_size=self.state_cache_mb << 20,
                                             data_buffer_time_limit_ms=-1), self._server)
        self._server.start()
        self.address = f"127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop(grace=1)


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
