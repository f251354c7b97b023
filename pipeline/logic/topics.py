"""Topic tagging: a taxonomy file, a classifier fitted on its texts, topics per article.

A *taxonomy* is a YAML or JSON file (see ``pipeline/data/taxonomies/iptc.yaml``,
the default)::

    name: iptc-top            # optional, defaults to the file name
    min_score: 0.2            # a topic is kept when its score reaches this ...
    max_topics: 3             # ... and at most this many, best first
    topics:
      - id: sport             # what the ``topics`` column stores
        label: sport
        description: Competitive sport, athletes, matches and tournaments.
        keywords: [football, cricket, Olympics]           # optional
        examples:                                          # optional, any language
          - The home side won the final 2-1 after extra time.
          - {text: "El equipo ganó la final.", lang: es}  # lang: else detected

Every text of a topic (``label: description``, the keywords as one text, each
example) becomes a training example: its embedding, centred for its language
(``pipeline.logic.embedding.LanguageCentring``), so that examples in one language
teach every language. A softmax (multinomial logistic) regression is fitted
on them, and averaged with a nearest-neighbour vote over them (``TopicModel``);
an article's topic scores are these probabilities for its article vector (the
mean of its centred lead paragraph vectors). The fit is plain numpy and takes
well under a second, so a taxonomy is fitted when a worker starts; the
example embeddings of the shipped taxonomies ship beside them, and any
other's are cached on disk (``example_vectors``).
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

TAXONOMY_DIR = Path(__file__).resolve().parents[1] / "data" / "taxonomies"
DEFAULT_TAXONOMY = "iptc"
SHIPPED_VECTORS = TAXONOMY_DIR / "vectors"
CACHE_DIR = Path.home() / ".cache" / "newsloom" / "topic-vectors"

_TAXONOMY_KEYS = {"name", "description", "min_score", "max_topics", "topics"}
_TOPIC_KEYS = {"id", "label", "description", "code", "keywords", "examples"}


@dataclass(frozen=True)
class Example:
    """A training text of a topic; ``lang`` None means detect it."""

    text: str
    lang: Optional[str] = None


@dataclass(frozen=True)
class Topic:
    id: str
    label: str
    description: str
    keywords: Tuple[str, ...] = ()
    examples: Tuple[Example, ...] = ()
    code: Optional[str] = None  # e.g. the IPTC Media Topic code

    def training_texts(self) -> List[Example]:
        """The texts the classifier learns this topic from."""
        texts = [Example(f"{self.label}: {self.description}", "en")]
        if self.keywords:
            texts.append(Example(", ".join(self.keywords)))
        return texts + list(self.examples)


@dataclass(frozen=True)
class Taxonomy:
    name: str
    topics: Tuple[Topic, ...]
    min_score: float = 0.2
    max_topics: int = 3

    @property
    def topic_ids(self) -> List[str]:
        return [topic.id for topic in self.topics]

    def cut(self, min_score: Optional[float] = None,
            max_topics: Optional[int] = None) -> Tuple[float, int]:
        """(min_score, max_topics) in force: the given ones, else this taxonomy's."""
        return (self.min_score if min_score is None else min_score,
                self.max_topics if max_topics is None else max_topics)

    def training_set(self) -> Tuple[List[Example], np.ndarray]:
        """Every training text and its topic's index."""
        texts, labels = [], []
        for index, topic in enumerate(self.topics):
            for example in topic.training_texts():
                texts.append(example)
                labels.append(index)
        return texts, np.array(labels, dtype=np.int64)


def taxonomy_path(spec: str) -> Path:
    """A shipped taxonomy's name (``iptc``, ``sib200``) or a file path."""
    for suffix in (".yaml", ".json"):
        shipped = TAXONOMY_DIR / f"{spec}{suffix}"
        if "/" not in spec and shipped.exists():
            return shipped
    path = Path(spec)
    if not path.is_file():
        shipped = sorted(p.stem for p in TAXONOMY_DIR.glob("*.*") if p.suffix in (".yaml", ".json"))
        raise ValueError(f"--taxonomy {spec!r} is neither a file nor one of {shipped}")
    return path


