"""The exchange simulator's compiled core: our orders in flat arrays, matched per market event.

Why compiled: matching runs inside the per-event kernel (`esml.features.kernel`), between
the book update and the next event, so a replay never leaves machine code until something
the strategy must see has happened.

State (see `esml.sim.exchange.Exchange`, which owns the arrays):
- `xo` int64 [orders, O_FIELDS]: one row per order of ours, never reused;
- `xa` int64 [orders]: the active orders (in flight, dormant, working) in submission order,
  `xm[X_N_ACTIVE]` of them;
- `xr` int64 [reports, R_FIELDS]: what the exchange told us, in order, each visible to the
  strategy from `R_VISIBLE` on (after the response latency);
- `xm` int64 scalars, `xf` float64 scalars.
The replayed book is the market's; our orders never enter it (the standard replay
assumption: our liquidity does not change what others did), so a queue position is kept per
order: the size ahead of us at our price, and the traded volume still to come off it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from esml.data.book import M_BASE, M_BEST_ASK, M_BEST_BID, M_HAS_BASE, M_SEQ, M_TICK
from esml.market.events import ADD, ASK, BID, CANCEL, MODIFY, TRADE, UNDEF_PRICE

NEVER = np.iinfo(np.int64).max  # no pending action / nothing to report

# --- order fields (columns of xo) ---------------------------------------------------------
O_STATE = 0
O_SIDE = 1  # +1 buy, -1 sell
O_TYPE = 2
O_PRICE = 3  # limit or stop price, fixed point; 0 for market
O_QTY = 4  # total quantity (legs grow with their entry's fills)
O_FILLED = 5
O_QUEUE = 6  # displayed size ahead of us at our price
O_TRADED = 7  # volume traded at our price not yet removed from the book by its deltas
O_SEQ = 8  # the book's arrival sequence when we joined the level: lower sequences are ahead
O_LEVEL = 9  # book level index while resting, -1 otherwise
O_ARRIVE = 10  # exchange time the order reaches the book (while in flight)
O_CANCEL_AT = 11  # exchange time a cancel request arrives, NEVER when none
O_MOD_AT = 12  # exchange time a modify request arrives, NEVER when none
O_MOD_PRICE = 13  # 0: unchanged
O_MOD_QTY = 14  # 0: unchanged
O_OCO = 15  # the other leg of a one-cancels-other pair, -1 when none
O_PARENT = 16  # one-sends-other: the entry this leg waits for, -1 when none
O_OFFSET = 17  # leg price in ticks from the entry's first fill (signed)
O_HAS_OFFSET = 18  # 1: price from O_OFFSET at activation; 0: O_PRICE as given
O_PRE_REJECT = 19  # reject code decided at submission (market closed at arrival), 0 none
O_FIRST_PX = 20  # first fill price, 0 before any fill
O_ACCEPTED = 21  # 1 once the exchange has accepted it (checks passed)
O_FIELDS = 22

# states
S_IN_FLIGHT = 1  # sent; a bracket leg travels with its entry (O_ARRIVE NEVER)
S_DORMANT = 2  # a bracket leg waiting for its entry to fill
S_READY = 3  # arrived or activated: to be placed
S_WORKING = 4  # resting limit or armed stop
S_TRIGGERED = 5  # a stop whose trigger traded: to execute as a market order
S_FILLED = 6
S_CANCELLED = 7
S_REJECTED = 8

# types
T_MARKET = 0
T_LIMIT = 1
T_STOP = 2
T_FLATTEN = 3  # cancel all our orders and close the position the exchange holds

# --- reports (rows of xr) -----------------------------------------------------------------
R_KIND = 0
R_SLOT = 1
R_TS = 2  # exchange time
R_VISIBLE = 3  # when the strategy sees it
R_QTY = 4
R_PRICE = 5
R_CODE = 6
R_FIELDS = 7

K_ACCEPTED = 1  # working: qty and price as the exchange holds them
K_FILL = 2  # code: LIQ_MAKER or LIQ_TAKER
K_CANCELLED = 3  # code: C_* why
K_REJECTED = 4  # code: REJ_* why
K_MODIFIED = 5  # new qty and price; code: C_* why
K_MODIFY_REJECTED = 6  # a cancel or modify that could not be done; code: REJ_* why

LIQ_MAKER = 1
LIQ_TAKER = 2

C_REQUESTED = 1
C_OCO = 2  # the other leg filled
C_PARENT = 3  # the entry ended without a fill
C_FLATTEN = 4
C_NOTHING_TO_CLOSE = 5  # a flatten found no position
C_PROTECTION = 6  # a market order's rest now sits at its protection price
C_ENTRY_FILL = 7  # a leg grew with its entry's fill

REJ_SIZE = 1
REJ_BAND = 2
REJ_CLOSED = 3
REJ_NO_MARKET = 4
REJ_PARENT = 5
REJ_TOO_LATE = 6
REJ_BAD_QTY = 7

# --- scalars (xm) -------------------------------------------------------------------------
X_N_ACTIVE = 0
X_N_ORDERS = 1
X_N_REPORTS = 2
X_NEXT_ACTION = 3  # earliest pending arrival, cancel or modify
X_NEXT_VISIBLE = 4  # visibility of the first report not yet taken
X_LAST_VISIBLE = 5  # reports reach the strategy in order
X_LAST_TRADE = 6  # fixed-point price of the last trade, 0 before any
X_POSITION = 7  # signed contracts, as the exchange holds them
X_RNG = 8  # splitmix64 state
X_QUEUE_MODE = 9
X_RESPONSE_NS = 10
X_MAX_QTY = 11
X_BAND_TICKS = 12
X_PROTECT_TICKS = 13
X_LAST_ARRIVAL = 14  # requests reach the exchange in the order they were sent
# what the kernel checks before calling `exchange_event`, kept by `_watch`: our resting
# limits' levels and prices per side (empty ranges when none)
X_N_RESTING = 15
X_BUY_LO = 16
X_BUY_HI = 17
X_SELL_LO = 18
X_SELL_HI = 19
X_BUY_PX_HI = 20
X_SELL_PX_LO = 21
X_FIELDS = 22

XF_SIGMA = 0  # lognormal latency shape, 0: constant
XF_FIELDS = 1

QUEUE_FIFO = 0  # L3 data: which orders are ahead is known from the book's sequence
QUEUE_PROBABILISTIC = 1  # L1/L2 data: a cancel was ahead with probability queue/level size

_U53 = 1.0 / 9007199254740992.0


@njit(cache=True)
def uniform(xm) -> float:
    """splitmix64 in (0, 1): a seeded stream kept in `xm`, so a run replays exactly."""
    x = np.uint64(xm[X_RNG]) + np.uint64(0x9E3779B97F4A7C15)
    xm[X_RNG] = np.int64(x)
    z = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (float(z >> np.uint64(11)) + 0.5) * _U53


@njit(cache=True)
def latency_ns(xm, xf, mean_ns) -> int:
    """`mean_ns`, or a lognormal draw with that mean when the shape is positive."""
    sigma = xf[XF_SIGMA]
    if sigma <= 0.0 or mean_ns <= 0:
        return mean_ns
    z = math.sqrt(-2.0 * math.log(uniform(xm))) * math.cos(2.0 * math.pi * uniform(xm))
    return int(mean_ns * math.exp(sigma * z - 0.5 * sigma * sigma))


@njit(cache=True)
def _report(xm, xr, xf, kind, slot, ts, qty, price, code) -> None:
    n = xm[X_N_REPORTS]
    visible = max(ts + latency_ns(xm, xf, xm[X_RESPONSE_NS]), xm[X_LAST_VISIBLE])
    xm[X_LAST_VISIBLE] = visible
    r = xr[n]
    r[R_KIND] = kind
    r[R_SLOT] = slot
    r[R_TS] = ts
    r[R_VISIBLE] = visible
    r[R_QTY] = qty
    r[R_PRICE] = price
    r[R_CODE] = code
    if n == 0:
        xm[X_NEXT_VISIBLE] = visible
    xm[X_N_REPORTS] = n + 1


@njit(cache=True)
def _finish(xm, xo, xa, slot, state) -> None:
    """A final state. The order leaves the active list unless a cancel or modify of it is
    still on its way: that request gets its answer first."""
    xo[slot, O_STATE] = state
    xo[slot, O_LEVEL] = -1
    if xo[slot, O_CANCEL_AT] == NEVER and xo[slot, O_MOD_AT] == NEVER:
        _drop(xm, xa, slot)


@njit(cache=True)
def _drop(xm, xa, slot) -> None:
    """Remove `slot` from the active list, which stays in submission (= slot) order."""
    n = xm[X_N_ACTIVE]
    k = 0
    while k < n and xa[k] != slot:
        k += 1
    if k == n:
        return
    for j in range(k, n - 1):
        xa[j] = xa[j + 1]
    xm[X_N_ACTIVE] = n - 1


@njit(cache=True)
def _level_of(meta, price) -> int:
    return (price - meta[M_BASE]) // meta[M_TICK]


@njit(cache=True)
def _price_of(meta, idx) -> int:
    return meta[M_BASE] + idx * meta[M_TICK]


@njit(cache=True)
def _own_side_qty(bid_qty, ask_qty, side, idx) -> int:
    n = len(bid_qty)
    if idx < 0 or idx >= n:
        return 0
    return bid_qty[idx] if side > 0 else ask_qty[idx]


@njit(cache=True)
def _end_children(xm, xo, xa, xr, xf, parent, ts, state, code) -> None:
    """The entry ended without a fill: its legs go with it."""
    k = 0
    while k < xm[X_N_ACTIVE]:
        c = xa[k]
        if xo[c, O_PARENT] == parent and xo[c, O_FILLED] == 0 and xo[c, O_STATE] < S_FILLED:
            _finish(xm, xo, xa, c, state)
            kind = K_REJECTED if state == S_REJECTED else K_CANCELLED
            _report(xm, xr, xf, kind, c, ts, 0, 0, code)
        else:
            k += 1


@njit(cache=True)
def _cancel(xm, xo, xa, xr, xf, slot, ts, code) -> None:
    _finish(xm, xo, xa, slot, S_CANCELLED)
    _report(xm, xr, xf, K_CANCELLED, slot, ts, 0, 0, code)
    if xo[slot, O_FILLED] == 0:
        _end_children(xm, xo, xa, xr, xf, slot, ts, S_CANCELLED, C_PARENT)


@njit(cache=True)
def _reject(xm, xo, xa, xr, xf, slot, ts, code) -> None:
    _finish(xm, xo, xa, slot, S_REJECTED)
    _report(xm, xr, xf, K_REJECTED, slot, ts, 0, 0, code)
    _end_children(xm, xo, xa, xr, xf, slot, ts, S_REJECTED, REJ_PARENT)


@njit(cache=True)
def _join_queue(xo, meta, bid_qty, ask_qty, slot) -> None:
    """Rest at our price behind everything displayed there now."""
    o = xo[slot]
    idx = _level_of(meta, o[O_PRICE])
    o[O_LEVEL] = idx
    o[O_QUEUE] = _own_side_qty(bid_qty, ask_qty, o[O_SIDE], idx)
    o[O_TRADED] = 0
    o[O_SEQ] = meta[M_SEQ]
    o[O_STATE] = S_WORKING


@njit(cache=True)
def _fill(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, qty, price, ts, liq) -> None:
    """Fill `qty` at `price`; the OCO partner shrinks by as much, the legs grow by as much."""
    o = xo[slot]
    o[O_FILLED] += qty
    if o[O_FIRST_PX] == 0:
        o[O_FIRST_PX] = price
    xm[X_POSITION] += o[O_SIDE] * qty
    _report(xm, xr, xf, K_FILL, slot, ts, qty, price, liq)
    if o[O_FILLED] >= o[O_QTY]:
        _finish(xm, xo, xa, slot, S_FILLED)
    partner = o[O_OCO]
    if partner >= 0 and xo[partner, O_STATE] < S_FILLED:
        p = xo[partner]
        p[O_QTY] -= qty
        if p[O_QTY] <= p[O_FILLED]:
            p[O_QTY] = p[O_FILLED]
            _cancel(xm, xo, xa, xr, xf, partner, ts, C_OCO)
        elif p[O_STATE] != S_DORMANT:
            _report(xm, xr, xf, K_MODIFIED, partner, ts, p[O_QTY], p[O_PRICE], C_OCO)
    tick = meta[M_TICK]
    for k in range(xm[X_N_ACTIVE]):
        c = xa[k]
        child = xo[c]
        if child[O_PARENT] != slot or child[O_STATE] >= S_FILLED:
            continue
        child[O_QTY] += qty
        if child[O_STATE] == S_DORMANT:
            if child[O_HAS_OFFSET] == 1:
                child[O_PRICE] = o[O_FIRST_PX] + child[O_OFFSET] * tick
            child[O_STATE] = S_READY
        elif child[O_STATE] != S_READY:  # working already: it grows
            if child[O_LEVEL] >= 0:  # a larger size loses its place in the queue
                child[O_QUEUE] = _own_side_qty(bid_qty, ask_qty, child[O_SIDE], child[O_LEVEL])
                child[O_TRADED] = 0
                child[O_SEQ] = meta[M_SEQ]
            _report(xm, xr, xf, K_MODIFIED, c, ts, child[O_QTY], child[O_PRICE], C_ENTRY_FILL)


@njit(cache=True)
def _take(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, limit_idx, ts) -> None:
    """Walk the other side from its best level to `limit_idx`, at most its displayed size.
    A crossed book (the pre-open, an auction) matches nothing."""
    if _crossed(meta):
        return
    o = xo[slot]
    n = len(bid_qty)
    if o[O_SIDE] > 0:
        a = meta[M_BEST_ASK]
        if a < 0:
            return
        while a <= limit_idx and a < n and o[O_STATE] < S_FILLED and o[O_FILLED] < o[O_QTY]:
            q = ask_qty[a]
            if q > 0:
                f = min(q, o[O_QTY] - o[O_FILLED])
                _fill(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, f, _price_of(meta, a), ts,
                      LIQ_TAKER)  # fmt: skip
            a += 1
    else:
        b = meta[M_BEST_BID]
        while b >= limit_idx and b >= 0 and o[O_STATE] < S_FILLED and o[O_FILLED] < o[O_QTY]:
            q = bid_qty[b]
            if q > 0:
                f = min(q, o[O_QTY] - o[O_FILLED])
                _fill(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, f, _price_of(meta, b), ts,
                      LIQ_TAKER)  # fmt: skip
            b -= 1


@njit(cache=True)
def _crossed(meta) -> bool:
    b, a = meta[M_BEST_BID], meta[M_BEST_ASK]
    return b >= 0 and a >= 0 and b >= a


@njit(cache=True)
def _reference(xm, meta, bid_qty, ask_qty) -> int:
    """The price band's reference: the last trade, else the mid, else 0 (no band yet)."""
    if xm[X_LAST_TRADE] > 0:
        return xm[X_LAST_TRADE]
    b, a = meta[M_BEST_BID], meta[M_BEST_ASK]
    if b >= 0 and a >= 0:
        return (_price_of(meta, b) + _price_of(meta, a)) // 2
    return 0


