"""Runs continue the stories of the runs before them on the same output (issue 23, items 2
and 4; issue 21, item 10): the story state beside the dataset, read back."""

import json
import shutil
import tracemalloc
from datetime import datetime, timedelta, timezone

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.file_source import ReadArticleFiles
from connectors.story_state import read_last_window
from connectors.test_stream import ReadTestStream
from pipeline.graph import run
from schemas.story_state import STORY_STATE
from tests.conftest import SEEDS, seed_text
from tests.test_pipeline import read_dataset

# The README's query for the current stories, verbatim.
CURRENT_STORIES = (
    "select story_id, sum(member_count) as member_count, sum(duplicate_count) as duplicate_count, "
    "min(first_seen) as first_seen, max(last_seen) as last_seen, "
    "list_sort(list_distinct(flatten(list(languages)))) as languages "
    "from (from read_parquet('{out}/stories/**/*.parquet') qualify row_number() over "
    "(partition by story_id, run_id order by updated_at desc) = 1) group by story_id")


def seed_folder(root, name, prefixes):
    folder = root / name
    folder.mkdir()
    for prefix in prefixes:
        seed = next(SEEDS.glob(f"{prefix}_*.txt"))
        shutil.copy(seed, folder / seed.name)
    return folder


def stories_of(out):
    return {row["article_id"]: (row["story_id"], row["duplicate_of"], row["is_duplicate"])
            for row in read_dataset(out / "articles")}


def current_stories(out):
    rows = duckdb.sql(CURRENT_STORIES.format(out=out)).fetchall()
    return {row[0]: (row[1], row[2], row[5]) for row in rows}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("continue")
    one, split = root / "one", root / "split"
    run(["--input", str(seed_folder(root, "all", ["000", "001", "002", "003"])),
         "--output", str(one)])
    first = run(["--input", str(seed_folder(root, "first", ["000", "001"])),
                 "--output", str(split)])
    second = run(["--input", str(seed_folder(root, "second", ["002", "003"])),
                  "--output", str(split)])
    return root, one, split, first, second


def test_seeds_split_over_two_runs_get_the_stories_and_duplicates_of_one_run(runs):
    _, one, split, _, second = runs
    assert stories_of(split) == stories_of(one)
    # The second run's English seed translates the first run's Bengali 000.
    assert stories_of(split)["002_5280d6251c69819e"][:2] == ("000_ec83a21fc30a0c64",) * 2
    assert second["duplicates_by_kind"] == {"translation": 1}
    # One story row per story and run; the README's one line adds them up.
    assert current_stories(split) == current_stories(one)
    assert current_stories(split)["000_ec83a21fc30a0c64"] == (2, 1, ["bn", "en"])


def test_a_rerun_on_a_later_day_adds_no_article_rows(runs):
    root, one, _, _, _ = runs
    before = read_dataset(one / "articles")
    folder = root / "all"
    # The same files read a day later: .txt articles have no publication time, so
    # their rows would go to the next day's partitions.
    later = datetime.now(timezone.utc) + timedelta(days=1)
    summary = run(["--input", str(folder), "--output", str(one)], source=ReadArticleFiles(
        str(folder), ingested_at=later, max_article_bytes=1 << 20, max_dead_letter_bytes=1024))
    assert summary["articles"] == 0 and summary["read"] == 4
    assert summary["dead_letters_by_reason"] == {"duplicate_article_id": 4}
    assert sorted(r["article_id"] for r in read_dataset(one / "articles")) == sorted(
        r["article_id"] for r in before)
    errors = [r["error"] for r in read_dataset(one / "deadletter")]
    assert all("written by an earlier run" in e for e in errors), errors


def stream(root, out, name, records):
    """A streaming job on ``records`` (id, published at second, seed) as a TestStream,
    run until its input ends, as a job stopped and restarted would be."""
    t0 = datetime(2025, 8, 18, 12, 0, tzinfo=timezone.utc)
    folder = root / name
    folder.mkdir()
    (folder / "feed.jsonl").write_text("\n".join(json.dumps({
        "id": article_id, "body": seed_text(seed),
        "published_at": (t0 + timedelta(seconds=second)).isoformat()})
        for article_id, second, seed in records) + "\n", encoding="utf-8")
    run(["--output", str(out), "--runner=BundleBasedDirectRunner", "--streaming",
         "--window_seconds=60", "--story_window_hours=0.1"],
        source=ReadTestStream(str(folder), ingested_at=t0, window_seconds=60))


