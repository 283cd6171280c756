"""Streaming microstructure features: O(1) state per event, read at decision times.

Each feature is defined once here. The engine calls `update` for every event (inside its
compiled kernel) and `compute` at each decision time; the batch executor
(`esml.features.batch`) runs the very same two functions over a whole day, so live and
training features cannot drift apart.

Time-based lookbacks use a ring of per-second mid snapshots: `mids[s]` is the mid after
the last event of second `s`, so a return over h seconds at a decision in second S uses
only events before the end of second S - h: nothing after the decision time is read.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from esml.market.events import ASK, BID, TRADE

FEATURE_NAMES: tuple[str, ...] = (
    "spread_ticks",
    "imbalance_l1",
    "microprice_offset_ticks",
    "ret_1s_ticks",
    "ret_5s_ticks",
    "ret_15s_ticks",
    "ret_30s_ticks",
    "ret_60s_ticks",
    "trade_flow_imbalance_10s",
    "trade_flow_imbalance_60s",
    "trade_rate_10s",
    "realized_vol_60s_ticks",
    "imbalance_l5",
)
FEATURE_VERSION = "skeleton-1"
N_FEATURES = len(FEATURE_NAMES)
RETURN_HORIZONS_S = (1, 5, 15, 30, 60)
RING = 128  # seconds of mid history: more than the longest lookback plus one
WARMUP_S = 60  # features are complete only after this much history

# scalar state slots
S_LAST_SEC = 0
S_MID = 1  # current mid (price units, float)
S_BUY10 = 2
S_SELL10 = 3
S_BUY60 = 4
S_SELL60 = 5
S_TRADES10 = 6
S_LAST_TRADE_NS = 7
S_RV_SUM = 8  # sum of squared 1-s mid changes over the ring's last 60 s
S_FIRST_SEC = 9
S_HAS_MID = 10
N_STATE = 11

_NS = 1_000_000_000
_TAU10 = 10.0
_TAU60 = 60.0


class FeatureState:
    """The streaming state of one instrument: scalars plus the per-second mid ring."""

    def __init__(self) -> None:
        self.s = np.zeros(N_STATE, np.float64)
        self.s[S_LAST_SEC] = -1.0
        self.ring = np.zeros(RING, np.float64)


@njit(cache=True, inline="always")
def _decay(s, dt_s):
    d10 = math.exp(-dt_s / _TAU10)
    d60 = math.exp(-dt_s / _TAU60)
    s[S_BUY10] *= d10
    s[S_SELL10] *= d10
    s[S_TRADES10] *= d10
    s[S_BUY60] *= d60
    s[S_SELL60] *= d60


@njit(cache=True)
def _roll_seconds(s, ring, sec):
    """Close every second from the last seen up to `sec` - 1 with the mid as it stood."""
    last = int(s[S_LAST_SEC])
    if last < 0:
        s[S_LAST_SEC] = sec
        s[S_FIRST_SEC] = sec
        return
    n = sec - last
    if n <= 0:
        return
    if n > RING:  # a long gap (halt, weekend): history before it is all the same mid
        n = RING
        last = sec - RING
    mid = s[S_MID]
    for k in range(n):
        cur = last + k
        prev = ring[(cur - 1) % RING]
        old_a = ring[(cur - 60) % RING]
        old_b = ring[(cur - 61) % RING]
        ring[cur % RING] = mid
        # keep the rolling sum of the last 60 squared one-second changes
        s[S_RV_SUM] += (mid - prev) ** 2 - (old_a - old_b) ** 2
    s[S_LAST_SEC] = sec


@njit(cache=True)
def update(s, ring, ts_ns, action, side, price, size, bid_px, ask_px, bid_sz, ask_sz, tick):
    """Fold one event (with the touch after it) into the state."""
    sec = ts_ns // _NS
    _roll_seconds(s, ring, sec)
    if bid_sz > 0 and ask_sz > 0 and bid_px < ask_px:  # not the pre-open's crossed book
        s[S_MID] = 0.5 * (bid_px + ask_px) / tick
        if s[S_HAS_MID] == 0.0:
            s[S_HAS_MID] = 1.0
            ring[:] = s[S_MID]
            s[S_RV_SUM] = 0.0
    if action == TRADE and side in (BID, ASK):
        last = s[S_LAST_TRADE_NS]
        if last > 0:
            _decay(s, (ts_ns - last) / _NS)
        s[S_LAST_TRADE_NS] = ts_ns
        if side == BID:  # the aggressor bought
            s[S_BUY10] += size
            s[S_BUY60] += size
        else:
            s[S_SELL10] += size
            s[S_SELL60] += size
        s[S_TRADES10] += 1.0


@njit(cache=True)
def ready(s, ts_ns) -> bool:
    """True once a two-sided book has been seen for the warm-up period."""
    if s[S_HAS_MID] == 0.0:
        return False
    return ts_ns // _NS - s[S_FIRST_SEC] >= WARMUP_S


@njit(cache=True)
def compute(s, ring, ts_ns, bid_px, ask_px, bid_sz, ask_sz, depth, tick, out):
    """Write the feature vector as of `ts_ns` into `out` (float32[N_FEATURES]).

    `depth` holds the best five levels per side: rows (bid_px, bid_sz, ask_px, ask_sz).
    """
    sec = ts_ns // _NS
    _roll_seconds(s, ring, sec)
    mid = s[S_MID]
    tot = bid_sz + ask_sz
    out[0] = (ask_px - bid_px) / tick
    out[1] = (bid_sz - ask_sz) / tot if tot > 0 else 0.0
    if tot > 0:
        micro = (bid_px * ask_sz + ask_px * bid_sz) / tot / tick
        out[2] = micro - mid
    else:
        out[2] = 0.0
    for k in range(5):
        h = RETURN_HORIZONS_S[k]
        # ring[sec - 1 - h] is the mid as of (sec - h) s: exactly h seconds before now
        out[3 + k] = mid - ring[(sec - 1 - h) % RING]
    # trade-flow state decays to now before it is read
    last = s[S_LAST_TRADE_NS]
    dt = (ts_ns - last) / _NS if last > 0 else 0.0
    d10 = math.exp(-dt / _TAU10)
    d60 = math.exp(-dt / _TAU60)
    b10, s10 = s[S_BUY10] * d10, s[S_SELL10] * d10
    b60, s60 = s[S_BUY60] * d60, s[S_SELL60] * d60
    out[8] = (b10 - s10) / (b10 + s10) if b10 + s10 > 1e-9 else 0.0
    out[9] = (b60 - s60) / (b60 + s60) if b60 + s60 > 1e-9 else 0.0
    out[10] = s[S_TRADES10] * d10 / _TAU10
    out[11] = math.sqrt(max(s[S_RV_SUM], 0.0))
    bq = 0.0
    aq = 0.0
    for k in range(depth.shape[0]):
        bq += depth[k, 1]
        aq += depth[k, 3]
    out[12] = (bq - aq) / (bq + aq) if bq + aq > 0 else 0.0
