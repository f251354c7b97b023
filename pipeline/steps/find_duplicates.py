"""The FindDuplicates step: exact, near and translated copies, and different reports
of one event, grouped into stories.

How (no all-pairs comparison anywhere):

1. ``Fingerprint``: each article gets its word-shingle hash set and MinHash
   signature, and joins candidate buckets: one per content hash (exact
   copies) and one per LSH band within its language (near copies).
   ``EmbedArticles`` (when given) adds vector-LSH buckets for translations
   and story links.
2. ``StoryClusterer`` (``pipeline.steps.story_clusterer``): a newcomer to a bucket
   is compared with the stored members nearest to it in time; exact buckets
   match at once, near pairs whose 8-bit sketches estimate a similarity near
   the threshold have their exact shingle Jaccard checked
   (``shingle_match``), and vector pairs have their paragraphs aligned
   (``translation_match``) or, failing that, are tested as two reports of
   one event (``story_link``). The matches become stories, in time order.
3. The story fields are set on every article.

All of it is keyed state expiring ``story_window`` after each article's event
time, so it runs on an endless stream with memory bounded by one window.
"""

from dataclasses import dataclass, replace
from functools import partial
from typing import Dict, Iterator, Optional

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import TimestampedValue

from pipeline.logic.crosslingual import paragraph_coverage
from pipeline.data.build_thresholds import DEFAULT_THRESHOLD, load_thresholds, pair_key
from pipeline.steps.embed_articles import ArticleVectors, bucket_payload
from pipeline.logic.minhash import MinHasher, jaccard, shingle_hashes
from pipeline.logic.stories import (STORY_LINK, BucketEntry, Match, Member, StoryAssignment,
                                    StoryOf, micros_to_utc, order_key, pack_entry)
from pipeline.logic.story_evidence import MIN_LINK_COSINE, StoryModel, pair_evidence
from pipeline.steps.story_clusterer import (EXACT, NEAR, VECTOR, JoinById, StoryClusterer,
                                      event_time)
from common.text import tokens
from schemas.article import Article
from schemas.story_state import SCHEMA_VERSION as STATE_SCHEMA_VERSION

# Near pairs go on to the exact Jaccard check only if their 8-bit sketch
# estimate is within this margin of the threshold: about 2 standard errors,
# so templated articles that share a bucket but not their text stop here.
SKETCH_MARGIN = 0.1
# Shared names and numbers kept as a duplicate's or a link's evidence.
MAX_EVIDENCE = 20
# Two reports of one event come out within a day of each other: a story link
# needs its two articles this close in event time. (The real news pairs the
# story model is fitted on carry no dates, so this cut is not measured.)
STORY_LINK_HOURS = 24


@dataclass(frozen=True)
class Fingerprint:
    member: Member
    lang: str
    content_hash: str
    shingles: bytes  # sorted unique uint32 shingle hashes
    # The 8-bit MinHash sketch its near-bucket entries carry (``MinHasher.sketch``);
    # empty when it has no shingles.
    sketch: bytes = b""


def member_of(article: Article) -> Member:
    return Member(article["article_id"],
                  order_key(article.get("published_at"), article["ingested_at"],
                            article["article_id"]))


def at_event_time(article: Article) -> TimestampedValue:
    """The article stamped with its event time, which the story window counts in."""
    return TimestampedValue(article, event_time(member_of(article)))


def candidate_keys(fingerprint: Fingerprint, signature: Optional[np.ndarray],
                   minhasher: MinHasher) -> Iterator[str]:
    """The buckets an article joins: its content hash, and its LSH bands in its language."""
    yield f"{EXACT}:{fingerprint.content_hash}"
    if signature is not None:
        for band in minhasher.band_keys(signature):
            yield f"{NEAR}:{fingerprint.lang}:{band}"


def sketch_of(fingerprint: Fingerprint) -> bytes:
    """The payload of an article's near-bucket entries."""
    return fingerprint.sketch


