"""A seeded, SYNTHETIC ES order-by-order (L3 / MBO) session: the embedded default's market.

Why: the laptop demo, the tests and the walking skeleton need a market without a data
licence. This generator writes a valid Databento-style CME MBO stream (a snapshot, then
adds, cancels, modifies and trade packets) that the real book reconstruction replays, with
enough microstructure that a short-horizon model has something modest to learn. Every
record carries `PUBLISHER_SYNTHETIC` and a synthetic instrument id, so it can never pass
for exchange data. It stands in for the calibrated queue-reactive simulator and is no
evidence of any edge.

How: a latent "efficient" price follows a regime-switching process (quiet, range-bound
and trending regimes with persistence) with an Ornstein-Uhlenbeck log-volatility, so
volatility clusters, plus a drift from a persistent order-flow pressure (informed flow).
The book follows it through order flow alone. Limit orders arrive near the touch with
geometrically decaying depth, more on the side the latent price and the flow pressure
favour (so L1 imbalance reflects them); every resting order is cancelled at a constant
rate (so cancels scale with queue size); market orders have a persistent sign and lean
toward the latent price, the flow pressure and the side whose opposite queue is thin. So
L1 imbalance and trade-flow imbalance carry real, modest information about the next
10-30 s. A gap in a one-tick spread refills within tens of milliseconds; activity rises
with volatility. Output is fully determined by the arguments (and the platform's libm).

What it does not model: intraday seasonality, auctions, halts, news shocks, implied
(spread) liquidity, icebergs, self-match prevention, ES's real queue sizes and message
rates (queues here are ~10x thinner and events far fewer), cross-asset effects, or any
reaction to our own orders (the exchange simulator handles those).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from esml.market.events import (
    ADD,
    CANCEL,
    CLEAR,
    F_LAST,
    F_SNAPSHOT,
    FILL,
    MODIFY,
    NO_SIDE,
    PUBLISHER_SYNTHETIC,
    TRADE,
    UNDEF_PRICE,
    empty_events,
)
from esml.market.instruments import ES, Instrument
from esml.sim.emit import N_WRITER_WORDS, W_N, W_OVERFLOW, emit, level_price, side_code
from esml.sim.rng import below, normal, uniform

SYNTHETIC_INSTRUMENT_ID = 0xFFFF_FF00
"""No CME instrument id is this high; synthetic streams use it whatever the instrument."""

DEFAULT_START_NS = 1_709_562_600_000_000_000
"""2024-03-04 14:30:00 UTC (08:30 CT, the RTH open), so the seed alone fixes the output."""

MAX_DURATION_S = 86_400.0
ORDER_ID_BASE = 1_000_000_000_000

# latent price (units: ticks and seconds)
REGIME_QUIET, REGIME_RANGE, REGIME_TREND = 0, 1, 2
REGIME_MEAN_S = np.array([600.0, 900.0, 420.0])  # mean time in each regime
REGIME_SIGMA = np.array([0.25, 0.5, 0.65])  # ticks per sqrt(second)
REGIME_KAPPA = np.array([1.0 / 900.0, 1.0 / 600.0, 0.0])  # pull back to the regime's anchor
REGIME_ACTIVITY = np.array([0.6, 1.0, 1.4])
TREND_DRIFT = 0.04  # ticks per second
VOL_TAU_S = 1200.0  # log-volatility OU: memory and stationary sd
VOL_SD = 0.6
FLOW_TAU_S = 60.0  # order-flow pressure: an OU state with unit variance
FLOW_DRIFT = 0.05  # latent drift, ticks per second per unit of pressure: flow is informed
ACTIVITY_VOL_EXPONENT = 0.7

# order flow (events per second at activity 1)
ADD_RATE = 20.0
CANCEL_RATE_PER_ORDER = 0.1
MODIFY_RATE = 2.5
MARKET_RATE = 3.0
MARKET_GAP_BOOST = 0.3  # more market orders while the book lags the latent price
GAP_FILL_RATE = 60.0  # per tick of spread beyond one
ADD_DEPTH_DECAY = 0.8  # P(k ticks behind the own-side best) ~ decay**k
ADD_MAX_LEVEL = 20
ADD_LEAN = 0.45  # liquidity providers quote more on the side the latent price leads...
QUOTE_FLOW_LEAN = 0.6  # ... and on the side flow pressure favours (ticks per unit)
SIGN_GAP = 1.0  # market-order logit per tick of (latent - mid)
SIGN_FLOW = 0.8  # ... per unit of flow pressure
SIGN_IMBALANCE = 1.8  # ... per unit of L1 imbalance (bid - ask) / (bid + ask)
SIGN_PERSIST = 0.3  # ... toward the previous market order's side
GAP_GAIN_MAX = 4.0  # |latent - mid| beyond this adds no more pressure
TOUCH_CANCEL_GAIN = 0.12  # share of cancels aimed at the touch about to be taken
TOUCH_CANCEL_MAX = 0.5
PARTIAL_CANCEL_P = 0.2
MIN_SIDE_ORDERS = 15  # no cancels below this many orders on a side: it never empties
MAX_SWEEP_LEVELS = 4

SNAPSHOT_LEVELS = 12
SNAPSHOT_TOP_ORDERS = 7

# price grid (ticks) about the start price; the latent price reflects off its margins
HALF_GRID = 16_384
GRID_MARGIN = 200
RECORDS_PER_S_GUESS = 100  # buffer sizes; a session that needs more reruns with more room
ORDERS_PER_RECORD_GUESS = 0.5

# kernel array layouts
S_BID, S_ASK = 0, 1
O_LEVEL, O_SIZE, O_SIDE, O_NEXT, O_PREV, O_POS = range(6)  # per order
L_HEAD, L_TAIL, L_COUNT, L_VOLUME = range(4)  # per price level
B_BEST, B_ORDERS, B_VOLUME = 0, 2, 4  # + side: best level, live orders, resting lots
B_LIVE, B_ALLOCATED = 6, 7
X_PRICE, X_ANCHOR, X_LOG_VOL, X_FLOW, X_TREND_DIR, X_REGIME = range(6)  # latent state


def generate_session(
    seed: int,
    *,
    start_ns: int | None = None,
    duration_s: float = 3600.0,
    instrument: Instrument = ES,
    start_price: float = 4800.0,
) -> np.ndarray:
    """A synthetic MBO session (`MBO_DTYPE`) of `duration_s` seconds; same seed, same bytes."""
    start = DEFAULT_START_NS if start_ns is None else start_ns
    _check_args(seed, start, duration_s, instrument, start_price)
    start_tick = round(start_price / instrument.tick_size)
    low_tick = max(1, start_tick - HALF_GRID)
    # emit's layout: C_START_NS, C_LOW_TICK, C_TICK_FIXED
    ctx = np.array([start, low_tick, instrument.tick_fixed], dtype=np.int64)
    state = np.random.SeedSequence(int(seed)).generate_state(4, np.uint64)
    capacity = int(duration_s * RECORDS_PER_S_GUESS) + 10_000
    while True:  # rare: rerun from the same seed with twice the room
        events = empty_events(capacity)
        n = _simulate(
            events,
            int(capacity * ORDERS_PER_RECORD_GUESS),
            state.copy(),
            ctx,
            float(duration_s),
            start_tick - low_tick,
            2 * HALF_GRID + 1,
        )
        if n >= 0:
            break
        capacity *= 2
    out = events[:n].copy()
    out["publisher_id"] = PUBLISHER_SYNTHETIC
    out["instrument_id"] = SYNTHETIC_INSTRUMENT_ID
    out["sequence"] = np.arange(1, n + 1, dtype=np.uint32)
    return out


def _check_args(
    seed: int, start: int, duration_s: float, instrument: Instrument, start_price: float
) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(start, bool) or not isinstance(start, int | np.integer) or start < 0:
        raise ValueError(f"start_ns must be a non-negative int (ns since the epoch), got {start!r}")
    if isinstance(duration_s, bool) or not isinstance(duration_s, int | float):
        raise ValueError(f"duration_s must be a number of seconds, got {duration_s!r}")
    if not 0 < duration_s <= MAX_DURATION_S:  # also refuses NaN
        raise ValueError(f"duration_s must be in (0, {MAX_DURATION_S:.0f}], got {duration_s}")
    if start + int((duration_s + 1.0) * 1e9) >= 2**63:
        raise ValueError(f"start_ns {start} plus the session runs past the int64 ns clock")
    if instrument.tick_fixed <= 0:
        raise ValueError(f"instrument {instrument.root} has no positive tick size")
    if isinstance(start_price, bool) or not isinstance(start_price, int | float):
        raise ValueError(f"start_price must be a number, got {start_price!r}")
    min_price = 2 * GRID_MARGIN * instrument.tick_size
    if not (math.isfinite(start_price) and start_price >= min_price):
        raise ValueError(
            f"start_price must be at least {min_price} ({2 * GRID_MARGIN} ticks) so the book "
            f"stays above zero, got {start_price}"
        )


# ---------------------------------------------------------------- order sizes


@njit(cache=True)
def _limit_size(s: np.ndarray) -> int:
    """Resting order size: mostly 1-3 lots, now and then a block."""
    if uniform(s) < 0.06:
        return 10 + 5 * below(s, 9)
    return min(1 + int(math.log(uniform(s)) / math.log(0.55)), 9)


@njit(cache=True)
def _market_size(s: np.ndarray) -> int:
    """Aggressor size: mostly 1-5 lots, with a heavy (Pareto) tail of large orders."""
    if uniform(s) < 0.05:
        return min(6 + int(10.0 * (uniform(s) ** (-1.0 / 1.5) - 1.0)), 150)
    return min(1 + int(math.log(uniform(s)) / math.log(0.55)), 5)


# ---------------------------------------------------------------- the generator's own book
# Price levels are FIFO queues (doubly linked lists of order slots); `live` lists the
# resting orders so a uniformly random one is O(1) to draw and to remove.


@njit(cache=True)
def _better(side: int, a: int, b: int) -> bool:
    return a > b if side == S_BID else a < b


@njit(cache=True)
def _rescan_best(lv, bk, side: int) -> None:
    """Move a side's best to its nearest non-empty level (the side is never empty)."""
    i = bk[B_BEST + side]
    step = -1 if side == S_BID else 1
    while lv[L_COUNT, i] == 0:
        i += step
    bk[B_BEST + side] = i