@njit(cache=True)
def _outside_band(xm, meta, bid_qty, ask_qty, side, price) -> bool:
    """CME price banding: a bid too far above, or an offer too far below, the reference."""
    ref = _reference(xm, meta, bid_qty, ask_qty)
    if ref == 0:
        return False
    band = xm[X_BAND_TICKS] * meta[M_TICK]
    return price > ref + band if side > 0 else price < ref - band


@njit(cache=True)
def _execute_market(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, ts) -> None:
    """A market order (or a triggered stop) with protection: it takes what is displayed up
    to its protection price; the rest rests there as a limit order."""
    o = xo[slot]
    side = o[O_SIDE]
    best = meta[M_BEST_ASK] if side > 0 else meta[M_BEST_BID]
    if best < 0:
        if xm[X_LAST_TRADE] == 0:
            _reject(xm, xo, xa, xr, xf, slot, ts, REJ_NO_MARKET)
            return
        best = _level_of(meta, xm[X_LAST_TRADE])
    limit_idx = best + side * xm[X_PROTECT_TICKS]
    _take(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, limit_idx, ts)
    if o[O_STATE] < S_FILLED and o[O_FILLED] < o[O_QTY]:
        o[O_TYPE] = T_LIMIT
        o[O_PRICE] = _price_of(meta, limit_idx)
        _join_queue(xo, meta, bid_qty, ask_qty, slot)
        _report(xm, xr, xf, K_MODIFIED, slot, ts, o[O_QTY], o[O_PRICE], C_PROTECTION)


