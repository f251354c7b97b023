"""StoryClusterer: candidate buckets in, one final story assignment per article out,
with keyed state that expires in event time, so it runs on an endless stream.

    buckets ─ IndexBuckets ─┬─ exact matches ────────────────────────┐
      (keyed by shard)      ├─ near pairs ─ VerifyPairs(shingles) ───┼─ AssignStories ─ (id, assignment)
                            └─ vector pairs ─ VerifyPairs(vectors) ──┘   (one key)
    articles' members ───────────────────────────────────────────────┘

Each step is a stateful DoFn (``pipeline.logic.stories`` holds the logic):

* ``IndexBuckets`` keeps each bucket's entries (id, time, language, a sketch
  or a float16 vector; in a batch, the sketch or vector is looked up in the
  pass's features instead) under a shard of the bucket keys, and compares a
  newcomer with the ``max_partners`` entries nearest to it in time.
* ``VerifyPairs`` joins a pair with each side's features (shingles or
  paragraph vectors), held under the article's id (in a batch, looked up in
  the pass's features, held once), and scores it; a pair met in several buckets
  is scored once.
* ``AssignStories`` assigns articles in time order once the watermark has
  passed them (every ``assign_every`` of event time), so every assignment is
  final when emitted (see ``pipeline.logic.stories.assign_in_order``).

Memory: an article's state (its bucket entries, features and story) is
dropped once the watermark is ``story_window`` past the article's event time,
so it is bounded by the articles of one story window; an article that comes
back after that starts a story of its own. A bounded input (a batch run)
needs no expiry: stories are assigned in one pass when the input is
exhausted, and the index is dropped then rather than at the pipeline's end. A
batch over files or a bounded Kafka read is cut into event-time slices, each
such a pass (``pipeline.graph.batch_slices``), so that end comes a slice
later. The same DoFns serve both; ``bounded`` only chooses the timers.

Articles must carry their event time as their Beam timestamp (``event_time``).
"""

import dataclasses
import math
import zlib
from functools import partial
from typing import Any, Callable, Dict, FrozenSet, Iterable, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.coders import PickleCoder, StrUtf8Coder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (BagStateSpec, ReadModifyWriteStateSpec,
                                              TimerSpec, on_timer)
from apache_beam.utils.timestamp import Timestamp

from common.event_timers import arm_at, arm_earliest, arm_latest
from pipeline.logic.stories import (Match, Member, assign_in_order, bucket_pairs, joined_entries,
                                    nearest_in_time, packed_event_micros, split_entries,
                                    unpack_entry, without_payload)

EXACT, NEAR, VECTOR = "exact", "near", "vec"
# The keyed inputs of the stateful steps say their key's type, so that Beam
# encodes the key with a deterministic coder (and says nothing about it).
StrKeyed = Tuple[str, Any]
# Metrics of what expiry dropped, under this namespace (see the tests and benchmarks).
METRICS = "StoryClusterer"
# Expiry timers fire on a grid of this fraction of the story window, so a key
# has a handful of timers in a window rather than one per article.
EXPIRY_STEPS = 24


def event_time(member: Member) -> Timestamp:
    """An article's event time: its publication time, else its ingestion time."""
    return Timestamp(micros=member.order[0])


def _grid(micros: int, step: int) -> int:
    return int(math.ceil(micros / step)) * step


