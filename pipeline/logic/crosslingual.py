"""Near-identical articles across languages: aligned paragraphs.

A translation, or a light edit of one, keeps the paragraph structure: most
paragraphs of either article have a counterpart in the other whose centred
embedding (``pipeline.logic.embedding``) is close. ``paragraph_coverage`` measures
that, in the weaker of the two directions, so a short article is not called a
copy of a long one that merely contains it.
"""

from typing import List, Sequence, Tuple

import numpy as np

from common.text import paragraphs


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
