"""The newsloom pipeline graph, assembled in one readable ``build()``.

    files or Kafka ─ [AdmitOnTime] ─ DropRepeatedIds ─ DetectLanguage ─ FindDuplicates ─ TagTopics ─ WriteArticles
          │                │               │ ids               └─ EmbedArticles ──┴────────────┘    │ └ WriteStoryState
          │                │       ReadStoryState ──── earlier runs' articles ─────┘  SummarizeStories ─ WriteStories
          └────────────────┴───────────────┴──── dead letters ────────────────────────── WriteDeadLetters
                                                  (batch) all counts ─── WriteRunSummary
                                 (batch Kafka) offsets, once written ─── CommitOffsets

``[AdmitOnTime]`` is on a stream only, where late articles become dead letters
and the sinks write a file per event-time window (``pipeline.steps.admit_on_time``).
``ReadStoryState`` reads the last story window of what earlier runs wrote to the
same output (``connectors.story_state``): their ids are repeats, and their
fingerprints, vectors and stories seed FindDuplicates, so stories continue.
"""

import gc
import json
import logging
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Tuple

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions

from common.heap import trim_heap
from connectors.file_source import (WHOLE, ArticleFileParser, EventSlice, ReadArticleFiles,
                                    event_slices, input_event_times)
from connectors.kafka_source import (CommitOffsets, KafkaSpec, ReadKafkaArticles, TopicRead,
                                     commit_read, read_event_times)
from connectors.run_paths import check_input, held_output, held_slice
from connectors.parquet_sink import ParquetPartitionSink, day_of
from connectors.story_state import STATE_FOLDER, ReadStoryState
from connectors.records import READ_COUNT_OUTPUT
from pipeline.steps.admit_on_time import SECOND, AdmitOnTime, EventWindows, micros_of
from pipeline.steps.detect_language import DetectLanguage
from pipeline.steps.drop_repeated_ids import KEYED_BY_ID, DropRepeatedIds
from pipeline.steps.embed_articles import PARAGRAPH_COUNTS, EmbedArticles
from pipeline.steps.find_duplicates import FindDuplicates, at_event_time, member_of
from pipeline.logic import progress
from pipeline.options import NewsloomOptions, new_run_id, normalise_argv, runs_in_process
from pipeline.runners.local import local_runner, runner_kind
from pipeline.steps.run_summary import (CountProgress, WriteRunSummary, add_step_times,
                                       step_rates, step_seconds)
from pipeline.steps.story_table import SummarizeStories
from pipeline.steps.tag_topics import TagTopics
from schemas import article as article_schema
from schemas import dead_letter as dead_letter_schema
from schemas import story as story_schema
from schemas import story_state as story_state_schema
from schemas.article import event_time
from schemas.dead_letter import DEAD_LETTER_OUTPUT

# How often, in event-time seconds, a stream's articles are assigned to stories.
ASSIGN_EVERY = 2


def updated_time_of(story) -> datetime:
    # A stream's story row is stamped with the end of the window that changed
    # it: the instant before is inside that window.
    return story["updated_at"] - timedelta(microseconds=1)


def article_partition(article):
    """``dt`` from the publication day (the ingestion day when unknown), then ``lang``."""
    return [("dt", day_of(event_time(article))), ("lang", article["lang"])]


def dead_letter_partition(dead_letter):
    return [("dt", day_of(dead_letter["ingested_at"]))]


def story_state_partition(row):
    return [("dt", day_of(event_time(row)))]


def story_partition(story):
    return [("dt", day_of(story["first_seen"]))]


def kafka_spec(opts: NewsloomOptions) -> KafkaSpec:
    return KafkaSpec(bootstrap_servers=opts.kafka_bootstrap_servers, topic=opts.topic,
                     group_id=opts.group_id, start=opts.start, stop=opts.stop,
                     client_config=json.loads(opts.kafka_config),
                     wait_seconds=opts.kafka_wait_seconds)


