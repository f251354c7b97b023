"""Candidate buckets, pairwise matches and stories, as plain functions.

A *bucket* holds articles that may be copies of each other (the same content
hash, MinHash band or vector-LSH band); ``nearest_in_time`` and
``bucket_pairs`` say what a newcomer to a bucket is compared with and what
that yields. A *match* says that a later article copies an earlier one
(exactly, nearly, or as a translation), or reports the same event (a story
link). ``assign_in_order`` turns matches
into stories: the story id is its earliest article's id, so the same input
gives the same story ids on every run and runner, and an article that matches
an earlier one is a duplicate of the earlier article it matches best.
``pipeline.steps.story_clusterer`` runs these inside Beam's keyed state.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
import heapq
import struct
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from pipeline.logic.minhash import estimated_jaccards

OrderKey = Tuple[int, int, str]
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Member:
    """What a candidate bucket holds of an article."""

    article_id: str
    order: OrderKey


@dataclass(frozen=True)
class Match:
    """``later`` copies ``earlier`` with similarity ``score`` (1.0 = exact copy).

    ``kind``: exact, near (same-language shingles) or translation (aligned
    paragraphs across languages), the three that make ``later`` a duplicate;
    or story (a different report of the same event: ``later`` joins the story
    but copies nothing). ``evidence``: names and numbers both share.
    """

    later: Member
    earlier: Member
    score: float
    kind: str = "near"
    evidence: Tuple[str, ...] = ()


# The kind of Match that links a different report of one event to its story.
STORY_LINK = "story"


@dataclass(frozen=True)
class StoryAssignment:
    story_id: str
    story_order: OrderKey  # the story's canonical article's order key
    is_duplicate: bool
    duplicate_of: Optional[str]
    dup_score: Optional[float]
    duplicate_kind: Optional[str] = None
    dup_evidence: Tuple[str, ...] = ()
    # When the article joined its story by a story link, not as a duplicate.
    linked_to: Optional[str] = None
    link_score: Optional[float] = None
    link_evidence: Tuple[str, ...] = ()


def _micros(moment: datetime) -> int:
    # Integer arithmetic, not timestamp() * 1e6: exact, so that micros_to_utc
    # gives back the same time (a story's order is kept as a time in its state).
    return (moment - EPOCH) // timedelta(microseconds=1)


def order_key(published_at: Optional[datetime], ingested_at: datetime,
              article_id: str) -> OrderKey:
    """Earliest first: publication time (ingestion time if unknown), ingestion time, id."""
    effective = published_at if published_at is not None else ingested_at
    return (_micros(effective), _micros(ingested_at), article_id)


@dataclass(frozen=True)
class BucketEntry:
    """What a candidate bucket keeps of an article.

    ``payload``: for a near bucket the 8-bit MinHash sketch, for a vector
    bucket the float16 article vector, for an exact bucket nothing.
    ``from_earlier_run``: the article was written by an earlier run and seeds
    this one's state (see ``schemas.story_state``).
    """

    member: Member
    lang: str
    payload: bytes = b""
    from_earlier_run: bool = False


# A packed bucket entry's head: event and ingestion microseconds, from_earlier_run,
# and the byte lengths of its language and article id, which follow, then the payload.
_PACKED_HEAD = struct.Struct("<qq?BI")


def pack_entry(entry: BucketEntry) -> bytes:
    """``entry`` as 22 bytes plus its language, id and payload (a pickle is some 250 bytes
    more): what a shard of the bucket index holds of each of its entries. The entry's
    order must be ``order_key``'s, whose last part is the article id."""
    micros, ingested, article_id = entry.member.order
    if article_id != entry.member.article_id:
        raise ValueError(f"an order key ends with its article's id: {entry.member}")
    lang, ident = entry.lang.encode(), article_id.encode()
    return (_PACKED_HEAD.pack(micros, ingested, entry.from_earlier_run, len(lang), len(ident))
            + lang + ident + entry.payload)


