"""The FindDuplicates step: exact and near-duplicate articles, grouped into stories.

How (no all-pairs comparison anywhere):

1. ``Fingerprint``: each article gets its word-shingle hash set and MinHash
   signature, and is put in candidate buckets: one per content hash (exact
   copies) and one per LSH band within its language (near copies).
2. ``PairCandidates``: members of a bucket are paired (at most
   ``max_partners`` earlier partners each) when their 8-bit MinHash sketches
   estimate a similarity near the threshold; exact buckets match at once.
3. ``VerifyPairs``: each near pair is checked with the exact Jaccard of the
   two shingle sets, joined in by article id; pairs at or over ``threshold``
   match.
4. ``AssignStories``: matches are joined into stories (``pipeline.stories``)
   and the story fields are set on every article.

Seam for cross-language matching: ``candidate_keys`` below names the buckets
an article joins, and ``VerifyPairs`` scores a pair; a cross-language layer
adds its own keys (embedding LSH) and its own score, and the union-find in
``AssignStories`` joins whatever matches it is given.

Memory: buckets hold ids, order keys and a 120-byte sketch per article;
shingle sets travel once per candidate pair that the sketches let through. ``AssignStories`` gathers all matches on one worker (about
100 bytes each), which bounds a batch run by its number of matched articles;
the streaming form with state expiring in event time is the next layer's job.
"""

from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, Iterable, Iterator, Optional, Tuple

import apache_beam as beam
import numpy as np

from pipeline.crosslingual import paragraph_coverage, vector_candidates
from pipeline.data.build_thresholds import DEFAULT_THRESHOLD, load_thresholds, pair_key
from pipeline.embed_articles import ArticleVectors
from pipeline.minhash import MinHasher, jaccard, shingle_hashes
from pipeline.stories import (Match, Member, assign_stories, exact_matches, near_candidates,
                              order_key, singleton)
from pipeline.text import tokens
from schemas.article import Article

EXACT = "exact"
NEAR = "near"
# Near pairs go on to the exact Jaccard check only if their 8-bit sketch
# estimate is within this margin of the threshold: about 2 standard errors,
# so templated articles that share a bucket but not their text stop here.
SKETCH_MARGIN = 0.1
# Shared names and numbers kept as a duplicate's evidence.
MAX_EVIDENCE = 20


@dataclass(frozen=True)
class Fingerprint:
    member: Member
    lang: str
    content_hash: str
    shingles: bytes  # sorted unique uint32 shingle hashes


def member_of(article: Article) -> Member:
    return Member(article["article_id"],
                  order_key(article.get("published_at"), article["ingested_at"],
                            article["article_id"]))


def candidate_keys(fingerprint: Fingerprint, signature: Optional[np.ndarray],
                   minhasher: MinHasher) -> Iterator[str]:
    """The buckets an article joins: its content hash, and its LSH bands in its language."""
    yield f"{EXACT}:{fingerprint.content_hash}"
    if signature is not None:
        for band in minhasher.band_keys(signature):
            yield f"{NEAR}:{fingerprint.lang}:{band}"


class _FingerprintFn(beam.DoFn):
    BUCKETS = "buckets"

    def __init__(self, shingle_size: int, bands: int, rows: int):
        self.shingle_size = shingle_size
        self.bands = bands
        self.rows = rows
        self.minhasher = None

    def setup(self):
        self.minhasher = MinHasher(bands=self.bands, rows=self.rows)

    def process(self, article: Article):
        shingles = shingle_hashes(tokens(article["body"]), self.shingle_size)
        fingerprint = Fingerprint(member_of(article), article["lang"],
                                  article["content_hash"], shingles.tobytes())
        yield fingerprint.member.article_id, fingerprint
        signature = self.minhasher.signature(shingles) if shingles.size else None
        sketch = MinHasher.sketch(signature) if signature is not None else b""
        for key in candidate_keys(fingerprint, signature, self.minhasher):
            yield beam.pvalue.TaggedOutput(self.BUCKETS, (key, (fingerprint.member, sketch)))


