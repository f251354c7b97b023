"""Reads the story state that earlier runs wrote beside the dataset
(``OUTPUT/_state/``, ``schemas.story_state``), so a run continues their stories.

What is read: the rows whose event time is within one story window of the
latest row's (the dataset's last story window). Only the ``dt`` folders that
can hold such rows are opened, so the cost is that of one window, however
long the dataset's history.
"""

import logging
import math
import time
from datetime import date, datetime, timedelta, timezone
from typing import Iterator, List, Optional

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from common.heap import trim_heap
from schemas.article import event_time
from schemas.story_state import SCHEMA_VERSION

STATE_FOLDER = "_state"
DAY_PREFIX = "dt="
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def state_dir(output: str) -> str:
    return FileSystems.join(output, STATE_FOLDER)


def _day_of_path(path: str) -> date:
    folder = path.replace("\\", "/").rsplit("/", 2)[-2]
    return date.fromisoformat(folder[len(DAY_PREFIX):])


# Rows converted to Python at a time: Arrow's pool keeps what a read used, so the
# state is read a batch at a time, never as one table.
ROWS_AT_ONCE = 1024


def _recent_state_files(output: str, window_seconds: float) -> List[str]:
    """The state files of ``output`` in the ``dt`` folders that can hold its last window."""
    pattern = FileSystems.join(state_dir(output), f"{DAY_PREFIX}*", "*.parquet")
    paths = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    if not paths:
        return []
    days = {path: _day_of_path(path) for path in paths}
    first_day = max(days.values()) - timedelta(days=math.ceil(window_seconds / 86400))
    return sorted(p for p, day in days.items() if day >= first_day)


def _event_times(rows) -> pa.Array:
    """``schemas.article.event_time`` of each of ``rows`` (a table or a record batch)."""
    return pc.coalesce(rows.column("published_at"), rows.column("ingested_at"))


def _latest_event_time(path: str) -> Optional[datetime]:
    """The latest event time in the state file at ``path`` (None when it has no rows),
    reading only the time columns; a file of another schema version is an error."""
    with FileSystems.open(path) as stream:
        state = pq.ParquetFile(stream)
        version = (state.schema_arrow.metadata or {}).get(b"newsloom.schema_version",
                                                          b"?").decode()
        if version != str(SCHEMA_VERSION):
            raise ValueError(f"{path}: story state of schema version {version}; this newsloom "
                             f"reads version {SCHEMA_VERSION}")
        return pc.max(_event_times(state.read(columns=["published_at", "ingested_at"]))).as_py()


def read_last_window(output: str, window_seconds: float) -> Iterator[dict]:
    """The story-state rows of ``output`` within ``window_seconds`` of its latest one
    (by event time), read a batch of rows at a time; none when it has no story state.
    A file of another schema version is an error that names it, before any row."""
    paths = _recent_state_files(output, window_seconds)
    latest = max(filter(None, map(_latest_event_time, paths)), default=None)
    if latest is None:
        return
    since = latest - timedelta(seconds=window_seconds)
    for path in paths:
        with FileSystems.open(path) as stream:
            for batch in pq.ParquetFile(stream).iter_batches(ROWS_AT_ONCE):
                times = _event_times(batch)
                yield from batch.filter(pc.greater_equal(
                    times, pa.scalar(since, type=times.type))).to_pylist()


class ReadStoryState(beam.PTransform):
    """The last story window's state rows of ``output``, each at its event time."""

    def __init__(self, output: str, window_seconds: float):
        super().__init__()
        self.output = output
        self.window_seconds = window_seconds

    def expand(self, pbegin):
        output, window = self.output, self.window_seconds

        def read(_):
            started = time.monotonic()
            count = 0
            for row in read_last_window(output, window):
                count += 1
                yield TimestampedValue(row, Timestamp(
                    micros=(event_time(row) - EPOCH) // timedelta(microseconds=1)))
            logging.info("story state: %d articles of the last story window of %s, read in "
                         "%.1f s", count, state_dir(output), time.monotonic() - started)
            # What reading the files used would otherwise stay in Arrow's pool and the
            # C heap for the rest of the run.
            trim_heap()

        return pbegin | "Start" >> beam.Create([None]) | "ReadLastWindow" >> beam.FlatMap(read)
