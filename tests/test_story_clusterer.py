"""StoryClusterer in event time: the story window, state expiry, and batch agreeing with a stream."""

from collections import Counter
from datetime import datetime, timedelta, timezone

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from connectors.records import new_article
from pipeline.steps.find_duplicates import FindDuplicates, at_event_time
from pipeline.steps.story_clusterer import METRICS
from tests.conftest import SEEDS

T0 = datetime(2025, 8, 1, tzinfo=timezone.utc)
REPORT = (SEEDS / "002_5280d6251c69819e.txt").read_text(encoding="utf-8")
OTHER = (SEEDS / "003_f04efa01a059582a.txt").read_text(encoding="utf-8")


def article(article_id, hours, body):
    at = T0 + timedelta(hours=hours)
    a = new_article(body=body, article_id=article_id, ingested_at=at, origin="test",
                    origin_offset=0, max_article_bytes=1 << 20)
    return {**a, "lang": "en", "published_at": at}


# The report, an edited copy an hour later, an unrelated article, copies at 30 h
# (within 72 h of the first two) and at 110 h (80 h after the last copy before it).
EDITED = REPORT.replace("Trump", "US President Trump", 3)
ARTICLES = [article("a", 0, REPORT), article("b", 1, EDITED), article("x", 2, OTHER),
            article("c", 30, REPORT), article("d", 110, EDITED)]
EXPECTED = [("a", "a", None), ("b", "a", "a"), ("x", "x", None), ("c", "a", "a"),
            ("d", "d", None)]


def story_fields(articles):
    return articles | beam.Map(lambda a: (a["article_id"], a["story_id"], a["duplicate_of"]))


def test_a_stream_matches_within_the_story_window_and_forgets_what_is_older():
    # e is a copy of the report stamped 5 h, arriving when the watermark is at
    # 110 h: a, b and c are within 72 h of it, but their state has expired.
    late = article("e", 5, REPORT)
    stream = TestStream()
    for a in ARTICLES + [late]:
        at = a["published_at"].timestamp()
        if a is not late:
            stream = stream.advance_watermark_to(at - 1)
        stream = stream.add_elements([beam.window.TimestampedValue(a, at)])
    # The last slot is assigned at a finite watermark: the bundle-based runner
    # holds no watermark for timers, so what they emit when the watermark
    # leaps to infinity would reach assert_that's GroupByKey after it fired.
    end = ARTICLES[-1]["published_at"].timestamp() + 3600
    stream = stream.advance_watermark_to(end).advance_watermark_to_infinity()
    options = PipelineOptions(["--runner=BundleBasedDirectRunner"])
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as pipeline:
        out = (pipeline | stream | FindDuplicates(bounded=False, assign_every=10))["articles"]
        assert_that(story_fields(out), equal_to(EXPECTED + [("e", "e", None)]))


def test_every_kind_of_state_expires_and_is_counted():
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        _ = (pipeline | beam.Create(ARTICLES) | beam.Map(at_event_time)
             | FindDuplicates(bounded=False))
    counters = Counter()
    for counter in pipeline.result.metrics().query(
            MetricsFilter().with_namespace(METRICS))["counters"]:
        counters[counter.key.metric.name] += counter.committed  # summed over steps
    # Five articles: each article's shingles held on both sides of a pair, each
    # bucket entry (one exact, up to 40 near), and each story but the last one
    # assigned, which is forgotten at the next assignment a window later.
    assert counters["expired_stories"] == 4
    assert counters["expired_features"] == 10
    assert 5 < counters["expired_bucket_entries"] <= 5 * 41


def test_a_batch_drops_its_bucket_index_once_every_article_is_indexed():
    # The FnApiRunner holds a stateful step's state until the pipeline ends, so the
    # batch index clears its shards itself once the watermark passes the input's end.
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        out = (pipeline | beam.Create(ARTICLES) | beam.Map(at_event_time)
               | FindDuplicates(bounded=True))["articles"]
        assert_that(story_fields(out), equal_to(EXPECTED))
    expired = sum(counter.committed for counter in pipeline.result.metrics().query(
        MetricsFilter().with_namespace(METRICS).with_name("expired_bucket_entries"))["counters"])
    assert expired == 5 * 41  # each article's exact bucket and its 40 near ones


@pytest.mark.parametrize("shuffled", [False, True])
def test_a_batch_run_assigns_the_same_stories_whatever_the_order(shuffled):
    articles = ARTICLES[::-1] if shuffled else ARTICLES
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        out = (pipeline | beam.Create(articles) | beam.Map(at_event_time)
               | FindDuplicates(bounded=True))["articles"]
        assert_that(story_fields(out), equal_to(EXPECTED))
