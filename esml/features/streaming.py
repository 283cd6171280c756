"""Streaming features: O(1) state per event, read at decision times.

Each feature is defined once here (and in the family modules this one calls). The engine
calls `update` for every event (inside its compiled kernel) and `compute` at each
decision time; the batch executor (`esml.features.batch`) runs the very same two
functions over a whole day, so live and training features cannot drift apart.

Time-based lookbacks use a ring of per-second snapshots: `ring[s]` is the state after the
last event of second `s` (mid, running sums), so a window of h seconds at a decision in
second S is a difference against `ring[S - 1 - h]`, and nothing after the decision time
is ever read. Running sums make every window exact and independent of how often
`compute` was called: a live engine that skips decisions while it holds a position
computes the same features afterwards as the batch executor.

Families (FEATURE_NAMES in this order): price dynamics (returns over trades and seconds,
realised volatility, momentum against the moving mean, acceleration, efficiency); the book
(spread, L1/L3/L5/L10 imbalance, microprice, depth slopes over DEPTH_LEVELS levels); flow
(Cont-Kukanov-Stoikov order-flow imbalance, aggressor trade-flow imbalance, VPIN over
volume buckets, trade intensity, volume surge, queue depletion at the touch, the PSO);
session context (VWAP, session range, range expansion, volume against its time-of-day
norm); time (`esml.features.clock`); one-minute bar technicals (`esml.features.technicals`).
Every normaliser is a statistic of the past: the time-of-day volume norm is learnt from
earlier days' buckets only, the bar volume z-score from the 20 bars before.

Units: prices and price changes in ticks, sizes in contracts, rates per second.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from esml.features.clock import DAY_S, SESSION_SHIFT_S, TIME_FEATURE_NAMES, time_features
from esml.features.clock import utc_offset_s as _utc_offset_s
from esml.features.layout import (
    BAR_OUT,
    N_BAR_FEATURES,
    N_CUM,
    N_RING_CH,
    N_STATE,
    N_TOD,
    R_ABSMOVE,
    R_BUY,
    R_DEPL_ASK,
    R_DEPL_BID,
    R_MID,
    R_OFI,
    R_RV,
    R_SELL,
    R_SUMMID,
    R_TRADES,
    R_VOL,
    RING,
    S_BAR_MIN,
    S_BUY10,
    S_BUY60,
    S_CUM,
    S_CUM_BUY,
    S_CUM_DEPL_ASK,
    S_CUM_DEPL_BID,
    S_CUM_OFI,
    S_CUM_SELL,
    S_CUM_TRADES,
    S_CUM_VOL,
    S_FIRST_SEC,
    S_HAS_MID,
    S_LAST_SEC,
    S_LAST_TRADE_NS,
    S_MID,
    S_NTR,
    S_PREV_AP,
    S_PREV_AS,
    S_PREV_BP,
    S_PREV_BS,
    S_PREV_OK,
    S_PSO,
    S_RANGE_EXP,
    S_SELL10,
    S_SELL60,
    S_SESS_HAS_MID,
    S_SESS_HI,
    S_SESS_LO,
    S_SESS_PV,
    S_SESS_START,
    S_SESS_VOL,
    S_SESSION,
    S_TB_FROM,
    S_TB_ID,
    S_TB_TO,
    S_TB_VOL0,
    S_TRADES10,
    S_UTC_OFF,
    TOD_BUCKET_S,
    TOD_DAYS,
    TOD_NORM,
    TR,
    TR_COLS,
    TR_CSIGN,
    TR_CSQ,
    TR_CVOL,
    TR_MID,
    TR_N,
)
from esml.features.technicals import (
    BAR_FEATURE_DEFAULTS,
    BAR_FEATURE_NAMES,
    bar_close,
    bar_on_trade,
)
from esml.features.trade_flow import on_trade, trades_back, trades_sum, vpin
from esml.market.events import ASK, BID, CANCEL, TRADE, UNDEF_PRICE

PRICE_NAMES: tuple[str, ...] = (
    "ret_5t_ticks",
    "ret_10t_ticks",
    "ret_20t_ticks",
    "ret_50t_ticks",
    "ret_100t_ticks",
    "ret_1s_ticks",
    "ret_5s_ticks",
    "ret_15s_ticks",
    "ret_30s_ticks",
    "ret_60s_ticks",
    "ret_300s_ticks",
    "realized_vol_30s_ticks",
    "realized_vol_60s_ticks",
    "realized_vol_300s_ticks",
    "realized_vol_100t_ticks",
    "momentum_60s_ticks",
    "momentum_300s_ticks",
    "accel_5s_ticks",
    "accel_30s_ticks",
    "efficiency_60s",
)
BOOK_NAMES: tuple[str, ...] = (
    "spread_ticks",
    "imbalance_l1",
    "imbalance_l3",
    "imbalance_l5",
    "imbalance_l10",
    "microprice_offset_ticks",
    "depth_slope_bid",
    "depth_slope_ask",
    "depth_slope_imbalance",
    "depth_l10_log",
)
FLOW_NAMES: tuple[str, ...] = (
    "ofi_1s",
    "ofi_5s",
    "ofi_10s",
    "ofi_30s",
    "ofi_60s",
    "trade_flow_imbalance_10s",
    "trade_flow_imbalance_60s",
    "trade_flow_imbalance_100t",
    "trade_flow_imbalance_300s",
    "vpin",
    "trade_rate_10s",
    "trades_per_s_60s",
    "avg_trade_size_60s",
    "volume_surge",
    "log_volume_60s",
    "queue_depletion_bid_10s",
    "queue_depletion_ask_10s",
    "queue_depletion_imbalance_10s",
    "pso",
)
SESSION_NAMES: tuple[str, ...] = (
    "vwap_dist_ticks",
    "session_range_pos",
    "dist_session_high_ticks",
    "dist_session_low_ticks",
    "session_range_ticks",
    "range_expansion",
    "volume_tod_ratio",
)
FEATURE_NAMES: tuple[str, ...] = (
    PRICE_NAMES + BOOK_NAMES + FLOW_NAMES + SESSION_NAMES + TIME_FEATURE_NAMES + BAR_FEATURE_NAMES
)
FEATURE_VERSION = "features-2"
N_FEATURES = len(FEATURE_NAMES)
K_PRICE = 0
K_BOOK = K_PRICE + len(PRICE_NAMES)
K_FLOW = K_BOOK + len(BOOK_NAMES)
K_SESSION = K_FLOW + len(FLOW_NAMES)
K_TIME = K_SESSION + len(SESSION_NAMES)
K_BARS = K_TIME + len(TIME_FEATURE_NAMES)

DEPTH_LEVELS = 10  # rows of the `depth` array that `compute` reads (book levels per side)
WARMUP_S = 60  # features are complete enough to decide on after this much history
TICK_LOOKBACKS = (5, 10, 20, 50, 100)  # trades
RETURN_HORIZONS_S = (1, 5, 15, 30, 60, 300)
OFI_HORIZONS_S = (1, 5, 10, 30, 60)
TOD_ALPHA = 0.2  # weight of the latest day in the time-of-day volume norm
TOD_MIN_SPAN_S = 300  # a bucket watched for less than this teaches the norm nothing
RATE_EPS = 0.01  # contracts per second: keeps volume ratios finite in a silent market
assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES))
assert max(RETURN_HORIZONS_S) + 1 < RING and max(TICK_LOOKBACKS) + 1 < TR_N

_NS = 1_000_000_000
_TAU10 = 10.0
_TAU60 = 60.0


class FeatureState:
    """The streaming state of one instrument: a flat state vector plus the per-second ring."""

    def __init__(self) -> None:
        self.s = np.zeros(N_STATE, np.float64)
        for slot in (S_LAST_SEC, S_SESSION, S_TB_ID, S_BAR_MIN):
            self.s[slot] = -1.0
        self.s[BAR_OUT : BAR_OUT + N_BAR_FEATURES] = BAR_FEATURE_DEFAULTS
        self.s[S_RANGE_EXP] = 1.0
        self.ring = np.zeros((RING, N_RING_CH), np.float64)


@njit(cache=True)
def _roll_seconds(s, ring, sec):
    """Close every second from the open one up to `sec` - 1, then what ended with them."""
    last = int(s[S_LAST_SEC])
    if last < 0:
        s[S_LAST_SEC] = sec
        s[S_FIRST_SEC] = sec
        s[S_UTC_OFF] = _utc_offset_s(sec)
        return
    if sec <= last:
        return
    mid = s[S_MID]
    p = (last - 1) % RING
    d = mid - ring[p, R_MID]
    summid = ring[p, R_SUMMID]
    rv = ring[p, R_RV] + d * d
    absmove = ring[p, R_ABSMOVE] + abs(d)
    # after a gap longer than the ring, every second kept saw the same (unchanged) state
    for cur in range(max(last, sec - RING), sec):
        r = cur % RING
        ring[r, R_MID] = mid
        ring[r, R_SUMMID] = summid + (cur - last + 1) * mid
        ring[r, R_RV] = rv
        ring[r, R_ABSMOVE] = absmove
        for c in range(N_CUM):
            ring[r, R_VOL + c] = s[S_CUM + c]
    s[S_LAST_SEC] = sec
    off = _utc_offset_s(sec)
    s[S_UTC_OFF] = off
    if s[S_BAR_MIN] >= 0 and sec >= (s[S_BAR_MIN] + 1) * 60:
        bar_close(s)
    if s[S_TB_ID] >= 0 and (sec + off) // TOD_BUCKET_S != s[S_TB_ID]:
        _fold_tod_bucket(s)


@njit(cache=True, inline="always")
def _fold_tod_bucket(s):
    """Teach the time-of-day norm the volume rate of the bucket that just ended."""
    b = int(s[S_TB_ID])
    span = s[S_TB_TO] - s[S_TB_FROM] + 1.0  # watched from its first trade to its last
    if span >= TOD_MIN_SPAN_S:
        rate = (s[S_CUM_VOL] - s[S_TB_VOL0]) / span
        k = b % N_TOD
        if s[TOD_DAYS + k] == 0:
            s[TOD_NORM + k] = rate
        else:
            s[TOD_NORM + k] += TOD_ALPHA * (rate - s[TOD_NORM + k])
        s[TOD_DAYS + k] += 1
    s[S_TB_ID] = -1.0


@njit(cache=True, inline="always")
def _first_mid(s, ring, mid):
    """Before the first two-sided book the price had no history: make it flat at `mid`."""
    s[S_HAS_MID] = 1.0
    last = int(s[S_LAST_SEC])
    for back in range(1, RING + 1):
        r = (last - back) % RING
        ring[r, R_MID] = mid
        ring[r, R_SUMMID] = (1 - back) * mid
    for j in range(TR_N):
        s[TR + j * TR_COLS + TR_MID] = mid


@njit(cache=True)
def _on_trade(s, ts_ns, sec, local, side, price, size, tick):
    px = price / tick
    sign = 1 if side == BID else (-1 if side == ASK else 0)
    if s[S_TB_ID] < 0:  # the first trade in this time-of-day bucket starts watching it
        s[S_TB_ID] = local // TOD_BUCKET_S
        s[S_TB_VOL0] = s[S_CUM_VOL]
        s[S_TB_FROM] = local
    s[S_TB_TO] = local
    s[S_CUM_VOL] += size
    s[S_CUM_TRADES] += 1.0
    s[S_SESS_PV] += px * size
    s[S_SESS_VOL] += size
    if sign != 0:
        last = s[S_LAST_TRADE_NS]
        if last > 0:
            dt = (ts_ns - last) / _NS
            d10 = math.exp(-dt / _TAU10)
            d60 = math.exp(-dt / _TAU60)
            s[S_BUY10] *= d10
            s[S_SELL10] *= d10
            s[S_TRADES10] *= d10
            s[S_BUY60] *= d60
            s[S_SELL60] *= d60
        s[S_LAST_TRADE_NS] = ts_ns
        if sign > 0:
            s[S_CUM_BUY] += size
            s[S_BUY10] += size
            s[S_BUY60] += size
        else:
            s[S_CUM_SELL] += size
            s[S_SELL10] += size
            s[S_SELL60] += size
        s[S_TRADES10] += 1.0
    on_trade(s, px, size, sign, s[S_MID])
    bar_on_trade(s, sec // 60, px, size)


@njit(cache=True)
def update(s, ring, ts_ns, action, side, price, size, bid_px, ask_px, bid_sz, ask_sz, tick):
    """Fold one event (with the touch after it) into the state."""
    sec = ts_ns // _NS
    if sec > s[S_LAST_SEC]:
        _roll_seconds(s, ring, sec)
    local = sec + int(s[S_UTC_OFF])
    session = (local + SESSION_SHIFT_S) // DAY_S
    if session != s[S_SESSION]:  # a new trading day (17:00 CT): session context restarts
        s[S_SESSION] = session
        s[S_SESS_PV] = 0.0
        s[S_SESS_VOL] = 0.0
        s[S_SESS_HAS_MID] = 0.0
        s[S_SESS_START] = sec
    if bid_sz > 0 and ask_sz > 0 and bid_px < ask_px:  # not the pre-open's crossed book
        mid = 0.5 * (bid_px + ask_px) / tick
        s[S_MID] = mid
        if s[S_HAS_MID] == 0.0:
            _first_mid(s, ring, mid)
        if s[S_SESS_HAS_MID] == 0.0:
            s[S_SESS_HAS_MID] = 1.0
            s[S_SESS_HI] = mid
            s[S_SESS_LO] = mid
        elif mid > s[S_SESS_HI]:
            s[S_SESS_HI] = mid
        elif mid < s[S_SESS_LO]:
            s[S_SESS_LO] = mid
        if s[S_PREV_OK] != 0.0:  # Cont, Kukanov & Stoikov (2014): the touch's net flow
            pbp, pap = s[S_PREV_BP], s[S_PREV_AP]
            e = 0.0
            if bid_px >= pbp:
                e += bid_sz
            if bid_px <= pbp:
                e -= s[S_PREV_BS]
            if ask_px <= pap:
                e -= ask_sz
            if ask_px >= pap:
                e += s[S_PREV_AS]
            s[S_CUM_OFI] += e
        s[S_PREV_BP] = bid_px
        s[S_PREV_BS] = bid_sz
        s[S_PREV_AP] = ask_px
        s[S_PREV_AS] = ask_sz
        s[S_PREV_OK] = 1.0
    else:
        s[S_PREV_OK] = 0.0
    if action == TRADE:
        if price != UNDEF_PRICE:
            _on_trade(s, ts_ns, sec, local, side, price, size, tick)
    elif action == CANCEL:  # a cancel at (or through) the touch depletes its queue
        if side == BID and (bid_sz == 0 or price >= bid_px):
            s[S_CUM_DEPL_BID] += size
        elif side == ASK and (ask_sz == 0 or price <= ask_px):
            s[S_CUM_DEPL_ASK] += size


@njit(cache=True)
def ready(s, ts_ns) -> bool:
    """True once a two-sided book has been seen for the warm-up period."""
    if s[S_HAS_MID] == 0.0:
        return False
    return ts_ns // _NS - s[S_FIRST_SEC] >= WARMUP_S


@njit(cache=True)
def _price_features(s, ring, sec, out):
    mid = s[S_MID]
    c = (sec - 1) % RING  # the last closed second
    k = K_PRICE
    traded = s[S_NTR] > 0  # before the first trade there is no trade-count history
    for j in range(len(TICK_LOOKBACKS)):
        out[k + j] = mid - trades_back(s, TR_MID, TICK_LOOKBACKS[j] - 1) if traded else 0.0
    k += len(TICK_LOOKBACKS)
    for j in range(len(RETURN_HORIZONS_S)):
        # ring[sec - 1 - h] is the state as of (sec - h) s: exactly h seconds before now
        out[k + j] = mid - ring[(sec - 1 - RETURN_HORIZONS_S[j]) % RING, R_MID]
    k += len(RETURN_HORIZONS_S)
    for j, h in enumerate((30, 60, 300)):
        out[k + j] = math.sqrt(ring[c, R_RV] - ring[(sec - 1 - h) % RING, R_RV])
    out[k + 3] = math.sqrt(trades_sum(s, TR_CSQ, 100))
    k += 4
    for j, h in enumerate((60, 300)):
        mean = (ring[c, R_SUMMID] - ring[(sec - 1 - h) % RING, R_SUMMID]) / h
        out[k + j] = mid - mean
    k += 2
    for j, h in enumerate((5, 30)):
        m1 = ring[(sec - 1 - h) % RING, R_MID]
        m2 = ring[(sec - 1 - 2 * h) % RING, R_MID]
        out[k + j] = (mid - m1) - (m1 - m2)
    k += 2
    path = ring[c, R_ABSMOVE] - ring[(sec - 61) % RING, R_ABSMOVE]
    net = abs(ring[c, R_MID] - ring[(sec - 61) % RING, R_MID])
    out[k] = net / path if path > 0 else 0.0


@njit(cache=True, inline="always")
def _imbalance(b, a):
    return (b - a) / (b + a) if b + a > 0 else 0.0


@njit(cache=True, inline="always")
def _slope(depth, px_col, sz_col, tick):
    """log1p of the book's contracts per tick of price across its levels on one side."""
    q = 0.0
    deepest = -1
    for k in range(depth.shape[0]):
        if depth[k, sz_col] > 0:
            q += depth[k, sz_col]
            deepest = k
    if deepest < 0:
        return 0.0
    ticks = abs(depth[deepest, px_col] - depth[0, px_col]) / tick + 1.0
    return math.log1p(q / ticks)


