"""Memory of the whole streaming pipeline on a live stream: flat once the story window is full.

    python benchmarks/story_window_benchmark.py [--articles 2400] [--rate 2] [--window-minutes 3]
        [--runner PrismRunner|FlinkRunner] [--lapse SECONDS [--test-stream] --window-seconds 3600]
        [newsloom or Beam pipeline options...]

Starts a local Kafka broker (``connectors.local_kafka``) and newsloom on Prism
or Flink as an endless read (``--stop=never``, ``--embedder none``: the same-language
duplicate layers), then publishes synthetic articles (3-8 SIB-200 train
sentences each in one of its languages; 10% exact or edited copies of a
recent article) at ``--rate`` a second, live: an article's event time is its
arrival, so the watermark moves with the clock as it would in production.
The story window is minutes rather than 72 hours so that it fills and then
slides several times within the run; what it holds, and so the state, is
what scales with it.

With ``--lapse SECONDS`` it is a backlog instead, as after an outage: all the
articles are published first, SECONDS of event time apart and ending now
(``newsloom replay --timestamps spread:...``; not ahead of now, which Kafka 4
refuses by default beyond an hour), so a 72-hour story window
(``--window-minutes 4320``) fills and slides within the run as it would over
days: ``--articles 50000 --lapse 26`` is 15 days of news. Give the output
windows (``--window-seconds``) hours then, or each window is a file per language.
On Flink, a backlog is not a sliding window: the reader's watermark reaches
now as soon as it has read the backlog, long before the steps behind it have
processed it, so every article passes the bucket index before any event-time
timer fires and the state holds the whole backlog at once (measured: 2,000
articles all indexed in 170 s, then all assigned and written within 30 s).

With ``--test-stream --lapse SECONDS`` (Prism) the same articles are a
``TestStream`` (``connectors.test_stream``) instead, each published at its
event time: the watermark moves an output window at a time, after that
window's articles, so the stream is processed in event-time order at the
pipeline's own pace and the story window fills and slides as it would over
days of live news, however fast the machine is.

As articles come out (rows in ``OUT/articles``), it samples the resident
memory of the runner (which holds the keyed state and timers: Prism's
process, or the Flink job server's JVM with its embedded cluster, where the
heap in use after a full collection is also read, since a JVM's resident
memory follows its heap's high-water mark rather than what it holds) and of
this process (the Python SDK worker: the DoFns and their state cache), and
prints each beside the number of articles the story window holds, with its ratio to the
figure when the window first filled. Flat means the ratios stay near 1.00
while the articles keep coming. The rate must stay below what the pipeline
sustains (about 3 articles/s on two cores), or a growing backlog is measured.
It ends when every article is accounted for as an article or dead-letter row,
or two minutes after publishing if some never come out, and says how many.

Why not the bundle-based DirectRunner: it keeps an entry for every key it has
seen and scans them all whenever it looks for timers
(``_TransformWatermarks.extract_transform_timers``), so a long stream slows
down quadratically there. Why live rather than a backlog: on Prism a backlog
holds every row until the end (the watermark cannot pass what is pending),
and a live stream is what production memory looks like. Prism keeps a small
empty entry for each key whose state was cleared, which its figures show if
they grow; Flink frees a cleared key.
"""

import argparse
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import apache_beam as beam  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from connectors.local_kafka import LocalKafkaBroker  # noqa: E402
from connectors.replay import replay  # noqa: E402
from connectors.test_stream import ReadTestStream  # noqa: E402
from pipeline.data.build_centring import DEFAULT_SIB200, read_sentences  # noqa: E402
from pipeline.graph import build  # noqa: E402
from pipeline.options import normalise_argv  # noqa: E402
from pipeline.runners.local import local_runner  # noqa: E402

TOPIC = "story-window"


def synthetic_articles(sib200: Path, count: int, seed: int = 5):
    """Incoming JSON records, with no publication time: their event time is their arrival."""
    rng = random.Random(seed)
    folders = sorted(p.name for p in sib200.iterdir() if (p / "train.tsv").exists())
    pools = {f: [text for _, text in read_sentences(sib200 / f, "train")] for f in folders}
    recent = []
    for i in range(count):
        if recent and rng.random() < 0.1:
            body = rng.choice(recent[-200:])
            if rng.random() < 0.5:
                body = body + "\nUpdated with more details."
        else:
            body = "\n".join(rng.sample(pools[rng.choice(folders)], rng.randint(3, 8)))
            recent.append(body)
        yield {"id": f"a{i:07d}", "body": body}


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def descendants(pid: int):
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # a thread that just ended
            continue
    for child in children:
        yield child
        yield from descendants(child)


