from pipeline.stories import (Match, Member, assign_stories, bucket_pairs, exact_matches,
                              order_key, singleton)


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


def test_bucket_pairs_cap_partners_and_skip_same_id():
    members = [member(str(i), i) for i in range(10)] + [member("0", 0)]
    pairs = list(bucket_pairs(members, max_partners=3))
    assert all(earlier.order < later.order for earlier, later in pairs)
    assert len(pairs) == 0 + 1 + 2 + 3 * 7
    assert all(earlier.article_id in {"0", "1", "2"} for earlier, _ in pairs)


def test_exact_bucket_matches_everything_to_the_earliest():
    matches = list(exact_matches([member("c", 3), member("a", 1), member("b", 2)]))
    assert {(m.later.article_id, m.earlier.article_id, m.score) for m in matches} == {
        ("b", "a", 1.0), ("c", "a", 1.0)}