@njit(cache=True)
def _book_features(s, bid_px, ask_px, bid_sz, ask_sz, depth, tick, out):
    k = K_BOOK
    out[k] = (ask_px - bid_px) / tick
    out[k + 1] = _imbalance(bid_sz, ask_sz)
    bq = 0.0
    aq = 0.0
    j = 2
    for lvl in range(depth.shape[0]):
        bq += depth[lvl, 1]
        aq += depth[lvl, 3]
        if lvl == 2 or lvl == 4 or lvl == DEPTH_LEVELS - 1:
            out[k + j] = _imbalance(bq, aq)
            j += 1
    tot = bid_sz + ask_sz
    if tot > 0:
        out[k + 5] = (bid_px * ask_sz + ask_px * bid_sz) / tot / tick - s[S_MID]
    else:
        out[k + 5] = 0.0
    sb = _slope(depth, 0, 1, tick)
    sa = _slope(depth, 2, 3, tick)
    out[k + 6] = sb
    out[k + 7] = sa
    out[k + 8] = _imbalance(sb, sa)
    out[k + 9] = math.log1p(bq + aq)


@njit(cache=True, inline="always")
def _window(s, ring, sec, ch, h):
    """What running total `ch` gained over the last h seconds up to now."""
    return s[S_CUM + ch - R_VOL] - ring[(sec - 1 - h) % RING, ch]


