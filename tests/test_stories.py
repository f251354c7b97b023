import numpy as np

from pipeline.minhash import MinHasher, shingle_hashes
from pipeline.stories import (Match, Member, assign_stories, bucket_partners, exact_matches,
                              near_candidates, order_key, singleton)


def member(article_id, t):
    return Member(article_id, (t, 0, article_id))


def test_chain_joins_one_story_with_earliest_canonical():
    a, b, c = member("a", 1), member("b", 2), member("c", 3)
    result = assign_stories([Match(later=c, earlier=b, score=0.7),
                             Match(later=b, earlier=a, score=0.9)])
    assert {r.story_id for r in result.values()} == {"a"}
    assert not result["a"].is_duplicate
    assert result["b"].duplicate_of == "a" and result["b"].dup_score == 0.9
    assert result["c"].duplicate_of == "b"


def test_duplicate_of_is_the_best_scoring_earlier_match():
    a, b, c = member("a", 1), member("b", 2), member("c", 3)
    result = assign_stories([Match(later=c, earlier=a, score=0.6),
                             Match(later=c, earlier=b, score=0.95)])
    assert result["c"].duplicate_of == "b"
    assert result["c"].story_id == "a"


def test_separate_components_stay_separate():
    result = assign_stories([Match(member("b", 2), member("a", 1), 1.0),
                             Match(member("d", 4), member("c", 3), 1.0)])
    assert result["b"].story_id == "a" and result["d"].story_id == "c"
    assert singleton("e").story_id == "e" and not singleton("e").is_duplicate


def test_order_key_prefers_publication_time_then_id():
    from datetime import datetime, timezone
    early = datetime(2025, 1, 1, tzinfo=timezone.utc)
    late = datetime(2025, 1, 2, tzinfo=timezone.utc)
    assert order_key(early, late, "z") < order_key(None, late, "a")
    assert order_key(None, late, "a") < order_key(None, late, "b")


def test_bucket_partners_cap_partners_and_skip_same_id():
    members = [member(str(i), i) for i in range(10)] + [member("0", 0)]
    partners = dict(bucket_partners(members, max_partners=3))
    assert sum(len(p) for p in partners.values()) == 1 + 2 + 3 * 7
    assert all(p.order < later.order for later, ps in partners.items() for p in ps)
    assert [p.article_id for p in partners[member("9", 9)]] == ["6", "7", "8"]


def test_near_candidates_keep_similar_pairs_and_drop_templated_ones():
    hasher = MinHasher()
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in rng.integers(0, 10**6, 400)]
    texts = {"base": words, "edited": words[:340] + ["x"] * 60,
             "other": [f"v{i}" for i in range(400)]}
    sketches = {member(name, t): hasher.sketch(hasher.signature(shingle_hashes(ws)))
                for t, (name, ws) in enumerate(texts.items())}
    pairs = {(later.article_id, earlier.article_id)
             for later, earlier in near_candidates(sketches, 10, min_estimate=0.4)}
    assert pairs == {("edited", "base")}


def test_exact_bucket_matches_everything_to_the_earliest():
    matches = list(exact_matches([member("c", 3), member("a", 1), member("b", 2)]))
    assert {(m.later.article_id, m.earlier.article_id, m.score) for m in matches} == {
        ("b", "a", 1.0), ("c", "a", 1.0)}
