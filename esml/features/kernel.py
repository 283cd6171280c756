"""The compiled per-event path: book, then features, until Python has something to decide.

`advance` applies events in order and returns as soon as one of these is due:
- DECISION: the next event is later than `until_ns` (a decision or exit time), so the
  state now is exactly the state as of `until_ns`;
- TRIGGER: a trade printed at or beyond a working stop or target (`trig_lo`/`trig_hi`);
- END: the events are used up.
The same function serves replay (whole arrays) and live (small chunks as they arrive).
"""

from __future__ import annotations

from numba import njit

from esml.data.book import M_BASE, M_BEST_ASK, M_BEST_BID, M_ERROR, M_TICK, apply_event
from esml.features.streaming import update
from esml.market.events import TRADE

NO_TRIGGER_LO = -(1 << 62)  # trigger prices that no trade reaches: nothing is working
NO_TRIGGER_HI = 1 << 62

DECISION = 0
TRIGGER = 1
END = 2
ERROR = 3


@njit(cache=True)
def touch(meta, bid_qty, ask_qty):
    """(bid_px, bid_sz, ask_px, ask_sz), fixed point; an empty side has size 0."""
    b, a = meta[M_BEST_BID], meta[M_BEST_ASK]
    base, tick = meta[M_BASE], meta[M_TICK]
    bp = base + b * tick if b >= 0 else 0
    ap = base + a * tick if a >= 0 else 0
    bs = bid_qty[b] if b >= 0 else 0
    as_ = ask_qty[a] if a >= 0 else 0
    return bp, bs, ap, as_


@njit(cache=True)
def advance(ev, i, meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side,
            free, fs, ring, until_ns, trig_lo, trig_hi):  # fmt: skip
    n = len(ev)
    tick = meta[M_TICK]
    while i < n:
        e = ev[i]
        ts = e.ts_recv
        if ts > until_ns:
            return i, DECISION
        apply_event(
            meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side, free,
            e.action, e.side, e.price, e.size, e.order_id,
        )  # fmt: skip
        if meta[M_ERROR] != 0:
            return i, ERROR
        bp, bs, ap, as_ = touch(meta, bid_qty, ask_qty)
        update(fs, ring, ts, e.action, e.side, e.price, e.size, bp, ap, bs, as_, tick)
        i += 1
        if e.action == TRADE and (e.price <= trig_lo or e.price >= trig_hi):
            return i, TRIGGER
    return i, END
