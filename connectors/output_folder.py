"""The output folder as one run holds it: checked and prepared before anything is read.

One run at a time: a run holds an exclusive lock (``fcntl.flock``) on
``OUT/_lock`` from start to end, and a second run into the same output is
refused. The operating system releases the lock when the process ends, even
when it is killed, so no stale lock is ever left behind.

A run writes only below its output folder ``OUT``: ``articles/``,
``deadletter/``, ``stories/``, ``_runs/<run>.json`` and its own
``_temporary-<run>/``, which it creates at start and removes at the end.
It deletes nothing else. Only a local output is checked and prepared here;
on another filesystem (``gs://``, ``s3://``) the sinks create what they need.
"""

import fcntl
import os
from contextlib import contextmanager
from typing import Iterator

TEMPORARY_PREFIX = "_temporary-"


class RunRefused(ValueError):
    """A run refused before it starts; the message is one line for the user."""


def is_local(path: str) -> bool:
    return "://" not in path


@contextmanager
def held_output(output: str, run_id: str) -> Iterator[None]:
    """Prepares local ``output`` for run ``run_id`` for as long as the context lasts.

    Raises ``RunRefused`` when another run holds ``output``, when ``run_id``
    already names a run there or its temporary folder exists.
    """
    if not is_local(output):
        yield
        return
    os.makedirs(output, exist_ok=True)
    lock = os.open(os.path.join(output, "_lock"), os.O_RDWR | os.O_CREAT, 0o644)
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


def _prepare(output: str, run_id: str) -> Iterator[None]:
    summary = os.path.join(output, "_runs", f"{run_id}.json")
    if os.path.exists(summary):
        raise RunRefused(f"--run_id {run_id}: {summary} exists; a run id names one run")
    temporary = os.path.join(output, TEMPORARY_PREFIX + run_id)
    try:
        # The run's files pass through this folder; it must be the run's own.
        os.mkdir(temporary)
    except FileExistsError:
        raise RunRefused(f"--run_id {run_id}: {temporary} exists: another run with this id "
                         "is running") from None
    try:
        yield
    finally:
        try:
            os.rmdir(temporary)  # a finished batch removed it; a failed one may leave it empty
        except OSError:
            pass
