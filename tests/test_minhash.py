import numpy as np
import pytest

from pipeline.logic.minhash import MinHasher, jaccard, shingle_hashes

WORDS = "the quick brown fox jumps over the lazy dog near the river bank today".split()


def test_shingles_are_sorted_unique_and_short_texts_make_one_shingle():
    hashes = shingle_hashes(WORDS, 3)
    assert hashes.dtype == np.uint32
    assert list(hashes) == sorted(set(hashes))
    assert len(hashes) == len(WORDS) - 2
    assert len(shingle_hashes(["two", "words"], 3)) == 1
    assert len(shingle_hashes([], 3)) == 0


def test_exact_jaccard():
    a = np.array([1, 2, 3, 4], dtype=np.uint32)
    b = np.array([3, 4, 5], dtype=np.uint32)
    assert jaccard(a, b) == pytest.approx(2 / 5)
    assert jaccard(a, a) == 1.0


def test_signature_agreement_estimates_jaccard():
    rng = np.random.default_rng(7)
    universe = rng.choice(2**32 - 1, size=3000, replace=False).astype(np.uint32)
    a = np.sort(universe[:2000])
    b = np.sort(universe[1000:3000])  # Jaccard 1000 / 3000
    hasher = MinHasher(bands=40, rows=3)
    agreement = np.mean(hasher.signature(a) == hasher.signature(b))
    assert agreement == pytest.approx(1 / 3, abs=0.1)


def test_band_keys_are_deterministic_across_instances():
    hashes = shingle_hashes(WORDS)
    one, two = MinHasher(), MinHasher()
    assert one.band_keys(one.signature(hashes)) == two.band_keys(two.signature(hashes))
    assert len(one.band_keys(one.signature(hashes))) == 40


def test_near_duplicates_share_a_band_and_unrelated_texts_do_not():
    hasher = MinHasher()
    base = [f"w{i}" for i in range(300)]
    edited = base[:250] + [f"x{i}" for i in range(50)]
    other = [f"y{i}" for i in range(300)]
    keys = lambda words: set(hasher.band_keys(hasher.signature(shingle_hashes(words))))
    assert keys(base) & keys(edited)
    assert not keys(base) & keys(other)


def test_constructor_checks_arguments():
    with pytest.raises(ValueError):
        MinHasher(bands=0)
    assert MinHasher().candidate_probability(0.5) > 0.99
