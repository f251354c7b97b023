import numpy as np
import pytest

from pipeline.logic.minhash import MinHasher, shingle_hashes
from pipeline.logic.stories import (STORY_LINK, BucketEntry, Match, Member, assign_in_order,
                                    bucket_pairs, joined_entries, micros_to_utc, nearest_in_time,
                                    order_key, pack_entry, packed_event_micros, singleton,
                                    split_entries, unpack_entry)


def member(article_id, t):
    return Member(article_id, (t, 0, article_id))


def assign(members, matches, known=None):
    known = {} if known is None else known
    return {m.article_id: a for m, a in assign_in_order(members, matches, known)}


def test_chain_joins_one_story_with_earliest_canonical():
    a, b, c = member("a", 1), member("b", 2), member("c", 3)
    result = assign([c, a, b], [Match(later=c, earlier=b, score=0.7),
                                Match(later=b, earlier=a, score=0.9)])
    assert {r.story_id for r in result.values()} == {"a"}
    assert not result["a"].is_duplicate
    assert result["b"].duplicate_of == "a" and result["b"].dup_score == 0.9
    assert result["c"].duplicate_of == "b"


def test_duplicate_of_is_the_best_match_and_a_bridge_joins_the_older_story():
    a, b, c = member("a", 1), member("b", 2), member("c", 3)
    result = assign([a, b, c], [Match(later=c, earlier=a, score=0.6),
                                Match(later=c, earlier=b, score=0.95)])
    assert result["c"].duplicate_of == "b" and result["c"].story_id == "a"
    # b was assigned before c arrived, and assignments are final.
    assert result["b"].story_id == "b"


def test_separate_stories_stay_separate_and_unmatched_articles_are_their_own():
    members = [member(x, t) for t, x in enumerate("abcde")]
    result = assign(members, [Match(members[1], members[0], 1.0),
                              Match(members[3], members[2], 1.0)])
    assert result["b"].story_id == "a" and result["d"].story_id == "c"
    assert result["e"] == singleton(members[4]) and not result["e"].is_duplicate


def test_assignments_carry_over_between_passes_and_expired_articles_stand_alone():
    a, b, c = member("a", 1), member("b", 2), member("c", 3)
    known = {}
    first = assign([a, b], [Match(b, a, 0.9)], known)
    second = assign([c], [Match(c, b, 0.8)], known)
    assert first["b"].story_id == "a" and second["c"].story_id == "a"
    del known["b"]  # b left the story window
    assert assign([member("d", 4)], [Match(member("d", 4), b, 0.8)], known)["d"].story_id == "b"


def test_a_story_link_joins_the_story_without_making_a_duplicate():
    a, b, c = member("a", 1), member("b", 2), member("c", 3)
    result = assign([a, b, c], [Match(b, a, 0.8, kind=STORY_LINK, evidence=("@trmb",)),
                                Match(c, b, 0.9, kind="translation"),
                                Match(c, a, 0.75, kind=STORY_LINK)])
    assert result["b"].story_id == "a" and not result["b"].is_duplicate
    assert (result["b"].linked_to, result["b"].link_score, result["b"].link_evidence) == (
        "a", 0.8, ("@trmb",))
    # c copies b (its one duplicate match) although its story link to a came too.
    assert result["c"].is_duplicate and result["c"].duplicate_of == "b"
    assert result["c"].story_id == "a" and result["c"].linked_to is None


def test_a_report_linking_two_stories_joins_its_best_links_and_records_that_link():
    # a and b are two stories; c links both, b more surely. It joins b's story,
    # and its recorded partner, score and evidence are those of that link.
    a, b, c = member("a", 1), member("b", 2), member("c", 3)
    result = assign([a, b, c], [Match(c, a, 0.7, kind=STORY_LINK, evidence=("@trmb",)),
                                Match(c, b, 0.9, kind=STORY_LINK, evidence=("@bdn", "#2024"))])
    assert result["a"].story_id == "a" and result["b"].story_id == "b"
    assert result["c"].story_id == "b" and not result["c"].is_duplicate
    assert (result["c"].linked_to, result["c"].link_score, result["c"].link_evidence) == (
        "b", 0.9, ("@bdn", "#2024"))
    # The two stories stay apart: a's was assigned before c came.
    assert result["a"].story_id != result["c"].story_id


def test_a_copy_stays_with_what_it_copies_when_a_link_points_to_an_older_story():
    # n shares two paragraphs with the story of s1 (a story link from s2) but is
    # not that story; s2 translates s1, and s3 copies s2.
    n, s1, s2, s3 = member("n", 1), member("s1", 2), member("s2", 3), member("s3", 4)
    result = assign([n, s1, s2, s3], [Match(s2, s1, 0.9, kind="translation"),
                                      Match(s2, n, 0.72, kind=STORY_LINK),
                                      Match(s3, s2, 1.0, kind="exact")])
    assert [result[x].story_id for x in ("n", "s1", "s2", "s3")] == ["n", "s1", "s1", "s1"]
    assert result["s2"].duplicate_of == "s1" and result["s2"].linked_to is None


def test_order_key_prefers_publication_time_then_id():
    from datetime import datetime, timezone
    early = datetime(2025, 1, 1, tzinfo=timezone.utc)
    late = datetime(2025, 1, 2, tzinfo=timezone.utc)
    assert order_key(early, late, "z") < order_key(None, late, "a")
    assert order_key(None, late, "a") < order_key(None, late, "b")