@njit(cache=True)
def _stop_hit(side, stop, trade_px) -> bool:
    return trade_px >= stop if side > 0 else trade_px <= stop


@njit(cache=True)
def _place_limit(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, ts) -> None:
    """A limit that crosses takes liquidity up to its price; what is left joins the queue."""
    o = xo[slot]
    idx = _level_of(meta, o[O_PRICE])
    _take(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, idx, ts)
    if o[O_STATE] < S_FILLED and o[O_FILLED] < o[O_QTY]:
        _join_queue(xo, meta, bid_qty, ask_qty, slot)


@njit(cache=True)
def _flatten(xm, xo, xa, xr, xf, slot, ts) -> None:
    """Cancel every other order of ours, then close the position the exchange holds, in the
    direction the strategy asked for (nothing when that position has gone or turned)."""
    k = 0
    while k < xm[X_N_ACTIVE]:
        c = xa[k]
        if c != slot and S_IN_FLIGHT < xo[c, O_STATE] < S_FILLED:
            _finish(xm, xo, xa, c, S_CANCELLED)
            _report(xm, xr, xf, K_CANCELLED, c, ts, 0, 0, C_FLATTEN)
        else:
            k += 1
    o = xo[slot]
    pos = xm[X_POSITION]
    if pos == 0 or (pos > 0) == (o[O_SIDE] > 0):
        o[O_QTY] = 0
        _finish(xm, xo, xa, slot, S_CANCELLED)
        _report(xm, xr, xf, K_CANCELLED, slot, ts, 0, 0, C_NOTHING_TO_CLOSE)
        return
    o[O_QTY] = abs(pos)
    o[O_TYPE] = T_MARKET
    o[O_ACCEPTED] = 1
    _report(xm, xr, xf, K_ACCEPTED, slot, ts, o[O_QTY], 0, 0)
    o[O_STATE] = S_TRIGGERED