def load_taxonomy(spec: str) -> Taxonomy:
    """Reads and checks a taxonomy file; raises ValueError saying what is wrong."""
    path = taxonomy_path(spec)
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml  # PyYAML comes with apache-beam
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    return parse_taxonomy(data, default_name=path.stem, where=str(path))


def parse_taxonomy(data, default_name: str = "taxonomy", where: str = "taxonomy") -> Taxonomy:
    def fail(message: str):
        raise ValueError(f"{where}: {message}")

    if not isinstance(data, dict):
        fail("must be a mapping with a 'topics' list")
    unknown = set(data) - _TAXONOMY_KEYS
    if unknown:
        fail(f"unknown keys {sorted(unknown)}; allowed: {sorted(_TAXONOMY_KEYS)}")
    raw_topics = data.get("topics")
    if not isinstance(raw_topics, list) or len(raw_topics) < 2:
        fail("'topics' must list at least two topics")
    topics = []
    for number, raw in enumerate(raw_topics, 1):
        if not isinstance(raw, dict):
            fail(f"topic {number} must be a mapping")
        unknown = set(raw) - _TOPIC_KEYS
        if unknown:
            fail(f"topic {number}: unknown keys {sorted(unknown)}; allowed: {sorted(_TOPIC_KEYS)}")
        for key in ("id", "label", "description"):
            if not isinstance(raw.get(key), str) or not raw[key].strip():
                fail(f"topic {number}: '{key}' must be a non-empty string")
        keywords = raw.get("keywords") or []
        if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
            fail(f"topic {raw['id']}: 'keywords' must be a list of strings")
        examples = []
        for example in raw.get("examples") or []:
            if isinstance(example, str):
                example = {"text": example}
            if (not isinstance(example, dict) or not isinstance(example.get("text"), str)
                    or not example["text"].strip() or set(example) - {"text", "lang"}):
                fail(f"topic {raw['id']}: an example must be a non-empty string or "
                     f"{{text, lang}}, got {example!r}")
            examples.append(Example(example["text"], example.get("lang")))
        topics.append(Topic(raw["id"], raw["label"], raw["description"], tuple(keywords),
                            tuple(examples), raw.get("code")))
    ids = [t.id for t in topics]
    if len(set(ids)) != len(ids):
        fail(f"topic ids repeat: {sorted(i for i in set(ids) if ids.count(i) > 1)}")
    min_score = data.get("min_score", Taxonomy.min_score)
    max_topics = data.get("max_topics", Taxonomy.max_topics)
    if not isinstance(min_score, (int, float)) or not 0.0 <= min_score <= 1.0:
        fail(f"'min_score' must be in [0, 1], got {min_score!r}")
    if not isinstance(max_topics, int) or max_topics < 1:
        fail(f"'max_topics' must be an integer >= 1, got {max_topics!r}")
    return Taxonomy(str(data.get("name") or default_name), tuple(topics), float(min_score),
                    max_topics)


def example_vectors(examples: Sequence[Example], made_by: str,
                    embed_centred: Callable[[List[str], List[Optional[str]]], np.ndarray],
                    cache_dir: Path = CACHE_DIR, shipped_dir: Path = SHIPPED_VECTORS) -> np.ndarray:
    """Centred vectors of ``examples``: shipped (``build_topic_vectors``) or cached ones
    when they exist, else ``embed_centred(texts, langs)``, then cached.

    The file name is a hash of ``made_by`` (what the vectors depend on besides
    the texts: ``LanguageCentring.rule``) and every text with its language, so
    an edited taxonomy, another model or another centring never reads stale vectors.
    """
    key = hashlib.sha256(json.dumps(
        [made_by, [[e.text, e.lang] for e in examples]]).encode()).hexdigest()[:32]
    for folder in (shipped_dir, cache_dir):
        if (folder / f"{key}.npy").exists():
            return np.load(folder / f"{key}.npy").astype(np.float32)
    vectors = np.asarray(embed_centred([e.text for e in examples], [e.lang for e in examples]),
                         dtype=np.float32)
    save_vectors(vectors, cache_dir / f"{key}.npy")
    return vectors


