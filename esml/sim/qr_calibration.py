"""Calibrate the queue-reactive generator from real MBO data.

Why: the generator is only as good as its intensities, and those must come from the
exchange's own order flow, not from guesses. Following Huang, Lehalle & Rosenbaum (2015),
the book is seen from a reference price p_ref (the mid when the spread is an odd number
of ticks, else the mid shifted half a tick toward the previous p_ref); queue i on each
side sits i - 1/2 ticks from it. Every add, cancel, reprice and market order is counted
against the size of the queue it hit (in units of that queue's average event size), and
the time the book spent in each queue size is summed; intensity = count / time. The
probability theta that p_ref follows a depleted touch is the share of gaps that the other
side fills. Two quantities are not observable event by event and are fitted by simulating
the generator: theta_reinit (the book re-centring after a price move) to the data's queue
sizes behind the touch and message rate, then the sd of the latent order-flow pressure to
the data's 1-minute mid-price volatility.

Run `python -m esml.sim.qr_calibration FILE` to rewrite `es_qr_params.json`.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from numba import njit
from numba import types as nbt
from numba.typed import Dict
from pydantic import ValidationError

from esml.data.book import (
    M_BASE,
    M_BEST_ASK,
    M_BEST_BID,
    M_TICK,
    BookState,
    apply_event,
    replay_l1,
    snapshot_end,
)
from esml.data.dbn import DataFileError, main_instrument, read_mbo
from esml.market.events import (
    ADD,
    BID,
    CANCEL,
    F_LAST,
    F_SNAPSHOT,
    FILL,
    MBO_DTYPE,
    MODIFY,
    TRADE,
)
from esml.market.instruments import PRICE_SCALE, instrument_for
from esml.sim.qr_params import DEFAULT_PARAMS_FILE, CalibrationSummary, QRParams
from esml.sim.queue_reactive import simulate

K_LEVELS = 10
N_MAX = 60
Q_MAX = 4000  # queue sizes in contracts beyond this are pooled
S_MAX = 100  # order sizes beyond this are pooled
MIN_BIN_TIME_S = 15.0  # merge neighbouring queue sizes until each rate rests on this much time
MIN_BIN_EVENTS = 10
THETA_REINIT_GRID = tuple(k / 10 for k in range(11))
FIT_HOURS = 3.0
FLOW_SD_GRID = tuple(k / 10 for k in range(10))
FIT_SEED = 20231225

# counters filled by the replay
C_FLOWS, C_OUTSIDE, C_REF_CHANGES, C_DEPLETIONS, C_GAP_OPP, C_GAP_SAME = range(6)
C_PARTIAL, C_FULL, C_RECORDS, C_SKIPPED = range(6, 10)
N_COUNTERS = 10
F_LIMIT, F_CANCEL, F_MOVE = range(3)


class CalibrationError(ValueError):
    """The events cannot be calibrated from (too few, no trading, wrong tick)."""


# ---------------------------------------------------------------- the replay kernel


@njit(cache=True)
def _qty(bid_qty, ask_qty, s: int, idx: int) -> int:
    if idx < 0 or idx >= len(bid_qty):
        return 0
    return bid_qty[idx] if s == 0 else ask_qty[idx]


@njit(cache=True)
def _queue_of(h: int, s: int, idx: int) -> int:
    """Queue number (1 = next to p_ref) of a level on side s; <= 0 beyond p_ref."""
    return h + 1 - idx if s == 0 else idx - h


@njit(cache=True)
def _level_of(h: int, s: int, i: int) -> int:
    return h + 1 - i if s == 0 else h + i


@njit(cache=True)
def _count(flows, size_sum, size_n, kind, s, i, q, size, qmax) -> None:
    flows[kind, s, i - 1, min(q, qmax)] += 1
    size_sum[i - 1] += size
    size_n[i - 1] += 1


@njit(cache=True)
def _replay_flows(ev, start, k, qmax, smax,
                  meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side,
                  free, flows, times, touch_time, market, move_mat, size_sum, size_n, add_sizes,
                  market_sizes, counters, spread_time):  # fmt: skip
    """Replay every record through esml's L3 book and count the order flow of each queue
    against its size just before the event, from the first packet after `start` on."""
    prices = Dict.empty(nbt.int64, nbt.int64)
    sizes = Dict.empty(nbt.int64, nbt.int64)
    fills = np.zeros(4096, np.int64)
    n_fills = 0
    cur_q = np.zeros((2, k), np.int64)
    cur_touch = np.zeros(2, np.int64)
    started = False
    h = 0
    last_t = 0
    spread = 0
    trade_sum = 0
    base = 0
    tick = meta[M_TICK]
    for j in range(len(ev)):
        e = ev[j]
        a = e.action
        oid = np.int64(e.order_id)
        s = 0 if e.side == BID else 1
        bb, ba = meta[M_BEST_BID], meta[M_BEST_ASK]
        live = started and (e.flags & F_SNAPSHOT) == 0 and bb >= 0 and ba > bb
        if started and not live:
            counters[C_SKIPPED] += 1
        if live:
            base = meta[M_BASE]
            counters[C_RECORDS] += 1
            idx = (e.price - base) // tick
            if a == ADD:
                _classify_add(flows, size_sum, size_n, add_sizes, counters, bid_qty, ask_qty,
                              h, s, idx, e.size, k, qmax, smax)  # fmt: skip
            elif a == TRADE and e.side != 78:  # 'N': no aggressor
                if trade_sum == 0:
                    hit = 1 - s
                    q = _qty(bid_qty, ask_qty, hit, bb if hit == 0 else ba)
                    market[hit, min(q, qmax)] += 1
                    counters[C_FLOWS] += 1
                trade_sum += e.size
            elif a == FILL:
                if n_fills < len(fills):
                    fills[n_fills] = oid
                    n_fills += 1
            elif (a in (CANCEL, MODIFY)) and oid in prices:
                filled = False
                for f in range(n_fills):
                    if fills[f] == oid:
                        filled = True
                if not filled:
                    old_idx = (prices[oid] - base) // tick
                    _classify_update(flows, size_sum, size_n, counters, move_mat, bid_qty,
                                     ask_qty, h, s, a, old_idx, idx, sizes[oid], e.size, k,
                                     qmax)  # fmt: skip
        apply_event(meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side,
                    free, a, e.side, e.price, e.size, e.order_id)  # fmt: skip
        if a in (ADD, MODIFY):
            prices[oid] = e.price
            sizes[oid] = e.size
        elif a == CANCEL and oid in sizes:
            left = sizes[oid] - e.size
            if left > 0:
                sizes[oid] = left
            else:
                del sizes[oid]
                del prices[oid]
        if (e.flags & F_LAST) == 0 or j < start:
            continue
        # ---- packet end: time in the previous state, then the new state and p_ref
        if trade_sum > 0:
            market_sizes[min(trade_sum, smax)] += 1
            size_sum[0] += trade_sum
            size_n[0] += 1
            trade_sum = 0
        n_fills = 0
        bb, ba = meta[M_BEST_BID], meta[M_BEST_ASK]
        t = np.int64(e.ts_event)
        if started:
            dt = (t - last_t) / 1e9
            spread_time[min(max(spread, 0), len(spread_time) - 1)] += dt
            if spread > 0:
                for side in range(2):
                    touch_time[side, min(cur_touch[side], qmax)] += dt
                    for i in range(k):
                        times[side, i, min(cur_q[side, i], qmax)] += dt
        last_t = t
        if bb < 0 or ba < 0 or ba <= bb:
            spread = 0
            continue
        spread = ba - bb
        if spread % 2 == 1:
            hn = (bb + ba - 1) // 2
        else:
            m = (bb + ba) // 2
            hn = m - 1 if h <= m - 1 else m
        if started:
            if cur_q[0, 0] > 0 and bid_qty[h] == 0:
                counters[C_DEPLETIONS] += 1
            if cur_q[1, 0] > 0 and ask_qty[h + 1] == 0:
                counters[C_DEPLETIONS] += 1
            if hn != h:
                counters[C_REF_CHANGES] += 1
        h = hn
        started = True
        for side in range(2):
            cur_touch[side] = _qty(bid_qty, ask_qty, side, bb if side == 0 else ba)
            for i in range(k):
                cur_q[side, i] = _qty(bid_qty, ask_qty, side, _level_of(h, side, i + 1))
    return h


@njit(cache=True)
def _classify_add(flows, size_sum, size_n, add_sizes, counters, bid_qty, ask_qty, h, s, idx,
                  size, k, qmax, smax) -> None:  # fmt: skip
    i = _queue_of(h, s, idx)
    q = _qty(bid_qty, ask_qty, s, idx)
    if i <= 0:  # into the other side's empty first queue: p_ref will follow
        counters[C_GAP_OPP] += 1
        i, q = 1, 0
    elif i == 1 and q == 0:
        counters[C_GAP_SAME] += 1
    if i > k:
        counters[C_OUTSIDE] += 1
        return
    counters[C_FLOWS] += 1
    add_sizes[i - 1, min(size, smax)] += 1
    _count(flows, size_sum, size_n, F_LIMIT, s, i, q, size, qmax)


@njit(cache=True)
def _classify_update(flows, size_sum, size_n, counters, move_mat, bid_qty, ask_qty, h, s, action,
                     old_idx, idx, old_size, new_size, k, qmax) -> None:  # fmt: skip
    """A cancel or modify that no fill caused: a cancel, a partial cancel, a size increase
    (a limit at the back of the queue) or a reprice (a move between queues)."""
    i_old = _queue_of(h, s, old_idx)
    q_old = _qty(bid_qty, ask_qty, s, old_idx)
    inside_old = 1 <= i_old <= k
    if action == CANCEL or idx == old_idx:
        if action == MODIFY and new_size == old_size:
            return
        if not inside_old:
            counters[C_OUTSIDE] += 1
            return
        counters[C_FLOWS] += 1
        if action == MODIFY and new_size > old_size:
            _count(flows, size_sum, size_n, F_LIMIT, s, i_old, q_old, new_size - old_size, qmax)
            return
        gone = old_size - new_size if action == MODIFY else min(new_size, old_size)
        if gone < old_size:
            counters[C_PARTIAL] += 1
        else:
            counters[C_FULL] += 1
        _count(flows, size_sum, size_n, F_CANCEL, s, i_old, q_old, gone, qmax)
        return
    i_new = _queue_of(h, s, idx)
    q_new = _qty(bid_qty, ask_qty, s, idx)
    if i_new <= 0:
        counters[C_GAP_OPP] += 1
        i_new, q_new = 1, 0
    elif i_new == 1 and q_new == 0:
        counters[C_GAP_SAME] += 1
    inside_new = 1 <= i_new <= k
    if inside_old and inside_new and i_old != i_new:
        counters[C_FLOWS] += 1
        _count(flows, size_sum, size_n, F_MOVE, s, i_old, q_old, old_size, qmax)
        move_mat[i_old - 1, i_new - 1] += 1
        return
    if inside_old:
        counters[C_FLOWS] += 1
        counters[C_FULL] += 1
        _count(flows, size_sum, size_n, F_CANCEL, s, i_old, q_old, old_size, qmax)
    if inside_new:
        counters[C_FLOWS] += 1
        _count(flows, size_sum, size_n, F_LIMIT, s, i_new, q_new, new_size, qmax)
    if not inside_old and not inside_new:
        counters[C_OUTSIDE] += 1


# ---------------------------------------------------------------- from counts to tables


def _bins(q_max: int, aes: float, n_max: int) -> np.ndarray:
    """Queue size in contracts -> size in units of the average event size, rounded up."""
    return np.minimum(np.ceil(np.arange(q_max + 1) / aes), n_max).astype(np.int64)


def _pooled_rates(counts: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """count / time per queue size, neighbouring sizes pooled until each group rests on
    enough time and events; sizes past the data take the last group's rate."""
    rates = np.zeros(len(counts))
    lo = 0
    n = len(counts)
    last_rate = 0.0
    while lo < n:
        hi, c, t = lo, 0.0, 0.0
        while hi < n and (t < MIN_BIN_TIME_S or c < MIN_BIN_EVENTS):
            c += counts[hi]
            t += seconds[hi]
            hi += 1
        if t < MIN_BIN_TIME_S and lo > 0:  # the thin tail joins the last full group
            rates[lo:] = last_rate
            break
        last_rate = c / t if t > 0 else 0.0
        rates[lo:hi] = last_rate
        lo = hi
    return rates