def test_nearest_in_time_caps_partners_and_skips_the_same_id():
    stored = [BucketEntry(member(str(i), i * 10), "en") for i in range(10)]
    partners = nearest_in_time(member("new", 52), stored, max_partners=3)
    assert [p.member.article_id for p in partners] == ["5", "6", "4"]
    assert not nearest_in_time(member("3", 30), [BucketEntry(member("3", 30), "en")], 3)
    # Only entries within the story window of the newcomer.
    assert [p.member.article_id for p in nearest_in_time(member("new", 52), stored, 3, 15)] == [
        "5", "6", "4"]
    assert [p.member.article_id for p in nearest_in_time(member("new", 52), stored, 3, 5)] == [
        "5"]


def test_near_pairs_keep_similar_articles_and_drop_templated_ones():
    hasher = MinHasher()
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in rng.integers(0, 10**6, 400)]
    texts = {"base": words, "edited": words[:340] + ["x"] * 60,
             "other": [f"v{i}" for i in range(400)]}
    entries = {name: BucketEntry(member(name, t), "en",
                                 hasher.sketch(hasher.signature(shingle_hashes(ws))))
               for t, (name, ws) in enumerate(texts.items())}
    pairs = {(later.article_id, earlier.article_id) for later, earlier in bucket_pairs(
        "near", entries["edited"], [entries["base"], entries["other"]], 0.4, 0.0)}
    assert pairs == {("edited", "base")}
    # A newcomer that is earlier than what is stored is the earlier of the pair.
    early = BucketEntry(member("early", -1), "en", entries["base"].payload)
    assert list(bucket_pairs("near", early, [entries["base"]], 0.4, 0.0)) == [
        (entries["base"].member, early.member)]


def test_vector_pairs_are_close_and_across_languages_only():
    rng = np.random.default_rng(1)

    def unit(v):
        return (v / np.linalg.norm(v)).astype(np.float16).tobytes()

    base = rng.standard_normal(64)
    near = base + 0.3 * np.linalg.norm(base) * rng.standard_normal(64) / 8
    far = rng.standard_normal(64)
    old = BucketEntry(member("base", 0), "bn", unit(base))
    partners = [old, BucketEntry(member("far", 1), "en", unit(far))]
    pairs = list(bucket_pairs("vec", BucketEntry(member("near", 2), "en", unit(near)),
                              partners, 0.0, 0.7))
    assert [(l.article_id, e.article_id) for l, e in pairs] == [("near", "base")]
    assert not list(bucket_pairs("vec", BucketEntry(member("near", 2), "bn", unit(near)),
                                 partners, 0.0, 0.7))
    # One language: only at the (higher) story-link cosine.
    same = BucketEntry(member("near", 2), "bn", unit(near))
    cosine = float(np.frombuffer(same.payload, np.float16).astype(np.float32)
                   @ np.frombuffer(old.payload, np.float16).astype(np.float32))
    assert len(list(bucket_pairs("vec", same, partners, 0.0, 0.7, cosine - 0.01))) == 1
    assert not list(bucket_pairs("vec", same, partners, 0.0, 0.7, cosine + 0.01))


def test_exact_bucket_matches_newcomer_with_each_partner_later_copying_earlier():
    stored = [BucketEntry(member("a", 1), "en"), BucketEntry(member("c", 3), "en")]
    matches = list(bucket_pairs("exact", BucketEntry(member("b", 2), "en"), stored, 0.0, 0.0))
    assert {(m.later.article_id, m.earlier.article_id, m.score, m.kind) for m in matches} == {
        ("b", "a", 1.0, "exact"), ("c", "b", 1.0, "exact")}


def test_an_order_key_time_comes_back_exactly_from_the_utc_time_a_story_state_keeps():
    # Times of 1970 to 2030: timestamp() * 1e6 in floating point misses some by 1 µs.
    micros = [int(m) for m in np.random.default_rng(3).integers(
        0, 1_900_000_000_000_000, 1000)] + [-1, 0, 1]
    assert [order_key(micros_to_utc(m), micros_to_utc(m), "a")[:2] for m in micros] == [
        (m, m) for m in micros]


def test_a_bucket_entry_packs_into_its_id_payload_and_a_few_bytes_and_back():
    def entry(article_id, micros, payload=b"\x00sketch\x00", earlier=False):
        return BucketEntry(Member(article_id, (micros, micros + 5, article_id)), "zh-Hant",
                           payload, earlier)
    entries = [entry("a", 10), entry("b\x00é", -20, b"", True),
               entry("c" * 70_000, 30_000_000_000_000)]
    packed = [pack_entry(e) for e in entries]
    assert [unpack_entry(p) for p in packed] == entries
    assert [packed_event_micros(p) for p in packed] == [10, -20, 30_000_000_000_000]
    assert len(packed[0]) == 22 + len("zh-Hant") + len("a") + len(b"\x00sketch\x00")
    with pytest.raises(ValueError, match="ends with its article's id"):
        pack_entry(BucketEntry(Member("a", (1, 2, "b")), "en"))


def test_a_bucket_joins_its_packed_entries_into_one_value_and_splits_them_back():
    packed = [pack_entry(BucketEntry(Member(article_id, (micros, micros, article_id)), "en",
                                     payload))
              for article_id, micros, payload in [("a", 1, b""), ("b" * 300, 2, b"\x00" * 70_000),
                                                  ("c", 3, b"sketch")]]
    bucket = joined_entries(packed[:2])
    bucket += joined_entries(packed[2:])  # how the index appends a newcomer
    assert list(split_entries(bucket)) == packed
    assert len(bucket) == sum(len(p) for p in packed) + 4 * len(packed)
    assert list(split_entries(joined_entries([]))) == []
