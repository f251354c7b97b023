"""Beam's Flink job server assembled from Maven Central, and a local Flink kept on 127.0.0.1."""

import logging
import shutil
import subprocess
import zipfile
from pathlib import Path

from pipeline.runners import CACHE_DIR

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

# Flink's own listeners (BLOB server, REST endpoint) on loopback; its RPC is in-process.
FLINK_LOCAL_CONFIG = "jobmanager.bind-host: 127.0.0.1\nrest.bind-address: 127.0.0.1\n"

log = logging.getLogger(__name__)


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
