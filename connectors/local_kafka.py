"""A real single-node Apache Kafka broker (KRaft mode) for tests and local development.

The broker jars come from Maven Central through ``mvn`` and are cached, so only the
first run needs the network.  The broker and its controller listen on 127.0.0.1
only, keep their data in a private temporary directory, and survive ``kill()`` +
``restart()`` with their data intact, which lets tests simulate broker crashes.

Developers can run ``python -m connectors.local_kafka [--port P] [--version V]``.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import NoReturn

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from common.ports import free_port

DEFAULT_KAFKA_VERSION = "4.1.2"
MESSAGE_MAX_BYTES = 16 * 1024 * 1024
_LOG4J_VERSION = "2.24.3"  # the log4j2 line Kafka 4.x ships with
_COMPLETE_MARKER = ".complete"
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>newsloom</groupId><artifactId>kafka-jars</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""
# Kafka's pom declares only slf4j-api; the binding above plus this config gives plain
# INFO logs on stdout, which LocalKafkaBroker redirects into its broker.log.
_LOG4J2_PROPERTIES = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
"""


def fetch_kafka_jars(cache_dir: Path | None = None, kafka_version: str = DEFAULT_KAFKA_VERSION) -> Path:
    """Return a folder holding ``kafka_2.13:<kafka_version>`` and all its runtime jars.

    Resolution is done by Maven itself (``mvn dependency:copy-dependencies`` on a
    generated pom), into ``<cache_dir or $NEWSLOOM_CACHE or ~/.cache/newsloom>/kafka-<version>/jars``.
    A marker file is written only after a successful fetch, so an interrupted fetch is
    redone and a completed one makes later calls free.  ``log4j2.properties`` sits next
    to the ``jars`` folder.
    """
    root = cache_dir or Path(os.environ.get("NEWSLOOM_CACHE") or Path.home() / ".cache" / "newsloom")
    target = root / f"kafka-{kafka_version}"
    jars = target / "jars"
    if (target / _COMPLETE_MARKER).exists():
        return jars
    target.mkdir(parents=True, exist_ok=True)
    (target / "pom.xml").write_text(_POM.format(kafka=kafka_version, log4j=_LOG4J_VERSION))
    (target / "log4j2.properties").write_text(_LOG4J2_PROPERTIES)
    shutil.rmtree(jars, ignore_errors=True)
    result = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(target / "pom.xml"),
         "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={jars}"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"mvn could not fetch Kafka {kafka_version}:\n{result.stdout}\n{result.stderr}")
    (target / _COMPLETE_MARKER).write_text(kafka_version)
    return jars


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise RuntimeError("No java found: set JAVA_HOME or put java on PATH (Kafka 4 needs Java 17+)")
    return java


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _random_cluster_id() -> str:
    """Kafka's Uuid text form (url-safe unpadded base64 of 16 bytes), never starting
    with '-' (top bit cleared), which the storage tool would read as an option."""
    raw = bytearray(uuid.uuid4().bytes)
    raw[0] &= 0x7F
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


