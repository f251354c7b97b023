"""The newsloom pipeline graph, assembled in one readable ``run()``.

    files or Kafka ─ DropRepeatedIds ─ DetectLanguage ─ FindDuplicates ─ TagTopics ─ WriteArticles
          │                 │                  └─ EmbedArticles ──┴────────────┘    │
          │                 │                                       SummarizeStories ─ WriteStories
          └─────────────────┴──── dead letters ──────────────────────── WriteDeadLetters
                                                         all counts ─── WriteRunSummary
                                       (Kafka) offsets, once written ─── CommitOffsets
"""

import json
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

from connectors.file_source import ReadArticleFiles
from connectors.kafka_source import CommitOffsets, KafkaSpec, ReadKafkaArticles
from connectors.parquet_sink import ParquetPartitionSink, day_of
from pipeline.detect_language import DetectLanguage
from pipeline.drop_repeated_ids import DropRepeatedIds
from pipeline.embed_articles import EmbedArticles
from pipeline.find_duplicates import FindDuplicates, at_event_time, member_of
from pipeline.options import NewsloomOptions, new_run_id, normalise_argv
from pipeline.run_summary import WriteRunSummary, read_summary
from pipeline.story_table import SummarizeStories
from pipeline.tag_topics import TagTopics
from schemas import article as article_schema
from schemas import dead_letter as dead_letter_schema
from schemas import story as story_schema
from schemas.dead_letter import DEAD_LETTER_OUTPUT


def article_partition(article):
    """``dt`` from the publication day (the ingestion day when unknown), then ``lang``."""
    published = article.get("published_at") or article["ingested_at"]
    return [("dt", day_of(published)), ("lang", article["lang"])]


def dead_letter_partition(dead_letter):
    return [("dt", day_of(dead_letter["ingested_at"]))]


def story_partition(story):
    return [("dt", day_of(story["first_seen"]))]


def kafka_spec(opts: NewsloomOptions) -> KafkaSpec:
    return KafkaSpec(bootstrap_servers=opts.kafka_bootstrap_servers, topic=opts.topic,
                     group_id=opts.group_id, start=opts.start, stop=opts.stop,
                     client_config=json.loads(opts.kafka_config))


def run(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Runs newsloom with command-line style ``argv``; returns the run summary."""
    options = PipelineOptions(normalise_argv(argv))
    opts = options.view_as(NewsloomOptions)
    started_at = datetime.now(timezone.utc)
    run_id = opts.run_id or new_run_id(started_at)
    kafka = kafka_spec(opts) if opts.kafka_bootstrap_servers else None

    with beam.Pipeline(options=options) as p:
        if kafka:
            read = p | "ReadKafkaArticles" >> ReadKafkaArticles(
                kafka, opts.max_article_bytes, opts.max_dead_letter_bytes)
        else:
            read = p | "ReadArticleFiles" >> ReadArticleFiles(
                opts.input, ingested_at=started_at, max_article_bytes=opts.max_article_bytes,
                max_dead_letter_bytes=opts.max_dead_letter_bytes)
        unique = read.articles | "DropRepeatedIds" >> DropRepeatedIds(opts.max_dead_letter_bytes)
        articles = (unique.articles
                    | "DetectLanguage" >> DetectLanguage(opts.min_lang_confidence)
                    | "AtEventTime" >> beam.Map(at_event_time))
        # One embedding per article serves both translations and topics.
        embedded = None if opts.embedder == "none" else (
            articles | "EmbedArticles" >> EmbedArticles(member_of, opts.embedder))
        articles = articles | "FindDuplicates" >> FindDuplicates(
            opts.near_duplicate_threshold, embedded=embedded,
            paragraph_similarity=opts.paragraph_similarity, coverage=opts.translation_coverage,
            story_window=opts.story_window_hours * 3600,
            bounded=not (kafka and kafka.stop == "never"))
        topic_cut = None
        if embedded is not None:
            tag_topics = TagTopics(embedded.vectors, opts.taxonomy, opts.embedder,
                                   opts.min_topic_score, opts.max_topics)
            articles = articles | "TagTopics" >> tag_topics
            topic_cut = tag_topics.cut
        dead_letters = ((read[DEAD_LETTER_OUTPUT], unique[DEAD_LETTER_OUTPUT])
                        | "AllDeadLetters" >> beam.Flatten())

        written_articles = articles | "WriteArticles" >> ParquetPartitionSink(
            opts.output, "articles", article_schema.ARTICLE, article_partition,
            article_schema.PARTITION_COLUMNS, sort_by=("article_id",), run_id=run_id,
            rows_per_file=opts.rows_per_file, compression=opts.parquet_compression,
            unique_key="article_id")
        written_stories = (
            articles
            | "SummarizeStories" >> SummarizeStories(run_id, started_at, topic_cut)
            | "WriteStories" >> ParquetPartitionSink(
                opts.output, "stories", story_schema.STORY, story_partition,
                story_schema.PARTITION_COLUMNS, sort_by=("story_id",), run_id=run_id,
                rows_per_file=opts.rows_per_file, compression=opts.parquet_compression))
        written_dead_letters = dead_letters | "WriteDeadLetters" >> ParquetPartitionSink(
            opts.output, "deadletter", dead_letter_schema.DEAD_LETTER, dead_letter_partition,
            dead_letter_schema.PARTITION_COLUMNS, sort_by=("origin", "origin_offset"),
            run_id=run_id, rows_per_file=opts.rows_per_file,
            compression=opts.parquet_compression)

        _ = ({"articles": articles, "dead_letters": dead_letters,
              "written_articles": written_articles,
              "written_dead_letters": written_dead_letters, "written_stories": written_stories}
             | "WriteRunSummary" >> WriteRunSummary(opts.output, run_id, started_at))
        if kafka and kafka.group_id:
            written = ((written_articles, written_dead_letters)
                       | "AllWritten" >> beam.Flatten())
            _ = ((read.articles, read[DEAD_LETTER_OUTPUT])
                 | "AllRead" >> beam.Flatten()
                 | "CommitOffsets" >> CommitOffsets(kafka, written))

    if options.view_as(TestOptions).dry_run:
        # Dataflow built and checked the job without running it: nothing was written.
        return {"run_id": run_id, "dry_run": True, "state": str(p.result.state),
                "transforms": sorted(t.unique_name for t in
                                     p.result.job.proto_pipeline.components.transforms.values())}
    return read_summary(opts.output, run_id)