@njit(cache=True)
def _admit(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, ts) -> None:
    """An order from the strategy reaches the exchange: checks, then placement."""
    o = xo[slot]
    code = o[O_PRE_REJECT]
    if code == 0 and meta[M_HAS_BASE] == 0:
        code = REJ_NO_MARKET  # no market data yet: no price to check or fill against
    if code == 0 and o[O_TYPE] == T_FLATTEN:
        _flatten(xm, xo, xa, xr, xf, slot, ts)
        return
    if code == 0 and (o[O_QTY] <= 0 or o[O_QTY] > xm[X_MAX_QTY]):
        code = REJ_SIZE
    if code == 0 and o[O_TYPE] == T_LIMIT and _outside_band(xm, meta, bid_qty, ask_qty,
                                                           o[O_SIDE], o[O_PRICE]):  # fmt: skip
        code = REJ_BAND
    if code != 0:
        _reject(xm, xo, xa, xr, xf, slot, ts, code)
        return
    o[O_ACCEPTED] = 1
    _report(xm, xr, xf, K_ACCEPTED, slot, ts, o[O_QTY], o[O_PRICE], 0)
    for k in range(xm[X_N_ACTIVE]):  # its bracket legs, sent with it, now wait for fills
        c = xa[k]
        if xo[c, O_PARENT] == slot and xo[c, O_STATE] == S_IN_FLIGHT:
            xo[c, O_STATE] = S_DORMANT
    _activate(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, ts)


