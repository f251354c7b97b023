"""Hive-partitioned Parquet: ``BASE/k1=v1/k2=v2/part-<run>[-w<window>]-<digest>.parquet``.

Readable as is by ``pyarrow.dataset.dataset(BASE, partitioning="hive")``,
DuckDB's ``read_parquet('BASE/**/*.parquet', hive_partitioning=true)``,
pandas, Spark and BigQuery external tables. Partition columns live in the
path only, as Hive expects, not inside the files.

Why not ``fileio.WriteToFiles``: on the local filesystem its final rename does
not create the partition folder, and Beam then leaves the files in its temp
folder while reporting success. Here every file is written under
``OUTPUT/_temporary-<run>/`` and moved into place after its partition folder
is made, so a file in the dataset is always complete, and the step outputs a
``SinkResult`` for each file it finalised, which the run summary adds up.
"""

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple
from urllib.parse import quote

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.coders import PickleCoder
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer

from common.event_timers import arm_at
from connectors.run_paths import TEMPORARY_PREFIX
from schemas.record import RecordSchema

Row = Dict[str, Any]
Partitioner = Callable[[Row], List[Tuple[str, str]]]
WindowOf = Callable[[Row], Tuple[int, int]]  # a row's event-time window, µs


@dataclass(frozen=True)
class SinkResult:
    """What one write did: a finalised file and its rows, or rows already in the dataset."""

    path: Optional[str]
    rows: int
    already_present: int = 0


def day_of(moment: datetime) -> str:
    """The ``dt`` partition value of a UTC time."""
    return moment.strftime("%Y-%m-%d")


def partition_path(partition: Iterable[Tuple[str, str]]) -> str:
    """``k1=v1/k2=v2``, each value escaped so it is one safe path segment."""
    return "/".join(f"{key}={quote(str(value), safe='')}" for key, value in partition)


def temporary_dir(output: str, run_id: str) -> str:
    """Where a run's files are written before they are moved into the dataset."""
    return FileSystems.join(output, TEMPORARY_PREFIX + run_id)


def _make_dirs(path: str) -> None:
    # Two workers may race to make the same partition folder: losing is fine.
    try:
        FileSystems.mkdirs(path)
    except IOError:
        if not FileSystems.exists(path):
            raise


def rows_digest(rows: Iterable[Row]) -> str:
    """The SHA-1 of the rows' reprs (items sorted), one a line, hashed row by row: a
    story-state row's repr is some 14 KB, so a file's joined would be hundreds of MB."""
    digest = hashlib.sha1()
    for i, row in enumerate(rows):
        digest.update((("\n" if i else "") + repr(sorted(row.items()))).encode("utf-8"))
    return digest.hexdigest()


class PartitionFileWriter:
    """Writes rows of one partition into finalised files (plain code, no Beam)."""

    def __init__(self, dataset_path: str, temp_dir: str, schema: RecordSchema,
                 partition_columns: Tuple[str, ...], sort_by: Tuple[str, ...], run_id: str,
                 rows_per_file: int, compression: str, unique_key: Optional[str]):
        self.rows_per_file = rows_per_file
        self.unique_key = unique_key
        self.dataset_path = dataset_path
        self.temp_dir = temp_dir
        self.schema = schema
        self.partition_columns = partition_columns
        self.sort_by = sort_by
        self.run_id = run_id
        self.compression = compression

    def _existing_keys(self, folder: str) -> Set[Any]:
        pattern = FileSystems.join(folder, "*.parquet")
        keys: Set[Any] = set()
        for metadata in FileSystems.match([pattern])[0].metadata_list:
            with FileSystems.open(metadata.path) as stream:
                keys.update(pq.read_table(stream, columns=[self.unique_key])
                            .column(0).to_pylist())
        return keys

    def write(self, partition: str, rows: Iterable[Row],
              window: Optional[str] = None) -> Iterable[SinkResult]:
        """Writes ``rows`` of ``partition`` (of ``window``, named in the files, on a stream)."""
        rows = sorted(rows, key=lambda r: tuple(str(r.get(k)) for k in self.sort_by))
        if self.unique_key:
            existing = self._existing_keys(FileSystems.join(self.dataset_path, partition))
            fresh = [r for r in rows if r[self.unique_key] not in existing]
            if len(fresh) < len(rows):
                yield SinkResult(None, 0, already_present=len(rows) - len(fresh))
            rows = fresh
        for start in range(0, len(rows), self.rows_per_file):
            yield self._write_file(partition, rows[start:start + self.rows_per_file], window)

    def _write_file(self, partition: str, rows: List[Row], window: Optional[str]) -> SinkResult:
        table = pa.Table.from_pylist(rows, schema=self.schema.arrow_schema(
            drop=self.partition_columns))
        # The name depends only on the rows, so a retried batch replaces its file;
        # on a stream, a story's row of one window and its next differ in content.
        digest = rows_digest(rows)
        folder = FileSystems.join(self.dataset_path, partition)
        stem = f"part-{self.run_id}-{window}" if window else f"part-{self.run_id}"
        final = FileSystems.join(folder, f"{stem}-{digest[:16]}.parquet")
        temp = FileSystems.join(self.temp_dir, f"{uuid.uuid4().hex}.parquet")
        with FileSystems.create(temp) as stream:
            pq.write_table(table, stream, compression=self.compression)
        _make_dirs(folder)
        if FileSystems.exists(final):
            FileSystems.delete([final])
        FileSystems.rename([temp], [final])
        return SinkResult(final, len(rows))


