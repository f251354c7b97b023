"""Shared fixtures: the seed folder, SIB-200 data beside the checkout, and a corpus of
seed variants and bad inputs built the way a real feed goes wrong."""

import gzip
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
SIB200 = Path(os.environ.get("NEWSLOOM_SIB200", ROOT.parent / "shared" / "data" / "sib200"))


def seed_text(prefix: str) -> str:
    return next(SEEDS.glob(f"{prefix}_*.txt")).read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def sib200() -> Path:
    if not SIB200.is_dir():
        pytest.fail(f"SIB-200 data not found at {SIB200}: it is expected in ../shared beside "
                    "the checkout (or set NEWSLOOM_SIB200)")
    return SIB200


def build_corpus(folder: Path) -> dict:
    """Seeds, a verbatim copy, a one-paragraph rewrite, JSON inputs and bad inputs.

    Returns the expectations: records per kind, the ids that must become
    articles and the dead-letter reasons that must appear.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for seed in SEEDS.glob("*.txt"):
        (folder / seed.name).write_bytes(seed.read_bytes())
    # A verbatim copy of the English seed under another id: an exact duplicate.
    (folder / "copy_of_002.txt").write_text(seed_text("002"), encoding="utf-8")
    # The first Bengali seed with its third paragraph replaced by one from 001.
    paragraphs = seed_text("000").split("\n")
    paragraphs[2] = seed_text("001").split("\n")[2]
    (folder / "rewrite_of_000.txt").write_text("\n".join(paragraphs), encoding="utf-8")

    good = [
        {"id": "json-1", "title": "Cricket", "body": "Bangladesh beat Sri Lanka by five wickets "
         "in the second one-day international in Dhaka on Sunday, levelling the series.",
         "url": "https://example.org/a", "source": "example", "published_at": "2025-08-19T10:00:00Z"},
        {"id": 42, "text": "La Banque centrale européenne a laissé ses taux inchangés jeudi, "
         "citant une inflation encore trop élevée dans la zone euro.",
         "published_at": 1755600000, "lang": "fr"},
    ]
    bad_lines = [
        b'{"id": "broken", "body": "unterminated',            # malformed_json
        b'{"id": "no-body", "title": "headline only"}',      # missing_body
        b'{"id": "bad-date", "body": "text here", "published_at": "yesterday"}',  # invalid_field
        b'["not", "an", "object"]',                          # malformed_json
        b'{"id": "wrong-type", "body": 17}',                 # invalid_field
    ]
    lines = [json.dumps(good[0]).encode(), b"", *bad_lines, json.dumps(good[1]).encode()]
    (folder / "feed.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with gzip.open(folder / "feed2.jsonl.gz", "wb") as f:
        f.write(json.dumps({"id": "gz-1", "body": "Heavy rain flooded parts of Chittagong "
                                                   "on Monday, closing schools and roads."}).encode() + b"\n")
    (folder / "array.json").write_text(json.dumps([
        {"id": "arr-1", "body": "Der Bundestag hat am Freitag ein neues Gesetz zur "
                                "Energieeffizienz von Gebäuden beschlossen."},
        {"id": "arr-2"},                                     # missing_body
    ]), encoding="utf-8")

    (folder / "bad_utf8.txt").write_bytes("Café au lait".encode("latin-1"))
    (folder / "empty.txt").write_bytes(b"")
    (folder / "blank.txt").write_bytes(b" \n\t \n")
    (folder / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (folder / "huge.txt").write_bytes(("word " * 4_000_000).encode())   # 20 MB
    (folder / "notes.csv").write_text("a,b\n1,2\n")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")                    # not an input

    articles = {p.stem for p in SEEDS.glob("*.txt")} | {
        "copy_of_002", "rewrite_of_000", "json-1", "42", "gz-1", "arr-1"}
    reasons = {"malformed_json": 2, "missing_body": 2, "invalid_field": 2, "invalid_utf8": 1,
               "empty": 2, "binary": 1, "too_large": 1, "unsupported_file": 1}
    return {"articles": articles, "dead_letter_reasons": reasons,
            "records": len(articles) + sum(reasons.values())}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    expected = build_corpus(folder)
    return folder, expected


@pytest.fixture(scope="session")
def kafka_broker():
    """A real single-node Kafka broker (KRaft) on 127.0.0.1, fetched from Maven Central."""
    from connectors.local_kafka import LocalKafkaBroker
    with LocalKafkaBroker() as broker:
        yield broker


def committed(broker, topic, group):
    """``{partition: the offset group has committed, or None}`` for every partition of ``topic``."""
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, group_id=group)
    try:
        partitions = consumer.partitions_for_topic(topic)
        return {p: consumer.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        consumer.close()


class Background(threading.Thread):
    """``work()`` running in a daemon thread, started at once."""

    def __init__(self, work):
        super().__init__(daemon=True)
        self._work = work
        self.value = self.error = None
        self.start()

    def run(self):
        try:
            self.value = self._work()
        except BaseException as error:  # kept for result(), which raises it in the test
            self.error = error

    def result(self, timeout: float = 300.0):
        """What ``work()`` returned, once it has; its error is raised here."""
        self.join(timeout)
        assert not self.is_alive(), f"still running after {timeout:.0f} s"
        if self.error is not None:
            raise self.error
        return self.value


def wait_until(condition, what: str, timeout: float = 240.0,
               alive: Background | None = None) -> None:
    """Polls ``condition()`` until it holds; fails naming ``what`` after ``timeout`` seconds,
    or at once when ``alive`` (the work being watched) has ended."""
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None and not alive.is_alive():
            pytest.fail(f"the work ended before {what}: {alive.error!r}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s")
        time.sleep(0.1)


@contextmanager
def broker_outage(broker, kill: bool = False):
    """The broker is down for the ``with`` block (stopped, or SIGKILLed with ``kill``), then
    restarted on the same port and data directory, also when the block fails."""
    if kill:
        broker.kill()
    else:
        broker.stop()
    try:
        yield
    finally:
        broker.restart()
