"""The run summary's reconciliation: ``read`` is the source's count, not a sum of the rows."""

from datetime import datetime, timezone

from pipeline.steps.run_summary import summarize

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_a_record_lost_between_the_source_and_the_sinks_is_unaccounted():
    counts = {("read", ""): 7, ("articles", ""): 4, ("dead_letter", "malformed_json"): 1,
              ("dead_letter", "too_deep"): 1}
    summary = summarize(counts, "r1", START, START)
    assert (summary["read"], summary["articles"], summary["dead_letters"]) == (7, 4, 2)
    assert summary["unaccounted"] == 1


def test_nothing_unaccounted_when_every_record_is_a_row():
    counts = {("read", ""): 3, ("articles", ""): 2, ("dead_letter", "empty"): 1}
    assert summarize(counts, "r1", START, START)["unaccounted"] == 0