@njit(cache=True)
def _flow_features(s, ring, sec, ts_ns, out):
    k = K_FLOW
    for j in range(len(OFI_HORIZONS_S)):
        out[k + j] = _window(s, ring, sec, R_OFI, OFI_HORIZONS_S[j])
    k += len(OFI_HORIZONS_S)
    # the decayed flow decays to now before it is read; reading changes nothing
    last = s[S_LAST_TRADE_NS]
    dt = (ts_ns - last) / _NS if last > 0 else 0.0
    d10 = math.exp(-dt / _TAU10)
    d60 = math.exp(-dt / _TAU60)
    out[k] = _imbalance(s[S_BUY10] * d10, s[S_SELL10] * d10)
    out[k + 1] = _imbalance(s[S_BUY60] * d60, s[S_SELL60] * d60)
    signed = trades_sum(s, TR_CSIGN, 100)
    vol100 = trades_sum(s, TR_CVOL, 100)
    out[k + 2] = signed / vol100 if vol100 > 0 else 0.0
    out[k + 3] = _imbalance(_window(s, ring, sec, R_BUY, 300), _window(s, ring, sec, R_SELL, 300))
    out[k + 4] = vpin(s)
    out[k + 5] = s[S_TRADES10] * d10 / _TAU10
    n60 = _window(s, ring, sec, R_TRADES, 60)
    v10 = _window(s, ring, sec, R_VOL, 10)
    v60 = _window(s, ring, sec, R_VOL, 60)
    v300 = _window(s, ring, sec, R_VOL, 300)
    out[k + 6] = n60 / 60.0
    out[k + 7] = v60 / n60 if n60 > 0 else 0.0
    out[k + 8] = math.log((v10 / 10.0 + RATE_EPS) / (v300 / 300.0 + RATE_EPS))
    out[k + 9] = math.log1p(v60)
    db = _window(s, ring, sec, R_DEPL_BID, 10) / 10.0
    da = _window(s, ring, sec, R_DEPL_ASK, 10) / 10.0
    out[k + 10] = db
    out[k + 11] = da
    out[k + 12] = _imbalance(db, da)
    out[k + 13] = s[S_PSO]


