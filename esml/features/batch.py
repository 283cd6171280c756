"""The batch executor: the streaming kernel run over a whole day, one row per decision time.

It is not a second implementation: it calls the engine's `advance_exchange` (over an
exchange holding no order of ours) and the streaming `compute` exactly as the live loop
does, so training rows equal what the engine sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from esml.data.book import M_TICK, BookState, l2_levels
from esml.features.kernel import (
    END,
    ERROR,
    PER_EVENT_FEATURES,
    advance_exchange,
    idle_exchange,
    touch,
)
from esml.features.streaming import DEPTH_LEVELS, N_FEATURES, FeatureState, compute, ready
from esml.market.events import MBO_DTYPE


@dataclass(frozen=True)
class FeatureFrame:
    ts_ns: np.ndarray  # decision times
    X: np.ndarray  # float32 [n, N_FEATURES]
    mid: np.ndarray  # mid price (float, price units) at each decision time


@njit(cache=True)
def next_decision(until_ns, next_event_ns, interval_ns):
    """The next decision time: one interval on, or the last grid time before a gap ends."""
    step = until_ns + interval_ns
    jump = (next_event_ns // interval_ns) * interval_ns
    if next_event_ns % interval_ns == 0:
        jump -= interval_ns
    return step if step >= jump else jump


@njit(cache=True)
def decision_ok(bp, bs, ap, as_):
    """A decision needs a two-sided, uncrossed book (not the pre-open auction)."""
    return bs > 0 and as_ > 0 and bp < ap


@njit(cache=True)
def _run(ev, meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side, free,
         o_seq, fs, ring, interval_ns, out_ts, out_x, out_mid):  # fmt: skip
    n = len(ev)
    if n == 0:
        return 0
    tick = meta[M_TICK]
    xm, xo, xa, xr, xf = idle_exchange()
    depth = np.zeros((DEPTH_LEVELS, 4), np.int64)
    row = np.zeros(N_FEATURES, np.float32)
    until = (ev[0].ts_recv // interval_ns) * interval_ns
    i = 0
    k = 0
    while True:
        i, why = advance_exchange(
            ev, i, meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size,
            o_side, free, o_seq, fs, ring, PER_EVENT_FEATURES, until, xm, xo, xa, xr, xf,
        )  # fmt: skip
        if why == ERROR:
            return -1 - i
        if why == END:  # live would still be waiting for `until`: no decision yet
            return k
        bp, bs, ap, as_ = touch(meta, bid_qty, ask_qty)
        if ready(fs, until) and decision_ok(bp, bs, ap, as_):
            l2_levels(meta, bid_qty, ask_qty, depth)
            compute(fs, ring, until, bp, ap, bs, as_, depth, tick, row)
            out_ts[k] = until
            out_x[k, :] = row
            out_mid[k] = 0.5 * (bp + ap) / 1e9
            k += 1
        until = next_decision(until, ev[i].ts_recv, interval_ns)


def check_events(events: np.ndarray, tick_fixed: int) -> None:
    """Refuse what the kernel would silently misread: another dtype, a bad tick, disorder."""
    if not isinstance(events, np.ndarray) or events.dtype != MBO_DTYPE:
        raise ValueError("events must be an array of esml.market.events.MBO_DTYPE")
    if isinstance(tick_fixed, bool) or not isinstance(tick_fixed, int | np.integer):
        raise ValueError(f"tick_fixed must be an integer, got {tick_fixed!r}")
    if tick_fixed <= 0:
        raise ValueError(f"tick_fixed must be positive, got {tick_fixed}")
    ts = events["ts_recv"]
    if len(ts) > 1 and np.any(ts[1:] < ts[:-1]):
        raise ValueError("events must be in ts_recv order")


def batch_features(events: np.ndarray, tick_fixed: int, interval_s: float) -> FeatureFrame:
    """Features at every decision time of a day, exactly as the engine would compute them."""
    check_events(events, tick_fixed)
    if not interval_s > 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    interval_ns = round(interval_s * 1e9)
    span = int(events["ts_recv"][-1]) - int(events["ts_recv"][0]) if len(events) else 0
    cap = span // interval_ns + 2
    out_ts = np.zeros(cap, np.int64)
    out_x = np.zeros((cap, N_FEATURES), np.float32)
    out_mid = np.zeros(cap, np.float64)
    book = BookState.new(tick_fixed)
    fs = FeatureState()
    k = _run(events, *book.arrays, book.o_seq, fs.s, fs.ring, interval_ns, out_ts, out_x, out_mid)
    if k < 0:
        book.check(f" at record {-1 - k}")
    return FeatureFrame(out_ts[:k].copy(), out_x[:k].copy(), out_mid[:k].copy())
