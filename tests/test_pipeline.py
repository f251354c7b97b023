"""End to end on Beam's local runners: seeds, seed variants and bad inputs, into Parquet."""

import json
import shutil
import subprocess

import duckdb
import pyarrow.dataset as ds
import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from common.text import normalise
from pipeline.graph import build, run
from pipeline.logic.crosslingual import lead_paragraphs
from pipeline.steps.embed_articles import MAX_LEAD_CHARS, MAX_LEAD_PARAGRAPHS
from pipeline.options import normalise_argv
from tests.conftest import ROOT


def read_dataset(path):
    return ds.dataset(path, format="parquet", partitioning="hive").to_table().to_pylist()


# Not the bundle-based DirectRunner: its stateful ParDo sets no watermark hold for
# user timers, so what StoryClusterer's timers emit reaches the GroupByKeys
# downstream after they have fired ("assert not ... COMPLETION_TAG").
@pytest.fixture(scope="module", params=["FnApiRunner"])
def result(request, corpus, tmp_path_factory):
    folder, expected = corpus
    out = tmp_path_factory.mktemp(f"out-{request.param}")
    # One pass (the corpus spans days, which a batch would read in slices, each a run
    # of its own; tests/test_batch_slices.py checks those): these tests check one run.
    summary = run(["--input", str(folder), "--output", str(out), "--runner", request.param,
                   "--max_article_bytes", str(1 << 20), "--slice_hours", "0"])
    articles = {row["article_id"]: row for row in read_dataset(out / "articles")}
    dead_letters = read_dataset(out / "deadletter")
    return summary, articles, dead_letters, expected, out


def test_every_input_is_one_article_row_or_one_dead_letter_row(result):
    summary, articles, dead_letters, expected, _ = result
    assert set(articles) == expected["articles"]
    reasons = {}
    for row in dead_letters:
        reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
    assert reasons == expected["dead_letter_reasons"]
    assert len(articles) + len(dead_letters) == expected["records"]
    assert summary["read"] == expected["records"]
    assert summary["articles"] == len(articles)
    assert summary["dead_letters"] == len(dead_letters)
    assert summary["rows_written"] == {"articles": len(articles), "deadletter": len(dead_letters),
                                       "stories": summary["stories"]}
    assert summary["rows_already_present"] == {}
    assert summary["duplicates_by_kind"] == {"exact": 1, "near": 1, "translation": 1}
    assert summary["stories"] == len(articles) - 3


def test_each_lead_paragraph_is_embedded_once(result):
    # copy_of_002 copies 002 whole, rewrite_of_000 most of 000: their repeated
    # paragraphs are looked up, not embedded again.
    summary, articles, _, _, _ = result
    leads = [text for row in articles.values()
             for text, _ in lead_paragraphs(row["body"], [], MAX_LEAD_PARAGRAPHS, MAX_LEAD_CHARS)]
    distinct = len({normalise(text) for text in leads})
    assert distinct < len(leads)
    assert summary["embedded_paragraphs"] == distinct
    assert summary["reused_paragraphs"] == len(leads) - distinct


def test_languages_and_spans(result):
    _, articles, _, _, _ = result
    langs = {k: articles[k]["lang"] for k in articles}
    assert langs["000_ec83a21fc30a0c64"] == "bn" and langs["001_b571461bb308729b"] == "bn"
    assert langs["002_5280d6251c69819e"] == "en"
    assert langs["003_f04efa01a059582a"] == "ar"
    assert [s["lang"] for s in articles["003_f04efa01a059582a"]["lang_spans"]] == ["ar", "en"]
    assert langs["json-1"] == "en" and langs["42"] == "fr" and langs["arr-1"] == "de"


def test_exact_near_and_cross_language_duplicates_and_stories(result):
    _, articles, _, _, _ = result
    bengali, english = "000_ec83a21fc30a0c64", "002_5280d6251c69819e"
    translation = articles[english]
    assert translation["is_duplicate"] and translation["duplicate_of"] == bengali
    assert translation["duplicate_kind"] == "translation" and translation["story_id"] == bengali
    assert "@trmb" in translation["dup_evidence"]  # Trump, in both scripts
    copy = articles["copy_of_002"]
    assert copy["is_duplicate"] and copy["duplicate_of"] == english
    assert copy["dup_score"] == 1.0 and copy["duplicate_kind"] == "exact"
    assert copy["story_id"] == bengali
    rewrite = articles["rewrite_of_000"]
    assert rewrite["is_duplicate"] and rewrite["duplicate_of"] == bengali
    assert rewrite["duplicate_kind"] == "near" and 0.5 <= rewrite["dup_score"] < 1.0
    assert rewrite["story_id"] == bengali
    for own_story in ("000_ec83a21fc30a0c64", "001_b571461bb308729b", "003_f04efa01a059582a",
                      "json-1", "42", "gz-1", "arr-1"):
        assert not articles[own_story]["is_duplicate"]
        assert articles[own_story]["story_id"] == own_story


def test_stories_table(result):
    _, articles, _, _, out = result
    stories = {r["story_id"]: r for r in read_dataset(out / "stories")}
    assert set(stories) == {a["story_id"] for a in articles.values()}
    bengali = stories["000_ec83a21fc30a0c64"]
    assert bengali["member_count"] == 4 and bengali["duplicate_count"] == 3
    assert bengali["languages"] == ["bn", "en"]
    assert [t["id"] for t in bengali["topics"]][:2] == ["conflict", "politics"]


