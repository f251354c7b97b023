"""Dataflow: the job is built and validated offline with --dry_run, setup.py shipped as --setup_file."""

from pipeline.graph import run
from tests.conftest import ROOT

DRY_RUN = ["--runner=DataflowRunner", "--dry_run=True", "--project=newsloom-dry",
           "--region=us-central1", "--temp_location=gs://newsloom-dry/tmp",
           "--setup_file", str(ROOT / "setup.py")]


def test_dataflow_dry_run_builds_the_file_job_without_network_or_credentials():
    summary = run(DRY_RUN + ["--input", "gs://newsloom-dry/articles/",
                             "--output", "gs://newsloom-dry/out"])
    assert summary["dry_run"]
    steps = " ".join(summary["transforms"])
    for step in ("ReadArticleFiles", "DetectLanguage", "EmbedArticles", "FindDuplicates",
                 "StoryClusterer", "TagTopics", "WriteArticles", "WriteStories",
                 "WriteDeadLetters", "WriteRunSummary"):
        assert step in steps, step


def test_dataflow_dry_run_builds_the_kafka_job():
    summary = run(DRY_RUN + ["--bootstrap-servers", "kafka.example.internal:9092",
                             "--topic", "articles", "--group-id", "newsloom",
                             "--output", "gs://newsloom-dry/out"])
    steps = " ".join(summary["transforms"])
    assert "ReadKafkaArticles" in steps and "CommitOffsets" in steps
