"""``newsloom replay``: publish article files into Kafka as a test stream.

Whatever the file source reads (the seed folder by default) goes to a topic
as one JSON message per article, keyed by article id, in the form of
``schemas.article.INCOMING_JSON_SCHEMA``. Records the file source would
dead-letter are counted and not sent.

Messages stamped with old publication times are past a topic's usual retention
(Kafka's default is 7 days), and the broker would delete them on its next
retention check. So a topic that replay creates keeps messages for the age of
the oldest stamp plus ``KEEP_AFTER_REPLAY_MS``; replaying into an existing topic
whose retention is shorter warns.
"""

import json
import logging
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Optional

from connectors.file_source import ARTICLE, ArticleFileParser, read_article_files
from schemas.article import ARTICLE as ARTICLE_SCHEMA, Article

log = logging.getLogger(__name__)
DAY_MS = 24 * 3600 * 1000
# How long a created topic keeps even the oldest replayed message after the
# replay: as long as Kafka's default retention keeps a fresh one.
KEEP_AFTER_REPLAY_MS = 7 * DAY_MS


@dataclass
class ReplayReport:
    sent: int = 0
    skipped: int = 0


def message_value(article: Article) -> bytes:
    """The incoming JSON form of an article: each incoming field under its first JSON key."""
    record: Dict[str, Any] = {}
    for f in ARTICLE_SCHEMA.fields:
        value = article.get(f.name)
        if f.json_names and value is not None:
            record[f.json_names[0]] = value.isoformat() if isinstance(value, datetime) else value
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def event_times_ms(articles: List[Article], mode: str, now_ms: int) -> List[int]:
    """Each message's Kafka timestamp.

    ``record``: the publication time, else now; ``now``: the send time (filled in
    at send, so here None); ``spread:SECONDS``: evenly over the last SECONDS, in order.
    """
    if mode == "record":
        return [int(a["published_at"].timestamp() * 1000) if a.get("published_at") else now_ms
                for a in articles]
    if mode.startswith("spread:"):
        span_ms = int(float(mode.split(":", 1)[1]) * 1000)
        step = span_ms / max(1, len(articles) - 1) if len(articles) > 1 else 0
        return [int(now_ms - span_ms + i * step) for i in range(len(articles))]
    if mode == "now":
        return [None] * len(articles)
    raise ValueError(f"--timestamps must be record, now or spread:SECONDS, got {mode!r}")


def oldest_age_ms(times_ms: List[Optional[int]], now_ms: int) -> int:
    """How long ago the oldest of ``times_ms`` is (None: stamped at send, age 0)."""
    stamps = [t for t in times_ms if t is not None]
    return max(0, now_ms - min(stamps)) if stamps else 0


def ensure_topic(bootstrap_servers: str, topic: str, partitions: int,
                 client_config: Dict[str, Any], oldest_age: int = 0) -> None:
    """Creates ``topic`` if it is missing, with a retention that keeps a message
    ``oldest_age`` ms old for ``KEEP_AFTER_REPLAY_MS`` more; an existing topic is
    left as it is, with a warning if it would delete such a message within a day."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), **client_config)
    try:
        if topic not in admin.list_topics():
            retention = oldest_age + KEEP_AFTER_REPLAY_MS
            admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1,
                                         "configs": {"retention.ms": str(retention)}}},
                                wait_for_metadata=True)
            return
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, ["retention.ms"])],
            config_filter="all")
        kept = int(described["topic"][topic]["retention.ms"]["value"])
        if 0 <= kept < oldest_age + DAY_MS:
            log.warning(
                "topic %s keeps messages for %.1f days, but the oldest replayed message is "
                "stamped %.1f days ago: the broker deletes it within a day, maybe before "
                "anything reads it. Replay into a new topic (replay creates it with a "
                "retention that keeps them), use --timestamps now, or raise the topic's "
                "retention.ms.", topic, kept / DAY_MS, oldest_age / DAY_MS)
    finally:
        admin.close()


def _progress(report: ReplayReport, started: float, final: bool = False) -> None:
    rate = report.sent / max(time.monotonic() - started, 1e-9)
    end = "\n" if final else "\r"
    print(f"replay: {report.sent} sent, {report.skipped} skipped, {rate:,.0f} msg/s",
          end=end, file=sys.stderr, flush=True)


def _paced(articles: List[Article], loop: bool) -> Iterator[tuple]:
    """(index, article) for each article, again and again with ``loop``: later
    rounds get ids suffixed ``~N`` so they are new articles, not repeats."""
    round_number = 0
    while True:
        for index, article in enumerate(articles):
            if round_number:
                article = {**article, "article_id": f"{article['article_id']}~{round_number}"}
            yield index, article
        round_number += 1
        if not loop:
            return


def replay(input_path: str, bootstrap_servers: str, topic: str, *, partitions: int = 3,
           rate: Optional[float] = None, loop: bool = False, timestamps: str = "record",
           client_config: Optional[Dict[str, Any]] = None, max_article_bytes: int = 1 << 20,
           progress: bool = True, max_messages: Optional[int] = None) -> ReplayReport:
    """Publishes the articles at ``input_path`` to ``topic``; returns what was sent and skipped."""
    from kafka import KafkaProducer
    client_config = client_config or {}
    report = ReplayReport()
    articles = []
    parser = ArticleFileParser(datetime.now(timezone.utc), max_article_bytes, 0)
    for kind, record in read_article_files(input_path, parser):
        if kind == ARTICLE:
            articles.append(record)
        else:
            report.skipped += 1
    now_ms = int(time.time() * 1000)
    times = event_times_ms(articles, timestamps, now_ms)
    ensure_topic(bootstrap_servers, topic, partitions, client_config,
                 oldest_age_ms(times, now_ms))
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers.split(","), acks="all",
                             max_request_size=max(max_article_bytes * 2, 1 << 20),
                             **client_config)
    started = last_print = time.monotonic()
    refused = []  # the broker's errors, kept by callback: --loop sends without end
    try:
        for index, article in _paced(articles, loop):
            if max_messages is not None and report.sent >= max_messages:
                break
            if rate:
                time.sleep(max(0.0, started + report.sent / rate - time.monotonic()))
            producer.send(topic, key=article["article_id"].encode("utf-8"),
                          value=message_value(article),
                          timestamp_ms=times[index]).add_errback(refused.append)
            report.sent += 1
            if progress and time.monotonic() - last_print >= 0.5:
                _progress(report, started)
                last_print = time.monotonic()
        producer.flush()
    finally:
        producer.close()
    # A message the broker refused (too large, or a timestamp too far ahead:
    # Kafka 4 refuses those more than an hour ahead by default) must not pass
    # for sent.
    if refused:
        raise RuntimeError(f"the broker refused {len(refused)} of {report.sent} messages, "
                           f"the first with: {refused[0]!r}")
    if progress:
        _progress(report, started, final=True)
    return report
