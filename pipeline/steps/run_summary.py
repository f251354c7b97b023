"""The run summary: what a run read, wrote and rejected, as ``OUTPUT/_runs/<run-id>.json``.

Counts come from the source and the rows themselves (not from metrics, which not
every runner reports). ``read`` is what the source counted as it read, so
``read == articles + dead_letters`` is a check on every step between: any record
lost on the way shows as ``unaccounted`` (and a warning). Each article and dead
letter is either written to Parquet now or already there from an earlier run
(``rows_already_present``).
"""

import json
import logging
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import monitoring_infos

from connectors.parquet_sink import SinkResult, temporary_dir
from pipeline.logic import progress

Event = Tuple[str, str]  # (counter group, key), e.g. ("lang", "bn")
# The runner's measure of the time a transform spent in its own code (its state sampler's).
EXECUTION_TIME = "beam:metric:ptransform_execution_time:total_msecs:v1"


def article_events(article) -> Iterable[Event]:
    yield "articles", ""
    yield "lang", article["lang"]
    if article["is_duplicate"]:
        yield "duplicates", ""
        yield "duplicate_kind", article["duplicate_kind"]
    if article["story_id"] == article["article_id"]:
        yield "stories", ""


def summarize(counts: Dict[Event, int], run_id: str, started_at: datetime,
              finished_at: datetime) -> Dict[str, Any]:
    """The summary document from counted events."""
    def group(name):
        return dict(sorted((key, n) for (g, key), n in counts.items() if g == name))

    articles = counts.get(("articles", ""), 0)
    dead_letters = sum(group("dead_letter").values())
    read = counts.get(("read", ""), 0)
    wall_seconds = (finished_at - started_at).total_seconds()
    return {
        "wall_seconds": round(wall_seconds, 3),
        "articles_per_second": round(articles / wall_seconds, 2) if wall_seconds > 0 else 0.0,
        "run_id": run_id,
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "read": read,
        "articles": articles,
        "dead_letters": dead_letters,
        "unaccounted": read - articles - dead_letters,
        "duplicates": counts.get(("duplicates", ""), 0),
        "duplicates_by_kind": group("duplicate_kind"),
        "stories": counts.get(("stories", ""), 0),
        "embedded_paragraphs": counts.get(("embedded_paragraphs", ""), 0),
        "reused_paragraphs": counts.get(("reused_paragraphs", ""), 0),
        "articles_by_lang": group("lang"),
        "dead_letters_by_reason": group("dead_letter"),
        "rows_written": group("rows_written"),
        "rows_already_present": group("rows_already_present"),
        "files_written": group("files_written"),
    }


class CountProgress(beam.DoFn):
    """Adds each element, or each ``SinkResult``'s rows, to the live progress
    count ``name`` (``pipeline.logic.progress``), and passes the element on."""

    def __init__(self, name: str):
        self.name = name

    def process(self, element):
        rows = element.rows + element.already_present if isinstance(element, SinkResult) else 1
        progress.RUN.add(self.name, rows)  # this process's counts, looked up at run time
        yield element


