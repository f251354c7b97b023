"""Cross-language building blocks without Beam: lead paragraphs, coverage, candidates,
vector LSH and name evidence."""

import pickle

import numpy as np

from pipeline.logic.crosslingual import lead_paragraphs, paragraph_coverage
from pipeline.steps.embed_articles import ArticleVectors
from pipeline.logic.evidence import evidence_keys, skeleton, specific_evidence
from pipeline.logic.stories import Member
from pipeline.logic.vector_lsh import HyperplaneLSH


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_lead_paragraphs_cap_count_and_characters_and_carry_span_language():
    body = "aaaa\nbbbb\ncccc\ndddd"
    spans = [{"lang": "ar", "start": 0, "end": 9}, {"lang": "en", "start": 10, "end": 19}]
    assert lead_paragraphs(body, spans, max_paragraphs=3, max_chars=100) == [
        ("aaaa", "ar"), ("bbbb", "ar"), ("cccc", "en")]
    assert lead_paragraphs(body, spans, max_paragraphs=8, max_chars=6) == [
        ("aaaa", "ar"), ("bb", "ar")]


def test_coverage_takes_the_weaker_direction():
    a = unit(np.eye(4))
    b = unit(np.eye(4)[:2])
    assert paragraph_coverage(a, a, 0.9) == 1.0
    assert paragraph_coverage(a, b, 0.9) == 0.5  # b is covered, but half of a is not
    assert paragraph_coverage(a, np.zeros((0, 4)), 0.9) == 0.0


def test_hyperplane_lsh_keys_agree_for_close_vectors_and_are_seeded():
    rng = np.random.default_rng(2)
    v = unit(rng.standard_normal(384))
    close = unit(v + 0.1 * unit(rng.standard_normal(384)))
    lsh = HyperplaneLSH(384, bands=20, bits=6)
    assert len(set(lsh.band_keys(v)) & set(lsh.band_keys(close))) >= 5
    assert HyperplaneLSH(384, 20, 6).band_keys(v) == lsh.band_keys(v)
    assert lsh.candidate_probability(0.9) > lsh.candidate_probability(0.3)


def test_names_meet_across_scripts():
    assert skeleton("ট্রাম্প") == skeleton("ترمب") == skeleton("Trump")
    assert skeleton("জেলেনস্কি") == skeleton("زيلينسكي") == skeleton("Zelenskyy")
    assert "#2025" in evidence_keys("সালে ২০২৫") and "#2025" in evidence_keys("عام ٢٠٢٥")


def test_specific_evidence_keeps_long_names_and_numbers_of_several_digits():
    keys = evidence_keys("Trump met Putin on 15 August for 2 hours.")
    # Putin's skeleton (btn) and the single digit are too common to tie two reports.
    assert {"@btn", "#2"} <= keys
    assert specific_evidence(keys) == ["#15", "@trmb"]


def test_article_vectors_travel_as_their_fields_only():
    # A pair carries its earlier article's vectors through two shuffles: the rows
    # decoded for scoring stay behind, and are decoded again where needed.
    rows = np.random.default_rng(3).standard_normal((4, 16)).astype(np.float16)
    vectors = ArticleVectors(Member("a1", (1, 1, "a1")), "bn", rows.tobytes(), 16,
                             frozenset({"@tramp", "#5"}))
    before = pickle.dumps(vectors)
    article = vectors.article_vector  # decodes and caches the rows
    assert pickle.dumps(vectors) == before
    arrived = pickle.loads(before)
    assert arrived == vectors
    np.testing.assert_array_equal(arrived.article_vector, article)
