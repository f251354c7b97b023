"""A batch run over files in event-time slices (issue 23, item 1): each slice a run that
continues the stories of the one before, so memory is bounded by a slice and a story
window, and the stories are those of one pass."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from connectors.file_source import WHOLE, EventSlice, event_slices
from pipeline.graph import run
from tests.conftest import seed_text
from tests.test_pipeline import read_dataset

T0 = datetime(2026, 11, 1, 6, tzinfo=timezone.utc)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def test_slices_cover_every_time_once_in_order():
    times = [at(h) for h in (0, 0.5, 1.0, 1.2, 4.5, 4.9, 5.0)]
    slices = event_slices(times, timedelta(hours=1))
    # 2-3 h and 3-4 h hold nothing: merged into the slice that follows.
    assert [(s.start, s.end) for s in slices] == [
        (None, at(1)), (at(1), at(2)), (at(2), at(5)), (at(5), None)]
    assert [s.dead_letters for s in slices] == [True, False, False, False]
    article = {"published_at": None, "ingested_at": at(1)}
    assert [s.keeps("article", article) for s in slices] == [False, True, False, False]
    assert [sum(s.keeps("article", {"published_at": t}) for s in slices) for t in times] \
        == [1] * len(times)
    assert [s.keeps("dead_letter", {}) for s in slices] == [True, False, False, False]


def test_one_slice_when_the_input_spans_less_than_a_slice():
    assert event_slices([at(0), at(0.9)], timedelta(hours=1)) == [WHOLE]
    assert event_slices([], timedelta(hours=1)) == [WHOLE]
    assert event_slices([at(0), at(9)], timedelta(0)) == [WHOLE]
    assert WHOLE == EventSlice(None, None, True)


@pytest.fixture(scope="module")
def articles_over_hours(tmp_path_factory):
    """The seeds an hour apart, an exact copy and a near copy of 000 after them, a line
    that is not JSON and an article without a publication time (ingested now)."""
    folder = tmp_path_factory.mktemp("hours")
    first = seed_text("000")
    near = "\n".join(first.split("\n")[:-1])
    records = [{"id": f"s{prefix}", "body": seed_text(prefix), "published_at": at(h).isoformat()}
               for prefix, h in (("000", 0), ("001", 1.1), ("002", 2.2), ("003", 3.3))]
    records += [{"id": "copy", "body": first, "published_at": at(2.5).isoformat()},
                {"id": "near", "body": near, "published_at": at(4.4).isoformat()},
                {"id": "undated", "body": seed_text("001")}]
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    lines.insert(3, "{not json")
    (folder / "articles.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def story_fields(out):
    return {row["article_id"]: (row["story_id"], row["duplicate_of"], row["is_duplicate"],
                                row["duplicate_kind"], row["linked_to"])
            for row in read_dataset(out / "articles")}


def test_sliced_run_gives_the_stories_of_one_pass(articles_over_hours, tmp_path):
    one_pass = run(["--input", str(articles_over_hours), "--output", str(tmp_path / "one"),
                    "--slice_hours", "0", "--quiet"])
    sliced = run(["--input", str(articles_over_hours), "--output", str(tmp_path / "sliced"),
                  "--slice_hours", "1", "--quiet"])
    assert "slices" not in one_pass
    assert len(sliced["slices"]) == 6  # 0-1.1 h ... 4-5 h, and the undated article's "now"
    assert sorted(p.stem for p in (tmp_path / "sliced" / "_runs").glob("*.json")) \
        == sorted(sliced["slices"])
    for summary in (one_pass, sliced):
        assert (summary["read"], summary["articles"], summary["dead_letters"],
                summary["unaccounted"]) == (8, 7, 1, 0)
    # Stories are counted where they start, so once however many slices they span.
    assert sliced["stories"] == one_pass["stories"] == 4
    # The slices' step times add up.
    slice_steps = [json.loads((tmp_path / "sliced" / "_runs" / f"{run_id}.json").read_text(
        encoding="utf-8"))["steps"] for run_id in sliced["slices"]]
    assert sliced["steps"]["FindDuplicates"]["seconds"] == pytest.approx(
        sum(steps["FindDuplicates"]["seconds"] for steps in slice_steps), abs=0.01)
    expected = story_fields(tmp_path / "one")
    assert expected["copy"][1:4] == ("s000", True, "exact")
    assert expected["near"][1:4] == ("s000", True, "near")
    assert story_fields(tmp_path / "sliced") == expected
    assert len(read_dataset(tmp_path / "sliced" / "deadletter")) == 1


def test_default_slices_are_half_the_story_window(articles_over_hours, tmp_path):
    summary = run(["--input", str(articles_over_hours), "--output", str(tmp_path / "out"),
                   "--story_window_hours", "4", "--embedder", "none", "--quiet"])
    # Slices of 2 h: 0-2, 2-4, 4-6 h, and the undated article's.
    assert len(summary["slices"]) == 4
    assert summary["articles"] == 7
