"""Peak memory of a batch run against its size: bounded by the story window, not the input.

    python benchmarks/batch_memory_benchmark.py --articles 25000 50000 --story-window-hours 24
    python benchmarks/batch_memory_benchmark.py --kafka --one-pass --articles 5000 10000 --lapse 60

Generates synthetic articles as ``pipeline_benchmark`` does (3-8 SIB-200 train
sentences each in one of its 190 languages, about 1.1 KB; 5% exact and 5%
near copies of an earlier article), ``--lapse`` seconds of publication time
apart (7: a story window of 24 hours holds 12,343 of them), as one JSON Lines
file. Then it runs ``newsloom run`` on each size, each in a fresh process so
that its peak resident memory (``ru_maxrss``) is its own, with
``--embedder none`` unless told otherwise and the other options as given
after ``--``. It prints, per size: the slices the run was cut into, seconds,
articles/s, peak MiB, and the peak's ratio to the first size's, all measured
in the same run; then each size's peak after each of its slices, with the
number of articles read by then.

``--kafka`` publishes each size to a topic of its own on a local broker
(``LocalKafkaBroker``, message times the publication times) and runs a bounded
read of it (``--start earliest --stop end``) instead; it also prints how long the
plain pre-read of the event times took (``read_event_times``). ``--one-pass``
runs each size once more with ``--slice_hours 0``, and prints the sliced peak's
ratio to it.
"""

import argparse
import json
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.pipeline_benchmark import DEFAULT_SIB200, generate  # noqa: E402
from connectors.local_kafka import LocalKafkaBroker  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def generate_in_time(sib200: Path, n: int, lapse: float, path: Path) -> None:
    """``generate``'s articles with ``published_at`` ``lapse`` seconds apart from ``START``."""
    plain = path.with_suffix(".plain")
    generate(sib200, n, plain)
    with open(plain, encoding="utf-8") as f, open(path, "w", encoding="utf-8") as out:
        for i, line in enumerate(f):
            article = json.loads(line)
            article["published_at"] = (START + timedelta(seconds=lapse * i)).isoformat()
            out.write(json.dumps(article, ensure_ascii=False) + "\n")
    plain.unlink()


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class SlicePeaks(logging.Handler):
    """The peak RSS so far as each slice of a run starts (so after the slices before
    it), with the event time the previous slice ended at, from ``run``'s slice log."""

    def __init__(self):
        super().__init__()
        self.peaks = []  # [(end of the slices so far, ISO, or None; peak MiB)]
        self.end = None

    def emit(self, record):
        if record.msg.startswith("slice %d of %d"):
            if record.args[0] > 1:
                self.peaks.append((self.end, peak_mib()))
            self.end = str(record.args[4])


def measure(argv) -> dict:
    """Runs newsloom in this (child) process; its summary's figures, the peak RSS, and
    the peak after each slice."""
    from pipeline.graph import run
    slices = SlicePeaks()
    logging.getLogger("pipeline.graph").addHandler(slices)
    logging.getLogger("pipeline.graph").setLevel(logging.INFO)
    started = time.perf_counter()
    summary = run(argv)
    return {"articles": summary["articles"], "unaccounted": summary["unaccounted"],
            "slices": len(summary.get("slices", [summary["run_id"]])),
            "seconds": time.perf_counter() - started,
            "peak_mib": peak_mib(), "slice_peaks": slices.peaks + [(None, peak_mib())]}


def articles_before(end, lapse: float, n: int) -> int:
    """How many of ``n`` articles ``lapse`` seconds apart from START are before ``end``."""
    if end in (None, "the last"):
        return n
    seconds = (datetime.fromisoformat(end) - START).total_seconds()
    return min(n, max(0, math.ceil(seconds / lapse)))


def publish(broker, path: Path, topic: str, partitions: int) -> List[str]:
    """Publishes the articles at ``path`` to a new ``topic``; the newsloom flags that
    read all of it once."""
    from connectors.replay import replay
    replay(str(path), broker.bootstrap_servers, topic, partitions=partitions, progress=False)
    return ["--bootstrap-servers", broker.bootstrap_servers, "--topic", topic,
            "--start", "earliest", "--stop", "end"]


