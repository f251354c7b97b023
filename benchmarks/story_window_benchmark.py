"""Memory of StoryClusterer over an event-time stream: flat once the story window is full.

    python benchmarks/story_window_benchmark.py [--articles 50000] [--days 15] [--window-hours 72]

Streams synthetic articles (3-8 SIB-200 train sentences each in one of its
languages; 10% exact or edited copies of a recent article) with event times
spread evenly over ``--days``, through ``FindDuplicates(bounded=False)`` (the
same-language layers: exact and MinHash buckets; ``--embedder none``'s) on a
Beam ``TestStream``, whose watermark follows the stream. It samples the
process's resident memory as articles come out, and prints it beside the
number of articles the story window holds, with each figure's ratio to the
memory when the window first filled. Flat means the ratios stay near 1.00
while the articles keep coming.

The TestStream runs on the bundle-based DirectRunner (the runner that executes
it), which keeps all of its state in this process.
"""

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions  # noqa: E402
from apache_beam.testing.test_stream import TestStream  # noqa: E402

from connectors.records import new_article  # noqa: E402
from pipeline.data.build_centring import DEFAULT_SIB200, read_sentences  # noqa: E402
from pipeline.find_duplicates import FindDuplicates  # noqa: E402
from pipeline.runners import local_runner  # noqa: E402

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def rss_mib(pid="self") -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def tree_rss_mib() -> float:
    """This process and its children (a runner such as Prism runs as one)."""
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    return rss_mib() + sum(rss_mib(pid) for pid in children)


def synthetic_articles(sib200: Path, count: int, days: float, seed: int = 5):
    rng = random.Random(seed)
    folders = sorted(p.name for p in sib200.iterdir() if (p / "train.tsv").exists())
    pools = {f: [text for _, text in read_sentences(sib200 / f, "train")] for f in folders}
    step = timedelta(days=days) / count
    recent = []
    for i in range(count):
        if recent and rng.random() < 0.1:
            body = rng.choice(recent[-200:])
            if rng.random() < 0.5:
                body = body + "\nUpdated with more details."
        else:
            pool = pools[rng.choice(folders)]
            body = "\n".join(rng.sample(pool, rng.randint(3, 8)))
            recent.append(body)
        at = T0 + i * step
        article = new_article(body=body, article_id=f"a{i:07d}", ingested_at=at,
                              origin="benchmark", origin_offset=i, max_article_bytes=1 << 20)
        # The language is what the pipeline would detect; the benchmark measures
        # the clustering state, so a fixed label per source language will do.
        yield {**article, "published_at": at, "lang": "xx"}


def _record(article, path: str) -> None:
    # One byte per article out, in a file: the runner runs copies of this
    # function (and of any module state) in its own bundles and threads.
    with open(path, "ab") as f:
        f.write(b".")


def _sample(path: Path, samples: list, stop: threading.Event, report_every: int) -> None:
    """Samples memory each second, and prints a line as each ``report_every`` more
    articles are out, so a run cut short still shows its trend."""
    started, reported = time.perf_counter(), 0
    while not stop.wait(1.0):
        count = path.stat().st_size if path.exists() else 0
        samples.append((count, tree_rss_mib()))
        if count >= reported + report_every:
            reported = count
            print(f"  {count} articles out, RSS {samples[-1][1]:.0f} MiB, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--articles", type=int, default=50_000)
    parser.add_argument("--days", type=float, default=15.0)
    parser.add_argument("--window-hours", type=float, default=72.0)
    parser.add_argument("--watermark-every", type=int, default=250,
                        help="articles between watermark steps")
    parser.add_argument("--sib200", type=Path, default=DEFAULT_SIB200)
    parser.add_argument("--report-every", type=int, default=5000,
                        help="print a row each time this many more articles are out")
    parser.add_argument("--runner", default="BundleBasedDirectRunner",
                        help="BundleBasedDirectRunner or PrismRunner")
    args = parser.parse_args(argv)

    articles = list(synthetic_articles(args.sib200, args.articles, args.days))
    stream = TestStream()
    for start in range(0, len(articles), args.watermark_every):
        chunk = articles[start:start + args.watermark_every]
        stream = stream.advance_watermark_to(chunk[0]["published_at"].timestamp() - 1)
        stream = stream.add_elements([beam.window.TimestampedValue(a, a["published_at"].timestamp())
                                      for a in chunk])
    stream = stream.advance_watermark_to(
        articles[-1]["published_at"].timestamp() + 3600).advance_watermark_to_infinity()

    baseline = tree_rss_mib()
    samples, stop = [], threading.Event()
    # Prism gets its local binary and a worker pool on 127.0.0.1 (pipeline.runners).
    with local_runner([f"--runner={args.runner}"]) as flags, \
            tempfile.TemporaryDirectory() as tmp:
        options = PipelineOptions(flags)
        options.view_as(StandardOptions).streaming = True
        out = Path(tmp) / "out"
        sampler = threading.Thread(target=_sample, args=(out, samples, stop, args.report_every),
                                   daemon=True)
        sampler.start()
        started = time.perf_counter()
        with beam.Pipeline(options=options) as pipeline:
            _ = (pipeline | stream
                 | FindDuplicates(bounded=False, story_window=args.window_hours * 3600)
                 | beam.Map(_record, str(out)))
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join()

    per_hour = args.articles / (args.days * 24)
    window_full = int(per_hour * args.window_hours)
    print(f"{args.articles} articles over {args.days:g} days ({per_hour:.0f}/hour), story window "
          f"{args.window_hours:g} h = {window_full} articles; {seconds:.0f} s, "
          f"{args.articles / seconds:.0f} articles/s; RSS before the pipeline {baseline:.0f} MiB\n")
    # The largest RSS seen by the time each report point was reached.
    rows, peak = [], 0.0
    for count, mib in samples:
        peak = max(peak, mib)
        if not rows or count >= rows[-1][0] + args.report_every or (
                rows[-1][0] < window_full <= count):
            rows.append((count, peak))
    at_full = next((mib for count, mib in rows if count >= window_full), peak)
    print(f"{'articles out':>12}{'in window':>11}{'peak RSS MiB':>14}{'vs window full':>16}")
    for count, mib in rows:
        print(f"{count:>12}{min(count, window_full):>11}{mib:>14.0f}{mib / at_full:>16.2f}")


if __name__ == "__main__":
    main()
