"""Streaming for real: an endless Kafka read on Prism and on Flink, windows finalised
while the job runs, then the job cancelled.

Slow (the first time it builds Prism, ~4 minutes, and assembles Flink's job
server, ~2 minutes; then each runner streams for a minute or two): run with
``python -m pytest -m slow``.
"""

import gc
import json
import re
import time
from collections import Counter
from datetime import datetime, timezone

import apache_beam as beam
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.userstate import BagStateSpec

from connectors.kafka_source import ReadTopicFn
from connectors.replay import replay
from pipeline.data.build_sib200_taxonomy import read_labelled
from pipeline.graph import build
from pipeline.options import normalise_argv
from pipeline.runners.local import local_runner
from tests.conftest import SEEDS, committed

pytestmark = pytest.mark.slow

LANGUAGES = ["eng_Latn", "ben_Beng", "arb_Arab", "hin_Deva", "zho_Hans", "rus_Cyrl",
             "spa_Latn", "swh_Latn", "fra_Latn", "deu_Latn"]
# Longer than an article takes through the pipeline, so that a sink writing rows
# as they come would write before their window ends (the paced tail below).
WINDOW_SECONDS = 15
PACED = 8  # articles sent one a second once the burst is written


def synthetic_articles(sib200, numbers, prefix="syn"):
    """Short articles of three consecutive SIB-200 dev sentences, in ten languages
    (article ``n`` in language ``n % 10``)."""
    articles = []
    for n in numbers:
        folder = LANGUAGES[n % len(LANGUAGES)]
        sentences = [text for _, _, text in read_labelled(sib200 / folder, "dev")]
        start = (n // len(LANGUAGES)) * 3 % (len(sentences) - 3)
        articles.append({"id": f"{prefix}-{n:03d}", "body": "\n".join(sentences[start:start + 3])})
    return articles


def write_feed(folder, articles):
    folder.mkdir()
    (folder / "articles.jsonl").write_text("\n".join(
        json.dumps(a, ensure_ascii=False) for a in articles) + "\n", encoding="utf-8")


def dataset_rows(path):
    if not path.exists():
        return []
    return ds.dataset(path, format="parquet", partitioning="hive").to_table().to_pylist()


def window_of(parquet_file):
    """The window start a stream's file is named with: ``20250801T120000Z``."""
    return re.search(r"-w(\d{8}T\d{6}Z)-", parquet_file.name).group(1)


def listening_on_every_interface():
    """The ports with a listener on 0.0.0.0 or :: (Linux's /proc/net/tcp and tcp6)."""
    ports = set()
    for table, anywhere in (("/proc/net/tcp", "0" * 8), ("/proc/net/tcp6", "0" * 32)):
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                address, port = local.split(":")
                if state == "0A" and address == anywhere:  # 0A: LISTEN
                    ports.add(int(port, 16))
    return ports


def start_job(runner_argv):
    """The newsloom job of ``runner_argv``, submitted; returns its ``PipelineResult``."""
    options = PipelineOptions(runner_argv)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, options)
    return pipeline.run()


