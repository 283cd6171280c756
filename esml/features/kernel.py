"""The compiled per-event path: book, then features, then the exchange simulator's matching,
until Python has something to see or decide.

`advance_exchange` (the engine's loop) applies events in order and returns as soon as one of
these is due:
- UPDATE: a report of the exchange simulator (a fill, an order accepted, cancelled...)
  reaches the strategy (`Exchange.next_visible_ns`) before the next event;
- DECISION: the next event is later than `until_ns` (a decision or exit time), so the
  state now is exactly the state as of `until_ns`;
- FULL: the report buffer needs room (`Exchange.make_room`);
- END: the events are used up; ERROR: the book stopped (`BookState.check` says why).
Requests of ours reaching the exchange between two events are carried out in between, on
the book as it stands. With no order of ours active the matching is skipped. The same
function serves replay (whole arrays) and live (small chunks as they arrive), and, over
an `idle_exchange`, the batch executors that want the book and features alone: one loop,
so training rows are the engine's rows by construction.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from esml.data.book import (
    M_BASE,
    M_BEST_ASK,
    M_BEST_BID,
    M_ERROR,
    M_TICK,
    apply_event_inlined,
    apply_event_seq,
)
from esml.features.streaming import update
from esml.market.events import ADD, ASK, BID, MODIFY, TRADE, UNDEF_PRICE
from esml.sim.exchange import REPORT_HEADROOM
from esml.sim.exchange_core import (
    NEVER,
    O_FIELDS,
    R_FIELDS,
    X_BUY_HI,
    X_BUY_LO,
    X_BUY_PX_HI,
    X_FIELDS,
    X_LAST_TRADE,
    X_N_ACTIVE,
    X_N_REPORTS,
    X_N_RESTING,
    X_NEXT_ACTION,
    X_NEXT_VISIBLE,
    X_SELL_HI,
    X_SELL_LO,
    X_SELL_PX_LO,
    XF_FIELDS,
    exchange_actions,
    exchange_event,
    watch,
)

DECISION = 0
END = 2
ERROR = 3
UPDATE = 4
FULL = 5

# what `advance_exchange` computes per event besides the book and the matching
PER_EVENT_FEATURES = 0  # the streaming features (`esml.features.streaming.update`): the engine
PER_EVENT_L1_IMBALANCE = 1  # only the touch's imbalance: fs[0] latest, fs[1] running sum
PER_EVENT_NOTHING = 2  # book and matching only (a paper broker without a strategy)


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
def idle_exchange():
    """(xm, xo, xa, xr, xf) of an exchange holding no order of ours: over it
    `advance_exchange` is the book and features alone, stopping only at `until_ns`, at the
    end or on a book error (nothing is pending, nothing to report, the matching never runs).
    Compiled, so compiled callers with fixed signatures can make one."""
    xm = np.zeros(X_FIELDS, np.int64)
    xm[X_NEXT_ACTION] = NEVER
    xm[X_NEXT_VISIBLE] = NEVER
    xo = np.zeros((0, O_FIELDS), np.int64)
    xa = np.zeros(0, np.int64)
    watch(xm, xo, xa)
    xr = np.zeros((REPORT_HEADROOM, R_FIELDS), np.int64)  # just the headroom: no report comes
    return xm, xo, xa, xr, np.zeros(XF_FIELDS, np.float64)


@njit(cache=True, inline="always")
def _concerns_us(xm, action, side, price, old_idx, old_side) -> bool:
    """Whether an event (not a trade) can move or fill one of our resting limits: it left
    one of their levels, or it rests at or through one of their prices."""
    if old_idx >= 0:
        if old_side == BID and xm[X_BUY_LO] <= old_idx <= xm[X_BUY_HI]:
            return True
        if old_side == ASK and xm[X_SELL_LO] <= old_idx <= xm[X_SELL_HI]:
            return True
    if action in (ADD, MODIFY):
        return (side == ASK and price <= xm[X_BUY_PX_HI]) or (
            side == BID and price >= xm[X_SELL_PX_LO]
        )
    return False


@njit(cache=True)
def advance_exchange(ev, i, meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size,
                     o_side, free, o_seq, fs, ring, per_event, until_ns, xm, xo, xa, xr,
                     xf):  # fmt: skip
    n = len(ev)
    tick = meta[M_TICK]
    room = len(xr) - REPORT_HEADROOM
    # what the exchange's state says about the loop changes only when the exchange runs:
    # keep it in locals (one comparison per event) and refresh it after each call
    stop = min(until_ns, xm[X_NEXT_VISIBLE], xm[X_NEXT_ACTION])
    active, resting = xm[X_N_ACTIVE] > 0, xm[X_N_RESTING] > 0
    while i < n:
        e = ev[i]
        ts = np.int64(e.ts_recv)  # int64 throughout: uint64 against int64 compares as float
        if ts > stop:
            if ts > xm[X_NEXT_ACTION]:  # requests that reach the exchange before this event
                exchange_actions(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, ts)
            if ts > until_ns or ts > xm[X_NEXT_VISIBLE]:
                return i, (UPDATE if xm[X_NEXT_VISIBLE] <= until_ns else DECISION)
            if xm[X_N_REPORTS] > room:
                return i, FULL
            stop = min(until_ns, xm[X_NEXT_VISIBLE], xm[X_NEXT_ACTION])
            active, resting = xm[X_N_ACTIVE] > 0, xm[X_N_RESTING] > 0
        if resting:  # our limits are in queues: keep arrival sequences, see what left them
            old_idx, old_side, old_size, old_seq = apply_event_seq(
                meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side,
                free, o_seq, e.action, e.side, e.price, e.size, e.order_id,
            )  # fmt: skip
        else:  # the book alone: orders added now will sit ahead of any we place later
            apply_event_inlined(
                meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side,
                free, e.action, e.side, e.price, e.size, e.order_id,
            )  # fmt: skip
            old_idx, old_side, old_size, old_seq = -1, 0, 0, 0
        if meta[M_ERROR] != 0:
            return i, ERROR
        if per_event == PER_EVENT_FEATURES:
            bp, bs, ap, as_ = touch(meta, bid_qty, ask_qty)
            update(fs, ring, e.ts_recv, e.action, e.side, e.price, e.size, bp, ap, bs, as_, tick)
        elif per_event == PER_EVENT_L1_IMBALANCE:
            bp, bs, ap, as_ = touch(meta, bid_qty, ask_qty)
            tot = bs + as_
            fs[0] = (bs - as_) / tot if tot > 0 else 0.0
            fs[1] += fs[0]
        trade = e.action == TRADE
        if trade and e.price != UNDEF_PRICE:
            xm[X_LAST_TRADE] = e.price
        if active and (trade or (resting and _concerns_us(
            xm, e.action, e.side, e.price, old_idx, old_side
        ))):  # fmt: skip
            exchange_event(
                xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, ts, np.int64(e.action),
                np.int64(e.side), e.price, np.int64(e.size), old_idx, np.int64(old_side),
                old_size, old_seq,
            )  # fmt: skip
            stop = min(until_ns, xm[X_NEXT_VISIBLE], xm[X_NEXT_ACTION])
            active, resting = xm[X_N_ACTIVE] > 0, xm[X_N_RESTING] > 0
            if xm[X_N_REPORTS] > room:
                return i + 1, FULL
        i += 1
    return i, END
