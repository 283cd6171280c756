"""One-minute bar technicals over a day: the bar LSTM's input, from the streaming kernel.

Why through the kernel: the rows here are the very values the streaming features carry
(the `bar_*` columns of FEATURE_NAMES), produced by the engine's compiled loop
(`advance_exchange`, over an exchange holding no order of ours) and `update`, so a model
trained on these bars sees live what it saw in training.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from esml.data.book import BookState
from esml.features.batch import check_events
from esml.features.kernel import ERROR, PER_EVENT_FEATURES, advance_exchange, idle_exchange
from esml.features.layout import BAR_OUT, N_BAR_FEATURES, S_BAR_END_MIN, S_BAR_N
from esml.features.streaming import FeatureState
from esml.features.technicals import BAR_FEATURE_NAMES

__all__ = ["BAR_FEATURE_NAMES", "minute_bar_features", "minute_end"]

_MINUTE_NS = 60_000_000_000


@njit(cache=True, inline="always")
def minute_end(ts_ns):
    """The last nanosecond of the minute holding `ts_ns`. A bar closes on the first event
    past its minute and the next bar opens no earlier than that minute, so the events of
    one minute close at most one bar: the kernel can run a minute per call, not a
    timestamp, and the bar it closed is still the state's last when it returns."""
    return (np.int64(ts_ns) // _MINUTE_NS + 1) * _MINUTE_NS - 1


@njit(cache=True)
def _run(ev, meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side, free,
         o_seq, fs, ring, out_end, out_x):  # fmt: skip
    n = len(ev)
    xm, xo, xa, xr, xf = idle_exchange()
    i = 0
    k = 0
    while i < n:
        i, why = advance_exchange(
            ev, i, meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size,
            o_side, free, o_seq, fs, ring, PER_EVENT_FEATURES, minute_end(ev[i].ts_recv),
            xm, xo, xa, xr, xf,
        )  # fmt: skip
        if why == ERROR:
            return -1 - i
        if fs[S_BAR_N] > k:
            out_end[k] = int(fs[S_BAR_END_MIN]) * _MINUTE_NS
            for j in range(N_BAR_FEATURES):
                out_x[k, j] = fs[BAR_OUT + j]
            k += 1
    return k


def minute_bar_features(events: np.ndarray, tick_fixed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every closed one-minute bar of `events`: (bar end times in ns, float64[M, 11]).

    Row m holds BAR_FEATURE_NAMES for the bar ending at `bar_end_ns[m]`, known from that
    instant on. Minutes without a trade have no bar; the last bar is left out when no
    event after its minute shows that it is over.
    """
    check_events(events, tick_fixed)
    span = int(events["ts_recv"][-1]) - int(events["ts_recv"][0]) if len(events) else 0
    cap = span // _MINUTE_NS + 2
    out_end = np.zeros(cap, np.int64)
    out_x = np.zeros((cap, N_BAR_FEATURES), np.float64)
    book = BookState.new(tick_fixed)
    fs = FeatureState()
    k = _run(events, *book.arrays, book.o_seq, fs.s, fs.ring, out_end, out_x)
    if k < 0:
        book.check(f" at record {-1 - k}")
    return out_end[:k].copy(), out_x[:k].copy()