@njit(cache=True)
def _activate(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, ts) -> None:
    o = xo[slot]
    if o[O_TYPE] == T_MARKET:
        _execute_market(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, ts)
    elif o[O_TYPE] == T_LIMIT:
        _place_limit(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, ts)
    else:
        last = xm[X_LAST_TRADE]
        hit = last > 0 and _stop_hit(o[O_SIDE], o[O_PRICE], last)
        o[O_STATE] = S_TRIGGERED if hit else S_WORKING


@njit(cache=True)
def _settle(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, ts) -> None:
    """Place whatever became ready (activated legs) and execute triggered stops, until
    nothing changes: a fill can activate a leg whose stop is already through the market."""
    again = True
    while again:
        again = False
        for k in range(xm[X_N_ACTIVE]):
            slot = xa[k]
            state = xo[slot, O_STATE]
            if state == S_READY:
                xo[slot, O_ACCEPTED] = 1
                _report(xm, xr, xf, K_ACCEPTED, slot, ts, xo[slot, O_QTY], xo[slot, O_PRICE], 0)
                _activate(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, ts)
            elif state == S_TRIGGERED:
                _execute_market(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, ts)
            else:
                continue
            again = True
            break  # the active list may have changed under us


@njit(cache=True)
def _modify(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, ts) -> None:
    o = xo[slot]
    price = o[O_MOD_PRICE] if o[O_MOD_PRICE] != 0 else o[O_PRICE]
    new_qty = o[O_MOD_QTY]
    qty = new_qty if new_qty != 0 else o[O_QTY]
    o[O_MOD_PRICE] = 0
    o[O_MOD_QTY] = 0
    if new_qty != 0 and (new_qty <= o[O_FILLED] or new_qty > xm[X_MAX_QTY]):
        _report(xm, xr, xf, K_MODIFY_REJECTED, slot, ts, 0, 0, REJ_BAD_QTY)
        return
    if (
        o[O_TYPE] == T_LIMIT
        and price != o[O_PRICE]
        and _outside_band(xm, meta, bid_qty, ask_qty, o[O_SIDE], price)
    ):
        _report(xm, xr, xf, K_MODIFY_REJECTED, slot, ts, 0, 0, REJ_BAND)
        return
    moved = price != o[O_PRICE]
    grew = qty > o[O_QTY]
    o[O_PRICE] = price
    o[O_QTY] = qty
    if o[O_STATE] == S_DORMANT:
        if moved:
            o[O_HAS_OFFSET] = 0  # an explicit price replaces the offset from the entry
    elif o[O_TYPE] == T_STOP and o[O_STATE] == S_WORKING:
        last = xm[X_LAST_TRADE]
        if last > 0 and _stop_hit(o[O_SIDE], price, last):
            o[O_STATE] = S_TRIGGERED
    elif o[O_LEVEL] >= 0 and (moved or grew):
        o[O_LEVEL] = -1  # it leaves its place in the queue and comes back as new
        _report(xm, xr, xf, K_MODIFIED, slot, ts, qty, price, C_REQUESTED)
        _place_limit(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, ts)
        return
    _report(xm, xr, xf, K_MODIFIED, slot, ts, qty, price, C_REQUESTED)


