"""Prism, built from the Go module proxy with its one listener on 127.0.0.1."""

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

import apache_beam

from pipeline.runners import CACHE_DIR

BEAM_MODULE = "github.com/apache/beam/sdks/v2"
# The file and the line that choose Prism's listen address, in the Beam Go module.
LISTENER_FILE = "go/pkg/beam/runners/prism/internal/jobservices/server.go"
ALL_INTERFACES = 'net.Listen("tcp", fmt.Sprintf(":%d", port))'
LOOPBACK_ONLY = 'net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))'
PRISM_NO_SPLITS = "--experiments=prism_disable_sdf_split"
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
