"""One seeded random stream for the compiled generators: xoshiro256**.

Seeded from numpy's SeedSequence by the caller, so a stream depends on nothing but its
seed; drawn inside numba code, where numpy's Generator is not available per call.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _rotl(x: np.uint64, k: int) -> np.uint64:
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@njit(cache=True)
def next_u64(s: np.ndarray) -> np.uint64:
    result = _rotl(s[1] * np.uint64(5), 7) * np.uint64(9)
    t = s[1] << np.uint64(17)
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = _rotl(s[3], 45)
    return result


@njit(cache=True)
def uniform(s: np.ndarray) -> float:
    """In (0, 1), so log() is always safe."""
    return ((next_u64(s) >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def below(s: np.ndarray, n: int) -> int:
    """Uniform integer in [0, n)."""
    return min(int(uniform(s) * n), n - 1)


@njit(cache=True)
def exponential(s: np.ndarray) -> float:
    return -math.log(uniform(s))


@njit(cache=True)
def normal(s: np.ndarray) -> float:
    return math.sqrt(-2.0 * math.log(uniform(s))) * math.cos(2.0 * math.pi * uniform(s))


@njit(cache=True)
def draw(s: np.ndarray, cdf: np.ndarray) -> int:
    """Index drawn from a cumulative distribution (mass sits at small indices: scan)."""
    u = uniform(s) * cdf[-1]
    i = 0
    while i < len(cdf) - 1 and cdf[i] < u:
        i += 1
    return i