def fingerprint_of_state(row: dict) -> Fingerprint:
    """An earlier run's article's fingerprint, from its story-state row."""
    return Fingerprint(member_of(row), row["lang"], row["content_hash"], row["shingles"])


def story_of_state(row: dict) -> StoryOf:
    """What story assignment knows of an earlier run's article, from its story-state row."""
    return StoryOf(row["story_id"], order_key(row["story_event_at"], row["story_ingested_at"],
                                              row["story_id"]), member_of(row).order[0])


def story_state_row(article: Article, story: StoryAssignment, fingerprint: Fingerprint,
                    vectors: Optional[ArticleVectors], embedder: Optional[str]) -> dict:
    """The ``schemas.story_state`` row of an article, for the runs after this one."""
    return {"schema_version": STATE_SCHEMA_VERSION, "article_id": article["article_id"],
            "published_at": article.get("published_at"), "ingested_at": article["ingested_at"],
            "origin": article["origin"], "origin_offset": article["origin_offset"],
            "lang": fingerprint.lang, "content_hash": fingerprint.content_hash,
            "shingles": fingerprint.shingles, "story_id": story.story_id,
            "story_event_at": micros_to_utc(story.story_order[0]),
            "story_ingested_at": micros_to_utc(story.story_order[1]),
            "embedder": embedder if vectors is not None else None,
            "dimension": vectors.dimension if vectors is not None else None,
            "paragraph_vectors": vectors.paragraphs if vectors is not None else None,
            "evidence": sorted(vectors.evidence) if vectors is not None else None}


class _FingerprintFn(beam.DoFn):
    """An article's fingerprint and candidate buckets; with ``from_earlier_run``, an
    earlier run's from its story-state row."""

    BUCKETS = "buckets"

    def __init__(self, shingle_size: int, bands: int, rows: int, from_earlier_run: bool = False):
        self.shingle_size = shingle_size
        self.bands = bands
        self.rows = rows
        self.from_earlier_run = from_earlier_run
        self.minhasher = None

    def setup(self):
        self.minhasher = MinHasher(bands=self.bands, rows=self.rows)

    def process(self, element: dict):
        if self.from_earlier_run:
            fingerprint = fingerprint_of_state(element)
            shingles = np.frombuffer(fingerprint.shingles, dtype=np.uint32)
        else:
            shingles = shingle_hashes(tokens(element["body"]), self.shingle_size)
            fingerprint = Fingerprint(member_of(element), element["lang"],
                                      element["content_hash"], shingles.tobytes())
        signature = self.minhasher.signature(shingles) if shingles.size else None
        if signature is not None:
            fingerprint = replace(fingerprint, sketch=MinHasher.sketch(signature))
        yield fingerprint.member.article_id, fingerprint
        # Packed: the runner holds every entry between this step and the index.
        entry = pack_entry(BucketEntry(fingerprint.member, fingerprint.lang, fingerprint.sketch,
                                       self.from_earlier_run))
        for key in candidate_keys(fingerprint, signature, self.minhasher):
            yield beam.pvalue.TaggedOutput(self.BUCKETS, (key, entry))


def shingle_match(later: Member, earlier: Member, later_fp: Fingerprint,
                  earlier_fp: Fingerprint, threshold: float) -> Optional[Match]:
    """A near-duplicate match when the shingle sets' exact Jaccard reaches ``threshold``."""
    similarity = jaccard(np.frombuffer(later_fp.shingles, dtype=np.uint32),
                         np.frombuffer(earlier_fp.shingles, dtype=np.uint32))
    if similarity >= threshold:
        return Match(later=later, earlier=earlier, score=similarity, kind="near")
    return None