def _tables(flows, times, market, touch_time, size_sum, size_n, k, n_max):
    aes = np.where(size_n > 0, size_sum / np.maximum(size_n, 1), 1.0)
    limit = np.zeros((k, n_max + 1))
    cancel = np.zeros((k, n_max + 1))
    move = np.zeros((k, n_max + 1))
    pmf = np.zeros((k, n_max + 1))
    for i in range(k):
        b = _bins(flows.shape[-1] - 1, aes[i], n_max)
        t = np.bincount(b, weights=times[:, i, :].sum(axis=0), minlength=n_max + 1)
        if t.sum() <= 0:
            raise CalibrationError(f"queue {i + 1} was never observed")
        pmf[i] = t / t.sum()
        for table, kind in ((limit, F_LIMIT), (cancel, F_CANCEL), (move, F_MOVE)):
            c = np.bincount(b, weights=flows[kind, :, i, :].sum(axis=0), minlength=n_max + 1)
            table[i] = _pooled_rates(c, t)
        cancel[i, 0] = move[i, 0] = 0.0  # nothing to cancel in an empty queue
        # an empty queue's adds rest on the empty-queue time alone, never pooled with others
        limit[i, 0] = flows[F_LIMIT, :, i, 0].sum() / t[0] if t[0] > 0 else limit[i, 1]
    b = _bins(market.shape[-1] - 1, aes[0], n_max)
    t = np.bincount(b, weights=touch_time.sum(axis=0), minlength=n_max + 1)
    c = np.bincount(b, weights=market.sum(axis=0), minlength=n_max + 1)
    mkt = _pooled_rates(c, t)
    mkt[0] = 0.0
    return aes, limit, cancel, move, mkt, pmf