@njit(cache=True)
def watch(xm, xo, xa) -> None:
    """Summarise our resting limits for the kernel: an event that is no trade, touches none
    of their levels and crosses none of their prices cannot concern them."""
    n_resting = 0
    buy_lo, buy_hi, sell_lo, sell_hi = NEVER, -1, NEVER, -1
    buy_px, sell_px = -1, NEVER
    for k in range(xm[X_N_ACTIVE]):
        o = xo[xa[k]]
        lvl = o[O_LEVEL]
        if o[O_STATE] != S_WORKING or lvl < 0:
            continue
        n_resting += 1
        if o[O_SIDE] > 0:
            buy_lo, buy_hi, buy_px = min(buy_lo, lvl), max(buy_hi, lvl), max(buy_px, o[O_PRICE])
        else:
            sell_lo, sell_hi = min(sell_lo, lvl), max(sell_hi, lvl)
            sell_px = min(sell_px, o[O_PRICE])
    xm[X_N_RESTING] = n_resting
    xm[X_BUY_LO], xm[X_BUY_HI], xm[X_SELL_LO], xm[X_SELL_HI] = buy_lo, buy_hi, sell_lo, sell_hi
    xm[X_BUY_PX_HI], xm[X_SELL_PX_LO] = buy_px, sell_px