def _pair_bucket(bucket: Tuple[str, Iterable[Tuple[Member, bytes]]], max_partners: int,
                 min_estimate: float):
    """Exact matches, or near-candidate pairs whose sketch estimate reaches ``min_estimate``."""
    key, entries = bucket
    sketches = dict(entries)
    if key.startswith(EXACT):
        for match in exact_matches(sketches):
            yield beam.pvalue.TaggedOutput(EXACT, match)
        return
    for later, earlier in near_candidates(sketches, max_partners, min_estimate):
        yield (later.article_id, earlier.article_id), (later, earlier)


def _pair_vector_bucket(bucket: Tuple[str, Iterable[Tuple[Member, str, bytes]]],
                        max_partners: int, min_cosine: float):
    _, entries = bucket
    entries = list(entries)
    vectors = {member: vector for member, _, vector in entries}
    languages = {member: lang for member, lang, _ in entries}
    for later, earlier in vector_candidates(vectors, languages, max_partners, min_cosine):
        yield (later.article_id, earlier.article_id), (later, earlier)


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
    """A translation match when enough paragraphs align both ways (``pipeline.crosslingual``),
    at the language pair's calibrated ``paragraph_similarity``, else ``default_similarity``."""
    similarity = paragraph_similarity.get(pair_key(later_vectors.lang, earlier_vectors.lang),
                                          default_similarity)
    covered = paragraph_coverage(later_vectors.matrix, earlier_vectors.matrix, similarity)
    if covered > coverage:
        shared = sorted(later_vectors.evidence & earlier_vectors.evidence)
        return Match(later=later, earlier=earlier, score=covered, kind="translation",
                     evidence=tuple(shared[:MAX_EVIDENCE]))
    return None


class VerifyPairs(beam.PTransform):
    """Candidate pairs ``((later_id, earlier_id), (later, earlier))`` in, ``Match``es out,
    each distinct pair verified once.

    Each side's features (``(article_id, features)``) are joined in by id, one
    side at a time, and ``score(later, earlier, later_features,
    earlier_features)`` returns a ``Match`` or None.
    """

    def __init__(self, features, score: Callable[..., Optional[Match]]):
        super().__init__()
        self.features = features
        self.score = score

    def expand(self, pairs):
        score = self.score

        def attach_earlier(joined):
            _, grouped = joined
            for features in list(grouped["features"])[:1]:
                for later, earlier in grouped["pair"]:
                    yield later.article_id, (later, earlier, features)

        def verify(joined):
            _, grouped = joined
            for later_features in list(grouped["features"])[:1]:
                for later, earlier, earlier_features in grouped["pair"]:
                    match = score(later, earlier, later_features, earlier_features)
                    if match is not None:
                        yield match

        # A pair that met in several buckets is verified once.
        distinct = pairs | "OnePerPair" >> beam.CombinePerKey(lambda found: next(iter(found)))
        by_earlier = (
            {"pair": distinct | "KeyByEarlier" >> beam.Map(lambda kv: (kv[0][1], kv[1])),
             "features": self.features}
            | "JoinEarlier" >> beam.CoGroupByKey()
            | "AttachEarlier" >> beam.FlatMap(attach_earlier))
        return ({"pair": by_earlier, "features": self.features}
                | "JoinLater" >> beam.CoGroupByKey()
                | "Verify" >> beam.FlatMap(verify))