def run(argv: Optional[List[str]] = None, source: Optional[beam.PTransform] = None
        ) -> Dict[str, Any]:
    """Runs newsloom with command-line style ``argv``; returns the run summary.

    ``source``, when given, replaces the file or Kafka read: a transform giving
    ``articles``, ``dead_letter`` and ``read_count`` outputs, such as ``ReadTestStream``.
    A stream runs until it is cancelled; it writes no run summary.
    A batch run over files or a bounded Kafka read, on an in-process runner, whose
    articles span more than ``--slice_hours`` of event time runs as consecutive
    event-time slices (``batch_slices``), each a run of its own (``RUN_ID.sN``) that
    continues the stories of those before: the summary returned adds theirs up. Every
    pass of a Kafka read reads the offsets planned once; the group's offsets are
    committed once the last pass has written.
    Raises ``RunRefused`` before reading anything when the input is missing
    or the output cannot be the run's (see ``connectors.run_paths``).
    """
    argv = normalise_argv(argv)
    parsed = PipelineOptions(argv)
    opts = parsed.view_as(NewsloomOptions)
    run_id = opts.run_id
    if run_id is None:
        run_id = new_run_id()
        argv.append(f"--run_id={run_id}")
    files = source is None and not opts.kafka_bootstrap_servers
    nothing_to_read = check_input(opts.input) if files else None
    batch = not parsed.view_as(StandardOptions).streaming
    started_at = datetime.now(timezone.utc)  # the files' ingestion time, in every slice
    with held_output(opts.output, run_id), \
            local_runner(argv) as runner_argv, \
            progress.shown(sys.stderr) if batch and not opts.quiet and runs_in_process(argv) \
            else nullcontext():
        if nothing_to_read:
            logging.getLogger(__name__).warning(nothing_to_read)
        options = PipelineOptions(runner_argv)
        # Only the in-process runners hold a whole batch in this process's memory.
        slices, pinned = (batch_slices(opts, started_at)
                          if batch and source is None and not nothing_to_read
                          and runs_in_process(argv) else ([WHOLE], None))
        summaries = []
        if len(slices) == 1:
            with beam.Pipeline(options=options) as p:
                plan = build(p, options, source, started_at, pinned=pinned)
        else:
            for number, event_slice in enumerate(slices, 1):
                slice_id = f"{run_id}.s{number}"
                logging.getLogger(__name__).info(
                    "slice %d of %d (%s): articles from %s to %s", number, len(slices), slice_id,
                    event_slice.start or "the first", event_slice.end or "the last")
                with held_slice(opts.output, slice_id), \
                        beam.Pipeline(options=options) as p:
                    plan = build(p, options, source, started_at, event_slice, slice_id,
                                 pinned)
                summaries.append(add_step_times(plan.output, slice_id, step_seconds(p.result)))
                del p  # the slice's pipeline and what it holds, freed before the next
                gc.collect()
                trim_heap()
        if pinned is not None and opts.group_id:
            # Only now is every pass written: a run that fails before reads it all again.
            commit_read(kafka_spec(opts), pinned)
        if summaries:
            return combined_summary(run_id, summaries, started_at, datetime.now(timezone.utc))
    if options.view_as(TestOptions).dry_run:
        # Dataflow built and checked the job without running it: nothing was written.
        return {"run_id": plan.run_id, "dry_run": True, "state": str(p.result.state),
                "transforms": sorted(t.unique_name for t in
                                     p.result.job.proto_pipeline.components.transforms.values())}
    if plan.windows:
        return {"run_id": plan.run_id, "streaming": True, "state": str(p.result.state)}
    return add_step_times(plan.output, plan.run_id, step_seconds(p.result))


def batch_slices(opts: NewsloomOptions, started_at: datetime
                 ) -> Tuple[List[EventSlice], Optional[TopicRead]]:
    """The event-time slices a batch run reads its input in, ``--slice_hours`` long
    (default: half the story window), from one plain read of the input's event times;
    and, for Kafka, the offsets that read covered, which every slice reads (None for
    files, and for one pass, which plans its own read)."""
    hours = opts.slice_hours if opts.slice_hours is not None else opts.story_window_hours / 2
    if not hours:
        return [WHOLE], None
    length = timedelta(hours=hours)
    if opts.kafka_bootstrap_servers:
        pinned, times = read_event_times(kafka_spec(opts), opts.max_article_bytes,
                                         opts.max_dead_letter_bytes)
        return event_slices(times, length), pinned
    parser = ArticleFileParser(started_at, opts.max_article_bytes, opts.max_dead_letter_bytes)
    return event_slices(input_event_times(opts.input, parser, [opts.output]), length), None


def combined_summary(run_id: str, summaries: List[Dict[str, Any]], started_at: datetime,
                     finished_at: datetime) -> Dict[str, Any]:
    """The summaries of a run's slices as one: counts and step times added up, the
    slices' run ids listed, the wall time the whole run's (reading the event times too)."""
    combined: Dict[str, Any] = {"run_id": run_id, "slices": [s["run_id"] for s in summaries]}
    step_time: Dict[str, float] = {}
    for summary in summaries:
        for step, rate in summary.get("steps", {}).items():
            step_time[step] = step_time.get(step, 0.0) + rate["seconds"]
        for key, value in summary.items():
            if key == "steps":
                continue
            if isinstance(value, dict):
                totals = combined.setdefault(key, {})
                for name, n in value.items():
                    totals[name] = totals.get(name, 0) + n
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                combined[key] = combined.get(key, 0) + value
    combined.update(started_at=started_at.isoformat(), finished_at=finished_at.isoformat(),
                    wall_seconds=round((finished_at - started_at).total_seconds(), 3))
    combined["articles_per_second"] = (round(combined["articles"] / combined["wall_seconds"], 2)
                                       if combined["wall_seconds"] > 0 else 0.0)
    combined["steps"] = step_rates(step_time, combined["articles"])
    return combined


