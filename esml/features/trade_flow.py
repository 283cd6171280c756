"""Per-trade state: the last trades, the PSO oscillator and volume-bucketed VPIN.

Why per trade: lookbacks counted in trades ("ticks") and the PSO are defined on the trade
sequence, not the clock. Each trade appends one row of running totals to a ring, so a
window over the last N trades is a difference of two rows (exact in float64 for these
integer and half-tick quantities), and the rolling max/min over the last 500 trade prices
comes from two monotonic deques: O(1) per trade, amortised.
"""

from __future__ import annotations

from numba import njit

from esml.features.layout import (
    DQN,
    DQX,
    S_DQN_HEAD,
    S_DQN_TAIL,
    S_DQX_HEAD,
    S_DQX_TAIL,
    S_NTR,
    S_PSO,
    S_VP_BUY,
    S_VP_FILL,
    S_VP_N,
    S_VP_SELL,
    TR,
    TR_COLS,
    TR_CSIGN,
    TR_CSQ,
    TR_CVOL,
    TR_MID,
    TR_N,
    TR_PX,
    VP_CUM,
    VP_RING,
)

PSO_TRADES = 500  # the stochastic's window, in trades
PSO_EMA = 25  # its smoothing, in trades
VPIN_BUCKET = 100  # contracts per volume bucket
VPIN_BUCKETS = 50  # buckets in the VPIN window
_A_PSO = 2.0 / (PSO_EMA + 1)


@njit(cache=True, inline="always")
def row(j, col):
    """Offset of column `col` of trade number `j` in the trade ring."""
    return TR + (j % TR_N) * TR_COLS + col


@njit(cache=True, inline="always")
def _push_max(s, head, tail, buf, j, px):
    """Append trade j to a deque whose prices fall from head to tail (max at the head)."""
    t = int(s[tail])
    while t > s[head] and s[row(int(s[buf + (t - 1) % TR_N]), TR_PX)] <= px:
        t -= 1
    s[buf + t % TR_N] = j
    s[tail] = t + 1
    while s[buf + int(s[head]) % TR_N] <= j - PSO_TRADES:
        s[head] += 1


@njit(cache=True, inline="always")
def _push_min(s, head, tail, buf, j, px):
    """Append trade j to a deque whose prices rise from head to tail (min at the head)."""
    t = int(s[tail])
    while t > s[head] and s[row(int(s[buf + (t - 1) % TR_N]), TR_PX)] >= px:
        t -= 1
    s[buf + t % TR_N] = j
    s[tail] = t + 1
    while s[buf + int(s[head]) % TR_N] <= j - PSO_TRADES:
        s[head] += 1


@njit(cache=True)
def on_trade(s, px, size, sign, mid):
    """Fold one trade: price in ticks, aggressor sign (+1 buy, -1 sell, 0 unknown)."""
    j = int(s[S_NTR])
    if j > 0:
        p = j - 1
        csign = s[row(p, TR_CSIGN)] + sign * size
        cvol = s[row(p, TR_CVOL)] + size
        csq = s[row(p, TR_CSQ)] + (mid - s[row(p, TR_MID)]) ** 2
    else:
        csign, cvol, csq = sign * size, float(size), 0.0
    s[row(j, TR_MID)] = mid
    s[row(j, TR_PX)] = px
    s[row(j, TR_CSIGN)] = csign
    s[row(j, TR_CVOL)] = cvol
    s[row(j, TR_CSQ)] = csq
    s[S_NTR] = j + 1
    _push_max(s, S_DQX_HEAD, S_DQX_TAIL, DQX, j, px)
    _push_min(s, S_DQN_HEAD, S_DQN_TAIL, DQN, j, px)
    hi = s[row(int(s[DQX + int(s[S_DQX_HEAD]) % TR_N]), TR_PX)]
    lo = s[row(int(s[DQN + int(s[S_DQN_HEAD]) % TR_N]), TR_PX)]
    raw = 2.0 * (px - lo) / (hi - lo) - 1.0 if hi > lo else 0.0
    s[S_PSO] = raw if j == 0 else s[S_PSO] + _A_PSO * (raw - s[S_PSO])
    if sign != 0:
        _fill_buckets(s, size, sign)


@njit(cache=True, inline="always")
def _fill_buckets(s, size, sign):
    """Pour a signed trade into fixed-volume buckets, closing each one that fills."""
    left = size
    while left > 0:
        take = min(left, VPIN_BUCKET - s[S_VP_FILL])
        if sign > 0:
            s[S_VP_BUY] += take
        else:
            s[S_VP_SELL] += take
        s[S_VP_FILL] += take
        left -= take
        if s[S_VP_FILL] >= VPIN_BUCKET:
            nb = int(s[S_VP_N])
            before = s[VP_CUM + (nb - 1) % VP_RING] if nb > 0 else 0.0
            s[VP_CUM + nb % VP_RING] = before + abs(s[S_VP_BUY] - s[S_VP_SELL])
            s[S_VP_N] = nb + 1
            s[S_VP_FILL] = 0.0
            s[S_VP_BUY] = 0.0
            s[S_VP_SELL] = 0.0


@njit(cache=True, inline="always")
def vpin(s):
    """Mean |buy - sell| share over the last VPIN_BUCKETS closed buckets (0 before any)."""
    nb = int(s[S_VP_N])
    if nb == 0:
        return 0.0
    m = min(nb, VPIN_BUCKETS)
    before = s[VP_CUM + (nb - 1 - m) % VP_RING] if nb > m else 0.0
    return (s[VP_CUM + (nb - 1) % VP_RING] - before) / (m * VPIN_BUCKET)


@njit(cache=True, inline="always")
def trades_back(s, col, back):
    """Column `col` at the trade `back` trades before the last (the first if fewer)."""
    return s[row(max(int(s[S_NTR]) - 1 - back, 0), col)]


@njit(cache=True, inline="always")
def trades_sum(s, col, count):
    """What running-total column `col` gained over the last `count` trades."""
    j = int(s[S_NTR]) - 1
    if j < 0:
        return 0.0
    return s[row(j, col)] - (s[row(j - count, col)] if j >= count else 0.0)