def unpack_entry(packed: bytes) -> BucketEntry:
    """The ``BucketEntry`` that ``pack_entry`` packed."""
    micros, ingested, earlier, lang_size, id_size = _PACKED_HEAD.unpack_from(packed)
    start = _PACKED_HEAD.size
    lang = packed[start:start + lang_size].decode()
    article_id = packed[start + lang_size:start + lang_size + id_size].decode()
    return BucketEntry(Member(article_id, (micros, ingested, article_id)), lang,
                       packed[start + lang_size + id_size:], earlier)


def without_payload(packed: bytes) -> bytes:
    """A packed entry with its payload cut off (what a batch's index keeps of an entry
    whose payload it looks up instead; see ``pipeline.steps.story_clusterer``)."""
    _, _, _, lang_size, id_size = _PACKED_HEAD.unpack_from(packed)
    return packed[:_PACKED_HEAD.size + lang_size + id_size]


def packed_event_micros(packed: bytes) -> int:
    """A packed entry's event time (microseconds), without unpacking the rest."""
    return _PACKED_HEAD.unpack_from(packed)[0]


# A joined bucket's entry is preceded by its length.
_ENTRY_SIZE = struct.Struct("<I")


def joined_entries(entries: Iterable[bytes]) -> bytes:
    """Packed entries as one bytes object, each preceded by its length: a bucket of
    the index is then one object, not a list of them (a third less memory for an
    index of mostly one-entry buckets). A newcomer is appended by adding its
    ``joined_entries`` to the bucket."""
    return b"".join(_ENTRY_SIZE.pack(len(packed)) + packed for packed in entries)


def split_entries(bucket: bytes) -> Iterator[bytes]:
    """The packed entries of a ``joined_entries`` bucket, in order."""
    at = 0
    while at < len(bucket):
        (size,) = _ENTRY_SIZE.unpack_from(bucket, at)
        at += _ENTRY_SIZE.size
        yield bucket[at:at + size]
        at += size


def later_earlier(a: Member, b: Member) -> Tuple[Member, Member]:
    return (a, b) if a.order > b.order else (b, a)


def nearest_in_time(new: Member, stored: Iterable[BucketEntry], max_partners: int,
                    within: Optional[int] = None) -> List[BucketEntry]:
    """The ``max_partners`` stored entries closest in time to ``new`` (ties by order),
    never ``new`` itself, and none more than ``within`` microseconds from it (the
    story window; None: no limit). Copies appear around the report they copy,
    and a bucket grown large (boilerplate shared by thousands of articles) then
    costs O(max_partners) per article instead of O(bucket)."""
    now = new.order[0]
    others = [e for e in stored if e.member.article_id != new.article_id
              and (within is None or abs(e.member.order[0] - now) <= within)]
    return heapq.nsmallest(max_partners, others,
                           key=lambda e: (abs(e.member.order[0] - new.order[0]), e.member.order))


def bucket_pairs(kind: str, new: BucketEntry, partners: Sequence[BucketEntry],
                 min_estimate: float, min_cosine: float,
                 same_language_cosine: Optional[float] = None
                 ) -> Iterator[Union[Match, Tuple[Member, Member]]]:
    """What ``new`` meeting ``partners`` in a bucket of ``kind`` yields:

    * ``exact``: a ``Match`` (score 1.0) with each partner, the later copying the earlier;
    * ``near``: a (later, earlier) pair to verify where the sketches estimate
      a Jaccard similarity of ``min_estimate`` or more;
    * ``vec``: a (later, earlier) pair to verify where the two are in different
      primary languages and their article vectors' cosine reaches
      ``min_cosine``, or in one language and it reaches ``same_language_cosine``
      (None: never). Same-language copies are MinHash's, whose shared wording
      is the stronger evidence; a same-language vector pair can only be a
      story link, which needs the higher cosine.
    """
    if kind == "exact":
        for partner in partners:
            later, earlier = later_earlier(new.member, partner.member)
            yield Match(later=later, earlier=earlier, score=1.0, kind="exact")
    elif kind == "near":
        estimates = estimated_jaccards(new.payload, [p.payload for p in partners])
        for partner, estimate in zip(partners, estimates):
            if estimate >= min_estimate:
                yield later_earlier(new.member, partner.member)
    elif kind == "vec":
        if same_language_cosine is None:
            partners = [p for p in partners if p.lang != new.lang]
        if partners:
            mine = np.frombuffer(new.payload, dtype=np.float16).astype(np.float32)
            theirs = np.frombuffer(b"".join(p.payload for p in partners),
                                   dtype=np.float16).astype(np.float32).reshape(len(partners), -1)
            for partner, cosine in zip(partners, theirs @ mine):
                if cosine >= (min_cosine if partner.lang != new.lang else same_language_cosine):
                    yield later_earlier(new.member, partner.member)
    else:
        raise ValueError(f"unknown bucket kind {kind!r}")