class LocalKafkaBroker:
    """One Kafka broker+controller process on 127.0.0.1, with data in a temp dir.

    ``start()`` returns once the broker answers metadata requests.  ``restart()`` reuses
    the same ports and data directory, so produced messages and committed offsets
    survive ``stop()``/``kill()``.  Leaving the ``with`` block (or ``close()``) stops
    the broker and deletes the temp dir.
    """

    def __init__(self, port: int | None = None, kafka_version: str = DEFAULT_KAFKA_VERSION,
                 cache_dir: Path | None = None, message_max_bytes: int = MESSAGE_MAX_BYTES,
                 extra_properties: Mapping[str, str] | None = None, startup_timeout: float = 60.0) -> None:
        self._jars = fetch_kafka_jars(cache_dir, kafka_version)
        self._port = port
        self._controller_port: int | None = None
        self._message_max_bytes = message_max_bytes
        self._extra_properties = dict(extra_properties or {})
        self._startup_timeout = startup_timeout
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self._port is None:
            raise RuntimeError("broker not started")
        return f"127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_file(self) -> Path:
        if self._dir is None:
            raise RuntimeError("broker not started")
        return self._dir / "broker.log"

    def _properties(self, data_dir: Path) -> dict[str, str]:
        return {
            # Combined mode: one JVM is both the broker and the single KRaft voter.
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self._controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self._port},CONTROLLER://127.0.0.1:{self._controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self._port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data_dir),
            # Internal topics default to replication 3, impossible on one broker.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            # __consumer_offsets: 1 partition instead of 50, so the first group commit is fast.
            "offsets.topic.num.partitions": "1",
            # Consumer groups form immediately instead of waiting 3 s for more members.
            "group.initial.rebalance.delay.ms": "0",
            # After kill() the controller rejects the restarted broker's registration until
            # the old session expires (default 9 s); 3 s keeps restart() quick.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "num.partitions": "1",
            # Tests must create topics explicitly; a typo should fail, not invent a topic.
            "auto.create.topics.enable": "false",
            # The 1 MB default is too small for large articles (clients must raise
            # their own max_request_size / fetch sizes too).
            "message.max.bytes": str(self._message_max_bytes),
            **self._extra_properties,
        }

    def start(self) -> LocalKafkaBroker:
        """Format fresh storage in a new temp dir, launch the broker and wait until it answers.

        On failure the temp dir is removed and the error carries the relevant output.
        """
        if self._dir is not None:
            raise RuntimeError("broker already started; use restart()")
        self._dir = Path(tempfile.mkdtemp(prefix="newsloom-kafka-"))
        self._port = self._port or free_port()
        self._controller_port = free_port(avoid=self._port)
        config = self._dir / "server.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in self._properties(self._dir / "data").items()))
        try:
            result = subprocess.run(
                self._java_command("kafka.tools.StorageTool", "format", "-t", _random_cluster_id(), "-c", str(config)),
                capture_output=True, text=True, check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(f"Kafka storage format failed:\n{result.stdout}\n{result.stderr}")
            self._launch()
        except BaseException:
            self.close()
            raise
        return self

    def restart(self) -> None:
        """Stop the broker if it still runs, then start it on the same ports and data dir."""
        if self._dir is None:
            raise RuntimeError("broker never started")
        self.stop()
        self._launch()

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL the broker, simulating a crash (no clean shutdown, data stays on disk)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def close(self) -> None:
        """Stop the broker and delete its temp dir (data, config and log)."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def create_topic(self, name: str, partitions: int = 1,
                     config: dict[str, str] | None = None) -> None:
        """Create a topic (replication 1, with topic ``config`` such as ``retention.ms``)
        and wait until every partition has a leader."""
        settings = {"num_partitions": partitions, "replication_factor": 1}
        if config:
            settings["configs"] = config
        with KafkaAdminClient(bootstrap_servers=self.bootstrap_servers) as admin:
            admin.create_topics({name: settings}, wait_for_metadata=True)

    def __enter__(self) -> LocalKafkaBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _java_command(self, main_class: str, *args: str) -> list[str]:
        log4j2 = self._jars.parent / "log4j2.properties"
        # Small heap; C1-only JIT and serial GC cut JVM start-up by ~30% (measured), and
        # peak throughput does not matter for a test broker.
        return [_java(), "-Xmx512m", "-Xms128m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j2}",
                "-cp", f"{self._jars}/*", main_class, *args]

    def _launch(self) -> None:
        assert self._dir is not None and self._port is not None and self._controller_port is not None
        for port in (self._port, self._controller_port):
            if _listening(port):
                raise RuntimeError(f"127.0.0.1:{port} is already in use; cannot start Kafka there")
        with open(self.log_file, "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(self._java_command("kafka.Kafka", str(self._dir / "server.properties")),
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._proc = proc
        deadline = time.monotonic() + self._startup_timeout
        # Wait for the listener (nothing listened before, so it is ours) before creating
        # a client: each failed KafkaAdminClient construction leaves its network thread behind.
        while not _listening(self._port):
            if proc.poll() is not None:
                self._fail(f"exited with code {proc.returncode}")
            if time.monotonic() > deadline:
                self._fail(f"did not open port {self._port} within {self._startup_timeout}s")
            time.sleep(0.1)
        remaining_ms = max(1000, int((deadline - time.monotonic()) * 1000))
        try:
            with KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, bootstrap_timeout_ms=remaining_ms) as admin:
                admin.list_topics()
        except KafkaError as error:
            self._fail(f"did not answer metadata requests: {error!r}")

    def _fail(self, reason: str) -> NoReturn:
        self.kill()
        tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"Kafka broker {reason}; last lines of {self.log_file}:\n{tail}")


def main(argv: list[str] | None = None) -> None:
    """Run a broker in the foreground until Ctrl-C, printing its bootstrap address."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="fixed PLAINTEXT port (default: a free one)")
    parser.add_argument("--version", default=DEFAULT_KAFKA_VERSION, help="Kafka version from Maven Central")
    args = parser.parse_args(argv)
    # `kill <pid>` should clean up like Ctrl-C instead of orphaning the broker JVM.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with LocalKafkaBroker(port=args.port, kafka_version=args.version) as broker:
            print(f"Kafka {args.version} running; bootstrap_servers={broker.bootstrap_servers}", flush=True)
            print(f"Broker log: {broker.log_file}  (Ctrl-C to stop)", flush=True)
            while broker.running:
                time.sleep(1)
    except KeyboardInterrupt:
        print("stopped", flush=True)


if __name__ == "__main__":
    main()