def save_vectors(vectors: np.ndarray, path: Path) -> None:
    """Writes float16 rows (half the size; topic scores move by under 0.001) atomically,
    so parallel workers never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(partial, vectors.astype(np.float16))
    partial.replace(path)


@dataclass(frozen=True)
class TopicModel:
    """Softmax regression averaged with a k-nearest-neighbour vote over the examples.

    Chosen by cross-validation on SIB-200 *train* only (folds by sentence, each
    language held out in turn; ``benchmarks/evaluate_topics.py`` has the dev
    figures): the vote adds about 0.02 accuracy over the regression alone,
    most of it in low-resource languages, and is flat for vote weights
    0.3-0.6 and k from 10 to 100. The temperature 0.8 minimised the held-out
    log-loss.
    """

    weights: np.ndarray   # (dimension, classes), for unit-length inputs
    bias: np.ndarray      # (classes,)
    examples: np.ndarray  # (n, dimension) unit rows, for the vote
    labels: np.ndarray    # (n,)
    temperature: float = 0.8
    vote_weight: float = 0.4
    neighbours: int = 30
    vote_sharpness: float = 0.05  # neighbours weigh exp(cosine / this)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        p = _softmax((vectors @ self.weights + self.bias).astype(np.float64) / self.temperature)
        if self.vote_weight > 0:
            p = (1 - self.vote_weight) * p + self.vote_weight * self._vote(vectors)
        return p

    def _vote(self, vectors: np.ndarray) -> np.ndarray:
        cosines = vectors @ self.examples.T
        k = min(self.neighbours, len(self.examples))
        nearest = np.argpartition(-cosines, k - 1, axis=1)[:, :k]
        near = np.take_along_axis(cosines, nearest, axis=1)
        weight = np.exp((near - near.max(axis=1, keepdims=True)) / self.vote_sharpness)
        votes = np.zeros((len(vectors), self.weights.shape[1]))
        np.add.at(votes, (np.repeat(np.arange(len(vectors)), k), self.labels[nearest].ravel()),
                  weight.ravel())
        return votes / votes.sum(axis=1, keepdims=True)


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_topic_model(vectors: np.ndarray, labels: np.ndarray, classes: int, l2: float = 0.03,
                    scale: float = 10.0, **vote) -> TopicModel:
    """Fits the regression (L2 penalty ``l2`` on inputs scaled by ``scale``) by L-BFGS;
    ``vote`` sets ``TopicModel``'s other fields. Deterministic; well under a second
    for thousands of examples."""
    x = np.asarray(vectors, dtype=np.float64) * scale
    y = np.eye(classes)[labels]
    n, d = x.shape

    def objective(theta):
        w, b = theta[:d * classes].reshape(d, classes), theta[d * classes:]
        z = x @ w + b
        top = z.max(axis=1, keepdims=True)
        e = np.exp(z - top)
        total = e.sum(axis=1, keepdims=True)
        loss = (np.log(total) + top).sum() / n - (z * y).sum() / n + 0.5 * l2 * (w * w).sum()
        g = (e / total - y) / n
        return loss, np.concatenate([(x.T @ g + l2 * w).ravel(), g.sum(axis=0)])

    theta = _lbfgs(objective, np.zeros(d * classes + classes))
    return TopicModel((theta[:d * classes].reshape(d, classes) * scale).astype(np.float32),
                      theta[d * classes:].astype(np.float32),
                      np.asarray(vectors, dtype=np.float32), np.asarray(labels), **vote)


def _lbfgs(objective, x: np.ndarray, iterations: int = 300, memory: int = 10,
           tolerance: float = 1e-6) -> np.ndarray:
    """Minimises a smooth convex ``objective(x) -> (value, gradient)`` by L-BFGS with
    backtracking (Armijo) line search."""
    value, gradient = objective(x)
    steps, changes = [], []
    for _ in range(iterations):
        direction = -gradient.copy()
        alphas = []
        for s, c in reversed(list(zip(steps, changes))):
            alpha = (s @ direction) / (c @ s)
            alphas.append(alpha)
            direction -= alpha * c
        if steps:
            direction *= (steps[-1] @ changes[-1]) / (changes[-1] @ changes[-1])
        for (s, c), alpha in zip(zip(steps, changes), reversed(alphas)):
            direction += (alpha - (c @ direction) / (c @ s)) * s
        slope = gradient @ direction
        if slope >= 0:  # not a descent direction: start again from the gradient
            steps, changes, direction = [], [], -gradient
            slope = gradient @ direction
        step = 1.0
        while True:
            candidate = x + step * direction
            new_value, new_gradient = objective(candidate)
            if new_value <= value + 1e-4 * step * slope or step < 1e-10:
                break
            step /= 2
        s, c = candidate - x, new_gradient - gradient
        if c @ s > 1e-12:
            steps.append(s)
            changes.append(c)
            if len(steps) > memory:
                steps.pop(0)
                changes.pop(0)
        converged = abs(value - new_value) <= tolerance * max(1.0, abs(new_value))
        x, value, gradient = candidate, new_value, new_gradient
        if converged or np.abs(gradient).max() < 1e-7:
            break
    return x


def top_topics(scores: np.ndarray, topic_ids: Sequence[str], min_score: float,
               max_topics: int) -> List[Dict[str, object]]:
    """``[{"id", "score"}]`` best first: at most ``max_topics``, each scoring ``min_score`` or more."""
    order = np.argsort(-scores, kind="stable")[:max_topics]
    return [{"id": topic_ids[i], "score": round(float(scores[i]), 4)}
            for i in order if scores[i] >= min_score]


class TopicTagger:
    """A taxonomy's fitted classifier: centred article vectors in, topic lists out."""

    def __init__(self, taxonomy: Taxonomy, vectors: np.ndarray, labels: np.ndarray,
                 min_score: Optional[float] = None, max_topics: Optional[int] = None):
        self.taxonomy = taxonomy
        self.min_score, self.max_topics = taxonomy.cut(min_score, max_topics)
        self.model = fit_topic_model(vectors, labels, len(taxonomy.topics))

    def scores(self, article_vectors: np.ndarray) -> np.ndarray:
        return self.model.probabilities(np.atleast_2d(article_vectors))

    def tag(self, article_vectors: np.ndarray) -> List[List[Dict[str, object]]]:
        """Each vector's topics; none for a zero vector (an article with nothing embedded)."""
        article_vectors = np.atleast_2d(article_vectors)
        empty = ~np.any(article_vectors, axis=1)
        return [[] if blank else
                top_topics(row, self.taxonomy.topic_ids, self.min_score, self.max_topics)
                for row, blank in zip(self.scores(article_vectors), empty)]


def story_topics(member_topics: Sequence[Sequence[Dict[str, object]]], min_score: float,
                 max_topics: int) -> List[Dict[str, object]]:
    """A story's topics: each topic's score summed over the members and divided by
    their number (a topic a member lacks counts 0), then cut like an article's."""
    totals: Dict[str, float] = {}
    for topics in member_topics:
        for topic in topics:
            totals[str(topic["id"])] = totals.get(str(topic["id"]), 0.0) + float(topic["score"])
    count = max(len(member_topics), 1)
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return [{"id": topic_id, "score": round(total / count, 4)}
            for topic_id, total in ranked[:max_topics] if total / count >= min_score]