@dataclass(frozen=True)
class Plan:
    """What ``build`` decided: the run's id, where it writes, and its windows on a stream."""

    run_id: str
    output: str
    windows: Optional[EventWindows]


def build(p: beam.Pipeline, options: PipelineOptions,
          source: Optional[beam.PTransform] = None, ingested_at: Optional[datetime] = None,
          event_slice: EventSlice = WHOLE, run_id: Optional[str] = None,
          pinned: Optional[TopicRead] = None) -> Plan:
    """Adds newsloom's steps to ``p``. A stream (``--streaming``, which an endless
    Kafka read needs) writes windowed files and keeps its state in event time.
    ``ingested_at``: the files' ingestion time (default: now, the start); ``event_slice``:
    the part of the input to read, as run ``run_id`` (default: the options'); ``pinned``:
    the Kafka offsets to read, planned before (``batch_slices``), whose group offsets the
    caller commits (default: the read is planned, and committed once written, here)."""
    opts = options.view_as(NewsloomOptions)
    started_at = datetime.now(timezone.utc)
    run_id = run_id or opts.run_id or new_run_id(started_at)
    kafka = kafka_spec(opts) if opts.kafka_bootstrap_servers and source is None else None
    standard = options.view_as(StandardOptions)
    if kafka and kafka.unbounded and not standard.streaming:
        raise ValueError("an endless Kafka read (--stop=never) is a stream: make the options with "
                         "--streaming (normalise_argv adds it); Flink runs a job as a batch when "
                         "streaming is set later")
    if (kafka and kafka.commit_on_finalize and runner_kind(standard.runner) == "flink"
            and not options.get_all_options(retain_unknown_options=True).get(
                "checkpointing_interval")):
        # Flink finalizes a bundle, where the reader commits, only when a checkpoint
        # completes: without checkpoints nothing would be committed, and the SDK
        # worker would keep every read's bundle in memory, waiting.
        raise ValueError("on Flink, an endless Kafka read with --group_id commits its offsets "
                         "at Flink's checkpoints: give --checkpointing_interval (ms), or leave "
                         "out --group_id")
    story_window = opts.story_window_hours * 3600
    windows = EventWindows.of(opts.window_seconds, opts.allowed_lateness_hours * 3600) \
        if standard.streaming else None
    # Rows of a window are written this long after its end: the story step
    # assigns a stream's articles on a grid of ASSIGN_EVERY seconds of event time.
    flush_delay = 2 * ASSIGN_EVERY * SECOND

    if source is not None:
        read = p | "ReadSource" >> source
    elif kafka:
        read = p | "ReadKafkaArticles" >> ReadKafkaArticles(
            kafka, opts.max_article_bytes, opts.max_dead_letter_bytes, pinned, event_slice)
    else:
        read = p | "ReadArticleFiles" >> ReadArticleFiles(
            opts.input, ingested_at=ingested_at or started_at,
            max_article_bytes=opts.max_article_bytes,
            max_dead_letter_bytes=opts.max_dead_letter_bytes, exclude=[opts.output],
            event_slice=event_slice)
    articles = (read.articles
                | "CountRead" >> beam.ParDo(CountProgress("read"))
                | "AtEventTime" >> beam.Map(at_event_time))
    rejected = [read[DEAD_LETTER_OUTPUT]
                | "CountRejected" >> beam.ParDo(CountProgress("rejected"))]
    if windows:
        admitted = articles | "AdmitOnTime" >> AdmitOnTime(windows, opts.max_dead_letter_bytes)
        articles = admitted.articles
        rejected.append(admitted[DEAD_LETTER_OUTPUT])
    earlier = p | "ReadStoryState" >> ReadStoryState(opts.output, story_window)
    unique = articles | "DropRepeatedIds" >> DropRepeatedIds(
        opts.max_dead_letter_bytes,
        earlier | "EarlierIds" >> beam.Map(lambda row: (row["article_id"], {
            "origin": row["origin"], "origin_offset": row["origin_offset"]}))
        .with_output_types(KEYED_BY_ID),
        forget_after=story_window if windows else None)
    rejected.append(unique[DEAD_LETTER_OUTPUT])
    articles = unique.articles | "DetectLanguage" >> DetectLanguage(opts.min_lang_confidence)
    # One embedding per article serves both translations and topics.
    embedded = earlier_embedded = None
    if opts.embedder != "none":
        embed = EmbedArticles(member_of, opts.embedder, bounded=windows is None)
        embedded = articles | "EmbedArticles" >> embed
        earlier_embedded = earlier | "EarlierVectors" >> embed.from_state()
    found = articles | "FindDuplicates" >> FindDuplicates(
        opts.near_duplicate_threshold, embedded=embedded,
        paragraph_similarity=opts.paragraph_similarity, coverage=opts.translation_coverage,
        story_links=opts.story_link_probability != 1,
        story_link_probability=opts.story_link_probability,
        story_window=story_window, assign_every=ASSIGN_EVERY, bounded=windows is None,
        earlier=earlier, earlier_embedded=earlier_embedded, embedder=opts.embedder)
    articles = found["articles"]
    topic_cut = None
    if embedded is not None:
        tag_topics = TagTopics(embedded.vectors, opts.taxonomy, opts.embedder,
                               opts.min_topic_score, opts.max_topics, bounded=windows is None)
        articles = articles | "TagTopics" >> tag_topics
        topic_cut = tag_topics.cut
    articles = articles | "CountDone" >> beam.ParDo(CountProgress("done"))
    dead_letters = rejected | "AllDeadLetters" >> beam.Flatten()

    def sink(name, schema, partition_columns, partition_of, sort_by, time_of, unique_key=None):
        def window_of(row):
            start = windows.start(micros_of(time_of(row)))
            return start, start + windows.size

        return ParquetPartitionSink(
            opts.output, name, schema, partition_of, partition_columns,
            sort_by=sort_by, run_id=run_id, rows_per_file=opts.rows_per_file,
            compression=opts.parquet_compression, unique_key=unique_key,
            window_of=window_of if windows else None, flush_delay=flush_delay)

    written_articles = articles | "WriteArticles" >> sink(
        "articles", article_schema.ARTICLE, article_schema.PARTITION_COLUMNS, article_partition,
        ("article_id",), event_time, unique_key="article_id")
    _ = written_articles | "CountWritten" >> beam.ParDo(CountProgress("written"))
    written_stories = (
        articles
        | "SummarizeStories" >> SummarizeStories(
            run_id, started_at, topic_cut, windows, story_window * SECOND if windows else None)
        | "WriteStories" >> sink("stories", story_schema.STORY, story_schema.PARTITION_COLUMNS,
                                 story_partition, ("story_id",), updated_time_of))
    _ = found["state"] | "WriteStoryState" >> sink(
        STATE_FOLDER, story_state_schema.STORY_STATE, story_state_schema.PARTITION_COLUMNS,
        story_state_partition, ("article_id",), event_time, unique_key="article_id")
    written_dead_letters = dead_letters | "WriteDeadLetters" >> sink(
        "deadletter", dead_letter_schema.DEAD_LETTER, dead_letter_schema.PARTITION_COLUMNS,
        dead_letter_partition, ("origin", "origin_offset"),
        lambda d: d["ingested_at"])

    if windows:
        # A stream never ends, so it has no run summary; its Kafka offsets are
        # committed as the runner finalises what it read (see kafka_source).
        return Plan(run_id, opts.output, windows)
    summarised = {"read_counts": read[READ_COUNT_OUTPUT], "articles": articles,
                  "dead_letters": dead_letters,
                  "written_articles": written_articles,
                  "written_dead_letters": written_dead_letters, "written_stories": written_stories}
    if embedded is not None:
        summarised["paragraph_counts"] = embedded[PARAGRAPH_COUNTS]
    _ = summarised | "WriteRunSummary" >> WriteRunSummary(opts.output, run_id, started_at)
    if kafka and kafka.group_id and pinned is None:
        written = ((written_articles, written_dead_letters) | "AllWritten" >> beam.Flatten())
        _ = ((read.articles, read[DEAD_LETTER_OUTPUT])
             | "AllRead" >> beam.Flatten()
             | "CommitOffsets" >> CommitOffsets(kafka, written))
    return Plan(run_id, opts.output, None)


if __name__ == "__main__":
    # `python pipeline/graph.py --flag=value ...` is `newsloom run --flag=value ...`: the
    # form a Dataflow Flex Template launcher runs (FLEX_TEMPLATE_PYTHON_PY_FILE).
    import sys
    print(json.dumps(run(sys.argv[1:]), indent=2, sort_keys=True))