def translation_match(later: Member, earlier: Member, later_vectors: ArticleVectors,
                      earlier_vectors: ArticleVectors, paragraph_similarity: Dict[str, float],
                      default_similarity: float, coverage: float) -> Optional[Match]:
    """A translation match when enough paragraphs align both ways (``pipeline.logic.crosslingual``),
    at the language pair's calibrated ``paragraph_similarity``, else ``default_similarity``."""
    similarity = paragraph_similarity.get(pair_key(later_vectors.lang, earlier_vectors.lang),
                                          default_similarity)
    covered = paragraph_coverage(later_vectors.matrix, earlier_vectors.matrix, similarity)
    if covered > coverage:
        shared = sorted(later_vectors.evidence & earlier_vectors.evidence)
        return Match(later=later, earlier=earlier, score=covered, kind="translation",
                     evidence=tuple(shared[:MAX_EVIDENCE]))
    return None


def story_link(later: Member, earlier: Member, later_vectors: ArticleVectors,
               earlier_vectors: ArticleVectors, model: StoryModel,
               paragraph_similarity: Dict[str, float], default_similarity: float,
               min_probability: Optional[float] = None,
               max_hours: float = STORY_LINK_HOURS) -> Optional[Match]:
    """A story link when ``model`` gives the two reports' evidence
    (``pipeline.logic.story_evidence.pair_evidence``) a probability of at least
    ``min_probability`` (None: the model's threshold for a pair in one language,
    or in two) and they are within ``max_hours`` of each other in event time.
    The match's score is that probability, its evidence the shared specific
    names and numbers, rarest first."""
    if abs(later.order[0] - earlier.order[0]) > max_hours * 3600 * 1_000_000:
        return None
    evidence = pair_evidence(
        later_vectors.matrix, earlier_vectors.matrix, later_vectors.opening_vector,
        earlier_vectors.opening_vector, later_vectors.evidence, earlier_vectors.evidence,
        later_vectors.length, earlier_vectors.length, later_vectors.lang != earlier_vectors.lang,
        paragraph_similarity.get(pair_key(later_vectors.lang, earlier_vectors.lang),
                                 default_similarity),
        model.document_frequency,
        background_cosine=model.background(later_vectors.lang, earlier_vectors.lang))
    probability = model.probability(evidence)
    cut = (min_probability if min_probability is not None
           else model.rule(evidence.cross_language).threshold)
    if probability < cut:
        return None
    return Match(later=later, earlier=earlier, score=probability, kind=STORY_LINK,
                 evidence=evidence.shared[:MAX_EVIDENCE])


def vector_match(later: Member, earlier: Member, later_vectors: ArticleVectors,
                 earlier_vectors: ArticleVectors, paragraph_similarity: Dict[str, float],
                 default_similarity: float, coverage: float, model: Optional[StoryModel],
                 min_probability: Optional[float] = None) -> Optional[Match]:
    """A vector pair's match: a translation (two languages), else a story link
    (when ``model`` is set), else None."""
    if later_vectors.lang != earlier_vectors.lang:
        match = translation_match(later, earlier, later_vectors, earlier_vectors,
                                  paragraph_similarity, default_similarity, coverage)
        if match is not None:
            return match
    if model is None:
        return None
    return story_link(later, earlier, later_vectors, earlier_vectors, model, paragraph_similarity,
                      default_similarity, min_probability)