def pre_read_seconds(input_args: List[str]) -> float:
    """How long ``read_event_times`` takes over the topic ``input_args`` read."""
    from connectors.kafka_source import KafkaSpec, read_event_times
    spec = KafkaSpec(input_args[1], input_args[3], start="earliest", stop="end")
    started = time.perf_counter()
    read_event_times(spec, 1 << 20, 1 << 16)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, nargs="+", default=[25_000, 50_000])
    parser.add_argument("--lapse", type=float, default=7.0,
                        help="seconds of publication time between two articles (default: 7)")
    parser.add_argument("--story-window-hours", type=float, default=24.0)
    parser.add_argument("--embedder", default="none")
    parser.add_argument("--sib200", type=Path, default=DEFAULT_SIB200)
    parser.add_argument("--kafka", action="store_true",
                        help="read each size from a topic of a local broker, not a file")
    parser.add_argument("--partitions", type=int, default=3, help="with --kafka (default: 3)")
    parser.add_argument("--one-pass", action="store_true",
                        help="run each size with --slice_hours 0 too")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: the child's argv, JSON
    args, newsloom_args = parser.parse_known_args()
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return
    newsloom_args = [a for a in newsloom_args if a != "--"]
    results = []
    with tempfile.TemporaryDirectory() as tmp, \
            (LocalKafkaBroker() if args.kafka else nullcontext()) as broker:
        source = Path(tmp) / "articles.jsonl"
        generate_in_time(args.sib200, max(args.articles), args.lapse, source)
        for n in args.articles:
            part = Path(tmp) / f"articles-{n}.jsonl"
            with open(source, encoding="utf-8") as f, open(part, "w", encoding="utf-8") as out:
                for _, line in zip(range(n), f):
                    out.write(line)
            input_args = (publish(broker, part, f"articles-{n}", args.partitions) if broker
                          else ["--input", str(part)])
            pre_read = pre_read_seconds(input_args) if broker else None
            for mode, mode_args in [("sliced", [])] + (
                    [("one pass", ["--slice_hours", "0"])] if args.one_pass else []):
                argv = [*input_args, "--output", str(Path(tmp) / f"out-{n}-{mode.replace(' ', '-')}"),
                        "--embedder", args.embedder,
                        "--story_window_hours", str(args.story_window_hours), "--quiet",
                        *mode_args, *newsloom_args]
                done = subprocess.run([sys.executable, __file__, "--measure", json.dumps(argv)],
                                      capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"newsloom run failed on {n} articles (exit code {done.returncode}; "
                             f"-9 is a SIGKILL, such as the kernel's out-of-memory killer):\n"
                             f"{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                result.update(n=n, mode=mode, pre_read=pre_read, load=os.getloadavg()[0])
                results.append(result)
                print(f"measured {n}: {result}", file=sys.stderr, flush=True)
    window = args.story_window_hours * 3600 / args.lapse
    print(f"synthetic articles {args.lapse:g} s apart, --story_window_hours "
          f"{args.story_window_hours:g} ({window:,.0f} articles a window), --embedder "
          f"{args.embedder} {' '.join(newsloom_args)}; {os.cpu_count()} cores\n")
    first = next(r["peak_mib"] for r in results if r["mode"] == "sliced")
    one_pass = {r["n"]: r["peak_mib"] for r in results if r["mode"] == "one pass"}
    print(f"{'articles':>9}{'mode':>10}{'slices':>8}{'seconds':>9}{'articles/s':>12}"
          f"{'peak MiB':>10}{'vs first':>10}{'vs 1 pass':>10}{'pre-read s':>11}{'load':>6}")
    for r in results:
        versus = (f"{r['peak_mib'] / one_pass[r['n']]:>10.2f}"
                  if r["mode"] == "sliced" and r["n"] in one_pass else f"{'':>10}")
        pre_read = f"{r['pre_read']:>11.1f}" if r["pre_read"] is not None else f"{'':>11}"
        print(f"{r['n']:>9,}{r['mode']:>10}{r['slices']:>8}{r['seconds']:>9.0f}"
              f"{r['articles'] / r['seconds']:>12.1f}{r['peak_mib']:>10.0f}"
              f"{r['peak_mib'] / first:>10.2f}{versus}{pre_read}{r['load']:>6.1f}")
    print("\npeak MiB after each slice (articles read by then):")
    for r in results:
        print(f"{r['n']:>9,} {r['mode']}: " + ", ".join(
            f"{peak:,.0f} ({articles_before(end, args.lapse, r['n']):,})"
            for end, peak in r["slice_peaks"]))


if __name__ == "__main__":
    main()
