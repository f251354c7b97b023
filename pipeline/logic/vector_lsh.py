"""Random-hyperplane LSH: candidate pairs of article vectors without comparing all pairs.

Each band is ``bits`` random hyperplanes; a vector's band key is the side of
each plane it falls on. Two unit vectors at angle ``theta`` fall on the same
side of a random plane with probability ``1 - theta / pi``, so they share a
band with probability ``p**bits`` and become candidates with probability
``1 - (1 - p**bits)**bands``. Planes are drawn from a fixed seed, so keys agree
across workers, runs and machines.
"""

import math
from typing import List

import numpy as np


class HyperplaneLSH:
    def __init__(self, dimension: int, bands: int = 24, bits: int = 8, seed: int = 5):
        if dimension < 1 or bands < 1 or not 1 <= bits <= 62:
            raise ValueError(f"need dimension, bands >= 1 and 1 <= bits <= 62, got "
                             f"{dimension}, {bands}, {bits}")
        self.bands = bands
        self.bits = bits
        self._planes = np.random.default_rng(seed).standard_normal(
            (bands * bits, dimension)).astype(np.float32)
        self._weights = (1 << np.arange(bits, dtype=np.int64))

    def band_keys(self, vector: np.ndarray) -> List[str]:
        """One key per band; equal keys make two vectors candidates."""
        sides = (self._planes @ vector > 0).reshape(self.bands, self.bits)
        codes = sides.astype(np.int64) @ self._weights
        return [f"{band}:{int(code):x}" for band, code in enumerate(codes)]

    def candidate_probability(self, cosine: float) -> float:
        """Probability that two vectors with this cosine share a band."""
        same_side = 1.0 - math.acos(max(-1.0, min(1.0, cosine))) / math.pi
        return 1.0 - (1.0 - same_side ** self.bits) ** self.bands