class WriteRunSummary(beam.PTransform):
    """Counts the run's rows and writes the summary JSON; removes the run's temporary folder.

    Input: ``{"read_counts": ..., "articles": ..., "dead_letters": ..., "written_articles": ...,
    "written_dead_letters": ..., "written_stories": ...}``, the last three being
    the sinks' ``SinkResult``s: waiting for them all is what makes it safe to
    remove the run's temporary folder here; and, with an embedder,
    ``"paragraph_counts"``: ``EmbedArticles``' counted events.
    """

    def __init__(self, output: str, run_id: str, started_at: datetime):
        super().__init__()
        self.output = output
        self.run_id = run_id
        self.started_at = started_at

    def expand(self, pcolls):
        def written(dataset):
            def events(result):
                if result.path:
                    yield ("rows_written", dataset), result.rows
                    yield ("files_written", dataset), 1
                if result.already_present:
                    yield ("rows_already_present", dataset), result.already_present
            return events

        events = (
            pcolls["read_counts"] | "ReadEvents" >> beam.Map(lambda n: (("read", ""), n)),
            pcolls["articles"] | "ArticleEvents" >> beam.FlatMap(
                lambda a: [(event, 1) for event in article_events(a)]),
            pcolls["dead_letters"] | "DeadLetterEvents" >> beam.Map(
                lambda d: (("dead_letter", d["reason"]), 1)),
            pcolls["written_articles"] | "ArticleFiles" >> beam.FlatMap(written("articles")),
            pcolls["written_dead_letters"] | "DeadLetterFiles" >> beam.FlatMap(
                written("deadletter")),
            pcolls["written_stories"] | "StoryFiles" >> beam.FlatMap(written("stories")),
        ) + ((pcolls["paragraph_counts"],) if "paragraph_counts" in pcolls else ())
        output, run_id, started_at = self.output, self.run_id, self.started_at

        def write(counts):
            summary = summarize(dict(counts), run_id, started_at, datetime.now(timezone.utc))
            if summary["unaccounted"]:
                logging.warning("run %s: read %d records but wrote %d articles and %d dead "
                                "letters: %d unaccounted", run_id, summary["read"],
                                summary["articles"], summary["dead_letters"],
                                summary["unaccounted"])
            path = write_summary(output, run_id, summary)
            temp = temporary_dir(output, run_id)
            if FileSystems.exists(temp):
                FileSystems.delete([temp])
            yield path

        return (events
                | "AllEvents" >> beam.Flatten()
                | "Count" >> beam.CombinePerKey(sum)
                | "Gather" >> beam.combiners.ToList()
                | "Write" >> beam.FlatMap(write))


def summary_path(output: str, run_id: str) -> str:
    return FileSystems.join(output, "_runs", f"{run_id}.json")


def write_summary(output: str, run_id: str, summary: Dict[str, Any]) -> str:
    """Writes ``summary`` as ``_runs/RUN_ID.json`` in ``output``; returns its path."""
    path = summary_path(output, run_id)
    with FileSystems.create(path) as stream:
        stream.write(json.dumps(summary, indent=2, sort_keys=True).encode("utf-8"))
    return path


def read_summary(output: str, run_id: str) -> Dict[str, Any]:
    with FileSystems.open(summary_path(output, run_id)) as stream:
        return json.loads(stream.read().decode("utf-8"))


def step_seconds(result: beam.runners.runner.PipelineResult) -> Dict[str, float]:
    """Seconds each top-level step of a finished pipeline spent in its own code (composite
    steps with all their parts), from the runner's execution-time metrics; empty when the
    runner reports none (the in-process FnApiRunner does; a job service may not)."""
    infos = getattr(result, "monitoring_infos", None)
    seconds: Dict[str, float] = {}
    for info in infos() if infos is not None else ():
        step = info.labels.get("PTRANSFORM", "").split("/", 1)[0]
        if info.urn == EXECUTION_TIME and step and not step.startswith("ref_"):
            # ref_...: the runner's own reads and writes between fused stages.
            seconds[step] = seconds.get(step, 0.0) + monitoring_infos.extract_counter_value(
                info) / 1000
    return seconds


def step_rates(seconds: Dict[str, float], articles: int) -> Dict[str, Dict[str, float]]:
    """Each step's seconds and the run's articles per second of it (steps that took
    under a millisecond left out)."""
    rounded = {step: round(s, 3) for step, s in sorted(seconds.items())}
    return {step: {"seconds": s, "articles_per_second": round(articles / s, 2)}
            for step, s in rounded.items() if s > 0}


def add_step_times(output: str, run_id: str, seconds: Dict[str, float]) -> Dict[str, Any]:
    """The run's summary with ``steps`` (``step_rates``) added, written back; returned."""
    summary = read_summary(output, run_id)
    summary["steps"] = step_rates(seconds, summary["articles"])
    write_summary(output, run_id, summary)
    return summary