@njit(cache=True)
def _next_action(xm, xo, xa) -> int:
    """The earliest time a request of ours reaches the exchange."""
    t = NEVER
    for k in range(xm[X_N_ACTIVE]):
        o = xo[xa[k]]
        if o[O_STATE] == S_IN_FLIGHT:
            t = min(t, o[O_ARRIVE])
        t = min(t, o[O_CANCEL_AT], o[O_MOD_AT])
    return t


@njit(cache=True)
def exchange_actions(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, before_ns) -> None:
    """Carry out, in the order they reach the exchange, every request arriving before
    `before_ns`, each against the book as it stands then (all events up to that time)."""
    while xm[X_NEXT_ACTION] < before_ns:
        t = xm[X_NEXT_ACTION]
        for k in range(xm[X_N_ACTIVE]):
            slot = xa[k]
            o = xo[slot]
            if o[O_STATE] == S_IN_FLIGHT and o[O_ARRIVE] == t:
                o[O_STATE] = S_READY
                o[O_ARRIVE] = NEVER
                _admit(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, t)
                break
            if o[O_CANCEL_AT] == t or o[O_MOD_AT] == t:
                cancel = o[O_CANCEL_AT] == t
                if cancel:
                    o[O_CANCEL_AT] = NEVER
                else:
                    o[O_MOD_AT] = NEVER
                if o[O_STATE] >= S_FILLED:  # it ended before the request arrived
                    _report(xm, xr, xf, K_MODIFY_REJECTED, slot, t, 0, 0, REJ_TOO_LATE)
                    if o[O_CANCEL_AT] == NEVER and o[O_MOD_AT] == NEVER:
                        _drop(xm, xa, slot)
                elif cancel:
                    _cancel(xm, xo, xa, xr, xf, slot, t, C_REQUESTED)
                else:
                    _modify(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, t)
                break
        _settle(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, t)
        xm[X_NEXT_ACTION] = _next_action(xm, xo, xa)
    watch(xm, xo, xa)


