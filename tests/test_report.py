"""`newsloom report`: the figures from a real run's dataset, a stream's windowed files and
an empty folder; the page escapes untrusted text; headless Chromium renders it cleanly."""

import json
import re
import shutil
import subprocess
from datetime import date, datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from connectors.parquet_sink import PartitionFileWriter, day_of, partition_path, window_label
from pipeline.cli import main
from pipeline.graph import run
from pipeline.report import write_report
from pipeline.report.gather import (OTHER, ReportError, bucket_unit, counts_over_time, gather)
from pipeline.report.render import count_ticks, render_page
from pipeline.steps.story_table import story_row
from schemas import article as article_schema
from schemas import story as story_schema
from tests.conftest import build_corpus, seed_text

HOSTILE_TITLE = "<script>alert('title')</script> & \"Trump\""
HOSTILE_ID = "<img src=x onerror=alert(1)>"
HOSTILE_RAW_ID = "</td><script>alert('raw')</script>"


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """The corpus of seeds, copies and bad inputs, plus records whose text is markup,
    run through newsloom; returns (output folder, run summary)."""
    folder = tmp_path_factory.mktemp("report-input")
    build_corpus(folder)
    records = [
        # Another exact copy of the English seed: it joins the seeds' story.
        json.dumps({"id": HOSTILE_ID, "title": HOSTILE_TITLE, "source": "<b>bold</b>",
                    "url": "javascript:alert(1)", "body": seed_text("002")}),
        json.dumps({"id": HOSTILE_RAW_ID, "body": 5}),    # invalid_field, raw kept
        '{"id": "cut', '{"id": "cut too',                # two more malformed_json: 4
    ]
    (folder / "hostile.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    out = tmp_path_factory.mktemp("report-out")
    # One pass, so one run summary to compare with (a corpus spanning days is sliced).
    summary = run(["--input", str(folder), "--output", str(out), "--slice_hours", "0"])
    return out, summary


def test_figures_match_the_run_summary(reported):
    out, summary = reported
    report = gather(str(out))
    assert report.articles == summary["articles"]
    assert report.languages == summary["articles_by_lang"]
    assert sum(report.articles_over_time.series[lang][i]
               for lang in report.languages
               for i in range(len(report.articles_over_time.buckets))) == summary["articles"]
    assert {kind: n for kind, n in report.duplicates_by_kind.items()
            if kind != "linked" and n} == summary["duplicates_by_kind"]
    assert report.dead_letters_by_reason == summary["dead_letters_by_reason"]
    assert sum(sum(counts) for counts in report.topics_over_time.series.values()) \
        == summary["articles"]
    [run_row] = report.runs
    assert (run_row.run_id, run_row.read, run_row.written, run_row.rejected) == (
        summary["run_id"], summary["read"], summary["rows_written"]["articles"],
        summary["dead_letters"])
    assert run_row.articles_per_second == pytest.approx(summary["read"] / run_row.seconds)


def test_top_story_lists_its_members_across_languages(reported):
    out, _ = reported
    top = gather(str(out)).top_stories[0]
    assert top.story_id == "000_ec83a21fc30a0c64"
    assert top.languages == ["bn", "en"]
    members = {member.article_id: member for member in top.members}
    assert members["000_ec83a21fc30a0c64"].kind == "canonical"
    assert members["rewrite_of_000"].kind == "near"
    translation = members["002_5280d6251c69819e"]
    assert (translation.kind, translation.related) == ("translation", "000_ec83a21fc30a0c64")
    assert "@trmb" in translation.evidence   # Trump, shared by the Bengali and English text
    assert members["copy_of_002"].kind == "exact"
    # A .txt article has no title: the page shows its body's first line.
    assert translation.title.startswith("U.S. President Donald Trump has stated")
    assert members[HOSTILE_ID].title == HOSTILE_TITLE
    assert top.first_seen <= min(member.seen for member in top.members)
    assert top.topics


def test_dead_letter_examples_are_the_newest_of_each_reason_with_their_raw_bytes(reported):
    out, _ = reported
    report = gather(str(out))
    assert set(report.dead_letter_examples) == set(report.dead_letters_by_reason)
    assert report.dead_letters_by_reason["malformed_json"] == 4
    for reason, examples in report.dead_letter_examples.items():
        assert len(examples) == min(3, report.dead_letters_by_reason[reason])
    [image] = [example for example in report.dead_letter_examples["binary"]]
    assert image.raw_preview.startswith("\ufffdPNG··")   # readable, not raw control bytes
    assert any(HOSTILE_RAW_ID in example.raw_preview
               for example in report.dead_letter_examples["invalid_field"])


def test_page_escapes_untrusted_text(reported):
    out, _ = reported
    page = render_page(gather(str(out)))
    assert page.count("<script") == 1    # the page's own
    for markup in (HOSTILE_TITLE, HOSTILE_ID, HOSTILE_RAW_ID, "<b>bold</b>"):
        assert markup not in page
    assert "&lt;script&gt;alert(&#x27;title&#x27;)&lt;/script&gt; &amp; &quot;Trump&quot;" in page
    assert "&lt;/td&gt;&lt;script&gt;alert(&#x27;raw&#x27;)" in page    # a raw preview
    assert "javascript:" not in page     # a URL is linked only if it is http(s)
    # Nothing to load: no external script, style sheet, image or frame.
    assert not re.search(r"<(?:script|link|img|iframe|image|use)\b[^>]*\b(?:src|href)=", page)
    assert "@import" not in page


def test_since_keeps_later_days_and_runs(reported):
    out, summary = reported
    today = datetime.fromisoformat(summary["started_at"]).date()
    later = gather(str(out), since=today + timedelta(days=1))
    assert (later.articles, later.runs, later.dead_letters_by_reason) == (0, [], {})
    # JSON articles published in 2025 are in earlier dt partitions.
    assert gather(str(out), since=today).articles < summary["articles"]
    assert gather(str(out), since=date(2000, 1, 1)).articles == summary["articles"]


def test_an_empty_folder_gives_an_empty_report(tmp_path):
    report = gather(str(tmp_path))
    assert (report.articles, report.stories, report.top_stories, report.runs) == (0, 0, [], [])
    assert report.articles_over_time.buckets == []
    page = render_page(report)
    assert "No articles." in page and "No run summaries" in page


def test_a_missing_folder_is_an_error_and_a_bad_flag_too(tmp_path, capsys):
    with pytest.raises(ReportError):
        gather(str(tmp_path / "nothing"))
    assert main(["report", str(tmp_path / "nothing"), "--output",
                 str(tmp_path / "r.html")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
    for bad in (["--since", "yesterday"], ["--frobnicate"]):
        with pytest.raises(SystemExit) as exit_:
            main(["report", str(tmp_path), *bad])
        assert exit_.value.code == 2


def test_a_file_that_is_not_parquet_is_an_error_that_names_it(reported, tmp_path, capsys):
    out, _ = reported
    folder = tmp_path / "out"
    shutil.copytree(out, folder)
    broken = next((folder / "articles").rglob("*.parquet"))
    broken.write_bytes(b"not parquet")
    assert main(["report", str(folder), "--output", str(tmp_path / "r.html")]) == 2
    assert str(broken) in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_unreadable_run_summary_is_named_on_the_page(tmp_path):
    (tmp_path / "_runs").mkdir()
    (tmp_path / "_runs" / "broken.json").write_text("{not json")
    report = gather(str(tmp_path))
    assert [name for name, _ in report.unreadable_runs] == ["broken.json"]
    assert "Could not read <code>_runs/broken.json</code>" in render_page(report)


def test_stream_windowed_files(reported, tmp_path):
    """A stream writes each window's rows to files of their own, and a story row per
    window in which the story grew; the report combines them."""
    out, _ = reported
    articles = ds.dataset(out / "articles", partitioning="hive").to_table().to_pylist()
    story = sorted((a for a in articles if a["story_id"] == "000_ec83a21fc30a0c64"),
                   key=lambda a: a["article_id"])
    # Two on one day, the rest on the next.
    start = datetime(2025, 8, 31, 23, 58, tzinfo=timezone.utc)
    for i, article in enumerate(story):    # one article a minute, in 1-minute windows
        article["published_at"] = start + timedelta(minutes=i)
    writers = {
        name: PartitionFileWriter(str(tmp_path / name), str(tmp_path / "_temporary-s"),
                                  schema, partitions, (), "stream", 1000, "zstd", None)
        for name, schema, partitions in (
            ("articles", article_schema.ARTICLE, article_schema.PARTITION_COLUMNS),
            ("stories", story_schema.STORY, story_schema.PARTITION_COLUMNS))}
    for i, article in enumerate(story):
        window = window_label(int((start + timedelta(minutes=i)).timestamp() * 1_000_000))
        day = day_of(article["published_at"])
        list(writers["articles"].write(partition_path([("dt", day), ("lang", article["lang"])]),
                                       [article], window))
        row = story_row(story[0]["article_id"], story[:i + 1], "stream",
                        start + timedelta(minutes=i + 1), (0.15, 3))
        list(writers["stories"].write(partition_path([("dt", day)]), [row], window))
    assert len(list((tmp_path / "stories").rglob("*-w2025*.parquet"))) == len(story) >= 4

    report = gather(str(tmp_path))
    [top] = report.top_stories
    assert top.member_count == len(story) == report.articles
    assert (top.first_seen, top.last_seen) == (start, start + timedelta(minutes=len(story) - 1))
    assert report.articles_over_time.unit == "hour"
    assert report.runs == []
    assert "No run summaries (a stream writes none)." in render_page(report)
    # Since the second day: its members only, but the story's first seen is the story
    # table's, of the first day.
    [top] = gather(str(tmp_path), since=date(2025, 9, 1)).top_stories
    assert top.member_count == len(story) - 2
    assert top.first_seen == start


def test_counts_over_time_fills_gaps_and_sums_the_rest_as_others():
    day = datetime(2025, 1, 1, tzinfo=timezone.utc)
    times = pa.chunked_array([pa.array([day, day, day + timedelta(days=9)],
                                       pa.timestamp("us", tz="UTC"))])
    names = pa.chunked_array([pa.array(["en", "bn", "ar"])])
    series = counts_over_time(times, names, series_shown=1)
    assert series.unit == "day" and len(series.buckets) == 10
    assert series.buckets[1] == day + timedelta(days=1)
    assert series.series == {"ar": [0] * 9 + [1], OTHER: [2] + [0] * 9}
    assert [bucket_unit(timedelta(days=d)) for d in (1, 30, 400, 2000)] == [
        "hour", "day", "week", "month"]
    assert count_ticks(13) == [0, 5, 10, 15]


CHROMIUM = shutil.which("chromium")


def open_in_chromium(page, screenshot, profile):
    """Loads ``page`` in headless Chromium (offline: the page may load nothing); returns
    the DOM after its script ran and the console messages; saves a screenshot."""
    assert CHROMIUM, ("the test needs Debian's chromium (apt-get install -y chromium; "
                      ".ci/run installs it)")
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--enable-logging=stderr", "--v=0", "--hide-scrollbars", "--window-size=1200,2400",
         f"--screenshot={screenshot}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=300, check=True)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def test_page_renders_in_headless_chromium_without_console_errors(reported, tmp_path):
    out, _ = reported
    page = tmp_path / "report.html"
    write_report(str(out), str(page))
    dom, console = open_in_chromium(page, tmp_path / "report.png", tmp_path / "profile")
    assert console == []   # no script error, and nothing refused by the page's CSP
    assert "Top stories across languages" in dom
    # The page's script ran: every bar got a tooltip naming its series.
    assert "<title>bn · " in dom
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    empty = tmp_path / "empty"
    empty.mkdir()
    write_report(str(empty), str(tmp_path / "empty.html"))
    dom, console = open_in_chromium(tmp_path / "empty.html", tmp_path / "empty.png",
                                    tmp_path / "profile")
    assert console == [] and "No articles." in dom