@pytest.mark.slow
def test_a_restarted_stream_continues_its_stories_and_drops_ids_it_wrote(tmp_path):
    out = tmp_path / "out"
    stream(tmp_path, out, "first", [("bn-report", 5, "000"), ("bn-call", 70, "001")])
    # The restarted job reads bn-call again (its offset was not committed), and the
    # English translation of bn-report, published 15 s after it.
    stream(tmp_path, out, "second", [("bn-call", 70, "001"), ("en-report", 20, "002"),
                                     ("ar-moscow", 130, "003")])
    assert stories_of(out) == {"bn-report": ("bn-report", None, False),
                               "bn-call": ("bn-call", None, False),
                               "en-report": ("bn-report", "bn-report", True),
                               "ar-moscow": ("ar-moscow", None, False)}
    assert [d["reason"] for d in read_dataset(out / "deadletter")] == ["duplicate_article_id"]
    assert current_stories(out)["bn-report"] == (2, 1, ["bn", "en"])


def state_row(article_id, hours, **changes):
    at = datetime(2025, 8, 1, tzinfo=timezone.utc) + timedelta(hours=hours)
    return {"schema_version": STORY_STATE.version, "article_id": article_id,
            "published_at": at, "ingested_at": at, "origin": "feed.jsonl", "origin_offset": 1,
            "lang": "en", "content_hash": "0" * 64, "shingles": b"", "story_id": article_id,
            "story_event_at": at, "story_ingested_at": at, "embedder": None,
            "dimension": None, "paragraph_vectors": None, "evidence": None, **changes}


def write_state(out, day, rows, schema=STORY_STATE.arrow_schema(drop=("dt",))):
    folder = out / "_state" / f"dt={day}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / f"part-{len(rows)}.parquet")


def test_a_run_reads_the_state_of_the_last_story_window_only(tmp_path):
    assert list(read_last_window(str(tmp_path), 72 * 3600)) == []
    write_state(tmp_path, "2025-08-01", [state_row("old", 0), state_row("edge", 23)])
    write_state(tmp_path, "2025-08-04", [state_row("late", 95)])
    write_state(tmp_path, "2025-08-05", [state_row("last", 96)])
    # 72 h before the latest row (96 h) is 24 h: "edge" (23 h) is out, as is "old".
    assert sorted(r["article_id"] for r in read_last_window(str(tmp_path), 72 * 3600)) == [
        "last", "late"]
    assert sorted(r["article_id"] for r in read_last_window(str(tmp_path), 73 * 3600)) == [
        "edge", "last", "late"]


def test_story_state_of_another_version_is_refused_naming_the_file(tmp_path):
    schema = STORY_STATE.arrow_schema(drop=("dt",)).with_metadata(
        {"newsloom.record": "story_state", "newsloom.schema_version": "99"})
    write_state(tmp_path, "2025-08-01", [state_row("a", 0)], schema=schema)
    with pytest.raises(ValueError, match=r"dt=2025-08-01/part-1\.parquet: story state of "
                                         r"schema version 99"):
        next(read_last_window(str(tmp_path), 72 * 3600))


def test_the_state_of_a_window_is_read_a_batch_of_rows_at_a_time(tmp_path):
    # 4,000 rows of 4.5 KB of vectors in one file: a window's worth, read back while
    # tracemalloc watches. Read whole, the rows alone would take over 18 MB at once.
    vectors = 4608
    rows = [state_row(f"a{i:04d}", i / 100, paragraph_vectors=bytes([i % 251]) * vectors)
            for i in range(4000)]
    # Ingested only: its event time is its ingestion time, 10 h after the rest.
    rows.append(state_row("ingested", 0, published_at=None, paragraph_vectors=b"v",
                          ingested_at=rows[-1]["ingested_at"] + timedelta(hours=10)))
    write_state(tmp_path, "2025-08-01", rows)
    tracemalloc.start()
    try:
        # 30 h before the latest event time (49.99 h) is 19.99 h: rows a1999 on.
        kept = [(row["article_id"], len(row["paragraph_vectors"]))
                for row in read_last_window(str(tmp_path), 30 * 3600)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept == [(f"a{i:04d}", vectors) for i in range(1999, 4000)] + [("ingested", 1)]
    assert peak < 4000 * vectors / 2
