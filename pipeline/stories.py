"""From pairwise matches to stories: union-find, canonical articles, duplicate marks.

A *match* says that a later article copies an earlier one (exactly or
nearly). Matches join articles into stories (connected components). The
canonical article of a story is its earliest by ``order_key``; the story id is
that article's id, so the same input gives the same story ids on every run and
runner. An article that matches an earlier one is a duplicate of the earlier
article it matches best.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from pipeline.minhash import estimated_jaccards

OrderKey = Tuple[int, int, str]


@dataclass(frozen=True)
class Member:
    """What a candidate bucket holds of an article."""

    article_id: str
    order: OrderKey


@dataclass(frozen=True)
class Match:
    """``later`` copies ``earlier`` with similarity ``score`` (1.0 = exact copy).

    ``kind``: exact, near (same-language shingles) or translation (aligned
    paragraphs across languages); ``evidence``: names and numbers both share.
    """

    later: Member
    earlier: Member
    score: float
    kind: str = "near"
    evidence: Tuple[str, ...] = ()


@dataclass(frozen=True)
class StoryAssignment:
    story_id: str
    is_duplicate: bool
    duplicate_of: Optional[str]
    dup_score: Optional[float]
    duplicate_kind: Optional[str] = None
    dup_evidence: Tuple[str, ...] = ()


def _micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def order_key(published_at: Optional[datetime], ingested_at: datetime,
              article_id: str) -> OrderKey:
    """Earliest first: publication time (ingestion time if unknown), ingestion time, id."""
    effective = published_at if published_at is not None else ingested_at
    return (_micros(effective), _micros(ingested_at), article_id)


def bucket_partners(members: Iterable[Member],
                    max_partners: int) -> Iterator[Tuple[Member, List[Member]]]:
    """Each member of a bucket with the earlier members it should be compared with.

    Each member gets the ``max_partners`` members just before it in time, so a
    bucket that grows large (boilerplate shared by thousands of articles) costs
    O(n * max_partners) instead of O(n**2), and a copy is still compared with
    the reports published around it, which is where copies appear. Members
    with the same id (one article seen twice) are not paired.
    """
    ordered = sorted(set(members), key=lambda m: m.order)
    for i, later in enumerate(ordered):
        partners = [m for m in ordered[max(0, i - max_partners):i]
                    if m.article_id != later.article_id]
        if partners:
            yield later, partners


def near_candidates(sketches: Dict[Member, bytes], max_partners: int,
                    min_estimate: float) -> Iterator[Tuple[Member, Member]]:
    """(later, earlier) pairs of a near-duplicate bucket worth an exact check.

    ``sketches`` maps each member to its 8-bit MinHash sketch; a pair goes on
    only when the sketches estimate a Jaccard similarity of ``min_estimate`` or more.
    """
    for later, partners in bucket_partners(sketches, max_partners):
        estimates = estimated_jaccards(sketches[later], [sketches[p] for p in partners])
        for earlier, estimate in zip(partners, estimates):
            if estimate >= min_estimate:
                yield later, earlier


class _UnionFind:
    def __init__(self):
        self.parent: Dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def assign_stories(matches: Sequence[Match]) -> Dict[str, StoryAssignment]:
    """Story, duplicate mark and score for every article that appears in a match.

    Articles in no match are stories of their own (see ``singleton``).
    """
    groups = _UnionFind()
    orders: Dict[str, OrderKey] = {}
    best: Dict[str, Match] = {}
    for match in matches:
        groups.union(match.later.article_id, match.earlier.article_id)
        orders[match.later.article_id] = match.later.order
        orders[match.earlier.article_id] = match.earlier.order
        current = best.get(match.later.article_id)
        if current is None or (-match.score, match.earlier.order) < (-current.score, current.earlier.order):
            best[match.later.article_id] = match
    canonical: Dict[str, str] = {}
    for article_id, order in orders.items():
        root = groups.find(article_id)
        if root not in canonical or order < orders[canonical[root]]:
            canonical[root] = article_id
    assignments = {}
    for article_id in orders:
        match = best.get(article_id)
        assignments[article_id] = StoryAssignment(
            story_id=canonical[groups.find(article_id)],
            is_duplicate=match is not None,
            duplicate_of=match.earlier.article_id if match else None,
            dup_score=round(match.score, 4) if match else None,
            duplicate_kind=match.kind if match else None,
            dup_evidence=match.evidence if match else (),
        )
    return assignments


def singleton(article_id: str) -> StoryAssignment:
    """The assignment of an article that matched nothing: a story of its own."""
    return StoryAssignment(story_id=article_id, is_duplicate=False,
                           duplicate_of=None, dup_score=None)



def exact_matches(members: Iterable[Member]) -> Iterator[Match]:
    """Every member of an exact-duplicate bucket copies its earliest member."""
    ordered = sorted(set(members), key=lambda m: m.order)
    for later in ordered[1:]:
        if later.article_id != ordered[0].article_id:
            yield Match(later=later, earlier=ordered[0], score=1.0, kind="exact")
