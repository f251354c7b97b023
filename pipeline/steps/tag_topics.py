"""The TagTopics step: each article's topics from the vectors ``EmbedArticles`` made.

Topics reuse the article vectors of the cross-language layer, so nothing is
embedded twice. Each worker loads the taxonomy and fits its classifier once,
in ``setup`` (``pipeline.logic.topics``); only the taxonomy's own example texts are
embedded there, and those vectors are cached on disk.
"""

from pathlib import Path
from typing import Optional, Tuple

import apache_beam as beam
import numpy as np

from pipeline.steps.embed_articles import (MAX_LEAD_CHARS, MAX_LEAD_PARAGRAPHS, ArticleVectors,
                                     article_vector, centred_leads, shared_embedder)
from pipeline.logic.embedding import Embedder, LanguageCentring
from pipeline.logic.language import LanguageDetector, spans_as_rows
from pipeline.steps.story_clusterer import JoinById
from pipeline.logic.topics import (CACHE_DIR, DEFAULT_TAXONOMY, TopicTagger, example_vectors,
                             load_taxonomy)


def fitted_tagger(taxonomy_spec: str, embedder: Embedder, centring: LanguageCentring,
                  detector: LanguageDetector, min_score: Optional[float] = None,
                  max_topics: Optional[int] = None, cache_dir: Path = CACHE_DIR) -> TopicTagger:
    """The taxonomy's classifier, fitted on its texts embedded as articles are."""
    taxonomy = load_taxonomy(taxonomy_spec)

    def embed_centred(texts, langs):
        # Each example is embedded as an article would be; an undeclared
        # language is detected, paragraph by paragraph.
        spans = [[{"lang": lang, "start": 0, "end": len(text)}] if lang
                 else spans_as_rows(detector.detect(text).spans)
                 for text, lang in zip(texts, langs)]
        leads = centred_leads(list(zip(texts, spans)), embedder, centring,
                              MAX_LEAD_PARAGRAPHS, MAX_LEAD_CHARS)
        return np.vstack([article_vector(lead) for lead in leads])

    examples, labels = taxonomy.training_set()
    return TopicTagger(taxonomy, example_vectors(examples, centring.rule, embed_centred, cache_dir),
                       labels, min_score, max_topics)


class _TagTopicsFn(beam.DoFn):
    def __init__(self, taxonomy: str, embedder: str, min_score: Optional[float],
                 max_topics: Optional[int]):
        self.taxonomy_spec = taxonomy
        self.embedder_spec = embedder
        self.min_score = min_score
        self.max_topics = max_topics

    def setup(self):
        # The model EmbedArticles loaded in this process (it embeds examples the cache lacks).
        embedder = shared_embedder(self.embedder_spec)
        self.tagger = fitted_tagger(self.taxonomy_spec, embedder,
                                    LanguageCentring.load(embedder.means_name), LanguageDetector(),
                                    self.min_score, self.max_topics)

    def process(self, keyed: Tuple[str, ArticleVectors]):
        article_id, vectors = keyed
        yield article_id, self.tagger.tag(vectors.article_vector)[0]


class TagTopics(beam.PTransform):
    """Sets ``topics`` on each article: ``[{"id", "score"}]``, best first.

    Input: the articles; ``vectors`` is ``EmbedArticles``' main output for the
    same articles (every article has its vectors; one with nothing embedded gets
    an empty list). Output: the same articles, one each.

    Args:
        taxonomy: a shipped taxonomy's name (``iptc``, ``sib200``) or a file.
        embedder: the embedder ``vectors`` came from (its examples are embedded alike).
        min_score, max_topics: override the taxonomy's cut.
        bounded: the input ends (a batch run): the topics are joined by grouping.
    """

    def __init__(self, vectors, taxonomy: str = DEFAULT_TAXONOMY, embedder: str = "onnx-e5",
                 min_score: Optional[float] = None, max_topics: Optional[int] = None,
                 bounded: bool = False):
        super().__init__()
        self.bounded = bounded
        loaded = load_taxonomy(taxonomy)  # checks the file now, not on a worker
        if min_score is not None and not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}")
        if max_topics is not None and max_topics < 1:
            raise ValueError(f"max_topics must be >= 1, got {max_topics}")
        # (min_score, max_topics) in force, which the story table cuts by too.
        self.cut = loaded.cut(min_score, max_topics)
        self.vectors = vectors
        self.tag = _TagTopicsFn(taxonomy, embedder, *self.cut)

    def expand(self, articles):
        return ({"article": articles | "KeyById" >> beam.Map(lambda a: (a["article_id"], a)),
                 "topics": self.vectors | "Tag" >> beam.ParDo(self.tag)}
                | "SetTopics" >> JoinById(lambda parts: {**parts["article"],
                                                         "topics": parts["topics"]},
                                          self.bounded))