@njit(cache=True)
def _enqueue(lv, o, bk, i: int) -> None:
    """Put order i at the back of its level's queue (time priority)."""
    lvl = o[O_LEVEL, i]
    side = o[O_SIDE, i]
    tail = lv[L_TAIL, lvl]
    o[O_PREV, i] = tail
    o[O_NEXT, i] = -1
    if tail >= 0:
        o[O_NEXT, tail] = i
    else:
        lv[L_HEAD, lvl] = i
    lv[L_TAIL, lvl] = i
    lv[L_COUNT, lvl] += 1
    lv[L_VOLUME, lvl] += o[O_SIZE, i]
    bk[B_VOLUME + side] += o[O_SIZE, i]
    if bk[B_ORDERS + side] == 0 or _better(side, lvl, bk[B_BEST + side]):
        bk[B_BEST + side] = lvl
    bk[B_ORDERS + side] += 1


@njit(cache=True)
def _unlink(lv, o, bk, i: int) -> None:
    """Take order i out of its level's queue, keeping the side's best valid."""
    lvl = o[O_LEVEL, i]
    side = o[O_SIDE, i]
    prev, nxt = o[O_PREV, i], o[O_NEXT, i]
    if prev >= 0:
        o[O_NEXT, prev] = nxt
    else:
        lv[L_HEAD, lvl] = nxt
    if nxt >= 0:
        o[O_PREV, nxt] = prev
    else:
        lv[L_TAIL, lvl] = prev
    lv[L_COUNT, lvl] -= 1
    lv[L_VOLUME, lvl] -= o[O_SIZE, i]
    bk[B_VOLUME + side] -= o[O_SIZE, i]
    bk[B_ORDERS + side] -= 1
    if lv[L_COUNT, lvl] == 0 and lvl == bk[B_BEST + side] and bk[B_ORDERS + side] > 0:
        _rescan_best(lv, bk, side)