def best_match(matches: Iterable[Match]) -> Optional[Match]:
    """The match a duplicate is marked with: highest score, then the earliest article."""
    return min(matches, key=lambda m: (-m.score, m.earlier.order), default=None)


@dataclass(frozen=True)
class StoryOf:
    """What story assignment remembers of an assigned article."""

    story_id: str
    story_order: OrderKey  # the story's canonical article's order key
    article_time: int  # the assigned article's own event time (microseconds)


def micros_to_utc(micros: int) -> datetime:
    """The UTC time of an order key's microseconds."""
    return EPOCH + timedelta(microseconds=micros)


def assign_in_order(members: Iterable[Member], matches: Iterable[Match],
                    known: Dict[str, StoryOf]) -> Iterator[Tuple[Member, StoryAssignment]]:
    """Assigns ``members`` in time order, given every match in which one is the later article.

    An article that matches no earlier article starts a story (its id is the
    story id). One that copies earlier articles (a duplicate match: any kind
    but a story link) joins the earliest story among those of the articles it
    copies, so a copy that bridges two stories joins the older, and is a
    duplicate of its best match. Its story links then decide nothing: a copy
    belongs with what it copies, and a weaker link (a report that shares two
    paragraphs with another story, say) must not move it, and the articles
    that copy it after, into another story. An article with story links only
    is no duplicate and joins the story of its best link, which it records
    (partner, score, evidence): a report that links two stories belongs with
    the one it tells most surely (on real news this scored better than
    joining the earliest; see the README).
    Stories already assigned never change, which is what lets a stream emit
    each article once, final; the price is that a bridge does not pull the
    younger story's earlier members over.

    ``known`` maps ids assigned before (earlier articles) to their story and is
    updated with each member; an earlier article no longer in it (expired
    from the story window) stands for a story of its own.
    """
    by_later: Dict[str, List[Match]] = {}
    for match in matches:
        by_later.setdefault(match.later.article_id, []).append(match)
    for member in sorted(set(members), key=lambda m: m.order):
        mine = by_later.get(member.article_id, [])
        if not mine:
            known[member.article_id] = StoryOf(member.article_id, member.order, member.order[0])
            yield member, singleton(member)
            continue
        copies = [m for m in mine if m.kind != STORY_LINK]
        story = min((known.get(m.earlier.article_id,
                               StoryOf(m.earlier.article_id, m.earlier.order, m.earlier.order[0]))
                     for m in copies or [best_match(mine)]), key=lambda s: s.story_order)
        known[member.article_id] = StoryOf(story.story_id, story.story_order, member.order[0])
        best = best_match(copies)
        if best is not None:
            yield member, StoryAssignment(
                story_id=story.story_id, story_order=story.story_order, is_duplicate=True,
                duplicate_of=best.earlier.article_id, dup_score=round(best.score, 4),
                duplicate_kind=best.kind, dup_evidence=best.evidence)
        else:
            link = best_match(mine)
            yield member, StoryAssignment(
                story_id=story.story_id, story_order=story.story_order, is_duplicate=False,
                duplicate_of=None, dup_score=None, linked_to=link.earlier.article_id, link_score=round(link.score, 4),
                link_evidence=link.evidence)


def singleton(member: Member) -> StoryAssignment:
    """The assignment of an article that matched nothing: a story of its own."""
    return StoryAssignment(story_id=member.article_id, story_order=member.order,
                           is_duplicate=False, duplicate_of=None, dup_score=None)
