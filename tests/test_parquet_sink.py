"""The Parquet sink lands every row, in partition folders it creates itself."""

from datetime import datetime, timedelta, timezone

import apache_beam as beam
import pyarrow.dataset as ds
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from connectors.parquet_sink import ParquetPartitionSink, day_of, partition_path
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