@njit(cache=True)
def _new_order(lv, o, bk, live, side: int, lvl: int, size: int) -> int:
    i = bk[B_ALLOCATED]
    bk[B_ALLOCATED] = i + 1
    o[O_LEVEL, i] = lvl
    o[O_SIZE, i] = size
    o[O_SIDE, i] = side
    o[O_POS, i] = bk[B_LIVE]
    live[bk[B_LIVE]] = i
    bk[B_LIVE] += 1
    _enqueue(lv, o, bk, i)
    return i


@njit(cache=True)
def _delete_order(lv, o, bk, live, i: int) -> None:
    _unlink(lv, o, bk, i)
    last = live[bk[B_LIVE] - 1]
    live[o[O_POS, i]] = last
    o[O_POS, last] = o[O_POS, i]
    bk[B_LIVE] -= 1


@njit(cache=True)
def _reduce(lv, o, bk, i: int, by: int) -> None:
    """Lower a resting order's size in place: it keeps its queue position."""
    o[O_SIZE, i] -= by
    lv[L_VOLUME, o[O_LEVEL, i]] -= by
    bk[B_VOLUME + o[O_SIDE, i]] -= by


# ---------------------------------------------------------------- the session


@njit(cache=True)
def _simulate(ev, order_cap, rng, ctx, duration_s, start_level, grid) -> int:
    """Fill `ev` with the session; the record count, or -1 when a buffer is too small."""
    cap = len(ev)
    if order_cap < 2 * SNAPSHOT_LEVELS * (SNAPSHOT_TOP_ORDERS + 3) or cap < order_cap:
        return -1
    lv = np.zeros((4, grid), dtype=np.int64)
    lv[L_HEAD, :] = -1
    lv[L_TAIL, :] = -1
    o = np.zeros((6, order_cap), dtype=np.int64)
    live = np.zeros(order_cap, dtype=np.int64)
    fill_order = np.zeros(order_cap, dtype=np.int64)
    fill_qty = np.zeros(order_cap, dtype=np.int64)
    bk = np.zeros(8, dtype=np.int64)
    w = np.zeros(N_WRITER_WORDS, dtype=np.int64)
    _snapshot(ev, w, rng, lv, o, bk, live, ctx, start_level)

    lat = np.zeros(6)
    lat[X_REGIME] = below(rng, 3)
    lat[X_TREND_DIR] = 1.0 if uniform(rng) < 0.5 else -1.0
    lat[X_PRICE] = start_level - 0.5  # in grid ticks: the snapshot's mid
    lat[X_ANCHOR] = lat[X_PRICE]
    lat[X_FLOW] = normal(rng)
    last_sign = 1 if uniform(rng) < 0.5 else -1
    t = 0.0
    while True:
        if w[W_N] + 8 >= cap or bk[B_ALLOCATED] + 1 >= order_cap:
            return -1
        bb, ba = bk[B_BEST + S_BID], bk[B_BEST + S_ASK]
        gap = min(max(lat[X_PRICE] - 0.5 * (bb + ba), -GAP_GAIN_MAX), GAP_GAIN_MAX)
        activity = REGIME_ACTIVITY[int(lat[X_REGIME])] * math.exp(
            ACTIVITY_VOL_EXPONENT * lat[X_LOG_VOL]
        )
        r_gap = GAP_FILL_RATE * (ba - bb - 1)
        r_add = ADD_RATE * activity
        r_cancel = CANCEL_RATE_PER_ORDER * bk[B_LIVE] * activity
        r_modify = MODIFY_RATE * activity
        r_market = MARKET_RATE * activity * (1.0 + MARKET_GAP_BOOST * abs(gap))
        total = r_gap + r_add + r_cancel + r_modify + r_market
        dt = -math.log(uniform(rng)) / total
        t += dt
        if t >= duration_s:
            break
        _advance_latent(lat, rng, dt, GRID_MARGIN, grid - 1 - GRID_MARGIN)
        t_ns = int(t * 1e9)
        pressure = gap + QUOTE_FLOW_LEAN * lat[X_FLOW]
        u = uniform(rng) * total
        if u < r_gap:
            # refill the gap one tick inside, more often on the side the latent price leads
            side = S_BID if uniform(rng) < 1.0 / (1.0 + math.exp(-SIGN_GAP * gap)) else S_ASK
            lvl = bb + 1 if side == S_BID else ba - 1
            _add_limit(ev, w, rng, lv, o, bk, live, ctx, t_ns, side, lvl)
        elif u < r_gap + r_add:
            nb, na = bk[B_ORDERS + S_BID], bk[B_ORDERS + S_ASK]
            p_bid = 0.5 + 0.3 * (na - nb) / (na + nb) + ADD_LEAN * math.tanh(pressure)
            side = S_BID if uniform(rng) < p_bid else S_ASK
            k = min(int(math.log(uniform(rng)) / math.log(ADD_DEPTH_DECAY)), ADD_MAX_LEVEL - 1)
            lvl = bb - k if side == S_BID else ba + k
            if 0 <= lvl < grid:
                _add_limit(ev, w, rng, lv, o, bk, live, ctx, t_ns, side, lvl)
        elif u < r_gap + r_add + r_cancel:
            _cancel(ev, w, rng, lv, o, bk, live, ctx, t_ns, pressure)
        elif u < r_gap + r_add + r_cancel + r_modify:
            _modify(ev, w, rng, lv, o, bk, live, ctx, t_ns, grid)
        else:
            # sign: toward the latent price, the flow pressure and the thin opposite queue
            qb, qa = lv[L_VOLUME, bb], lv[L_VOLUME, ba]
            logit = (
                SIGN_GAP * gap
                + SIGN_FLOW * lat[X_FLOW]
                + SIGN_IMBALANCE * (qb - qa) / (qb + qa)
                + SIGN_PERSIST * last_sign
            )
            buy = uniform(rng) < 1.0 / (1.0 + math.exp(-logit))
            last_sign = 1 if buy else -1
            aggressor = S_BID if buy else S_ASK
            _market_order(ev, w, rng, lv, o, bk, live, fill_order, fill_qty, ctx, t_ns,
                          aggressor, _market_size(rng))  # fmt: skip
        if w[W_OVERFLOW]:
            return -1
    return w[W_N]