def wait_for(condition, timeout, every=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()


@pytest.mark.parametrize("runner,checkpoint_ms", [
    ("PrismRunner", None), ("FlinkRunner", None), ("FlinkRunner", 5000)],
    ids=["PrismRunner", "FlinkRunner", "FlinkRunner-checkpoints"])
def test_a_runner_streams_kafka_into_windowed_parquet_while_running_then_cancels(
        runner, checkpoint_ms, kafka_broker, sib200, tmp_path):
    topic = f"stream-{runner}-{checkpoint_ms}"
    kafka_broker.create_topic(topic, partitions=3)
    feed, tail = tmp_path / "feed", tmp_path / "tail"
    write_feed(feed, synthetic_articles(sib200, range(300)))
    for seed in SEEDS.glob("*.txt"):
        (feed / seed.name).write_bytes(seed.read_bytes())
    # All English, so that a window of the paced articles holds several rows of one partition.
    paced_numbers = range(300, 300 + 10 * PACED, 10)
    write_feed(tail, synthetic_articles(sib200, paced_numbers, prefix="paced"))
    out = tmp_path / "out"
    # Prism finalizes every bundle, where the reader commits the group's offsets;
    # Flink only at its checkpoints, so newsloom refuses a group there without them.
    group = topic if runner == "PrismRunner" or checkpoint_ms else None
    argv = normalise_argv([
        f"--runner={runner}", "--streaming", f"--output={out}",
        f"--bootstrap-servers={kafka_broker.bootstrap_servers}", f"--topic={topic}",
        "--start=earliest", "--stop=never", f"--window_seconds={WINDOW_SECONDS}"]
        + ([f"--group_id={group}"] if group else [])
        + ([f"--checkpointing_interval={checkpoint_ms}"] if checkpoint_ms else []))
    before = listening_on_every_interface()
    with local_runner(argv) as runner_argv:
        assert any(a.startswith("--environment_config=127.0.0.1:") for a in runner_argv)
        result = start_job(runner_argv)
        try:
            sent = replay(str(feed), kafka_broker.bootstrap_servers, topic, partitions=3,
                          timestamps="now", progress=False).sent
            from kafka import KafkaProducer
            producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
            producer.send(topic, key=b"broken", value=b'{"id": "broken", "body": ')
            producer.flush()
            producer.close()
            expected = sent + 1

            def all_written():
                return (len(dataset_rows(out / "articles"))
                        + len(dataset_rows(out / "deadletter"))) >= expected

            assert wait_for(all_written, timeout=240), (
                f"{len(dataset_rows(out / 'articles'))} articles and "
                f"{len(dataset_rows(out / 'deadletter'))} dead letters of {expected} records")
            expected += replay(str(tail), kafka_broker.bootstrap_servers, topic, partitions=3,
                               rate=1.0, timestamps="now", progress=False).sent
            assert wait_for(all_written, timeout=120), "the paced tail was not written"
            if group:  # committed while the job runs, up to the last message
                def all_committed():
                    offsets = committed(kafka_broker, topic, group).values()
                    return sum(o or 0 for o in offsets) == expected

                assert wait_for(all_committed, timeout=60), committed(kafka_broker, topic, group)
            # The SDK worker (in this process) keeps a bundle processor, with its
            # own reader, for each read bundle the runner has yet to finalize: one
            # a second when idle piled up on Flink while every read asked for it
            # (187 readers here by now; 3 on either runner when only a group's do).
            # type(), not isinstance(): the heap holds weak proxies, and asking a dead
            # one for its class raises ReferenceError.
            readers = sum(type(o) is ReadTopicFn for o in gc.get_objects())
            assert readers <= 10, f"{readers} Kafka readers held by the SDK worker"
            # Written while the job still runs: the windows were finalised live.
            assert result.state == PipelineState.RUNNING
            # The runner, its job server and the SDK workers listen on 127.0.0.1 only.
            assert listening_on_every_interface() - before == set()
        finally:
            result.cancel()
        with pytest.raises(Exception):
            result.wait_until_finish(duration=60_000)
        assert result.state == PipelineState.CANCELLED

    articles = dataset_rows(out / "articles")
    dead_letters = dataset_rows(out / "deadletter")
    ids = Counter(a["article_id"] for a in articles)
    assert sent == 304
    assert set(ids) == ({p.stem for p in SEEDS.glob("*.txt")} | {f"syn-{n:03d}" for n in range(300)}
                        | {f"paced-{n:03d}" for n in paced_numbers})
    assert max(ids.values()) == 1
    assert [(d["reason"], d["article_id"]) for d in dead_letters] == [("malformed_json", "broken")]
    windows = {window_of(p) for p in (out / "articles").rglob("*.parquet")}
    assert windows and all(int(w[13:15]) % WINDOW_SECONDS == 0 for w in windows)
    # The paced articles' windows: each written once, in one file per partition,
    # after the window ended (the event time is the send time, on this clock).
    paced_files = [path for path in (out / "articles").rglob("*.parquet")
                   if any(i.startswith("paced-") for i in
                          pq.read_table(path, columns=["article_id"])["article_id"].to_pylist())]
    window_starts = {path: datetime.strptime(window_of(path), "%Y%m%dT%H%M%SZ")
                     .replace(tzinfo=timezone.utc).timestamp() for path in paced_files}
    assert max(Counter((path.parent, window_of(path)) for path in paced_files).values()) == 1
    assert all(path.stat().st_mtime >= start + WINDOW_SECONDS
               for path, start in window_starts.items()), {
        path.name: round(path.stat().st_mtime - start, 1) for path, start in window_starts.items()}
    seeds = {a["article_id"][:3]: a for a in articles if a["article_id"][:3].isdigit()}
    assert seeds["002"]["story_id"] == seeds["000"]["story_id"]
    assert len({seeds[s]["story_id"] for s in ("000", "001", "003")}) == 3


class _CountInStateFn(beam.DoFn):
    """Adds each element to its key's bag and emits how many the bag then holds.
    Every 25th element takes half a second, so Prism sees its bundle stall."""

    SEEN = BagStateSpec("seen", VarIntCoder())

    def process(self, element, seen=beam.DoFn.StateParam(SEEN)):
        _, n = element
        time.sleep(0.5 if n % 25 == 0 else 0.005)
        seen.add(n)
        yield sum(1 for _ in seen.read())


def test_keyed_state_keeps_every_element_when_a_prism_bundle_stalls():
    # Prism splits a stalled bundle and lets a second bundle of the same key run
    # beside it; one overwrites the other's state. With its splits on (as Beam
    # runs it), the bag here ended with 125 to 138 of the 300 elements.
    count = 300
    with local_runner(normalise_argv(["--runner=PrismRunner"])) as argv:
        with beam.Pipeline(options=PipelineOptions(argv)) as p:
            most = (p
                    | beam.Create([("one key", n) for n in range(count)])
                    | beam.ParDo(_CountInStateFn())
                    | beam.CombineGlobally(max))
            assert_that(most, equal_to([count]))