class FindDuplicates(beam.PTransform):
    """Sets ``story_id``, ``is_duplicate``, ``duplicate_of``, ``dup_score``,
    ``duplicate_kind`` and ``dup_evidence`` on each article.

    Guarantee: an article whose normalised body equals an earlier one's is its
    exact duplicate (score 1.0); one whose shingle Jaccard with an earlier
    article of the same language is at least ``threshold`` is found as a near
    duplicate with the LSH probability stated in ``pipeline.minhash`` (0.995 at
    J = 0.5 with the defaults); one whose lead paragraphs align with an earlier
    article's in any language (more than ``coverage`` of them, both ways, at
    the pair's paragraph similarity) is a translation, when the two share a
    vector-LSH bucket and their article vectors reach ``min_article_cosine``.
    Input article ids must be unique (see ``DropRepeatedIds``). Output: the
    same articles, one each.

    Args:
        threshold: the Jaccard similarity of word shingles that makes a near duplicate.
        shingle_size: words per shingle.
        bands, rows: LSH banding of the MinHash signature (``bands * rows`` values).
        max_partners: how many earlier members of a bucket each member is compared with.
        embedded: ``EmbedArticles``' output for the same articles, whose vectors
            find translations; None finds copies within one language only.
        paragraph_similarity: the centred cosine at which paragraphs align; None
            (the default) takes each language pair's calibrated value from
            ``pipeline/data/paragraph_thresholds.json`` (``build_thresholds``),
            and ``DEFAULT_THRESHOLD`` for pairs not calibrated.
        coverage, min_article_cosine: the rest of the translation test.
    """

    def __init__(self, threshold: float = 0.5, shingle_size: int = 3, bands: int = 40,
                 rows: int = 3, max_partners: int = 50, embedded=None,
                 paragraph_similarity: Optional[float] = None, coverage: float = 0.5,
                 min_article_cosine: float = 0.35):
        super().__init__()
        for name, value in (("threshold", threshold), ("coverage", coverage)):
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if shingle_size < 1 or max_partners < 1:
            raise ValueError("shingle_size and max_partners must be >= 1")
        MinHasher(bands, rows)  # checks bands and rows now, not on a worker
        self.threshold = threshold
        self.fingerprint = _FingerprintFn(shingle_size, bands, rows)
        self.max_partners = max_partners
        self.embedded = embedded
        # Per language pair from pipeline/data/paragraph_thresholds.json, unless
        # the caller fixes one value for every pair.
        self.pair_similarity = {} if paragraph_similarity is not None else load_thresholds()
        self.default_similarity = (paragraph_similarity if paragraph_similarity is not None
                                   else DEFAULT_THRESHOLD)
        self.coverage = coverage
        self.min_article_cosine = min_article_cosine

    def _translations(self):
        embedded = self.embedded
        return (embedded.buckets
                | "GroupVectorBuckets" >> beam.GroupByKey()
                | "PairVectorCandidates" >> beam.FlatMap(
                    _pair_vector_bucket, self.max_partners, self.min_article_cosine)
                | "VerifyTranslations" >> VerifyPairs(embedded.vectors, partial(
                    translation_match, paragraph_similarity=self.pair_similarity,
                    default_similarity=self.default_similarity, coverage=self.coverage)))

    def expand(self, articles):
        fingerprinted = articles | "Fingerprint" >> beam.ParDo(
            self.fingerprint).with_outputs(_FingerprintFn.BUCKETS, main="fingerprints")
        paired = (fingerprinted[_FingerprintFn.BUCKETS]
                  | "GroupBuckets" >> beam.GroupByKey()
                  | "PairCandidates" >> beam.FlatMap(
                      _pair_bucket, self.max_partners,
                      self.threshold - SKETCH_MARGIN).with_outputs(EXACT, main="pairs"))
        near = (paired.pairs
                | "VerifyPairs" >> VerifyPairs(fingerprinted.fingerprints,
                                               partial(shingle_match, threshold=self.threshold)))
        matches = [paired[EXACT], near]
        if self.embedded is not None:
            matches.append(self._translations())
        assignments = (
            matches
            | "AllMatches" >> beam.Flatten()
            | "GatherMatches" >> beam.combiners.ToList()
            | "AssignStories" >> beam.FlatMap(lambda found: assign_stories(found).items()))

        def set_story(joined):
            article_id, grouped = joined
            story = next(iter(grouped["story"]), None) or singleton(article_id)
            for article in grouped["article"]:
                yield {**article, "story_id": story.story_id,
                       "is_duplicate": story.is_duplicate,
                       "duplicate_of": story.duplicate_of, "dup_score": story.dup_score,
                       "duplicate_kind": story.duplicate_kind,
                       "dup_evidence": list(story.dup_evidence)}

        return ({"article": articles | "KeyById" >> beam.Map(lambda a: (a["article_id"], a)),
                 "story": assignments}
                | "JoinStories" >> beam.CoGroupByKey()
                | "SetStory" >> beam.FlatMap(set_story))