@njit(cache=True)
def _snapshot(ev, w, rng, lv, o, bk, live, ctx, start_level: int) -> None:
    """A clear, then a one-tick market about start_level with several orders per level."""
    emit(ev, w, rng, ctx, 0, CLEAR, NO_SIDE, UNDEF_PRICE, 0, 0, F_SNAPSHOT)
    for side in range(2):
        for k in range(SNAPSHOT_LEVELS):
            lvl = start_level - 1 - k if side == S_BID else start_level + k
            for _ in range(2 + below(rng, int(SNAPSHOT_TOP_ORDERS * 0.85**k) + 1)):
                i = _new_order(lv, o, bk, live, side, lvl, _limit_size(rng))
                emit(ev, w, rng, ctx, 0, ADD, side_code(side), level_price(ctx, lvl),
                     o[O_SIZE, i], ORDER_ID_BASE + i, F_SNAPSHOT)  # fmt: skip
    ev[w[W_N] - 1].flags = F_SNAPSHOT | F_LAST


@njit(cache=True)
def _advance_latent(lat, rng, dt: float, lo: float, hi: float) -> None:
    """Regime switch, log-volatility and flow-pressure OU steps, then the price itself."""
    regime = int(lat[X_REGIME])
    if uniform(rng) < -math.expm1(-dt / REGIME_MEAN_S[regime]):
        regime = (regime + 1 + below(rng, 2)) % 3
        lat[X_REGIME] = regime
        lat[X_ANCHOR] = lat[X_PRICE]
        lat[X_TREND_DIR] = 1.0 if uniform(rng) < 0.5 else -1.0
    decay = math.exp(-dt / VOL_TAU_S)
    lat[X_LOG_VOL] = decay * lat[X_LOG_VOL] + VOL_SD * math.sqrt(1.0 - decay**2) * normal(rng)
    decay = math.exp(-dt / FLOW_TAU_S)
    lat[X_FLOW] = decay * lat[X_FLOW] + math.sqrt(1.0 - decay**2) * normal(rng)
    vol = math.exp(lat[X_LOG_VOL])
    sigma = REGIME_SIGMA[regime] * vol * math.exp(-0.5 * VOL_SD**2)
    drift = TREND_DRIFT * lat[X_TREND_DIR] if regime == REGIME_TREND else 0.0
    drift += FLOW_DRIFT * lat[X_FLOW] * vol - REGIME_KAPPA[regime] * (lat[X_PRICE] - lat[X_ANCHOR])
    price = lat[X_PRICE] + drift * dt + sigma * math.sqrt(dt) * normal(rng)
    if price < lo:
        price = 2.0 * lo - price
    elif price > hi:
        price = 2.0 * hi - price
    lat[X_PRICE] = price


