"""The record writer of the compiled SYNTHETIC generators: one MBO record per call.

Why one copy: the synthetic session (`esml.sim.synthetic`) and the queue-reactive model
(`esml.sim.queue_reactive`) must stamp records as one (imaginary) feed handler would, so
that ts_recv, ts_in_delta and the overflow protocol mean the same whichever of them made
the data. Each generator keeps its own order book; both hand this writer the same two
small int64 arrays, and may append words of their own after the ones laid out here.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from esml.market.events import ASK, BID
from esml.sim.rng import below, exponential

# the writer's state, `w`: records written, the overflow flag, the last ts_recv
W_N, W_OVERFLOW, W_LAST_RECV = range(3)
N_WRITER_WORDS = 3
# the session's constants, `ctx`: clock origin, the price grid's lowest tick, one tick
C_START_NS, C_LOW_TICK, C_TICK_FIXED = range(3)
N_CONTEXT_WORDS = 3

# the (imaginary) feed handler's latency, ns
LATENCY_MIN_NS = 100_000
LATENCY_MEAN_EXTRA_NS = 150_000
TS_IN_DELTA_MIN_NS = 12_000
TS_IN_DELTA_SPAN_NS = 10_000


@njit(cache=True)
def emit(ev, w, rng, ctx, t_ns, action, side, price, size, oid, flags) -> int:
    """Write one record; its index, or -1 (and the overflow flag) once the buffer is full."""
    n = w[W_N]
    if n >= len(ev):
        w[W_OVERFLOW] = 1
        return -1
    ts_event = ctx[C_START_NS] + t_ns
    latency = LATENCY_MIN_NS + int(exponential(rng) * LATENCY_MEAN_EXTRA_NS)
    ts_recv = max(ts_event + latency, w[W_LAST_RECV])
    w[W_LAST_RECV] = ts_recv
    r = ev[n]
    r.ts_event = ts_event
    r.ts_recv = ts_recv
    r.ts_in_delta = TS_IN_DELTA_MIN_NS + below(rng, TS_IN_DELTA_SPAN_NS)
    r.action = action
    r.side = side
    r.price = price
    r.size = size
    r.order_id = oid
    r.flags = flags
    w[W_N] = n + 1
    return n


@njit(cache=True)
def level_price(ctx: np.ndarray, lvl: int) -> int:
    """Fixed-point price of grid level `lvl`."""
    return (ctx[C_LOW_TICK] + lvl) * ctx[C_TICK_FIXED]


@njit(cache=True)
def side_code(side: int) -> int:
    """The MBO side code of a book side index (0: bid, 1: ask)."""
    return BID if side == 0 else ASK