def _destinations(move_mat: np.ndarray) -> np.ndarray:
    """Row i: where orders repriced out of queue i go; rows without data go one queue out."""
    k = len(move_mat)
    dest = move_mat.astype(float)
    np.fill_diagonal(dest, 0.0)
    for i in range(k):
        if dest[i].sum() <= 0:
            dest[i, i + 1 if i + 1 < k else i - 1] = 1.0
    return dest / dest.sum(axis=1, keepdims=True)


def _pmf(hist: np.ndarray) -> np.ndarray:
    """Size distributions over 1..n from histograms indexed by size (rows share n)."""
    p = np.atleast_2d(hist)[:, 1:].astype(float)
    if np.any(p.sum(axis=1) <= 0):
        raise CalibrationError("no order sizes to calibrate from")
    last = int(np.flatnonzero(p.sum(axis=0))[-1]) + 1
    p = p[:, :last] / p[:, :last].sum(axis=1, keepdims=True)
    return p if hist.ndim == 2 else p[0]


def _tick_fixed(tick: int | float) -> int:
    if isinstance(tick, bool) or not isinstance(tick, int | float | np.integer | np.floating):
        raise CalibrationError(f"tick must be a number, got {tick!r}")
    if isinstance(tick, int | np.integer):
        fixed = int(tick)
    else:
        if not math.isfinite(tick):
            raise CalibrationError(f"tick must be finite, got {tick}")
        fixed = round(float(tick) * PRICE_SCALE)
    if fixed <= 0:
        raise CalibrationError(
            f"tick must be positive: fixed point (ES.tick_fixed) or price units (0.25), got {tick}"
        )
    return fixed


