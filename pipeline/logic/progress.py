"""A batch run's progress: counts the steps add to, the line that shows them, and
the thread that prints it on stderr.

The counts live in this process. The default FnApiRunner (and the
DirectRunner, unless ``--direct_running_mode=multi_processing``) runs the
steps in it, so they see every record; a runner with workers of its own
(Prism, Flink, Dataflow) counts in those workers, and no line is shown.
"""

import threading
import time
from contextlib import contextmanager
from typing import Dict, Iterator, Optional, TextIO

COUNTS = ("read", "rejected", "done", "written")


class Progress:
    """Thread-safe counts of one run: articles ``read`` and records ``rejected`` by
    the source, articles ``done`` (through every step but the write) and ``written``."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: Dict[str, int] = dict.fromkeys(COUNTS, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def reset(self) -> None:
        with self._lock:
            self.counts = dict.fromkeys(COUNTS, 0)

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return dict(self.counts)


# The run's counts, found by the steps as this module's attribute at run time.
RUN = Progress()


def duration(seconds: float) -> str:
    """``1:02:03`` or ``2:03``."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(counts: Dict[str, int], elapsed: float) -> str:
    """What a run has done after ``elapsed`` seconds, in one line.

    The time left is shown once articles are done: the runner has then read
    every record (it reads the whole input before the steps that follow), so
    the number of articles to do is known; it assumes the rate so far holds.
    """
    rate = counts["done"] / elapsed if elapsed > 0 else 0.0
    read = f"read {counts['read'] + counts['rejected']:,} records"
    if counts["rejected"]:
        read += f" ({counts['rejected']:,} rejected)"
    parts = [read, f"{counts['done']:,} articles done", f"{counts['written']:,} written",
             f"{rate:.1f} articles/s", f"{duration(elapsed)} elapsed"]
    to_do = counts["read"] - counts["done"]
    if counts["done"] and rate > 0 and to_do > 0:
        parts.append(f"about {duration(to_do / rate)} left")
    return " · ".join(parts)


@contextmanager
def shown(stream: TextIO, live_every: float = 0.5, plain_every: float = 30.0,
          progress: Optional[Progress] = None) -> Iterator[None]:
    """Shows ``progress`` (``RUN``) on ``stream`` while the block runs: one line
    rewritten in place on a terminal every ``live_every`` seconds, else a plain line
    every ``plain_every`` seconds; and a last line when the block ends."""
    progress = progress or RUN
    progress.reset()
    started = time.monotonic()
    live = stream.isatty()
    stop = threading.Event()

    def line() -> str:
        return "newsloom: " + progress_line(progress.snapshot(), time.monotonic() - started)

    def report():
        while not stop.wait(live_every if live else plain_every):
            stream.write(f"\r\x1b[K{line()}" if live else f"{line()}\n")
            stream.flush()

    reporter = threading.Thread(target=report, name="newsloom-progress", daemon=True)
    reporter.start()
    try:
        yield
    finally:
        stop.set()
        reporter.join()
        stream.write(f"\r\x1b[K{line()}\n" if live else f"{line()}\n")
        stream.flush()