@njit(cache=True)
def _add_limit(ev, w, rng, lv, o, bk, live, ctx, t_ns, side: int, lvl: int) -> None:
    i = _new_order(lv, o, bk, live, side, lvl, _limit_size(rng))
    emit(ev, w, rng, ctx, t_ns, ADD, side_code(side), level_price(ctx, lvl), o[O_SIZE, i],
         ORDER_ID_BASE + i, F_LAST)  # fmt: skip


@njit(cache=True)
def _cancel(ev, w, rng, lv, o, bk, live, ctx, t_ns, pressure: float) -> None:
    """Cancel a random resting order (so cancels scale with queue size); under pressure,
    some cancels pull the touch that is about to be taken."""
    if uniform(rng) < min(TOUCH_CANCEL_MAX, TOUCH_CANCEL_GAIN * abs(pressure)):
        side = S_ASK if pressure > 0 else S_BID
        lvl = bk[B_BEST + side]
        i = lv[L_HEAD, lvl]
        for _ in range(below(rng, lv[L_COUNT, lvl])):
            i = o[O_NEXT, i]
    else:
        i = live[below(rng, bk[B_LIVE])]
        side = o[O_SIDE, i]
    if bk[B_ORDERS + side] <= MIN_SIDE_ORDERS:
        return
    size = o[O_SIZE, i]
    price = level_price(ctx, o[O_LEVEL, i])
    if size > 1 and uniform(rng) < PARTIAL_CANCEL_P:
        qty = 1 + below(rng, size - 1)
        _reduce(lv, o, bk, i, qty)
    else:
        qty = size
        _delete_order(lv, o, bk, live, i)
    emit(ev, w, rng, ctx, t_ns, CANCEL, side_code(side), price, qty, ORDER_ID_BASE + i, F_LAST)