# ---------------------------------------------------------------- calibrate


def calibrate(
    events: np.ndarray,
    tick: int | float,
    *,
    k_levels: int = K_LEVELS,
    n_max: int = N_MAX,
    source: str = "events",
    instrument: str = "ES",
    fit: bool = True,
) -> QRParams:
    """Queue-reactive parameters of one instrument's MBO events (the main instrument when
    there are several), counted from the first trade after the snapshot: the end of the
    pre-open auction. `tick` in fixed point (`ES.tick_fixed`) or in price units (0.25).
    `fit=False` skips the two simulated fits (theta_reinit, order-flow pressure), which
    then stay 0: the bare tables alone."""
    tick_fixed = _tick_fixed(tick)
    try:
        root = instrument_for(instrument).root
    except ValueError as e:
        raise CalibrationError(str(e)) from e
    if not isinstance(events, np.ndarray) or events.dtype != MBO_DTYPE:
        raise CalibrationError("events must be an MBO_DTYPE array (esml.data.dbn.read_mbo)")
    if not 1 <= k_levels <= 64 or not 1 <= n_max <= 10_000:
        raise CalibrationError("k_levels must be in [1, 64] and n_max in [1, 10000]")
    if len(events) == 0:
        raise CalibrationError("no events to calibrate from")
    ev = events[events["instrument_id"] == main_instrument(events)]
    if np.any(ev["price"][ev["action"] == ADD] % tick_fixed):
        raise CalibrationError(f"prices are not on a {tick_fixed / PRICE_SCALE} tick grid")
    snap = snapshot_end(ev)
    trades = np.flatnonzero(ev["action"][snap:] == TRADE)
    if not len(trades):
        raise CalibrationError("no trade after the snapshot: continuous trading never started")
    start = snap + int(trades[0])

    k, q_max = k_levels, Q_MAX
    flows = np.zeros((3, 2, k, q_max + 1), np.int64)
    times = np.zeros((2, k, q_max + 1))
    touch_time = np.zeros((2, q_max + 1))
    market = np.zeros((2, q_max + 1), np.int64)
    move_mat = np.zeros((k, k), np.int64)
    size_sum = np.zeros(k)
    size_n = np.zeros(k, np.int64)
    add_sizes = np.zeros((k, S_MAX + 1), np.int64)
    market_sizes = np.zeros(S_MAX + 1, np.int64)
    counters = np.zeros(N_COUNTERS, np.int64)
    spread_time = np.zeros(8)
    book = BookState.new(tick_fixed)
    h = _replay_flows(ev, start, k, q_max, S_MAX, *book.arrays, flows, times, touch_time,
                      market, move_mat, size_sum, size_n, add_sizes, market_sizes, counters,
                      spread_time)  # fmt: skip
    book.check(" while calibrating")
    window_s = float(spread_time.sum())
    if counters[C_FLOWS] < 1000 or window_s < 60.0:
        raise CalibrationError(
            f"too little continuous trading to calibrate: {counters[C_FLOWS]} events in "
            f"{window_s:.0f} s (need 1000 events and 60 s)"
        )
    aes, limit, cancel, move, mkt, pmf = _tables(
        flows, times, market, touch_time, size_sum, size_n, k, n_max
    )
    gaps = counters[C_GAP_OPP] + counters[C_GAP_SAME]
    cancels = counters[C_PARTIAL] + counters[C_FULL]
    summary = CalibrationSummary(
        source=source,
        window_s=window_s,
        records=int(counters[C_RECORDS]),
        flow_events=int(counters[C_FLOWS]),
        outside_events=int(counters[C_OUTSIDE]),
        records_per_s=float(counters[C_RECORDS]) / window_s,
        one_tick_spread_share=float(spread_time[1] / window_s),
        ref_price_changes=int(counters[C_REF_CHANGES]),
        touch_depletions=int(counters[C_DEPLETIONS]),
        gap_fills_by_opposite_side=int(counters[C_GAP_OPP]),
        gap_fills_by_same_side=int(counters[C_GAP_SAME]),
        mean_queue_contracts=tuple(_mean_depth(times).tolist()),
        mid_change_sd_1s=_mid_change_sd(ev, tick_fixed, start, 1.0),
        mid_change_sd_1min=_mid_change_sd(ev, tick_fixed, start, 60.0),
    )
    tick_size = tick_fixed / PRICE_SCALE
    try:
        params = QRParams(
            instrument=root,
            tick_size=tick_size,
            start_price=round((book.meta[M_BASE] + h * tick_fixed) / tick_fixed) * tick_size,
            k_levels=k,
            n_max=n_max,
            aes=tuple(aes.tolist()),
            limit_rate=_rows(limit),
            cancel_rate=_rows(cancel),
            move_rate=_rows(move),
            move_destination=_rows(_destinations(move_mat)),
            market_rate=tuple(mkt.tolist()),
            queue_pmf=_rows(pmf),
            theta=float(counters[C_GAP_OPP] / gaps) if gaps else 0.5,
            theta_reinit=0.0,
            partial_cancel_prob=float(counters[C_PARTIAL] / cancels) if cancels else 0.0,
            add_size_pmf=_rows(_pmf(add_sizes)),
            market_size_pmf=tuple(_pmf(market_sizes).tolist()),
            calibration=summary,
        )
    except ValidationError as e:  # e.g. an instrument whose tick is not `tick`
        raise CalibrationError(f"calibrated parameters are inconsistent: {e}") from e
    return _fit_flow(_fit_theta_reinit(params)) if fit else params