class FindDuplicates(beam.PTransform):
    """Sets ``story_id``, ``is_duplicate``, ``duplicate_of``, ``dup_score``,
    ``duplicate_kind`` and ``dup_evidence`` on each article.

    Guarantee: an article whose normalised body equals an earlier one's is its
    exact duplicate (score 1.0); one whose shingle Jaccard with an earlier
    article of the same language is at least ``threshold`` is found as a near
    duplicate with the LSH probability stated in ``pipeline.logic.minhash`` (0.995 at
    J = 0.5 with the defaults); one whose lead paragraphs align with an earlier
    article's in any language (more than ``coverage`` of them, both ways, at
    the pair's paragraph similarity) is a translation, when the two share a
    vector-LSH bucket and their article vectors reach ``min_article_cosine``.
    An article in any language joins, without being a duplicate, the story of
    an earlier different report of the same event when the two pass
    ``story_link``: the shipped ``StoryModel`` (``pipeline/data/story_model.json``)
    weighs their evidence, and they are within a day of each other.
    Only articles within ``story_window`` of each other (event time) match,
    and in a bucket a newcomer meets the ``max_partners`` members nearest to
    it in time.
    Input article ids must be unique (see ``DropRepeatedIds``). Output:
    ``{"articles": the same articles, one each, "state": their story-state rows}``
    (``schemas.story_state``).

    Args:
        threshold: the Jaccard similarity of word shingles that makes a near duplicate.
        shingle_size: words per shingle.
        bands, rows: LSH banding of the MinHash signature (``bands * rows`` values).
        max_partners: how many members of a bucket, the nearest in time, a newcomer is
            compared with.
        embedded: ``EmbedArticles``' output for the same articles, whose vectors
            find translations; None finds copies within one language only.
        paragraph_similarity: the centred cosine at which paragraphs align; None
            (the default) takes each language pair's calibrated value from
            ``pipeline/data/paragraph_thresholds.json`` (``build_thresholds``),
            and ``DEFAULT_THRESHOLD`` for pairs not calibrated.
        coverage, min_article_cosine: the rest of the translation test.
        story_links: whether different reports of one event are linked into one
            story; False: stories are groups of duplicates only.
        story_link_probability: the probability a story link needs; None (the
            default): the shipped model's thresholds.
        story_window: seconds of event time an article stays matchable (72 h).
        assign_every: on a stream, how often (event-time seconds) stories are assigned.
        bounded: the input ends (a batch run); see ``pipeline.steps.story_clusterer``.
        earlier: story-state rows of earlier runs' articles (at their event time),
            which new articles are matched with and whose stories they join; no
            output for them. None: no earlier run.
        earlier_embedded: ``EmbedArticles.from_state`` of ``earlier``, when ``embedded`` is given.
        embedder: the ``--embedder`` of ``embedded``, recorded in the state rows.
    """

    def __init__(self, threshold: float = 0.5, shingle_size: int = 3, bands: int = 40,
                 rows: int = 3, max_partners: int = 50, embedded=None,
                 paragraph_similarity: Optional[float] = None, coverage: float = 0.5,
                 min_article_cosine: float = MIN_LINK_COSINE, story_links: bool = True,
                 story_link_probability: Optional[float] = None,
                 story_window: float = 72 * 3600,
                 assign_every: float = 10, bounded: bool = True, earlier=None,
                 earlier_embedded=None, embedder: Optional[str] = None):
        super().__init__()
        if (earlier_embedded is not None) != (earlier is not None and embedded is not None):
            raise ValueError("earlier_embedded goes with earlier and embedded")
        for name, value in (("threshold", threshold), ("coverage", coverage)):
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if shingle_size < 1 or max_partners < 1:
            raise ValueError("shingle_size and max_partners must be >= 1")
        MinHasher(bands, rows)  # checks bands and rows now, not on a worker
        self.threshold = threshold
        self.fingerprint = _FingerprintFn(shingle_size, bands, rows)
        self.earlier_fingerprint = _FingerprintFn(shingle_size, bands, rows, from_earlier_run=True)
        self.max_partners = max_partners
        self.embedded = embedded
        # Per language pair from pipeline/data/paragraph_thresholds.json, unless
        # the caller fixes one value for every pair.
        self.pair_similarity = {} if paragraph_similarity is not None else load_thresholds()
        self.default_similarity = (paragraph_similarity if paragraph_similarity is not None
                                   else DEFAULT_THRESHOLD)
        self.coverage = coverage
        self.min_article_cosine = min_article_cosine
        if story_link_probability is not None and not 0.0 < story_link_probability <= 1.0:
            raise ValueError(f"story_link_probability must be in (0, 1], "
                             f"got {story_link_probability}")
        # Loaded here, so a missing or broken model file fails the build, not a worker.
        self.story_model = StoryModel.load() if story_links else None
        self.story_link_probability = story_link_probability
        self.story_window = story_window
        self.assign_every = assign_every
        self.bounded = bounded
        self.earlier = earlier
        self.earlier_embedded = earlier_embedded
        self.embedder = embedder

    def expand(self, articles):
        fingerprinted = articles | "Fingerprint" >> beam.ParDo(
            self.fingerprint).with_outputs(_FingerprintFn.BUCKETS, main="fingerprints")
        buckets = [fingerprinted[_FingerprintFn.BUCKETS]]
        fingerprints = [fingerprinted.fingerprints]
        vectors = [self.embedded.vectors] if self.embedded is not None else []
        earlier_stories = None
        if self.earlier is not None:
            earlier = self.earlier | "EarlierFingerprint" >> beam.ParDo(
                self.earlier_fingerprint).with_outputs(_FingerprintFn.BUCKETS, main="fingerprints")
            buckets.append(earlier[_FingerprintFn.BUCKETS])
            fingerprints.append(earlier.fingerprints)
            earlier_stories = self.earlier | "EarlierStories" >> beam.Map(
                lambda row: (row["article_id"], story_of_state(row)))
            if self.earlier_embedded is not None:
                buckets.append(self.earlier_embedded.buckets)
                vectors.append(self.earlier_embedded.vectors)
        features = {NEAR: fingerprints | "AllFingerprints" >> beam.Flatten()}
        scores = {NEAR: partial(shingle_match, threshold=self.threshold)}
        if self.embedded is not None:
            buckets.append(self.embedded.buckets)
            features[VECTOR] = vectors | "AllVectors" >> beam.Flatten()
            scores[VECTOR] = partial(
                vector_match, paragraph_similarity=self.pair_similarity,
                default_similarity=self.default_similarity, coverage=self.coverage,
                model=self.story_model, min_probability=self.story_link_probability)
        assignments = (
            articles
            | "Members" >> beam.Map(member_of)
            | "StoryClusterer" >> StoryClusterer(
                buckets, features, scores,
                story_window=self.story_window, assign_every=self.assign_every,
                max_partners=self.max_partners, min_estimate=self.threshold - SKETCH_MARGIN,
                min_cosine=self.min_article_cosine,
                same_language_cosine=(MIN_LINK_COSINE if self.embedded is not None
                                      and self.story_model is not None else None),
                bounded=self.bounded,
                payload_of={NEAR: sketch_of, **({VECTOR: bucket_payload}
                                                if self.embedded is not None else {})},
                earlier_stories=earlier_stories))
        embedder = self.embedder

        def set_story(parts):
            story = parts["story"]
            article = {**parts["article"], "story_id": story.story_id,
                       "is_duplicate": story.is_duplicate,
                       "duplicate_of": story.duplicate_of, "dup_score": story.dup_score,
                       "duplicate_kind": story.duplicate_kind,
                       "dup_evidence": list(story.dup_evidence),
                       "linked_to": story.linked_to, "link_score": story.link_score,
                       "link_evidence": list(story.link_evidence)}
            return article, story_state_row(article, story, parts["fingerprint"],
                                            parts.get("vectors"), embedder)

        parts = {"article": articles | "KeyById" >> beam.Map(lambda a: (a["article_id"], a)),
                 "story": assignments, "fingerprint": fingerprinted.fingerprints}
        if self.embedded is not None:
            parts["vectors"] = self.embedded.vectors
        joined = parts | "SetStory" >> JoinById(set_story, self.bounded)
        return {"articles": joined | "Articles" >> beam.Map(lambda pair: pair[0]),
                "state": joined | "StateRows" >> beam.Map(lambda pair: pair[1])}
