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
from typing import List

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

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


def read_last_window(output: str, window_seconds: float) -> List[dict]:
    """The story-state rows of ``output`` within ``window_seconds`` of its latest one
    (by event time); none when it has no story state. A file of another schema
    version is an error that names it."""
    pattern = FileSystems.join(state_dir(output), f"{DAY_PREFIX}*", "*.parquet")
    paths = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    if not paths:
        return []
    days = {path: _day_of_path(path) for path in paths}
    first_day = max(days.values()) - timedelta(days=math.ceil(window_seconds / 86400))
    rows = []
    for path in sorted(p for p, day in days.items() if day >= first_day):
        with FileSystems.open(path) as stream:
            table = pq.read_table(stream)
        version = (table.schema.metadata or {}).get(b"newsloom.schema_version", b"?").decode()
        if version != str(SCHEMA_VERSION):
            raise ValueError(f"{path}: story state of schema version {version}; this newsloom "
                             f"reads version {SCHEMA_VERSION}")
        rows.extend(table.to_pylist())
    if not rows:
        return []
    since = max(event_time(row) for row in rows) - timedelta(seconds=window_seconds)
    return [row for row in rows if event_time(row) >= since]


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
            rows = read_last_window(output, window)
            logging.info("story state: %d articles of the last story window of %s, read in "
                         "%.1f s", len(rows), state_dir(output), time.monotonic() - started)
            for row in rows:
                yield TimestampedValue(row, Timestamp(
                    micros=(event_time(row) - EPOCH) // timedelta(microseconds=1)))

        return pbegin | "Start" >> beam.Create([None]) | "ReadLastWindow" >> beam.FlatMap(read)
