"""The Parquet sink lands every row, in partition folders it creates itself."""

import tracemalloc
from datetime import datetime, timedelta, timezone

import apache_beam as beam
import pyarrow.dataset as ds
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from connectors.parquet_sink import (ParquetPartitionSink, PartitionFileWriter, day_of,
                                     partition_path)
from schemas.dead_letter import DEAD_LETTER, PARTITION_COLUMNS, make_dead_letter

START = datetime(2025, 1, 1, tzinfo=timezone.utc)


def rows(n):
    return [make_dead_letter(reason="empty", error="e", origin=f"file-{i % 7}", origin_offset=i,
                             raw=b"x" * (i % 50), raw_size=i % 50,
                             ingested_at=START + timedelta(days=i % 30), max_raw_bytes=20)
            for i in range(n)]


@pytest.mark.parametrize("runner", ["FnApiRunner", "BundleBasedDirectRunner"])
def test_every_row_lands_in_its_partition(tmp_path, runner):
    with beam.Pipeline(options=PipelineOptions([f"--runner={runner}"])) as p:
        written = (p | beam.Create(rows(1000))
                   | ParquetPartitionSink(str(tmp_path), "deadletter", DEAD_LETTER,
                                          lambda r: [("dt", day_of(r["ingested_at"]))],
                                          PARTITION_COLUMNS, sort_by=("origin", "origin_offset"),
                                          run_id="t", rows_per_file=7)
                   | beam.Map(lambda result: result.rows)
                   | beam.CombineGlobally(sum))
        written | beam.Map(lambda total: assert_equal(total, 1000))
    table = ds.dataset(tmp_path / "deadletter", partitioning="hive").to_table()
    assert sorted(table.column("origin_offset").to_pylist()) == list(range(1000))
    assert len(list((tmp_path / "deadletter").glob("dt=*"))) == 30
    assert max(pq_rows(f) for f in (tmp_path / "deadletter").rglob("*.parquet")) == 7
    assert table.column("raw_truncated").to_pylist().count(True) > 0
    assert not list(tmp_path.glob("_temporary*/*"))


def assert_equal(actual, expected):
    assert actual == expected, (actual, expected)


def pq_rows(path):
    import pyarrow.parquet as pq
    return pq.ParquetFile(path).metadata.num_rows


def test_partition_values_are_escaped_into_one_path_segment():
    assert partition_path([("dt", "2025-01-01"), ("lang", "a/b")]) == "dt=2025-01-01/lang=a%2Fb"


def test_constructor_checks_arguments(tmp_path):
    with pytest.raises(ValueError):
        ParquetPartitionSink(str(tmp_path), "x", DEAD_LETTER, lambda r: [], (), (), "t",
                             rows_per_file=0)
    with pytest.raises(ValueError):
        ParquetPartitionSink(str(tmp_path), "x", DEAD_LETTER, lambda r: [], (), (), "t",
                             compression="lzma")


def test_a_file_of_large_rows_is_written_without_a_copy_of_all_their_text(tmp_path):
    # 2,000 story-state-like rows of 4.5 KB of bytes: their reprs, which name the file,
    # are some 28 MB together. Joined, they would be held two or three times at once.
    large = [{**row, "raw": bytes(range(256)) * 18} for row in rows(2000)]
    writer = PartitionFileWriter(str(tmp_path / "deadletter"), str(tmp_path / "_temporary"),
                                 DEAD_LETTER, PARTITION_COLUMNS, ("origin", "origin_offset"),
                                 "t", rows_per_file=50_000, compression="zstd", unique_key=None)
    tracemalloc.start()
    try:
        [result] = writer.write("dt=2025-01-01", large)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.rows == 2000 and pq_rows(result.path) == 2000
    assert peak < 2000 * 4608