def _rows(a: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(r) for r in a.tolist())


def _mean_depth(times: np.ndarray) -> np.ndarray:
    """Time-averaged contracts in each queue, both sides pooled."""
    t = times.sum(axis=0)
    return (t * np.arange(t.shape[1])).sum(axis=1) / t.sum(axis=1)


def _fit_theta_reinit(params: QRParams) -> QRParams:
    """theta_reinit is not observable event by event. Without re-centring, the queues
    behind the touch drift far deeper than the data's (nothing pulls them back but the
    rare price moves); every re-centring also writes a burst of messages. Pick the value
    whose simulated book matches both the data's mean queue sizes behind the touch and
    its message rate (squared log errors; HLR fit theirs to a macroscopic statistic too)."""
    summary = params.calibration
    depth = np.log(np.asarray(summary.mean_queue_contracts[1:]))
    seconds = FIT_HOURS * 3600.0
    state = np.random.SeedSequence(FIT_SEED).generate_state(4, np.uint64)
    best, best_err = params, math.inf
    for th in THETA_REINIT_GRID:
        trial = params.model_copy(update={"theta_reinit": th})
        run = simulate(state, trial, start_ns=0, duration_s=seconds, day_offset_s=0.0,
                       open_price=params.start_price, layers=False)  # fmt: skip
        err = float(np.mean((np.log(run.mean_depth[1:]) - depth) ** 2))
        err += math.log(len(run.events) / seconds / summary.records_per_s) ** 2
        if err < best_err:
            best, best_err = trial, err
    return QRParams.model_validate(best.model_dump())