@njit(cache=True, inline="always")
def tod_norm_rate(s, sec):
    """Volume per second expected at this time of day, from past days only.

    A bucket no past day has shown falls back to this session's own mean rate so far
    (also past-only); 0 when neither exists.
    """
    k = ((sec + int(s[S_UTC_OFF])) // TOD_BUCKET_S) % N_TOD
    if s[TOD_DAYS + k] > 0:
        return s[TOD_NORM + k]
    if s[S_SESSION] >= 0:
        return s[S_SESS_VOL] / (sec - s[S_SESS_START] + 1.0)
    return 0.0


@njit(cache=True)
def _session_features(s, ring, sec, out):
    k = K_SESSION
    mid = s[S_MID]
    vol = s[S_SESS_VOL]
    out[k] = mid - s[S_SESS_PV] / vol if vol > 0 else 0.0
    if s[S_SESS_HAS_MID] != 0.0:
        hi, lo = s[S_SESS_HI], s[S_SESS_LO]
        out[k + 1] = (mid - lo) / (hi - lo) if hi > lo else 0.5
        out[k + 2] = hi - mid
        out[k + 3] = mid - lo
        out[k + 4] = hi - lo
    else:
        out[k + 1] = 0.5
        out[k + 2] = 0.0
        out[k + 3] = 0.0
        out[k + 4] = 0.0
    out[k + 5] = s[S_RANGE_EXP]
    recent = _window(s, ring, sec, R_VOL, 300) / 300.0
    norm = tod_norm_rate(s, sec)
    out[k + 6] = math.log((recent + RATE_EPS) / (norm + RATE_EPS))


@njit(cache=True)
def compute(s, ring, ts_ns, bid_px, ask_px, bid_sz, ask_sz, depth, tick, out):
    """Write the feature vector as of `ts_ns` into `out` (float32[N_FEATURES]).

    `depth` holds the best DEPTH_LEVELS levels per side: rows (bid_px, bid_sz, ask_px,
    ask_sz), as `esml.data.book.l2_levels` writes them.
    """
    if depth.shape[0] != DEPTH_LEVELS:
        raise ValueError("compute needs depth with DEPTH_LEVELS rows")
    sec = ts_ns // _NS
    _roll_seconds(s, ring, sec)
    _price_features(s, ring, sec, out)
    _book_features(s, bid_px, ask_px, bid_sz, ask_sz, depth, tick, out)
    _flow_features(s, ring, sec, ts_ns, out)
    _session_features(s, ring, sec, out)
    time_features(ts_ns, out, K_TIME)
    for j in range(N_BAR_FEATURES):
        out[K_BARS + j] = s[BAR_OUT + j]