@njit(cache=True)
def _modify(ev, w, rng, lv, o, bk, live, ctx, t_ns, grid: int) -> None:
    """Shrink (keeps priority), grow or re-price (both lose priority) a random order,
    never across the other side's touch."""
    i = live[below(rng, bk[B_LIVE])]
    side = o[O_SIDE, i]
    size = o[O_SIZE, i]
    u = uniform(rng)
    if u < 0.4:
        if size <= 1:
            return
        _reduce(lv, o, bk, i, 1 + below(rng, size - 1))
    else:
        new_size = size + 1 + below(rng, 3) if u < 0.7 else size
        new_lvl = o[O_LEVEL, i]
        if u >= 0.7:
            new_lvl += (1 + below(rng, 2)) * (1 if uniform(rng) < 0.5 else -1)
            if new_lvl < 0 or new_lvl >= grid:
                return
            if side == S_BID and new_lvl >= bk[B_BEST + S_ASK]:
                return
            if side == S_ASK and new_lvl <= bk[B_BEST + S_BID]:
                return
        _unlink(lv, o, bk, i)
        o[O_LEVEL, i] = new_lvl
        o[O_SIZE, i] = new_size
        _enqueue(lv, o, bk, i)
    emit(ev, w, rng, ctx, t_ns, MODIFY, side_code(side), level_price(ctx, o[O_LEVEL, i]),
         o[O_SIZE, i], ORDER_ID_BASE + i, F_LAST)  # fmt: skip


