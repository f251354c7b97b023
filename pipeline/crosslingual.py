"""Near-identical articles across languages: aligned paragraphs.

A translation, or a light edit of one, keeps the paragraph structure: most
paragraphs of either article have a counterpart in the other whose centred
embedding (``pipeline.embedding``) is close. ``paragraph_coverage`` measures
that, in the weaker of the two directions, so a short article is not called a
copy of a long one that merely contains it.
"""

from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

from pipeline.stories import Member, bucket_partners
from pipeline.text import paragraphs


def lead_paragraphs(body: str, spans: Sequence[dict], max_paragraphs: int,
                    max_chars: int) -> List[Tuple[str, str]]:
    """(text, language) of the lead paragraphs that are embedded.

    The lead carries the story, and embedding costs about 1 ms a token, so at
    most ``max_paragraphs`` paragraphs and ``max_chars`` characters are taken
    (a long paragraph is cut at the cap). Each paragraph's language is the
    span it starts in.
    """
    lead: List[Tuple[str, str]] = []
    budget = max_chars
    for start, end in paragraphs(body):
        if len(lead) == max_paragraphs or budget <= 0:
            break
        lang = next((s["lang"] for s in spans if s["start"] <= start < s["end"]),
                    spans[0]["lang"] if spans else "und")
        text = body[start:min(end, start + budget)]
        budget -= len(text)
        lead.append((text, lang))
    return lead


def paragraph_coverage(a: np.ndarray, b: np.ndarray, threshold: float) -> float:
    """The smaller of: the share of ``a``'s rows whose best cosine in ``b`` reaches
    ``threshold``, and the same share of ``b``'s rows in ``a`` (rows are unit vectors)."""
    if len(a) == 0 or len(b) == 0:
        return 0.0
    cosines = a @ b.T
    covered_a = float((cosines.max(axis=1) >= threshold).mean())
    covered_b = float((cosines.max(axis=0) >= threshold).mean())
    return min(covered_a, covered_b)


def vector_candidates(vectors: Dict[Member, bytes], languages: Dict[Member, str],
                      max_partners: int, min_cosine: float) -> Iterator[Tuple[Member, Member]]:
    """(later, earlier) pairs of a vector-LSH bucket, in different primary languages,
    whose article vectors are close enough to be worth aligning their paragraphs
    (``vectors`` holds float16 unit vectors). Same-language copies are MinHash's:
    their shared wording is the stronger evidence."""
    for later, candidates in bucket_partners(vectors, max_partners):
        partners = [p for p in candidates if languages[p] != languages[later]]
        if not partners:
            continue
        mine = np.frombuffer(vectors[later], dtype=np.float16).astype(np.float32)
        theirs = np.frombuffer(b"".join(vectors[p] for p in partners),
                               dtype=np.float16).astype(np.float32).reshape(len(partners), -1)
        for earlier, cosine in zip(partners, theirs @ mine):
            if cosine >= min_cosine:
                yield later, earlier
