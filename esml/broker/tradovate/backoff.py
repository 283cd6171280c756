"""Exponential back-off with jitter: the n-th wait is uniform in [c/2, c] with
c = min(cap, base * 2^n), so it grows, yet many clients refused at once do not all come
back at the same instant."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Seconds to wait before retry number `attempt` (0 for the first retry)."""
    if attempt < 0 or base_s <= 0 or cap_s < base_s:
        raise ValueError(f"bad back-off: attempt {attempt}, base {base_s}, cap {cap_s}")
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt, 30))
    return ceiling / 2 + rng.uniform(0.0, ceiling / 2)