# What names the runner's own process on its command line.
RUNNER_PROCESS = {"PrismRunner": b"prism", "FlinkRunner": b"flink-job-server"}


def runner_process(name: bytes) -> int | None:
    """The runner's own process among this process's descendants: the largest
    whose command line holds ``name`` (Flink's JVM, not the script that starts it)."""
    found = []
    for pid in descendants(os.getpid()):
        try:
            if name in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append((rss_mib(pid), pid))
        except FileNotFoundError:
            continue
    return max(found)[1] if found else None


def jvm_live_heap_mib(pid: int) -> float:
    """The heap a JVM holds after a full collection (``jcmd``), in MiB; 0 if unreadable."""
    try:
        subprocess.run(["jcmd", str(pid), "GC.run"], capture_output=True, timeout=60, check=True)
        info = subprocess.run(["jcmd", str(pid), "GC.heap_info"], capture_output=True,
                              text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0.0
    # G1 reports one "garbage-first heap" line, the serial collector a line a generation.
    return sum(int(k) for k in re.findall(r"(?:heap|generation)\s+total \d+K, used (\d+)K",
                                          info)) / 1024


class RowCounter:
    """Rows written under a folder of Parquet files (each file is written once)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.counted = {}

    def __call__(self) -> int:
        for path in self.folder.rglob("*.parquet"):
            if path not in self.counted:
                try:
                    self.counted[path] = pq.ParquetFile(path).metadata.num_rows
                except Exception:  # still being written: counted next time
                    pass
        return sum(self.counted.values())


def sample_until(total: int, out: Path, report_every: int, samples: list,
                 publisher: Optional[threading.Thread], runner_name: str,
                 stall_seconds: float) -> int:
    """Samples memory every ``report_every`` articles out until all ``total`` are
    accounted for (article or dead-letter rows), or until nothing more comes
    out for ``stall_seconds`` once ``publisher`` (None: nothing to wait for) has
    ended; returns how many are."""
    articles, dead_letters = RowCounter(out / "articles"), RowCounter(out / "deadletter")
    started, reported = time.perf_counter(), -report_every
    accounted, changed = -1, time.perf_counter()
    while True:
        scan_started = time.perf_counter()
        count = articles()
        now_accounted = count + dead_letters()
        scan_seconds = time.perf_counter() - scan_started
        if now_accounted != accounted:
            accounted, changed = now_accounted, time.perf_counter()
        publishing = publisher is not None and publisher.is_alive()
        stalled = not publishing and time.perf_counter() - changed > stall_seconds
        done = accounted >= total or stalled
        if count >= reported + report_every or done:
            runner = runner_process(RUNNER_PROCESS[runner_name])
            heap = jvm_live_heap_mib(runner) if runner and runner_name == "FlinkRunner" else 0.0
            samples.append((count, rss_mib(runner) if runner else 0.0, heap,
                            rss_mib(os.getpid())))
            reported = count
            print(f"  {count} articles out, {time.perf_counter() - started:.0f} s: runner RSS "
                  f"{samples[-1][1]:.0f} MiB" + (f" (live heap {heap:.0f} MiB)" if heap else "")
                  + f", Python worker RSS {samples[-1][3]:.0f} MiB", flush=True)
            if done:
                return accounted
        # The scan walks every output file, more as the run goes on, and this
        # process is also the SDK worker: keep it to a twentieth of the time.
        time.sleep(max(2.0, 20 * scan_seconds))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--articles", type=int, default=2400)
    parser.add_argument("--rate", type=float, default=2.0, help="articles published a second")
    parser.add_argument("--window-minutes", type=float, default=3.0, help="the story window")
    parser.add_argument("--report-every", type=int, default=200,
                        help="sample memory each time this many more articles are out")
    parser.add_argument("--sib200", type=Path, default=DEFAULT_SIB200)
    parser.add_argument("--runner", choices=sorted(RUNNER_PROCESS), default="PrismRunner")
    parser.add_argument("--lapse", type=float, default=None,
                        help="publish a backlog first, articles this many event seconds "
                             "apart (default: publish live at --rate)")
    parser.add_argument("--window-seconds", type=float, default=10,
                        help="the output windows (--window_seconds)")
    parser.add_argument("--test-stream", action="store_true",
                        help="with --lapse: the articles as a TestStream on Prism instead of a "
                             "Kafka backlog, the watermark moving an output window at a time")
    parser.add_argument("--stall-seconds", type=float, default=None,
                        help="give up when nothing more comes out for this long (default: "
                             "2 minutes after publishing live; 15 minutes for a backlog, whose "
                             "first rows wait until its first output window is processed)")
    args, pipeline_args = parser.parse_known_args(argv)

    if args.test_stream and not args.lapse:
        parser.error("--test-stream needs --lapse: the articles' event times")
    if args.test_stream and args.runner != "PrismRunner":
        parser.error("--test-stream runs on Prism: Flink's portable runner has no TestStream")

    samples = []
    with tempfile.TemporaryDirectory() as tmp, \
            (contextlib.nullcontext() if args.test_stream else LocalKafkaBroker()) as broker:
        feed = Path(tmp) / "feed.jsonl"
        end = datetime.now(timezone.utc).replace(microsecond=0)
        with open(feed, "w", encoding="utf-8") as f:
            for i, record in enumerate(synthetic_articles(args.sib200, args.articles)):
                if args.test_stream:
                    record["published_at"] = (end - timedelta(
                        seconds=(args.articles - 1 - i) * args.lapse)).isoformat()
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        source, read_argv = None, []
        if args.test_stream:
            # The watermark moves an output window at a time, after that window's articles.
            source = ReadTestStream(str(feed), ingested_at=end, window_seconds=args.window_seconds,
                                    watermark_step=args.window_seconds, settle_seconds=60)
            read_argv = ["--streaming"]
        else:
            broker.create_topic(TOPIC, partitions=3)
            if args.lapse:
                replay(str(feed), broker.bootstrap_servers, TOPIC, progress=False,
                       timestamps=f"spread:{(args.articles - 1) * args.lapse:g}")
            read_argv = [f"--bootstrap-servers={broker.bootstrap_servers}", f"--topic={TOPIC}",
                         "--start=earliest", "--stop=never"]
        out = Path(tmp) / "out"
        run_argv = normalise_argv([
            f"--runner={args.runner}", f"--output={out}", "--embedder=none", *read_argv,
            f"--story_window_hours={args.window_minutes / 60}",
            f"--window_seconds={args.window_seconds:g}", *pipeline_args])
        with local_runner(run_argv) as runner_argv:
            options = PipelineOptions(runner_argv)
            pipeline = beam.Pipeline(options=options)
            build(pipeline, options, source)
            started = time.perf_counter()
            result = pipeline.run()
            publisher = None
            if not args.lapse:  # live: publish while the job runs
                publisher = threading.Thread(target=replay, args=(
                    str(feed), broker.bootstrap_servers, TOPIC),
                    kwargs={"rate": args.rate, "timestamps": "now", "progress": False},
                    daemon=True)
                publisher.start()
            try:
                accounted = sample_until(args.articles, out, args.report_every, samples,
                                         publisher, args.runner, args.stall_seconds
                                         or (900 if args.lapse else 120))
            finally:
                result.cancel()
            seconds = time.perf_counter() - started

    event_seconds_per_article = args.lapse or 1 / args.rate
    window_full = int(args.window_minutes * 60 / event_seconds_per_article)
    print(f"\n{args.articles} articles "
          + (f"in a {'TestStream' if args.test_stream else 'backlog'}, {args.lapse:g} s of "
             f"event time apart" if args.lapse
             else f"at {args.rate:g}/s")
          + f", story window {args.window_minutes:g} "
          f"min = {window_full} articles; {seconds:.0f} s on {args.runner}; {accounted} accounted "
          f"for as article or dead-letter rows"
          + ("" if accounted == args.articles else
             f": {args.articles - accounted} MISSING") + "\n")
    full = next((s for s in samples if s[0] >= window_full), samples[-1])
    columns = [("runner RSS MiB", 1)] + ([("live heap MiB", 2)] if full[2] else []) + [
        ("worker RSS MiB", 3)]
    print(f"{'articles out':>12}{'in window':>11}"
          + "".join(f"{name:>16}{'vs full':>9}" for name, _ in columns))
    for sample in samples:
        print(f"{sample[0]:>12}{min(sample[0], window_full):>11}"
              + "".join(f"{sample[i]:>16.0f}{sample[i] / full[i]:>9.2f}" for _, i in columns))

if __name__ == "__main__":
    main()