class _IndexBucketsFn(beam.DoFn):
    """Keyed by a shard of the bucket keys: the shard's buckets as one dict of
    bucket key to its packed entries (``pipeline.logic.stories.pack_entry``),
    joined into one bytes object (``joined_entries``).

    One value, not a bag of entries: a newcomer looks its bucket up instead of
    scanning the shard's entries, and the value is rewritten once a bundle,
    when the runner commits it (the SDK keeps the object and hands it back
    within a bundle, so an element's write costs a copy of the dict, not of its
    entries). The SDK's state
    cache weighs a value object by object on every commit and every first
    read of a key, so the entries are packed bytes, not objects.

    On a stream, entries expire a story window after their event time. A batch's
    shards are cleared once its input is all indexed (a timer at a shard's latest
    entry, ``arm_latest``): the index's outputs are made by then, and a runner such
    as the FnApiRunner would otherwise hold every shard until the pipeline ends.
    """

    BUCKETS = ReadModifyWriteStateSpec("buckets", PickleCoder())
    ARMED = ReadModifyWriteStateSpec("armed", PickleCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)
    INDEXED = TimerSpec("indexed", TimeDomain.WATERMARK)

    def __init__(self, window: int, max_partners: int, min_estimate: float, min_cosine: float,
                 same_language_cosine: Optional[float], bounded: bool,
                 looked_up: FrozenSet[str] = frozenset()):
        self.expired = Metrics.counter(METRICS, "expired_bucket_entries")
        self.window = window
        self.max_partners = max_partners
        self.min_estimate = min_estimate
        self.min_cosine = min_cosine
        self.same_language_cosine = same_language_cosine
        self.bounded = bounded
        self.looked_up = looked_up

    def process(self, element, buckets_state=beam.DoFn.StateParam(BUCKETS),
                armed=beam.DoFn.StateParam(ARMED), expiry=beam.DoFn.TimerParam(EXPIRY),
                indexed=beam.DoFn.TimerParam(INDEXED), payloads=None):
        _, (key, packed_entry) = element
        entry = unpack_entry(packed_entry)
        kind = key.split(":", 1)[0]
        # Entries of a looked-up kind come without their payload, and are compared
        # with it: ``payloads`` maps (kind, article id) to it.
        with_payload = ((lambda e: dataclasses.replace(
                            e, payload=payloads[kind, e.member.article_id]))
                        if kind in self.looked_up else (lambda e: e))
        # A copy: the value read may be the SDK cache's own object, which must not
        # change should the bundle fail and be retried.
        buckets: Dict[str, bytes] = dict(buckets_state.read() or {})
        bucket = buckets.get(key, b"")
        stored = [unpack_entry(packed) for packed in split_entries(bucket)]
        if any(e.member.article_id == entry.member.article_id for e in stored):
            return []  # the same article again (a re-read): it was compared already
        if entry.from_earlier_run:
            # Two articles of earlier runs were compared by the run that read the later one.
            stored = [e for e in stored if not e.from_earlier_run]
        # Articles more than a story window apart never match, whether or not
        # the older one's state has expired yet: a batch run agrees with a stream.
        partners = nearest_in_time(entry.member, stored, self.max_partners, self.window)
        found = [beam.pvalue.TaggedOutput(EXACT if isinstance(f, Match) else kind, f)
                 for f in bucket_pairs(kind, with_payload(entry),
                                       [with_payload(p) for p in partners], self.min_estimate,
                                       self.min_cosine, self.same_language_cosine)]
        buckets[key] = bucket + joined_entries([packed_entry])
        buckets_state.write(buckets)
        if self.bounded:
            arm_latest(indexed, armed, entry.member.order[0])
        else:
            arm_earliest(expiry, armed, self._expiry_due(entry.member.order[0]))
        return found

    @on_timer(INDEXED)
    def drop_shard(self, buckets_state=beam.DoFn.StateParam(BUCKETS),
                   armed=beam.DoFn.StateParam(ARMED)):
        self.expired.inc(sum(len(list(split_entries(bucket)))
                             for bucket in (buckets_state.read() or {}).values()))
        buckets_state.clear()
        armed.clear()

    def _expiry_due(self, micros: int) -> int:
        """When an entry of time ``micros`` expires, rounded up to the expiry grid."""
        return _grid(micros + self.window, self.window // EXPIRY_STEPS)

    @on_timer(EXPIRY)
    def expire(self, fired=beam.DoFn.TimestampParam,
               buckets_state=beam.DoFn.StateParam(BUCKETS),
               armed=beam.DoFn.StateParam(ARMED), expiry=beam.DoFn.TimerParam(EXPIRY)):
        cutoff = fired.micros - self.window
        buckets = buckets_state.read() or {}
        kept, dropped, earliest = {}, 0, None
        for key, bucket in buckets.items():
            entries = list(split_entries(bucket))
            fresh = [packed for packed in entries if packed_event_micros(packed) > cutoff]
            dropped += len(entries) - len(fresh)
            if fresh:
                kept[key] = joined_entries(fresh)
                first = min(packed_event_micros(packed) for packed in fresh)
                earliest = first if earliest is None else min(earliest, first)
        self.expired.inc(dropped)
        armed.clear()
        if dropped:
            buckets_state.write(kept)
        if earliest is not None:
            arm_earliest(expiry, armed, self._expiry_due(earliest))


class IndexBuckets(beam.PTransform):
    """``(bucket key, packed BucketEntry)`` in (``pipeline.logic.stories.pack_entry``), one
    PCollection or a list of them; out:
    ``exact`` Matches, and ``near`` and ``vec``
    (later, earlier) Member pairs to verify. Keys start with their kind (``exact:``,
    ``near:``, ``vec:``).

    The buckets are keyed by ``shards`` shards of their keys, not one key each:
    an article joins some 40 buckets, nearly all of them new, and a runner pays
    for each new key (a state round trip on a portable runner; and the
    DirectRunner and Prism keep an entry for every key they have seen, so a
    stream's key space must be bounded for its memory to be). A shard's state,
    read on every newcomer, stays in the SDK worker's state cache on runners
    that allow it (Flink, Dataflow). The shards are many, so that each holds a
    small dict, which a stream rewrites at each bundle that adds to it.

    ``payloads``: ``{kind: (article_id, payload) PCollection}``: the entries of
    these kinds are indexed without their payload, which is looked up there,
    one per article, when they are compared (a side input, so for a bounded
    input only). An article meets some 40 buckets of a kind: a batch pass, which
    holds its entries all at once, then holds its payload once, not 40 times.
    The pairs found are the same.
    """

    def __init__(self, story_window: int, max_partners: int, min_estimate: float,
                 min_cosine: float, same_language_cosine: Optional[float], bounded: bool,
                 shards: int = 4096, payloads: Optional[Dict[str, Any]] = None):
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self.shards = shards
        self.payloads = payloads or {}
        self.index = _IndexBucketsFn(story_window, max_partners, min_estimate, min_cosine,
                                     same_language_cosine, bounded, frozenset(self.payloads))

    def expand(self, buckets):
        shards, looked_up = self.shards, self.index.looked_up

        def by_shard(kv):
            key, packed = kv
            if key.split(":", 1)[0] in looked_up:
                kv = key, without_payload(packed)
            return zlib.crc32(key.encode()) % shards, kv

        # Each input is cut where it is made: a batch runner holds a step's whole output,
        # and the outputs of several steps as they wrote them.
        parts = pvalue_tuple(buckets)
        by_shards = ([part | f"ByShard_{i}" >> beam.Map(by_shard).with_output_types(Tuple[int, Any])
                      for i, part in enumerate(parts)]
                     | "AllBuckets" >> beam.Flatten())
        side_inputs = {}
        if self.payloads:
            side_inputs["payloads"] = beam.pvalue.AsDict(
                [payloads | f"Key_{kind}" >> beam.Map(lambda kv, k=kind: ((k, kv[0]), kv[1]))
                 for kind, payloads in sorted(self.payloads.items())]
                | "AllPayloads" >> beam.Flatten())
        return by_shards | "Index" >> beam.ParDo(self.index, **side_inputs).with_outputs(
            EXACT, NEAR, VECTOR)


def pvalue_tuple(pcollections):
    """One PCollection, or a list of them, as a tuple (the form a composite takes them in)."""
    return tuple(pcollections) if isinstance(pcollections, (list, tuple)) else (pcollections,)


class _AttachFeaturesFn(beam.DoFn):
    """Keyed by article id: holds its features, and hands them to each pair that asks
    (a stream's join; a batch looks them up instead, in ``VerifyPairs``)."""

    # The features in a bag, and the waiting pairs cleared only when there were
    # some: each state write costs a weighing in the SDK's state cache (a few ms,
    # whatever the value's size), and a value state's write is a clear and an
    # add. An article's features thus cost one write instead of four, which is
    # most of what seeding a run with the last story window costs.
    FEATURES = BagStateSpec("features", PickleCoder())
    WAITING = BagStateSpec("waiting", PickleCoder())
    # The partners already handed features, in a bag: Beam's Python SetState
    # rewrites the whole set on every other add (its compaction), which made a
    # batch of 1,000 articles take 3.6 GB.
    ASKED = BagStateSpec("asked", StrUtf8Coder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, attach: Callable, once_per_partner: bool, window: int):
        self.expired = Metrics.counter(METRICS, "expired_features")
        self.attach = attach
        self.once_per_partner = once_per_partner
        self.window = window

    def process(self, element, features_state=beam.DoFn.StateParam(FEATURES),
                waiting=beam.DoFn.StateParam(WAITING), asked=beam.DoFn.StateParam(ASKED),
                expiry=beam.DoFn.TimerParam(EXPIRY)):
        _, (tag, value) = element
        if tag == "features":
            features_state.add(value)
            requests = list(waiting.read())
            for request in requests:
                yield from self.attach(request, value)
            if requests:
                waiting.clear()
            expiry.set(Timestamp(micros=value.member.order[0] + self.window))
        elif self._first_time(value, asked):
            features = list(features_state.read())
            if not features:
                waiting.add(value)
            else:
                # The latest, should an article's features come twice (it was read again).
                yield from self.attach(value, features[-1])

    def _first_time(self, request, asked) -> bool:
        """False for a pair this key has seen (it met in another bucket too)."""
        if not self.once_per_partner:
            return True
        partner = request[0].article_id  # the later article of the pair
        if partner in asked.read():
            return False
        asked.add(partner)
        return True

    @on_timer(EXPIRY)
    def expire(self, features_state=beam.DoFn.StateParam(FEATURES),
               waiting=beam.DoFn.StateParam(WAITING), asked=beam.DoFn.StateParam(ASKED)):
        self.expired.inc()
        features_state.clear()
        waiting.clear()
        asked.clear()


def _with_earlier_features(pair, earlier_features):
    later, earlier = pair
    yield later.article_id, ("pair", (later, earlier, earlier_features))


def _scored(score, request, later_features):
    later, earlier, earlier_features = request
    match = score(later, earlier, later_features, earlier_features)
    if match is not None:
        yield match


class VerifyPairs(beam.PTransform):
    """(later, earlier) Member pairs in, ``Match``es out, each distinct pair scored once.

    ``features`` is ``(article_id, features)`` (each with a ``member``), and
    ``score(later, earlier, later_features, earlier_features)`` returns a Match
    or None. The pair visits the earlier article's key for its features, then
    the later's, where it is scored.
    """

    def __init__(self, features, score: Callable[..., Optional[Match]], story_window: int,
                 bounded: bool):
        super().__init__()
        self.features = features
        self.score = score
        self.window = story_window
        self.bounded = bounded

    def expand(self, pairs):
        if self.bounded:
            return self._looked_up(pairs)
        tagged_features = self.features | "TagFeatures" >> beam.Map(
            lambda kv: (kv[0], ("features", kv[1]))).with_output_types(StrKeyed)
        by_earlier = (
            (tagged_features,
             pairs | "KeyByEarlier" >> beam.Map(
                 lambda p: (p[1].article_id, ("pair", p))).with_output_types(StrKeyed))
            | "JoinEarlier" >> beam.Flatten()
            | "AttachEarlier" >> beam.ParDo(_AttachFeaturesFn(
                _with_earlier_features, True, self.window))
            .with_output_types(StrKeyed))
        return ((tagged_features, by_earlier)
                | "JoinLater" >> beam.Flatten()
                | "Score" >> beam.ParDo(_AttachFeaturesFn(
                    partial(_scored, self.score), False, self.window)))

    def _looked_up(self, pairs):
        """A bounded input's join: each distinct pair, by its two ids, scored with both
        articles' features (and members) looked up by id in the pass's features, a
        map side input. A pass holds all its pairs at once, and an article meets
        many partners in several buckets each: two ids are what a pair costs
        there. Looked up by key, the features are read as they are needed, and the
        SDK keeps the ones read in its bounded state cache; a dict side input
        would be read whole into memory, beside the runner's copy."""
        score = self.score

        def scored(ids, features):
            later, earlier = (next(iter(features[article_id]), None) for article_id in ids)
            if later is not None and earlier is not None:
                match = score(later.member, earlier.member, later, earlier)
                if match is not None:
                    yield match

        return (pairs
                | "PairIds" >> beam.Map(lambda p: (p[0].article_id, p[1].article_id))
                .with_output_types(Tuple[str, str])
                # A pair met in several buckets is scored once.
                | "OnePair" >> beam.Distinct()
                | "Score" >> beam.FlatMap(scored, features=beam.pvalue.AsMultiMap(self.features)))


class _AssignStoriesFn(beam.DoFn):
    # (slot, "member" or "match", value): a bag, so a newcomer is appended, not
    # rewritten with all that waits (the SDK's state cache sizes every write).
    PENDING = BagStateSpec("pending", PickleCoder())
    # (article_id, StoryOf) of earlier runs' articles, added to KNOWN at the next
    # assignment: a bag, so seeding a window of them is not quadratic.
    EARLIER = BagStateSpec("earlier", PickleCoder())
    KNOWN = ReadModifyWriteStateSpec("known", PickleCoder())
    ARMED = ReadModifyWriteStateSpec("armed", PickleCoder())
    ASSIGNED = ReadModifyWriteStateSpec("assigned_through", PickleCoder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def __init__(self, window: int, every: int, bounded: bool):
        self.expired = Metrics.counter(METRICS, "expired_stories")
        self.window = window
        self.every = every
        self.bounded = bounded

    def process(self, element, pending_state=beam.DoFn.StateParam(PENDING),
                earlier=beam.DoFn.StateParam(EARLIER),
                armed=beam.DoFn.StateParam(ARMED), assigned=beam.DoFn.StateParam(ASSIGNED),
                flush=beam.DoFn.TimerParam(FLUSH)):
        _, (tag, value) = element
        if tag == "earlier":
            earlier.add(value)
            return
        micros = (value if tag == "member" else value.later).order[0]
        slot = _grid(micros + 1, self.every)
        pending_state.add((slot, tag, value))
        if self.bounded:
            # A bounded input is assigned in one pass, at its latest slot.
            arm_latest(flush, armed, slot)
            return
        # A stream is assigned slot by slot as the watermark passes each, with a
        # timer of its own per slot (``arm_at``).
        latest, through = armed.read(), assigned.read()
        if through is not None and slot <= through:
            # A late article (its slot already assigned). Its matches come after
            # it through the steps upstream, behind the watermark; while they are
            # on their way the watermark cannot pass a later slot. So it waits
            # for the next slot already armed, or else the one after the last
            # assigned.
            if latest is not None and latest > through:
                return
            slot = through + self.every
        arm_at(flush, slot)
        if latest is None or slot > latest:
            armed.write(slot)  # on a stream: the latest slot with a timer

    @on_timer(FLUSH)
    def assign(self, fired=beam.DoFn.TimestampParam,
               pending_state=beam.DoFn.StateParam(PENDING), known_state=beam.DoFn.StateParam(KNOWN),
               earlier=beam.DoFn.StateParam(EARLIER), armed=beam.DoFn.StateParam(ARMED), assigned=beam.DoFn.StateParam(ASSIGNED),
               flush=beam.DoFn.TimerParam(FLUSH)):
        ready, waiting = [], []
        for entry in pending_state.read():
            (ready if entry[0] <= fired.micros else waiting).append(entry)
        if not ready:
            return  # a later slot's timer fired first and took this slot's articles
        # Timers of several slots can fire in any order within one bundle: the
        # watermark has passed the latest of them, so "through" never goes back.
        through = max(fired.micros, assigned.read() or fired.micros)
        known = known_state.read() or {}
        for article_id, story in earlier.read():
            known.setdefault(article_id, story)
        earlier.clear()
        members = [value for _, tag, value in ready if tag == "member"]
        matches = [value for _, tag, value in ready if tag == "match"]
        for member, assignment in assign_in_order(members, matches, known):
            yield member.article_id, assignment
        if not self.bounded:
            cutoff = through - self.window
            kept = {article_id: story for article_id, story in known.items()
                    if story.article_time > cutoff}
            self.expired.inc(len(known) - len(kept))
            known = kept
        known_state.write(known)
        assigned.write(through)
        pending_state.clear()
        for entry in waiting:
            pending_state.add(entry)
        if self.bounded:
            armed.clear()
            if waiting:
                arm_earliest(flush, armed, min(slot for slot, _, _ in waiting))


class AssignStories(beam.PTransform):
    """Members (every article's) and Matches in; ``(article_id, StoryAssignment)`` out,
    one per member, final. All on one key: the work per article is a few dict
    look-ups, next to the verification upstream.

    ``earlier``: ``(article_id, StoryOf)`` of articles that earlier runs assigned
    (no output for them): a match with one of them joins its story."""

    def __init__(self, matches, story_window: int, assign_every: int, bounded: bool,
                 earlier=None):
        super().__init__()
        self.matches = matches
        self.earlier = earlier
        self.assign = _AssignStoriesFn(story_window, assign_every, bounded)

    def expand(self, members):
        tagged = [members | "TagMembers" >> beam.Map(
                      lambda m: ("stories", ("member", m))).with_output_types(StrKeyed),
                  self.matches | "TagMatches" >> beam.Map(
                      lambda m: ("stories", ("match", m))).with_output_types(StrKeyed)]
        if self.earlier is not None:
            tagged.append(self.earlier | "TagEarlier" >> beam.Map(
                lambda known: ("stories", ("earlier", known))).with_output_types(StrKeyed))
        return (tagged
                | "Gather" >> beam.Flatten()
                | "Assign" >> beam.ParDo(self.assign))


class StoryClusterer(beam.PTransform):
    """Buckets (a PCollection or a list of them, see ``IndexBuckets``), features and members
    in; ``(article_id, StoryAssignment)`` out, one per member.

    Args (besides the PCollections):
        features: ``{kind: (article_id, features) PCollection}`` for ``near`` and, when
            translations are sought, ``vec``.
        scores: ``{kind: score function}`` for the same kinds (see ``VerifyPairs``).
        story_window: how long (event time) an article can still be matched.
        assign_every: how often (event time) a stream's stories are assigned.
        max_partners: how many stored entries of a bucket a newcomer is compared with.
        min_estimate, min_cosine: the near and vector buckets' pre-filters.
        same_language_cosine: the vector buckets' pre-filter for two articles in one
            language (only story links are sought there); None: such pairs are skipped.
        bounded: a batch input (no expiry, one assignment pass at the end).
        payload_of: ``{kind: function of an article's features to the payload of its
            bucket entries}`` (the same bytes): a batch looks these kinds' payloads up
            in the features rather than holding a copy in each bucket entry (see
            ``IndexBuckets``).
        earlier_stories: ``(article_id, StoryOf)`` of the earlier runs' articles whose
            bucket entries and features come in with this run's (marked
            ``from_earlier_run``); None: no earlier run.
    """

    def __init__(self, buckets, features: Dict[str, object], scores: Dict[str, Callable],
                 story_window: float = 72 * 3600, assign_every: float = 10,
                 max_partners: int = 50, min_estimate: float = 0.4, min_cosine: float = 0.35,
                 same_language_cosine: Optional[float] = None, bounded: bool = True,
                 payload_of: Optional[Dict[str, Callable[[Any], bytes]]] = None,
                 earlier_stories=None):
        super().__init__()
        if story_window <= 0 or assign_every <= 0:
            raise ValueError("story_window and assign_every must be positive (seconds)")
        if max_partners < 1:
            raise ValueError("max_partners must be >= 1")
        if set(features) != set(scores) or not set(features) <= {NEAR, VECTOR}:
            raise ValueError("features and scores need the same kinds, of near and vec")
        self.buckets = buckets
        self.features = features
        self.scores = scores
        self.window = int(story_window * 1_000_000)
        self.every = int(assign_every * 1_000_000)
        self.max_partners = max_partners
        self.min_estimate = min_estimate
        self.min_cosine = min_cosine
        self.same_language_cosine = same_language_cosine
        if not set(payload_of or ()) <= set(features):
            raise ValueError("payload_of needs kinds that have features")
        self.bounded = bounded
        self.payload_of = payload_of or {}
        self.earlier_stories = earlier_stories

    def expand(self, members):
        payloads = {kind: self.features[kind] | f"Payloads_{kind}" >> beam.Map(
                        lambda kv, of=of: (kv[0], of(kv[1])))
                    for kind, of in sorted(self.payload_of.items())} if self.bounded else None
        indexed = pvalue_tuple(self.buckets) | "IndexBuckets" >> IndexBuckets(
            self.window, self.max_partners, self.min_estimate, self.min_cosine,
            self.same_language_cosine, self.bounded, payloads=payloads)
        matches = [indexed[EXACT]]
        for kind in sorted(self.features):
            matches.append(indexed[kind] | f"Verify_{kind}" >> VerifyPairs(
                self.features[kind], self.scores[kind], self.window, self.bounded))
        return members | "AssignStories" >> AssignStories(
            matches | "AllMatches" >> beam.Flatten(), self.window, self.every, self.bounded,
            self.earlier_stories)


class JoinById(beam.PTransform):
    """``{name: (article_id, value) PCollection}`` in; ``merge({name: value})`` out per id,
    as soon as every part of that id has arrived (keyed state, so it works on a
    stream too; with ``bounded``, a batch's, grouped by id instead, which holds
    each part once and costs no state reads). Each id must come exactly once in
    every part."""

    def __init__(self, merge: Callable[[Dict[str, object]], object], bounded: bool = False):
        super().__init__()
        self.merge = merge
        self.bounded = bounded

    def expand(self, parts):
        if self.bounded:
            merge = self.merge
            return ({name: part | f"Key_{name}" >> beam.Map(lambda kv: kv).with_output_types(
                        StrKeyed) for name, part in parts.items()}
                    | "Group" >> beam.CoGroupByKey()
                    | "Merge" >> beam.Map(lambda grouped: merge(
                        {name: values[0] for name, values in grouped[1].items()})))
        names = sorted(parts)
        tagged = [parts[name] | f"Tag_{name}" >> beam.Map(
                      lambda kv, n=name: (kv[0], (n, kv[1]))).with_output_types(StrKeyed)
                  for name in names]
        return (tagged | "Flatten" >> beam.Flatten()
                | "Merge" >> beam.ParDo(_JoinPartsFn(names, self.merge)))


class _JoinPartsFn(beam.DoFn):
    PARTS = ReadModifyWriteStateSpec("parts", PickleCoder())

    def __init__(self, names: Iterable[str], merge: Callable):
        self.names = frozenset(names)
        self.merge = merge

    def process(self, element, parts_state=beam.DoFn.StateParam(PARTS)):
        _, (name, value) = element
        parts = parts_state.read() or {}
        parts[name] = value
        if set(parts) == self.names:
            parts_state.clear()
            yield self.merge(parts)
        else:
            parts_state.write(parts)