class _WritePartitionFn(beam.DoFn):
    def __init__(self, writer: PartitionFileWriter):
        self.writer = writer

    def process(self, group: Tuple[str, Iterable[Row]]):
        partition, rows = group
        yield from self.writer.write(partition, rows)


class _WriteWindowsFn(beam.DoFn):
    """Keyed by partition: holds rows until the watermark passes their window's end
    (plus ``flush_delay``), then writes each window's rows to files of their own."""

    PENDING = BagStateSpec("pending", PickleCoder())  # (window start, row)
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def __init__(self, writer: PartitionFileWriter, window_of: WindowOf, flush_delay: int):
        self.writer = writer
        self.window_of = window_of
        self.flush_delay = flush_delay

    def _due(self, window: Tuple[int, int]) -> int:
        return window[1] + self.flush_delay

    def process(self, element, pending=beam.DoFn.StateParam(PENDING),
                flush=beam.DoFn.TimerParam(FLUSH)):
        _, row = element
        window = self.window_of(row)
        pending.add((window, row))
        # A timer per window (``arm_at``). A window whose time has passed is due
        # at once: the timer fires as soon as the runner sees it is behind the
        # watermark (a late pane of that window).
        arm_at(flush, self._due(window))

    @on_timer(FLUSH)
    def write_due_windows(self, partition=beam.DoFn.KeyParam, fired=beam.DoFn.TimestampParam,
                          pending=beam.DoFn.StateParam(PENDING)):
        due: Dict[Tuple[int, int], List[Row]] = {}
        waiting = []
        for window, row in pending.read():
            if self._due(window) <= fired.micros:
                due.setdefault(window, []).append(row)
            else:
                waiting.append((window, row))
        if not due:
            return  # a later window's timer fired first and wrote this one's rows
        pending.clear()
        for window, row in waiting:
            pending.add((window, row))
        for (start, _), rows in sorted(due.items(), key=lambda item: item[0]):
            yield from self.writer.write(partition, rows, window_label(start))


def window_label(start: int) -> str:
    """A window's name in file names: its UTC start, ``w20250801T120000Z``."""
    return f"w{datetime.fromtimestamp(start / 1e6, tz=timezone.utc):%Y%m%dT%H%M%SZ}"


class ParquetPartitionSink(beam.PTransform):
    """Writes dict rows of ``schema`` as Hive-partitioned Parquet files.

    Guarantee: when the step's output is complete, every input row is in
    exactly one finalised file, and a file appears in the dataset only whole.

    Bounded input: one partition's rows (a day and language) are gathered on
    one worker, then written ``rows_per_file`` at a time. (Not
    ``GroupIntoBatches``: its end-of-window flush reaches a later GroupByKey
    after that step has completed on the bundle-based DirectRunner.)

    A stream (``window_of`` set): rows wait in keyed state per partition until
    the watermark passes their window's end plus ``flush_delay``; then each
    window's rows are written to files named with the window's start
    (``part-<run>-w20250801T120000Z-<digest>.parquet``). A row arriving for a
    window already written goes to a further file of that window. Memory: the
    rows of the windows not yet written. The dataset's rows are then kept
    once by the stream's id state rather than by reading the partition back.

    Args:
        output: the run's output folder; files go to ``output/<name>/``.
        name: the dataset's folder name (``articles``, ``deadletter``).
        schema: the rows' record schema.
        partition_of: a row's ``[(column, value), ...]`` partition.
        partition_columns: the columns that live in the path, left out of the files.
        sort_by: columns ordering the rows inside each file (and naming it).
        run_id: stamped in every file name.
        rows_per_file: the most rows in one file.
        compression: Parquet codec (zstd, snappy, gzip, none).
        unique_key: bounded input only: a row whose key is already in a file of
            its partition is not written again (reported as ``already_present``),
            so re-reading input after a crash or a rerun adds no duplicate rows.
        window_of: on a stream, a row's event-time window ``(start, end)`` in
            microseconds.
        flush_delay: on a stream, how long after a window's end (µs of event
            time) its rows are written, so that rows an earlier step emits a
            little after the watermark passed them are still in the window's file.
    """

    def __init__(self, output: str, name: str, schema: RecordSchema, partition_of: Partitioner,
                 partition_columns: Tuple[str, ...], sort_by: Tuple[str, ...], run_id: str,
                 rows_per_file: int = 50_000, compression: str = "zstd",
                 unique_key: Optional[str] = None, window_of: Optional[WindowOf] = None,
                 flush_delay: int = 0):
        super().__init__()
        if rows_per_file < 1:
            raise ValueError(f"rows_per_file must be >= 1, got {rows_per_file}")
        if compression not in ("zstd", "snappy", "gzip", "none"):
            raise ValueError(f"unsupported Parquet compression {compression!r}")
        if flush_delay < 0:
            raise ValueError(f"flush_delay cannot be negative, got {flush_delay}")
        self.partition_of = partition_of
        self.window_of = window_of
        self.flush_delay = flush_delay
        self.writer = PartitionFileWriter(
            FileSystems.join(output, name), temporary_dir(output, run_id), schema,
            partition_columns, sort_by, run_id, rows_per_file, compression,
            None if window_of else unique_key)

    def expand(self, rows):
        partition_of = self.partition_of
        keyed = rows | "KeyByPartition" >> beam.Map(
            lambda r: (partition_path(partition_of(r)), r)).with_output_types(Tuple[str, Row])
        if self.window_of:
            return keyed | "WriteWindows" >> beam.ParDo(
                _WriteWindowsFn(self.writer, self.window_of, self.flush_delay))
        return (keyed
                | "GroupByPartition" >> beam.GroupByKey()
                | "WriteFiles" >> beam.ParDo(_WritePartitionFn(self.writer)))
