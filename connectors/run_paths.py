"""A run's input and output, checked before anything is read, and its output held.

A missing input is refused; an input that has no file to read (an empty
folder, a glob matching nothing) is a warning, and the run reads nothing.
An output that is a file, cannot be created or cannot be written is refused.

One run at a time: a run holds an exclusive lock (``fcntl.flock``) on
``OUT/_lock`` from start to end, and a second run into the same output is
refused. The operating system releases the lock when the process ends, even
when it is killed, so no stale lock is ever left behind.

A run that dies (killed, or its machine lost) leaves its ``_temporary-<run>/``
behind. The next run, holding the lock and so sure no other run is writing,
removes every folder of that pattern directly inside ``OUT``, and nothing else.

A run writes only below its output folder ``OUT``: ``articles/``,
``deadletter/``, ``stories/``, ``_runs/<run>.json`` and its own
``_temporary-<run>/``, which it creates at start and removes at the end.
It deletes nothing else. Only a local output is checked and prepared here;
on another filesystem (``gs://``, ``s3://``) the sinks create what they need.
"""

import fcntl
import glob
import logging
import os
import re
import shutil
from contextlib import contextmanager
from typing import Iterator, Optional

TEMPORARY_PREFIX = "_temporary-"
# A run id is one path segment of the output: it can name nothing outside it.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

log = logging.getLogger(__name__)


def is_run_id(value: str) -> bool:
    return bool(RUN_ID.fullmatch(value)) and ".." not in value


class RunRefused(ValueError):
    """A run refused before it starts; the message is one line for the user."""


def is_local(path: str) -> bool:
    return "://" not in path


def check_input(path: str) -> Optional[str]:
    """Refuses a local ``path`` that does not exist; says so when it has no file to read."""
    if not is_local(path):
        return None  # the read itself reports what it cannot find
    if glob.has_magic(path):
        if not any(os.path.isfile(p) for p in glob.iglob(path, recursive=True)):
            return f"--input {path} matches no file: nothing to read"
    elif not os.path.exists(path):
        raise RunRefused(f"--input {path}: no such file or folder")
    elif os.path.isdir(path) and not any(files for _, _, files in os.walk(path)):
        return f"--input {path} is a folder without files: nothing to read"
    return None


@contextmanager
def held_output(output: str, run_id: str) -> Iterator[None]:
    """Prepares local ``output`` for run ``run_id`` for as long as the context lasts.

    Raises ``RunRefused`` when ``output`` is a file or cannot be written, when
    another run holds it, or when ``run_id`` already names a run there.
    """
    if not is_local(output):
        yield
        return
    if os.path.exists(output) and not os.path.isdir(output):
        raise RunRefused(f"--output {output} is a file, not a folder")
    try:
        os.makedirs(output, exist_ok=True)
        lock = os.open(os.path.join(output, "_lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunRefused(f"--output {output} cannot be written: {e.strerror}") from None
    try:
        _take(lock, output)
        yield from _prepare(output, run_id)
    finally:
        os.close(lock)  # releases the lock


def _take(lock: int, output: str) -> None:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(lock, 32, 0).decode("ascii", "replace").strip()
        raise RunRefused(f"--output {output} is in use by another newsloom run (pid {holder}): "
                         "one run at a time per output") from None
    os.ftruncate(lock, 0)
    os.pwrite(lock, str(os.getpid()).encode("ascii"), 0)


def remove_dead_runs_temporaries(output: str) -> None:
    """Removes ``output/_temporary-<run id>/`` folders (not links, not files): the
    caller holds the lock, so they are what dead runs left."""
    for entry in os.scandir(output):
        if (entry.name.startswith(TEMPORARY_PREFIX) and entry.is_dir(follow_symlinks=False)
                and is_run_id(entry.name[len(TEMPORARY_PREFIX):])):
            shutil.rmtree(entry.path)
            log.warning("removed %s, left by a run that did not finish", entry.path)


@contextmanager
def held_slice(output: str, run_id: str) -> Iterator[None]:
    """Prepares local ``output``, which the caller holds (``held_output``), for
    ``run_id``, one slice of its run, as ``held_output`` prepares it for a run."""
    if is_local(output):
        yield from _prepare_run(output, run_id)
    else:
        yield


def _prepare(output: str, run_id: str) -> Iterator[None]:
    remove_dead_runs_temporaries(output)
    yield from _prepare_run(output, run_id)


def _prepare_run(output: str, run_id: str) -> Iterator[None]:
    summary = os.path.join(output, "_runs", f"{run_id}.json")
    if os.path.exists(summary):
        raise RunRefused(f"--run_id {run_id}: {summary} exists; a run id names one run")
    temporary = os.path.join(output, TEMPORARY_PREFIX + run_id)
    try:
        # The run's files pass through this folder; it must be the run's own.
        os.mkdir(temporary)
    except FileExistsError:
        raise RunRefused(f"--run_id {run_id}: {temporary} exists and is not a folder a run "
                         "left") from None
    try:
        yield
    finally:
        try:
            os.rmdir(temporary)  # a finished batch removed it; a failed one may leave it empty
        except OSError:
            pass
