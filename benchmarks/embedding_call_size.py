"""The onnx-e5 engine's speed and peak memory against the padded tokens of one call.

    python benchmarks/embedding_call_size.py --articles 1000 --budgets 2048 8192 4096 1024
    python benchmarks/embedding_call_size.py --articles 300 --real-length

Generates synthetic articles as ``pipeline_benchmark`` does (``--real-length``:
3-8 KB, paragraphs of 2-4 sentences), and for each budget, in a fresh process
so that its peak resident memory is its own, embeds their lead paragraphs
(``lead_paragraphs``, as the embedding step takes them) 64 articles a call to
``OnnxE5Embedder.embed`` with ``MAX_BATCH_TOKENS`` set to the budget. Prints
seconds, paragraphs/s and peak MiB per budget, each with its ratio to the
first budget's, measured in the same run, and the load average as each ended.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.pipeline_benchmark import DEFAULT_SIB200, generate  # noqa: E402

ARTICLES_PER_CALL = 64


def measure(path: Path, budget: int) -> dict:
    from pipeline.logic import onnx_e5
    from pipeline.logic.language import LanguageDetector, spans_as_rows
    from pipeline.logic.crosslingual import lead_paragraphs
    from pipeline.steps.embed_articles import MAX_LEAD_CHARS, MAX_LEAD_PARAGRAPHS
    detector = LanguageDetector()
    leads = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            body = json.loads(line)["body"]
            spans = spans_as_rows(detector.detect(body).spans)
            leads.append([text for text, _ in lead_paragraphs(
                body, spans, MAX_LEAD_PARAGRAPHS, MAX_LEAD_CHARS)])
    onnx_e5.MAX_BATCH_TOKENS = budget
    engine = onnx_e5.OnnxE5Embedder()
    engine.embed(["warm up: the engine loads"])
    started = time.perf_counter()
    paragraphs = 0
    for at in range(0, len(leads), ARTICLES_PER_CALL):
        texts = [text for lead in leads[at:at + ARTICLES_PER_CALL] for text in lead]
        engine.embed(texts)
        paragraphs += len(texts)
    return {"seconds": time.perf_counter() - started, "paragraphs": paragraphs,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--budgets", type=int, nargs="+", default=[2048, 8192, 4096, 1024],
                        help="padded tokens per call; the first is the baseline")
    parser.add_argument("--real-length", action="store_true")
    parser.add_argument("--sib200", type=Path, default=DEFAULT_SIB200)
    parser.add_argument("--measure", nargs=2, metavar=("ARTICLES_FILE", "BUDGET"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), int(args.measure[1]))))
        return
    if args.articles < 1 or any(b < 512 for b in args.budgets):
        parser.error("--articles must be >= 1 and every budget >= 512 (one full window)")
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "articles.jsonl"
        generate(args.sib200, args.articles, path, real_length=args.real_length)
        rows = []
        for budget in args.budgets:
            out = subprocess.run([sys.executable, __file__, "--measure", str(path), str(budget)],
                                 check=True, capture_output=True, text=True).stdout
            rows.append((budget, json.loads(out.strip().splitlines()[-1])))
    base = rows[0][1]
    print(f"{args.articles} {'real-length' if args.real_length else 'synthetic'} articles, "
          f"{rows[0][1]['paragraphs']} lead paragraphs, {ARTICLES_PER_CALL} articles a call")
    print("| tokens a call | seconds | paragraphs/s | × time | peak MiB | × peak | load |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for budget, r in rows:
        print(f"| {budget:,} | {r['seconds']:.1f} | {r['paragraphs'] / r['seconds']:.1f} "
              f"| {r['seconds'] / base['seconds']:.2f} | {r['peak_mib']:,.0f} "
              f"| {r['peak_mib'] / base['peak_mib']:.2f} | {r['load']:.1f} |")


if __name__ == "__main__":
    main()
