"""Builds ``taxonomies/sib200.json``: the 7 SIB-200 topics, learnt from its train split only.

    python -m pipeline.data.build_sib200_taxonomy [--sib200 DIR] [--languages eng_Latn ...]

Each topic's examples are the train sentences of that category in the given
languages (the dev split is for ``benchmarks/evaluate_topics.py``, and the
test split is not used anywhere). Descriptions are newsloom's own words.
Deterministic: the rows are taken in ``index_id`` order.
"""

import argparse
import csv
import json
from pathlib import Path
from typing import Dict, List, Tuple

from pipeline.data.build_centring import DEFAULT_SIB200
from pipeline.logic.embedding import SIB200_LANGUAGE
from pipeline.logic.topics import TAXONOMY_DIR, parse_taxonomy

OUTPUT = TAXONOMY_DIR / "sib200.json"
# Six languages in six scripts: cross-validation on train (each language held
# out in turn) found more, or lower-resource, languages add nothing (see
# pipeline.logic.topics.TopicModel).
TRAIN_LANGUAGES = ["eng_Latn", "spa_Latn", "zho_Hans", "arb_Arab", "hin_Deva", "rus_Cyrl"]

DESCRIPTIONS: Dict[str, Tuple[str, str]] = {
    "science/technology": ("science", "Science, research, discoveries, space, technology and inventions."),
    "travel": ("travel", "Travel and tourism: destinations, transport, visas, hotels and advice for travellers."),
    "politics": ("politics", "Politics and government: states, leaders, elections, laws, wars and history."),
    "sports": ("sport", "Sports, athletes, teams, competitions and their results."),
    "health": ("health", "Health and medicine: diseases, treatments, the body and public health."),
    "entertainment": ("entertainment", "Entertainment, culture, arts, festivals, music and celebrations."),
    "geography": ("geography", "Geography: places, landscapes, climate, oceans, rivers and the natural world."),
}


def read_labelled(folder: Path, split: str) -> List[Tuple[int, str, str]]:
    """(index_id, category, text) rows of one SIB-200 split, sorted by index_id."""
    with open(folder / f"{split}.tsv", encoding="utf-8", newline="") as f:
        return sorted((int(row["index_id"]), row["category"], row["text"])
                      for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def build(sib200: Path, languages: List[str]) -> dict:
    examples: Dict[str, list] = {category: [] for category in DESCRIPTIONS}
    for folder in languages:
        for _, category, text in read_labelled(sib200 / folder, "train"):
            examples[category].append({"text": text, "lang": SIB200_LANGUAGE[folder]})
    taxonomy = {
        "name": "sib200",
        "description": f"SIB-200's 7 topics, from its train split in {', '.join(languages)}; "
                       "built by python -m pipeline.data.build_sib200_taxonomy",
        "min_score": 0.3,
        "max_topics": 2,
        "topics": [{"id": topic_id, "label": category, "description": description,
                    "examples": examples[category]}
                   for category, (topic_id, description) in DESCRIPTIONS.items()],
    }
    parse_taxonomy(taxonomy)  # the file must load
    return taxonomy


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sib200", type=Path, default=DEFAULT_SIB200)
    parser.add_argument("--languages", nargs="+", default=TRAIN_LANGUAGES)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    taxonomy = build(args.sib200, args.languages)
    args.output.write_text(json.dumps(taxonomy, ensure_ascii=False, indent=1) + "\n",
                           encoding="utf-8")
    count = sum(len(t["examples"]) for t in taxonomy["topics"])
    print(f"wrote {args.output}: {len(taxonomy['topics'])} topics, {count} examples")


if __name__ == "__main__":
    main()