def test_every_seed_gets_conflict_and_politics_as_its_top_two_topics(result):
    _, articles, _, _, _ = result
    for seed in ("000_ec83a21fc30a0c64", "001_b571461bb308729b", "002_5280d6251c69819e",
                 "003_f04efa01a059582a"):
        topics = articles[seed]["topics"]
        assert {t["id"] for t in topics[:2]} == {"conflict", "politics"}, (seed, topics)
        assert topics == sorted(topics, key=lambda t: -t["score"])
        assert all(t["score"] >= 0.15 for t in topics) and len(topics) <= 3


def test_dead_letters_carry_origin_offset_raw_bytes_and_reason(result):
    _, _, dead_letters, _, _ = result
    by_reason = {}
    for row in dead_letters:
        by_reason.setdefault(row["reason"], []).append(row)
    broken = next(r for r in by_reason["malformed_json"] if r["origin"].endswith("feed.jsonl"))
    assert broken["origin_offset"] == 3 and broken["byte_offset"] > 0
    assert broken["raw"].startswith(b'{"id": "broken"')
    huge = by_reason["too_large"][0]
    assert huge["raw_size"] == 20_000_000 and huge["raw_truncated"]
    assert len(huge["raw"]) == 64 << 10
    assert by_reason["invalid_utf8"][0]["raw"] == "Café au lait".encode("latin-1")
    assert all(row["error"] for row in dead_letters)


def test_hive_layout_readable_by_duckdb_and_nothing_left_in_temp(result):
    _, articles, _, _, out = result
    partitions = {p.relative_to(out / "articles").as_posix()
                  for p in (out / "articles").glob("dt=*/lang=*")}
    assert "dt=2025-08-19/lang=en" in partitions  # json-1's publication day
    counts = dict(duckdb.sql(
        f"select lang, count(*) from read_parquet('{out}/articles/**/*.parquet', "
        f"hive_partitioning=true) group by lang").fetchall())
    assert sum(counts.values()) == len(articles) and counts["bn"] == 3
    assert not list(out.glob("_temporary*"))
    assert len(list((out / "_runs").glob("*.json"))) == 1


def newsloom():
    """The installed console command (pip install -e . puts it on PATH)."""
    path = shutil.which("newsloom")
    assert path, "the newsloom command is not installed: pip install -e '.[test]'"
    return path


def test_cli_runs_the_seeds_and_prints_the_summary(tmp_path):
    done = subprocess.run([newsloom(), "run", "--output", str(tmp_path), "--run-id", "cli-test"],
                          cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["run_id"] == "cli-test"
    assert summary["articles_by_lang"] == {"ar": 1, "bn": 2, "en": 1}
    assert (tmp_path / "_runs" / "cli-test.json").exists()


def test_an_endless_kafka_read_is_a_streaming_job_from_its_first_options():
    # Flink reads --streaming when the job starts; set later, an endless read writes nothing.
    def streaming(argv):
        return PipelineOptions(normalise_argv(argv)).view_as(StandardOptions).streaming

    kafka = ["--bootstrap-servers=127.0.0.1:9092", "--topic=articles"]
    assert streaming(kafka + ["--stop=never"])
    assert not streaming(kafka)
    assert not streaming(["--input", "seeds"])


def test_building_an_endless_read_without_streaming_is_refused(tmp_path):
    options = PipelineOptions(["--kafka_bootstrap_servers=127.0.0.1:9092", "--topic=articles",
                               "--start=earliest", "--stop=never", f"--output={tmp_path}"])
    with pytest.raises(ValueError, match="--streaming"):
        build(beam.Pipeline(options=options), options)


def test_an_endless_flink_read_that_commits_needs_checkpoints(tmp_path):
    # Flink finalizes bundles, where the reader commits, only at checkpoints.
    def build_flink(*extra):
        options = PipelineOptions(normalise_argv([
            "--runner=FlinkRunner", "--bootstrap-servers=127.0.0.1:9092", "--topic=articles",
            "--start=earliest", "--stop=never", f"--output={tmp_path}", *extra]))
        build(beam.Pipeline(options=options), options)

    with pytest.raises(ValueError, match="--checkpointing_interval"):
        build_flink("--group_id=newsloom")
    build_flink("--group_id=newsloom", "--checkpointing_interval=60000")
    build_flink()  # nothing to commit


@pytest.mark.parametrize("mode", [[], ["--streaming"]])
def test_every_stateful_step_has_a_deterministic_key_coder(mode, tmp_path, caplog):
    # Beam warns, when a stateful step is applied, that a key coder it cannot
    # prove deterministic "may cause incorrect behavior"; typed keys avoid it.
    options = PipelineOptions(normalise_argv(["--input", "seeds", f"--output={tmp_path}"] + mode))
    with caplog.at_level("WARNING", logger="apache_beam.transforms.core"):
        build(beam.Pipeline(options=options), options)
    assert not [r.getMessage() for r in caplog.records if "may not be deterministic" in r.getMessage()]


def test_cli_help_explains_every_option():
    done = subprocess.run([newsloom(), "run", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    for flag in ("--input", "--output", "--run-id", "--max-article-bytes",
                 "--max-dead-letter-bytes", "--min-lang-confidence",
                 "--near-duplicate-threshold", "--rows-per-file", "--parquet-compression",
                 "--embedder", "--paragraph-similarity", "--translation-coverage",
                 "--taxonomy", "--min-topic-score", "--max-topics",
                 "--bootstrap-servers", "--topic", "--group-id", "--start", "--stop",
                 "--kafka-config", "--runner", "--direct_num_workers"):
        assert flag in done.stdout
