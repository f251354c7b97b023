"""MinHash over word shingles, LSH banding, and exact Jaccard on shingle sets.

Near-duplicate search without comparing all pairs: each article's MinHash
signature is cut into ``bands`` bands of ``rows`` values; two articles become
candidates when any band is equal, which for Jaccard similarity ``J`` happens
with probability ``1 - (1 - J**rows)**bands``. The defaults (40 bands of 3)
find a pair at J = 0.5 with probability 0.995 and at J = 0.3 with 0.68; every
candidate is then checked with the exact Jaccard of the two shingle sets.
"""

import hashlib
from typing import List, Sequence

import numpy as np

# Each permutation is the multiply-add-shift hash h(x) = ((a*x + b) mod 2**64) >> 32
# of a 32-bit shingle hash x, with random 64-bit a and b: strongly universal
# (Dietzfelbinger), and numpy's uint64 arithmetic wraps mod 2**64 by itself.
# (Linear hashing mod a prime larger than a*x + b barely permutes 32-bit inputs,
# and its minima are correlated across permutations.)
_SHIFT = np.uint64(32)
_EMPTY = np.zeros(0, dtype=np.uint32)


def shingle_hashes(words: Sequence[str], size: int = 3) -> np.ndarray:
    """Sorted unique 32-bit hashes of the ``size``-word shingles of ``words``.

    A text shorter than ``size`` words is one shingle of all its words.
    """
    if not words:
        return _EMPTY
    size = min(size, len(words))
    hashes = {
        int.from_bytes(hashlib.blake2b(" ".join(words[i:i + size]).encode("utf-8"),
                                       digest_size=4).digest(), "little")
        for i in range(len(words) - size + 1)
    }
    return np.array(sorted(hashes), dtype=np.uint32)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted unique hash arrays."""
    if a.size == 0 and b.size == 0:
        return 1.0
    common = np.intersect1d(a, b, assume_unique=True).size
    return common / (a.size + b.size - common)


def estimated_jaccards(sketch: bytes, others: Sequence[bytes]) -> np.ndarray:
    """Jaccard estimates of one 8-bit sketch against several (b-bit MinHash).

    Two 8-bit values also agree by chance with probability 1/256, so the
    estimate is ``(agreement - 1/256) / (1 - 1/256)``; with 120 values its
    standard error is about 0.045.
    """
    if not others:
        return np.zeros(0)
    mine = np.frombuffer(sketch, dtype=np.uint8)
    theirs = np.frombuffer(b"".join(others), dtype=np.uint8).reshape(len(others), -1)
    agreement = (theirs == mine).mean(axis=1)
    return (agreement - 1 / 256) / (1 - 1 / 256)


class MinHasher:
    """MinHash signatures and LSH band keys with fixed, seeded permutations.

    The seed fixes the permutations, so signatures (and band keys) are equal
    across workers, runs and machines.
    """

    def __init__(self, bands: int = 40, rows: int = 3, seed: int = 1):
        if bands < 1 or rows < 1:
            raise ValueError(f"bands and rows must be >= 1, got {bands}, {rows}")
        self.bands = bands
        self.rows = rows
        rng = np.random.default_rng(seed)
        num_perm = bands * rows
        self._a = rng.integers(1, 1 << 64, size=num_perm, dtype=np.uint64) | np.uint64(1)
        self._b = rng.integers(0, 1 << 64, size=num_perm, dtype=np.uint64)

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        """The MinHash signature (``bands * rows`` values) of a shingle hash set."""
        if hashes.size == 0:
            raise ValueError("an empty shingle set has no signature")
        x = hashes.astype(np.uint64)[:, None]
        return ((x * self._a + self._b) >> _SHIFT).min(axis=0).astype(np.uint32)

    def band_keys(self, signature: np.ndarray) -> List[str]:
        """One key per band; equal keys make two articles candidates."""
        keys = []
        for band in range(self.bands):
            chunk = signature[band * self.rows:(band + 1) * self.rows]
            digest = hashlib.blake2b(chunk.tobytes(), digest_size=8).hexdigest()
            keys.append(f"{band}:{digest}")
        return keys

    @staticmethod
    def sketch(signature: np.ndarray) -> bytes:
        """The low 8 bits of each signature value: a compact sketch for pre-filtering pairs."""
        return (signature & 0xFF).astype(np.uint8).tobytes()

    def candidate_probability(self, similarity: float) -> float:
        """Probability that a pair with this Jaccard similarity shares a band."""
        return 1.0 - (1.0 - similarity ** self.rows) ** self.bands
