"""A SYNTHETIC ES market: the queue-reactive order book, calibrated from real CME MBO data.

Why: models, gates and the exchange simulator need days of ES-like order flow that no
licence restricts, with the microstructure of the real book rather than a guess. Following
Huang, Lehalle & Rosenbaum (2015, "the queue-reactive model"), the book is a set of queues
on each side of a reference price p_ref; the intensities of limit orders, cancels,
reprices and market orders at each queue depend on that queue's size in units of its
average event size, as calibrated by `esml.sim.qr_calibration` from the real file. When
the first queue on a side is depleted, p_ref follows it with probability theta, and then,
with probability theta_reinit, the book re-centres: every queue is redrawn from its
calibrated size distribution. A latent order-flow pressure (an OU process, fitted to the
data's 1-minute volatility) leans market-order signs and liquidity, since the memoryless
queue model alone moves the price too little. Three layers the calibration hour cannot
identify are stated assumptions (`QRParams.regimes`, `.intraday`, `.shocks`): a hidden
Markov chain of regimes (trend, range, quiet) scaling all activity and adding pressure;
the intraday activity curve of the CME day; and rare shocks, bursts of one-sided market
orders while the side they hit thins out.

Output: `MBO_DTYPE` records (a snapshot, then adds, cancels, modifies and CME-style trade
packets, each order with its id) that esml's L3 book replays uncrossed with every trade at
the touch; every record is labelled `PUBLISHER_SYNTHETIC` with a synthetic instrument id.
Same seed, same bytes. No evidence of any edge.

Where it departs from the real data: nothing happens beyond `k_levels` ticks from p_ref
(about a fifth of the real file's order flow is deeper) and orders left there by a moving
price stay untouched until it returns; a market order never walks past the touch, so
large prints are rarer; p_ref moves about half as often per unit of activity as in the
calibration hour (the pressure makes up the volatility, not the count of moves); sizes and
intensities are those of one thin holiday hour scaled by the intraday curve; no auctions,
halts, implied liquidity, icebergs or reaction to our own orders.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np
from numba import njit

from esml.market.calendar import CHICAGO, DAY_START, is_trading_date, session_bounds
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
from esml.market.instruments import instrument_for
from esml.sim.emit import (
    N_CONTEXT_WORDS,
    N_WRITER_WORDS,
    W_N,
    W_OVERFLOW,
    emit,
    level_price,
    side_code,
)
from esml.sim.qr_params import REGIMES, QRParams, default_params
from esml.sim.rng import below, draw, exponential, normal, uniform
from esml.sim.slow_dynamics import activity_curve
from esml.sim.synthetic import SYNTHETIC_INSTRUMENT_ID

NS = 1_000_000_000
GRID = 1 << 14  # price levels the generator can reach: +-2048 points about the open
GRID_MARGIN = 64  # p_ref never moves closer than this to the grid's ends
ORDER_ID_BASE = 1_000_000_000_000
MAX_PRESSURE = 0.95  # |regime + order-flow pressure| is capped here
MIN_SIDE_ORDERS = 10  # no cancel, reprice or trade thins a side below this many orders
OPEN_WALK_ANCHOR = date(2000, 1, 3)  # the daily opening-price walk starts here
OPEN_WALK_PERSISTENCE = 0.995  # AR(1) per business day: levels wander, never explode
CAPACITY_MARGIN = 1.8  # event buffer: this times the records the mean activity makes

# layouts of the small arrays handed to the kernel
(P_THETA, P_THETA_REINIT, P_PARTIAL, P_DURATION, P_DAY_OFFSET, P_TREND, P_RANGE_KAPPA,
 P_RANGE_MAX, P_SIGN_GAIN, P_LIQ_GAIN, P_SHOCK_RATE, P_SHOCK_DUR, P_SHOCK_MKT, P_SHOCK_CAN,
 P_SHOCK_ADD, P_SHOCK_THETA, P_FLOW_SD, P_FLOW_TAU) = range(18)  # fmt: skip
N_SCALARS = 18
C_START_LEVEL = N_CONTEXT_WORDS  # ctx: emit's words, then p_ref's level at the start
W_NEXT_ID = N_WRITER_WORDS  # w: emit's words, then the next order id
S_REF_CHANGES, S_DEPLETIONS, S_REINITS, S_REGIME_SWITCHES, S_SHOCKS = range(5)
N_STATS = 5
TRACE_CAP = 4096  # regime switches and shocks recorded per run


@dataclass(frozen=True)
class Generated:
    """A generated span: the events and the hidden state that drove them (for checks)."""

    events: np.ndarray
    regime_ns: np.ndarray  # when each regime began (the first at the start)
    regime: np.ndarray  # index into REGIMES
    shock_ns: np.ndarray  # (start, end) of each shock
    shock_side: np.ndarray  # 0: hit the bid (down), 1: hit the ask (up)
    ref_price_changes: int
    touch_depletions: int  # first queues emptied; theta of them moved the price
    reinits: int
    mean_depth: np.ndarray  # time-averaged contracts per queue 1..k, both sides pooled
    open_price: float


# ---------------------------------------------------------------- public API


def generate_day(
    seed: int,
    trading_date: str | date,
    *,
    params: QRParams | None = None,
    start: str = "17:00",
    hours: float = 23.0,
) -> np.ndarray:
    """One CME trade date of synthetic ES MBO events (`MBO_DTYPE`), from `start` (Chicago
    time; 17:00 and later is the evening before) for `hours`, ending at the day's close at
    the latest. The same (seed, date, start, hours, params) always gives the same bytes."""
    return generate(seed, trading_date, params=params, start=start, hours=hours).events


def generate_days(
    seed: int, n_days: int, start_date: str | date, *, params: QRParams | None = None
) -> Iterator[tuple[date, np.ndarray]]:
    """`n_days` consecutive CME trade dates from `start_date` on (weekends and holidays
    skipped), each exactly as `generate_day(seed, that_date)` makes it."""
    if isinstance(n_days, bool) or not isinstance(n_days, int) or n_days < 0:
        raise ValueError(f"n_days must be a non-negative int, got {n_days!r}")
    d = _as_date(start_date)
    params = params or default_params()
    made = 0
    while made < n_days:
        if is_trading_date(d):
            yield d, generate_day(seed, d, params=params)
            made += 1
        d += timedelta(days=1)


def generate(
    seed: int,
    trading_date: str | date,
    *,
    params: QRParams | None = None,
    start: str = "17:00",
    hours: float = 23.0,
) -> Generated:
    """`generate_day` with the hidden regimes and shocks returned beside the events."""
    params = params or default_params()
    _check_seed(seed)
    day = _as_date(trading_date)
    if not is_trading_date(day):
        raise ValueError(f"{day} is not a CME equity trade date (weekend or holiday)")
    start_utc, offset_s, duration_s = _span(day, start, hours)
    open_price = opening_price(seed, day, params)
    state = np.random.SeedSequence([int(seed), day.toordinal(), int(offset_s)]).generate_state(
        4, np.uint64
    )
    activity = activity_curve(seed, day, params.slow) if params.slow else None
    return simulate(state, params, start_ns=start_utc, duration_s=duration_s,
                    day_offset_s=offset_s, open_price=open_price,
                    activity=activity)  # fmt: skip


def opening_price(seed: int, day: date, params: QRParams) -> float:
    """The day's opening price: a seeded, slowly mean-reverting walk of the log price over
    business days (daily sd `daily_open_vol`), so days differ in level as real ones do yet
    each depends only on (seed, date)."""
    steps = int(np.busday_count(OPEN_WALK_ANCHOR, day)) if day > OPEN_WALK_ANCHOR else 0
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 0x0FE7])))
    shocks = rng.standard_normal(steps)
    weights = OPEN_WALK_PERSISTENCE ** np.arange(steps)[::-1]
    log_level = params.daily_open_vol * float(weights @ shocks)
    tick = params.tick_size
    return round(params.start_price * math.exp(log_level) / tick) * tick


# ---------------------------------------------------------------- argument checks


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


def _as_date(d: str | date) -> date:
    if isinstance(d, datetime):
        raise ValueError(f"give a date, not a datetime: {d!r}")
    if isinstance(d, date):
        return d
    if isinstance(d, str):
        try:
            return date.fromisoformat(d)
        except ValueError as e:
            raise ValueError(f"trading date must be YYYY-MM-DD, got {d!r}") from e
    raise ValueError(f"trading date must be a date or YYYY-MM-DD, got {d!r}")


def _span(day: date, start: str, hours: float) -> tuple[int, float, float]:
    """(start ns UTC, seconds after the day's 17:00 CT open, duration s) of a request."""
    try:
        at = time.fromisoformat(start)
    except (TypeError, ValueError) as e:
        raise ValueError(f"start must be HH:MM Chicago time, got {start!r}") from e
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not hours > 0:
        raise ValueError(f"hours must be a positive number, got {hours!r}")
    evening = day - timedelta(days=1)
    day_open = datetime.combine(evening, DAY_START, tzinfo=CHICAGO)
    begin = datetime.combine(evening if at >= DAY_START else day, at, tzinfo=CHICAGO)
    offset_s = (begin - day_open).total_seconds()
    _, close_ns = session_bounds(day)
    begin_ns = int(begin.timestamp()) * NS + begin.microsecond * 1000
    if begin_ns >= close_ns:
        raise ValueError(f"start {start} CT is at or after {day}'s close")
    duration_s = min(float(hours) * 3600.0, (close_ns - begin_ns) / NS)
    return begin_ns, offset_s, duration_s


# ---------------------------------------------------------------- the run


def simulate(
    state: np.ndarray,
    params: QRParams,
    *,
    start_ns: int,
    duration_s: float,
    day_offset_s: float,
    open_price: float,
    layers: bool = True,
    activity: tuple[np.ndarray, np.ndarray] | None = None,
) -> Generated:
    """Run the compiled generator from a 4-word xoshiro state. `layers=False` switches off
    the assumed layers (regimes, the intraday curve, shocks) and keeps what was calibrated:
    the queue-reactive tables, theta, theta_reinit and the order-flow pressure. `activity`
    (knots in seconds after 17:00 CT, factors; `esml.sim.slow_dynamics`) replaces the
    intraday curve when the layers are on."""
    inst = instrument_for(params.instrument)  # QRParams checked its tick
    start_tick = round(open_price / params.tick_size)
    low_tick = start_tick - GRID // 2
    if low_tick < 1:
        raise ValueError(f"open price {open_price} is too low for the price grid")
    ctx = np.array([start_ns, low_tick, inst.tick_fixed, GRID // 2], np.int64)
    t = _tables(params)
    scal, knots_s, factor, reg_mean, reg_cdf, reg_act = _layers(
        params, duration_s, day_offset_s, layers
    )
    if layers and activity is not None:
        knots_s, factor = (np.asarray(a, np.float64) for a in activity)
    capacity = _capacity_guess(params, knots_s, factor, day_offset_s, duration_s)
    order_cap = 1 << 16
    while True:  # rare: rerun from the same state with twice the room
        ev = empty_events(capacity)
        stats = np.zeros(N_STATS, np.int64)
        depth = np.zeros(params.k_levels)
        reg_trace = np.zeros((TRACE_CAP, 2), np.int64)
        shock_trace = np.zeros((TRACE_CAP, 3), np.int64)
        n = _simulate(ev, state.copy(), ctx, scal, *t, knots_s, factor, reg_mean, reg_cdf,
                      reg_act, order_cap, stats, reg_trace, shock_trace, depth)  # fmt: skip
        if n >= 0:
            break
        capacity *= 2
        order_cap *= 2
    out = ev[:n].copy()
    out["publisher_id"] = PUBLISHER_SYNTHETIC
    out["instrument_id"] = SYNTHETIC_INSTRUMENT_ID
    out["sequence"] = np.arange(1, n + 1, dtype=np.uint32)
    n_reg = min(int(stats[S_REGIME_SWITCHES]) + 1, TRACE_CAP)
    n_shock = min(int(stats[S_SHOCKS]), TRACE_CAP)
    return Generated(
        events=out,
        regime_ns=reg_trace[:n_reg, 0] + start_ns,
        regime=reg_trace[:n_reg, 1].copy(),
        shock_ns=shock_trace[:n_shock, :2] + start_ns,
        shock_side=shock_trace[:n_shock, 2].copy(),
        ref_price_changes=int(stats[S_REF_CHANGES]),
        touch_depletions=int(stats[S_DEPLETIONS]),
        reinits=int(stats[S_REINITS]),
        mean_depth=depth / (2.0 * duration_s),
        open_price=open_price,
    )


def _cdf(p) -> np.ndarray:
    c = np.cumsum(np.asarray(p, dtype=np.float64), axis=-1)
    return c / c[..., -1:]


def _tables(p: QRParams) -> tuple[np.ndarray, ...]:
    aes = np.asarray(p.aes, np.float64)
    return (
        np.asarray(p.limit_rate, np.float64),
        np.asarray(p.cancel_rate, np.float64),
        np.asarray(p.move_rate, np.float64),
        np.asarray(p.market_rate, np.float64),
        aes,
        _cdf(p.move_destination),
        _cdf(p.queue_pmf),
        _cdf(p.add_size_pmf),
        _cdf(p.market_size_pmf),
    )


def _layers(p: QRParams, duration_s: float, day_offset_s: float, on: bool):
    r, s = p.regimes, p.shocks
    scal = np.zeros(N_SCALARS)
    scal[P_THETA] = p.theta
    scal[P_THETA_REINIT] = p.theta_reinit
    scal[P_PARTIAL] = p.partial_cancel_prob
    scal[P_DURATION] = duration_s
    scal[P_DAY_OFFSET] = day_offset_s
    scal[P_SIGN_GAIN] = r.market_sign_gain
    scal[P_LIQ_GAIN] = r.liquidity_gain
    scal[P_FLOW_SD] = p.flow_pressure_sd
    scal[P_FLOW_TAU] = p.flow_tau_s
    if on:
        scal[P_TREND] = r.trend_pressure
        scal[P_RANGE_KAPPA] = r.range_reversion_per_tick
        scal[P_RANGE_MAX] = r.range_max_pressure
        scal[P_SHOCK_RATE] = s.rate_per_hour / 3600.0
    scal[P_SHOCK_DUR] = s.mean_duration_s
    scal[P_SHOCK_MKT] = s.market_multiplier
    scal[P_SHOCK_CAN] = s.cancel_multiplier
    scal[P_SHOCK_ADD] = s.add_multiplier
    scal[P_SHOCK_THETA] = s.theta
    if on:
        knots_s = np.asarray(p.intraday.minutes, np.float64) * 60.0
        factor = np.asarray(p.intraday.factor, np.float64)
        reg_act = np.asarray(r.activity, np.float64)
    else:
        knots_s = np.array([0.0, 1e9])
        factor = np.ones(2)
        reg_act = np.ones(len(REGIMES))
    return (scal, knots_s, factor, np.asarray(r.mean_duration_s, np.float64),
            _cdf(r.transition), reg_act)  # fmt: skip


def _capacity_guess(p, knots_s, factor, offset_s, duration_s) -> int:
    """Room for the records of a run: an overflow reruns it with twice the room, so the
    margin covers what regimes and book states add to the records per unit of activity."""
    per_s = p.calibration.records_per_s if p.calibration else 20.0
    x = np.linspace(offset_s, offset_s + duration_s, 2000)
    activity = float(np.interp(x, knots_s, factor).mean())
    return int(per_s * activity * duration_s * CAPACITY_MARGIN) + 50_000


# ---------------------------------------------------------------- the generator's own book
# Levels are FIFO queues (doubly linked lists of order slots); freed slots are reused.
L_HEAD, L_TAIL, L_COUNT, L_VOLUME = range(4)
O_LEVEL, O_SIZE, O_SIDE, O_NEXT, O_PREV, O_ID = range(6)
B_BEST, B_ORDERS, B_FREE_TOP, B_H = 0, 2, 4, 5  # B_BEST + side, B_ORDERS + side


@njit(cache=True)
def _level(h: int, side: int, i: int) -> int:
    """Price level of queue i (0-based) on a side: bids at and below h, asks above."""
    return h - i if side == 0 else h + 1 + i


@njit(cache=True)
def _push(lv, o, bk, i: int) -> None:
    """Order i joins the back of its level's queue (time priority)."""
    lvl, side = o[O_LEVEL, i], o[O_SIDE, i]
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
    best = bk[B_BEST + side]
    if bk[B_ORDERS + side] == 0 or (lvl > best if side == 0 else lvl < best):
        bk[B_BEST + side] = lvl
    bk[B_ORDERS + side] += 1


@njit(cache=True)
def _unlink(lv, o, bk, i: int) -> None:
    """Order i leaves its queue; the side's best moves on when its level empties."""
    lvl, side = o[O_LEVEL, i], o[O_SIDE, i]
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
    bk[B_ORDERS + side] -= 1
    if lv[L_COUNT, lvl] == 0 and lvl == bk[B_BEST + side] and bk[B_ORDERS + side] > 0:
        step = -1 if side == 0 else 1
        while lv[L_COUNT, lvl] == 0:
            lvl += step
        bk[B_BEST + side] = lvl


@njit(cache=True)
def _new_order(lv, o, bk, free, w, side: int, lvl: int, size: int) -> int:
    bk[B_FREE_TOP] -= 1
    i = free[bk[B_FREE_TOP]]
    o[O_LEVEL, i] = lvl
    o[O_SIZE, i] = size
    o[O_SIDE, i] = side
    o[O_ID, i] = w[W_NEXT_ID]
    w[W_NEXT_ID] += 1
    _push(lv, o, bk, i)
    return i


@njit(cache=True)
def _drop_order(lv, o, bk, free, i: int) -> None:
    _unlink(lv, o, bk, i)
    free[bk[B_FREE_TOP]] = i
    bk[B_FREE_TOP] += 1


@njit(cache=True)
def _pick(lv, o, rng, lvl: int) -> int:
    """A uniformly random order of a non-empty level."""
    i = lv[L_HEAD, lvl]
    for _ in range(below(rng, lv[L_COUNT, lvl])):
        i = o[O_NEXT, i]
    return i


# ---------------------------------------------------------------- events


@njit(cache=True)
def _limit(ev, w, rng, ctx, lv, o, bk, free, add_cdf, t_ns, side, lvl) -> None:
    """A new order at the back of a queue, its size drawn from that queue's sizes."""
    i = _new_order(lv, o, bk, free, w, side, lvl, 1 + draw(rng, add_cdf))
    emit(ev, w, rng, ctx, t_ns, ADD, side_code(side), level_price(ctx, lvl), o[O_SIZE, i],
         o[O_ID, i], F_LAST)  # fmt: skip


@njit(cache=True)
def _cancel(ev, w, rng, ctx, lv, o, bk, free, partial_p, t_ns, side, lvl) -> None:
    """Cancel a random order of the queue, or (CME: a modify down) part of it."""
    i = _pick(lv, o, rng, lvl)
    size = o[O_SIZE, i]
    price = level_price(ctx, lvl)
    if size > 1 and uniform(rng) < partial_p:
        left = 1 + below(rng, size - 1)
        o[O_SIZE, i] = left
        lv[L_VOLUME, lvl] -= size - left
        emit(ev, w, rng, ctx, t_ns, MODIFY, side_code(side), price, left, o[O_ID, i], F_LAST)
    else:
        emit(ev, w, rng, ctx, t_ns, CANCEL, side_code(side), price, size, o[O_ID, i], F_LAST)
        _drop_order(lv, o, bk, free, i)


@njit(cache=True)
def _move(ev, w, rng, ctx, lv, o, bk, t_ns, side, lvl, new_lvl) -> None:
    """Reprice a random order of the queue: it joins the back of its new queue."""
    i = _pick(lv, o, rng, lvl)
    _unlink(lv, o, bk, i)
    o[O_LEVEL, i] = new_lvl
    _push(lv, o, bk, i)
    emit(ev, w, rng, ctx, t_ns, MODIFY, side_code(side), level_price(ctx, new_lvl),
         o[O_SIZE, i], o[O_ID, i], F_LAST)  # fmt: skip


@njit(cache=True)
def _market(ev, w, rng, ctx, lv, o, bk, free, fills, t_ns, side, qty) -> None:
    """A market order against the touch of `side`, as CME sends it: a trade record
    (aggressor side), a fill per resting order hit in queue order, then each hit order's
    book update ('C' when filled, 'M' when partly filled), F_LAST on the packet's last."""
    lvl = bk[B_BEST + side]
    price = level_price(ctx, lvl)
    qty = min(qty, lv[L_VOLUME, lvl])
    if bk[B_ORDERS + side] - lv[L_COUNT, lvl] < MIN_SIDE_ORDERS:  # keep the side alive
        qty = min(qty, lv[L_VOLUME, lvl] - o[O_SIZE, lv[L_TAIL, lvl]])
    if qty <= 0:
        return
    aggressor = w[W_NEXT_ID]
    w[W_NEXT_ID] += 1
    emit(ev, w, rng, ctx, t_ns, TRADE, side_code(1 - side), price, qty, aggressor, 0)
    n = 0
    i = lv[L_HEAD, lvl]
    left = qty
    while left > 0:
        q = min(left, o[O_SIZE, i])
        emit(ev, w, rng, ctx, t_ns, FILL, side_code(side), price, q, o[O_ID, i], 0)
        fills[n, 0] = i
        fills[n, 1] = q
        n += 1
        left -= q
        i = o[O_NEXT, i]
    last = -1
    for f in range(n):
        i, q = fills[f, 0], fills[f, 1]
        if q == o[O_SIZE, i]:
            last = emit(ev, w, rng, ctx, t_ns, CANCEL, side_code(side), price, q, o[O_ID, i], 0)
            _drop_order(lv, o, bk, free, i)
        else:
            o[O_SIZE, i] -= q
            lv[L_VOLUME, lvl] -= q
            last = emit(ev, w, rng, ctx, t_ns, MODIFY, side_code(side), price, o[O_SIZE, i],
                        o[O_ID, i], 0)  # fmt: skip
    if last >= 0:
        ev[last].flags = F_LAST


@njit(cache=True)
def _fill_queue(ev, w, rng, ctx, lv, o, bk, free, add_cdf, t_ns, side, lvl, target, flags):
    """Bring a queue to about `target` contracts: adds at the back, or cancels from it."""
    if lv[L_VOLUME, lvl] < target:
        while lv[L_VOLUME, lvl] < target:
            i = _new_order(lv, o, bk, free, w, side, lvl, 1 + draw(rng, add_cdf))
            emit(ev, w, rng, ctx, t_ns, ADD, side_code(side), level_price(ctx, lvl),
                 o[O_SIZE, i], o[O_ID, i], flags)  # fmt: skip
        return
    while (lv[L_VOLUME, lvl] > target and lv[L_COUNT, lvl] > 0
           and bk[B_ORDERS + side] > MIN_SIDE_ORDERS):  # fmt: skip
        i = lv[L_TAIL, lvl]
        emit(ev, w, rng, ctx, t_ns, CANCEL, side_code(side), level_price(ctx, lvl),
             o[O_SIZE, i], o[O_ID, i], flags)  # fmt: skip
        _drop_order(lv, o, bk, free, i)


@njit(cache=True)
def _redraw_book(ev, w, rng, ctx, lv, o, bk, free, aes, qpmf_cdf, add_cdf, t_ns, flags,
                 touch_filled) -> None:  # fmt: skip
    """Every modelled queue redrawn from its calibrated size distribution: the snapshot
    (`touch_filled`: a one-tick market to start from), and the book re-centring on the
    reference price after it moved (HLR's theta_reinit)."""
    h = bk[B_H]
    for side in range(2):
        for i in range(len(aes)):
            n = draw(rng, qpmf_cdf[i])
            while touch_filled and i == 0 and n == 0:
                n = draw(rng, qpmf_cdf[i])
            target = 0 if n == 0 else max(1, math.ceil((n - uniform(rng)) * aes[i]))
            _fill_queue(ev, w, rng, ctx, lv, o, bk, free, add_cdf[i], t_ns, side,
                        _level(h, side, i), target, flags)  # fmt: skip


# ---------------------------------------------------------------- the run


@njit(cache=True)
def _activity(knots_s, factor, kp, td):
    """The intraday factor at td seconds into the day; kp walks forward with time."""
    while kp < len(knots_s) - 2 and td >= knots_s[kp + 1]:
        kp += 1
    x = (td - knots_s[kp]) / (knots_s[kp + 1] - knots_s[kp])
    x = min(max(x, 0.0), 1.0)
    return factor[kp] + (factor[kp + 1] - factor[kp]) * x, kp


@njit(cache=True)
def _simulate(ev, rng, ctx, scal, lim, can, mov, mkt, aes, move_cdf, qpmf_cdf, add_cdf, mkt_cdf,
              knots_s, factor, reg_mean, reg_cdf, reg_act, order_cap, stats, reg_trace,
              shock_trace, depth) -> int:  # fmt: skip
    """Fill `ev`; the record count, or -1 when a buffer is too small (rerun with more)."""
    k = len(aes)
    n_max = lim.shape[1] - 1
    inv_aes = 1.0 / aes
    lv = np.zeros((4, GRID), np.int64)
    lv[L_HEAD, :] = -1
    lv[L_TAIL, :] = -1
    o = np.zeros((6, order_cap), np.int64)
    free = np.arange(order_cap - 1, -1, -1).astype(np.int64)
    bk = np.zeros(6, np.int64)
    bk[B_FREE_TOP] = order_cap
    bk[B_H] = ctx[C_START_LEVEL]
    w = np.zeros(W_NEXT_ID + 1, np.int64)
    w[W_NEXT_ID] = ORDER_ID_BASE
    fills = np.zeros((512, 2), np.int64)
    rates = np.zeros(6 * k + 2)
    vols = np.zeros(k)
    madd = np.ones(2)
    mcan = np.ones(2)
    mmkt = np.ones(2)
    room = 8 * (k * (n_max + 2) * int(aes.max() + 1) + 512)  # the most one step can write
    if len(ev) < room + 16 or order_cap < room:
        return -1

    emit(ev, w, rng, ctx, 0, CLEAR, NO_SIDE, UNDEF_PRICE, 0, 0, F_SNAPSHOT)
    _redraw_book(ev, w, rng, ctx, lv, o, bk, free, aes, qpmf_cdf, add_cdf, 0, F_SNAPSHOT, True)
    ev[w[W_N] - 1].flags = F_SNAPSHOT | F_LAST

    theta, theta_reinit, partial_p = scal[P_THETA], scal[P_THETA_REINIT], scal[P_PARTIAL]
    duration, offset = scal[P_DURATION], scal[P_DAY_OFFSET]
    regime = below(rng, 3)
    next_switch = exponential(rng) * reg_mean[regime]
    direction = 1.0 if uniform(rng) < 0.5 else -1.0
    anchor = bk[B_H]
    reg_trace[0, 0] = 0
    reg_trace[0, 1] = regime
    kp = 0
    u_day, kp = _activity(knots_s, factor, kp, offset)
    shock_rate = scal[P_SHOCK_RATE]  # per second of intraday activity: busy hours see more
    shock_clock = 0.0
    next_shock = exponential(rng) / shock_rate if shock_rate > 0 else np.inf
    shock_end = -1.0
    shock_side = 0
    flow_sd = scal[P_FLOW_SD]
    flow = flow_sd * normal(rng)
    flow_clock = 0.0
    t = 0.0
    while True:
        if w[W_N] + room >= len(ev) or bk[B_FREE_TOP] < room:
            return -1
        h = bk[B_H]
        u_day, kp = _activity(knots_s, factor, kp, offset + t)
        # regime pressure (> 0 pushes the price up) and the multipliers it sets
        if regime == 0:
            pressure = direction * scal[P_TREND]
        elif regime == 1:
            pressure = -scal[P_RANGE_KAPPA] * (h - anchor)
            pressure = min(max(pressure, -scal[P_RANGE_MAX]), scal[P_RANGE_MAX])
        else:
            pressure = 0.0
        pressure = min(max(pressure + flow, -MAX_PRESSURE), MAX_PRESSURE)
        lg, sg = scal[P_LIQ_GAIN] * pressure, scal[P_SIGN_GAIN] * pressure
        madd[0], madd[1] = 1.0 + lg, 1.0 - lg
        mcan[0], mcan[1] = 1.0 - lg, 1.0 + lg
        mmkt[0], mmkt[1] = 1.0 - sg, 1.0 + sg  # hitting the bid = sells
        shocked = t < shock_end
        if shocked:
            madd[shock_side] *= scal[P_SHOCK_ADD]
            mcan[shock_side] *= scal[P_SHOCK_CAN]
            mmkt[shock_side] *= scal[P_SHOCK_MKT]
        total = 0.0
        for i in range(k):
            vols[i] = 0.0
        for side in range(2):
            for i in range(k):
                v = lv[L_VOLUME, _level(h, side, i)]
                vols[i] += v
                n = min(math.ceil(v * inv_aes[i]), n_max)
                r = 6 * i + 3 * side
                rates[r] = lim[i, n] * madd[side]
                rates[r + 1] = can[i, n] * mcan[side]
                rates[r + 2] = mov[i, n]
                total += rates[r] + rates[r + 1] + rates[r + 2]
            v = lv[L_VOLUME, bk[B_BEST + side]]
            rates[6 * k + side] = mkt[min(math.ceil(v * inv_aes[0]), n_max)] * mmkt[side]
            total += rates[6 * k + side]
        dt = exponential(rng) / (total * u_day * reg_act[regime])
        dt = min(dt, duration - t)
        for i in range(k):
            depth[i] += vols[i] * dt
        t += dt
        if t >= duration:
            break
        # the order-flow pressure: an OU process in activity time, stepped once per unit
        flow_clock += dt * u_day * reg_act[regime]
        if flow_sd > 0 and flow_clock >= 1.0:
            decay = math.exp(-flow_clock / scal[P_FLOW_TAU])
            flow = decay * flow + flow_sd * math.sqrt(1.0 - decay * decay) * normal(rng)
            flow_clock = 0.0
        t_ns = int(t * 1e9)
        # ---- hidden clocks: regime switches, shocks
        if t >= next_switch:
            regime = draw(rng, reg_cdf[regime])
            next_switch = t + exponential(rng) * reg_mean[regime]
            direction = 1.0 if uniform(rng) < 0.5 else -1.0
            anchor = h
            stats[S_REGIME_SWITCHES] += 1
            j = stats[S_REGIME_SWITCHES]
            if j < len(reg_trace):
                reg_trace[j, 0] = t_ns
                reg_trace[j, 1] = regime
        shock_clock += dt * u_day
        if shock_clock >= next_shock:
            if t >= shock_end:  # shocks never overlap
                shock_side = below(rng, 2)
                shock_end = t + exponential(rng) * scal[P_SHOCK_DUR]
                j = stats[S_SHOCKS]
                if j < len(shock_trace):
                    shock_trace[j, 0] = t_ns
                    shock_trace[j, 1] = int(shock_end * 1e9)
                    shock_trace[j, 2] = shock_side
                stats[S_SHOCKS] += 1
            next_shock = shock_clock + exponential(rng) / shock_rate
        # ---- the event
        x = uniform(rng) * total
        e = 0
        while e < len(rates) - 1 and x >= rates[e]:
            x -= rates[e]
            e += 1
        if e >= 6 * k:
            side = e - 6 * k
            if bk[B_ORDERS + side] <= MIN_SIDE_ORDERS:
                continue
            lvl = bk[B_BEST + side]
            _market(ev, w, rng, ctx, lv, o, bk, free, fills, t_ns, side, 1 + draw(rng, mkt_cdf))
        else:
            i, kind = e // 6, e % 6
            side, kind = kind // 3, kind % 3
            lvl = _level(h, side, i)
            if kind == 0:
                _limit(ev, w, rng, ctx, lv, o, bk, free, add_cdf[i], t_ns, side, lvl)
            elif lv[L_COUNT, lvl] == 0:
                continue
            elif kind == 1:
                if bk[B_ORDERS + side] <= MIN_SIDE_ORDERS:
                    continue
                _cancel(ev, w, rng, ctx, lv, o, bk, free, partial_p, t_ns, side, lvl)
            else:
                j = draw(rng, move_cdf[i])
                _move(ev, w, rng, ctx, lv, o, bk, t_ns, side, lvl, _level(h, side, j))
        # ---- a depleted first queue: p_ref follows with probability theta
        if lvl == _level(h, side, 0) and lv[L_COUNT, lvl] == 0:
            stats[S_DEPLETIONS] += 1
            th = max(theta, scal[P_SHOCK_THETA]) if shocked and side == shock_side else theta
            if uniform(rng) < th and GRID_MARGIN + k < h < GRID - GRID_MARGIN - k:
                bk[B_H] = h + 1 if side == 1 else h - 1
                stats[S_REF_CHANGES] += 1
                if uniform(rng) < theta_reinit:
                    stats[S_REINITS] += 1
                    _redraw_book(ev, w, rng, ctx, lv, o, bk, free, aes, qpmf_cdf, add_cdf,
                                 t_ns, F_LAST, False)  # fmt: skip
        if w[W_OVERFLOW]:
            return -1
    return w[W_N]
