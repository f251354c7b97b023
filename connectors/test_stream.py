"""Any folder of article files replayed as a Beam ``TestStream``: a stream in a test.

Each record (article or dead letter, as the file source reads it) arrives at
its event time plus a delay of its own (none unless given), and the
watermark follows the arrivals a window at a time (to the start of each
window of arrivals before its records), the way the Kafka reader's follows
message times. So a record given a delay longer than the allowed
lateness arrives late, exactly as it would from a feed that fell behind.

    read = pipeline | ReadTestStream("seeds/", ingested_at=T0, window_seconds=60,
                                     delays={"003_f04efa01a059582a": 7200})
    read.articles, read.dead_letter   # as ReadArticleFiles returns them

A ``TestStream`` runs on the DirectRunner's bundle-based path
(``--runner=BundleBasedDirectRunner`` with ``--streaming``).
"""

from datetime import datetime
from typing import Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from connectors.file_source import ARTICLE, ArticleFileParser, read_article_files
from connectors.records import READ_COUNT_OUTPUT
from schemas.article import event_time
from schemas.dead_letter import DEAD_LETTER_OUTPUT

Record = Tuple[str, dict]  # (ARTICLE or DEAD_LETTER, the record)


def record_time(kind: str, record: dict) -> datetime:
    """A record's event time: an article's (``event_time``), a dead letter's ingestion."""
    return event_time(record) if kind == ARTICLE else record["ingested_at"]


def record_key(record: dict) -> str:
    return record.get("article_id") or f"{record['origin']}#{record['origin_offset']}"


def test_stream_of(records: Iterable[Record], window_seconds: float,
                   delays: Optional[Dict[str, float]] = None, processing_step: float = 1.0,
                   settle_seconds: float = 600.0, watermark_step: float = 10.0) -> TestStream:
    """A ``TestStream`` of ``records``, each arriving at its event time plus its delay.

    Args:
        records: ``(kind, record)`` pairs, as ``ArticleFileParser.parse`` yields them.
        window_seconds: the watermark moves to the start of each window of
            arrivals before that window's records are added.
        delays: seconds of arrival delay by article id (or ``origin#offset``).
        processing_step: processing-time seconds that pass with each window.
        settle_seconds: after the last arrival, the watermark goes this far past
            the last window before it goes to infinity, so that steps which emit
            from event-time timers have done so at a finite watermark (the
            bundle-based runner holds no watermark for timer output).
        watermark_step: the watermark moves at most this many seconds at a time.
    """
    if window_seconds <= 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    delays = delays or {}
    records = list(records)
    unknown = set(delays) - {record_key(r) for _, r in records}
    if unknown:
        raise ValueError(f"delays name records that are not in the input: {sorted(unknown)}")
    arrivals: List[Tuple[float, float, Record]] = sorted(
        ((record_time(kind, r).timestamp() + delays.get(record_key(r), 0.0),
          record_time(kind, r).timestamp(), (kind, r)) for kind, r in records),
        key=lambda arrival: (arrival[0], record_key(arrival[2][1])))
    stream = TestStream()
    window_start = None
    for arrived, event, record in arrivals:
        arrival_window = arrived // window_seconds * window_seconds
        if window_start is not None and arrival_window > window_start:
            stream = _advance(stream, window_start, arrival_window, watermark_step)
            stream = stream.advance_processing_time(processing_step)
        window_start = arrival_window
        stream = stream.add_elements([TimestampedValue(record, event)])
    if window_start is not None:
        stream = _advance(stream, window_start, window_start + window_seconds + settle_seconds,
                          watermark_step)
    return stream.advance_watermark_to_infinity()


def _advance(stream: TestStream, now: float, to: float, step: float) -> TestStream:
    # In steps, as a live watermark moves: the bundle-based runner holds no
    # watermark for what event-time timers emit, so one leap would fire a later
    # step's timers before an earlier step's timer output has reached it.
    while now + step < to:
        now += step
        stream = stream.advance_watermark_to(now)
    return stream.advance_watermark_to(to)


class ReadTestStream(beam.PTransform):
    """The article files at ``path`` as a stream; ``articles``, ``dead_letter`` and
    ``read_count`` outputs, as ``ReadArticleFiles`` gives.

    Args:
        path: a file, a folder or a glob, as ``ReadArticleFiles`` takes.
        ingested_at: the ingestion time stamped on every record (the event time
            of records with no publication time).
        window_seconds, delays, processing_step, settle_seconds, watermark_step: see
            ``test_stream_of``.
    """

    def __init__(self, path: str, ingested_at: datetime, window_seconds: float = 60.0,
                 delays: Optional[Dict[str, float]] = None, processing_step: float = 1.0,
                 settle_seconds: float = 600.0, watermark_step: float = 10.0,
                 max_article_bytes: int = 1 << 20, max_dead_letter_bytes: int = 64 << 10):
        super().__init__()
        parser = ArticleFileParser(ingested_at, max_article_bytes, max_dead_letter_bytes)
        self.stream = test_stream_of(read_article_files(path, parser), window_seconds, delays,
                                     processing_step, settle_seconds, watermark_step)

    def expand(self, pbegin):
        def split(record: Record):
            kind, value = record
            yield beam.pvalue.TaggedOutput(READ_COUNT_OUTPUT, 1)
            yield value if kind == ARTICLE else beam.pvalue.TaggedOutput(DEAD_LETTER_OUTPUT, value)

        return (pbegin
                | "TestStream" >> self.stream
                | "SplitRecords" >> beam.FlatMap(split).with_outputs(
                    DEAD_LETTER_OUTPUT, READ_COUNT_OUTPUT, main="articles"))