def _mid_change_sd(ev: np.ndarray, tick_fixed: int, start: int, seconds: float) -> float:
    """Standard deviation (points) of mid-price changes over `seconds`, from `start` on."""
    touch = replay_l1(ev, tick_fixed)[start:]
    ts = ev["ts_event"][start:].astype(np.int64)
    ok = (touch[:, 0] > 0) & (touch[:, 2] > 0) & (touch[:, 2] > touch[:, 0])
    touch, ts = touch[ok], ts[ok]
    grid = np.arange(ts[0], ts[-1], int(seconds * 1e9))
    at = np.searchsorted(ts, grid, side="right") - 1
    mid = (touch[at, 0] + touch[at, 2]) / (2 * PRICE_SCALE)
    return float(np.diff(mid).std()) if len(mid) > 2 else 0.0


def _fit_flow(params: QRParams) -> QRParams:
    """The bare queue-reactive book moves its price far less than the data (its order
    flow has no memory). A latent order-flow pressure (an OU process leaning market-order
    signs and liquidity) supplies the rest: pick its sd so that the simulated 1-minute
    mid changes are as large as the data's."""
    target = params.calibration.mid_change_sd_1min
    seconds = FIT_HOURS * 3600.0
    state = np.random.SeedSequence(FIT_SEED + 1).generate_state(4, np.uint64)
    best, best_err = params, math.inf
    for sd in FLOW_SD_GRID:
        trial = params.model_copy(update={"flow_pressure_sd": sd})
        run = simulate(state, trial, start_ns=0, duration_s=seconds, day_offset_s=0.0,
                       open_price=params.start_price, layers=False)  # fmt: skip
        snap = snapshot_end(run.events)
        tick = round(params.tick_size * PRICE_SCALE)
        err = abs(_mid_change_sd(run.events, tick, snap, 60.0) - target)
        if err < best_err:
            best, best_err = trial, err
    return QRParams.model_validate(best.model_dump())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m esml.sim.qr_calibration",
        description="Calibrate the queue-reactive ES generator from a Databento MBO file.",
    )
    ap.add_argument("file", type=Path)
    ap.add_argument("--out", type=Path, default=DEFAULT_PARAMS_FILE)
    ap.add_argument("--instrument", default="ES", help="root or contract, e.g. ESH4")
    args = ap.parse_args(argv)
    try:
        tick = instrument_for(args.instrument).tick_fixed
        params = calibrate(read_mbo(args.file), tick, source=args.file.name,
                           instrument=args.instrument)  # fmt: skip
    except (CalibrationError, DataFileError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    params.save(args.out)
    s = params.calibration
    print(
        f"{args.out}: {s.flow_events} events over {s.window_s:.0f} s of {args.file.name}; "
        f"theta={params.theta:.3f} theta_reinit={params.theta_reinit:.1f} "
        f"aes(1)={params.aes[0]:.2f} one-tick spread {s.one_tick_spread_share:.1%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