@njit(cache=True)
def _market_order(ev, w, rng, lv, o, bk, live, fill_order, fill_qty, ctx, t_ns,
                  aggressor: int, qty: int) -> None:  # fmt: skip
    """One packet, as CME sends it: per level a 'T' (aggressor side) then an 'F' per resting
    order hit in queue order; then each hit order's book update, 'C' when filled, 'M'
    when partly filled; F_LAST on the packet's last record. Never empties a side."""
    rest = 1 - aggressor
    step = -1 if rest == S_BID else 1
    available = 0
    seen = 0
    lvl = bk[B_BEST + rest]
    while seen < MAX_SWEEP_LEVELS and available < bk[B_VOLUME + rest]:
        if lv[L_COUNT, lvl] > 0:
            available += lv[L_VOLUME, lvl]
            seen += 1
        lvl += step
    remaining = min(qty, available, bk[B_VOLUME + rest] - 1)
    n_fills = 0
    lvl = bk[B_BEST + rest]
    while remaining > 0:
        while lv[L_COUNT, lvl] == 0:
            lvl += step
        price = level_price(ctx, lvl)
        trade = emit(ev, w, rng, ctx, t_ns, TRADE, side_code(aggressor), price, 0, 0, 0)
        traded = 0
        i = lv[L_HEAD, lvl]
        while i >= 0 and remaining > 0:
            q = min(remaining, o[O_SIZE, i])
            emit(ev, w, rng, ctx, t_ns, FILL, side_code(rest), price, q, ORDER_ID_BASE + i, 0)
            fill_order[n_fills] = i
            fill_qty[n_fills] = q
            n_fills += 1
            remaining -= q
            traded += q
            i = o[O_NEXT, i]
        if trade >= 0:
            ev[trade].size = traded
        lvl += step
    last = -1
    for f in range(n_fills):
        i = fill_order[f]
        price = level_price(ctx, o[O_LEVEL, i])
        if fill_qty[f] == o[O_SIZE, i]:
            last = emit(ev, w, rng, ctx, t_ns, CANCEL, side_code(rest), price, o[O_SIZE, i],
                        ORDER_ID_BASE + i, 0)  # fmt: skip
            _delete_order(lv, o, bk, live, i)
        else:
            _reduce(lv, o, bk, i, fill_qty[f])
            last = emit(ev, w, rng, ctx, t_ns, MODIFY, side_code(rest), price, o[O_SIZE, i],
                        ORDER_ID_BASE + i, 0)  # fmt: skip
    if last >= 0:
        ev[last].flags = F_LAST