@njit(cache=True)
def exchange_event(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, ts, action, side, price, size,
                   old_idx, old_side, old_size, old_seq) -> None:  # fmt: skip
    """Match our working orders against one market event, already applied to the book;
    `old_*` is the resting order a cancel or modify touched, as it stood before."""
    if price == UNDEF_PRICE:
        return
    tick = meta[M_TICK]
    base = meta[M_BASE]
    on_grid = (price - base) % tick == 0
    e_idx = (price - base) // tick
    crossed = _crossed(meta)  # the pre-open or an auction: orders rest, nothing matches
    settle = False
    last = -1
    while True:
        # the next active order after `last`: fills may end orders or wake legs meanwhile
        slot = -1
        for k in range(xm[X_N_ACTIVE]):
            if xa[k] > last:
                slot = xa[k]
                break
        if slot < 0:
            break
        last = slot
        o = xo[slot]
        if o[O_STATE] != S_WORKING:
            continue
        s = o[O_SIDE]
        if o[O_TYPE] == T_STOP:
            if action == TRADE and _stop_hit(s, o[O_PRICE], price):
                o[O_STATE] = S_TRIGGERED
                settle = True
            continue
        lvl = o[O_LEVEL]
        if lvl < 0 or not on_grid:
            continue
        own = BID if s > 0 else ASK
        other = ASK if s > 0 else BID
        crosses = e_idx * s <= lvl * s  # at or through our price, seen from our side
        fill = 0
        if action == TRADE and side != own:  # sold into the bids (for a buy), or no side
            if e_idx * s < lvl * s:  # printed through our price: our level was gone
                fill = size
            elif e_idx == lvl:
                ahead = max(o[O_QUEUE] - o[O_TRADED], 0)
                o[O_TRADED] += min(size, ahead)
                fill = size - ahead
        elif action == ADD and side == other and crosses and not crossed:  # it trades with us
            fill = size
        elif action in (CANCEL, MODIFY):
            if old_idx == lvl and old_side == own:
                _queue_shrinks(xm, o, bid_qty, ask_qty, action, side, size, e_idx,
                               old_idx, old_side, old_size, old_seq)  # fmt: skip
            if action == MODIFY and side == other and crosses and not crossed:
                was_crossing = old_idx >= 0 and old_side == other and old_idx * s <= lvl * s
                fill = size - old_size if was_crossing else size
        if fill > 0:
            fill = min(fill, o[O_QTY] - o[O_FILLED])
            _fill(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, slot, fill, o[O_PRICE], ts,
                  LIQ_MAKER)  # fmt: skip
            settle = True
    if settle:
        _settle(xm, xo, xa, xr, xf, meta, bid_qty, ask_qty, ts)
        watch(xm, xo, xa)


@njit(cache=True)
def _queue_shrinks(xm, o, bid_qty, ask_qty, action, side, size, e_idx,
                   old_idx, old_side, old_size, old_seq) -> None:  # fmt: skip
    """A resting order at our price lost size. The volume a trade took from ahead of us
    comes off the book this way too, so it is counted once: from `O_TRADED` first."""
    if action == CANCEL:
        removed = min(size, old_size)
    elif e_idx == old_idx and side == old_side:
        if size <= old_size:
            removed = old_size - size  # a reduction keeps its place
        elif xm[X_QUEUE_MODE] == QUEUE_PROBABILISTIC:
            return  # L1/L2: more size at a level joins behind us
        else:
            removed = old_size  # grown: it goes to the back
    elif xm[X_QUEUE_MODE] == QUEUE_PROBABILISTIC and (e_idx - old_idx) * o[O_SIDE] > 0:
        return  # L1: the touch improved past us; our level is still there, unseen
    else:
        removed = old_size  # repriced: it leaves our level
    if removed <= 0:
        return
    if xm[X_QUEUE_MODE] == QUEUE_FIFO:
        if old_seq >= o[O_SEQ]:
            return  # it was behind us
        ahead = removed
    else:
        ahead = min(removed, o[O_TRADED])
        rest = removed - ahead
        q = o[O_QUEUE] - ahead
        if rest > 0 and q > 0:
            level_before = _own_side_qty(bid_qty, ask_qty, o[O_SIDE], old_idx) + rest
            if uniform(xm) * level_before < q:  # ahead with probability queue / level
                ahead += min(rest, q)
    o[O_QUEUE] = max(o[O_QUEUE] - ahead, 0)
    o[O_TRADED] = max(o[O_TRADED] - ahead, 0)
