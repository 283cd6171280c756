"""The L3 order book, rebuilt from MBO events: every resting order, every level.

One compiled implementation serves replay and live: `apply_event` is a numba function
over plain arrays, called per event by the engine's kernel and by `replay_l1` here. L2
(depth per level) and L1 (the touch) are read off the same L3 state, so they can never
disagree with it.

Layout: price levels live in a dense array indexed by ticks from a base price, so the
touch moves by index arithmetic; resting orders live in slots found through an
open-addressing hash table keyed by order id (linear probing, backward-shift delete).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from esml.market.events import (
    ADD,
    ASK,
    BID,
    CANCEL,
    CLEAR,
    F_SNAPSHOT,
    MODIFY,
)

# meta slots (int64 scalars kept in one array so numba functions can update them)
M_BASE = 0  # fixed-point price of level index 0, set by the first price seen
M_TICK = 1
M_BEST_BID = 2  # level index, -1 when the side is empty
M_BEST_ASK = 3
M_FREE_TOP = 4  # number of free order slots on the free stack
M_N_ORDERS = 5
M_UNKNOWN_CANCELS = 6  # cancels of orders the book never saw (partial snapshot)
M_OVERSIZE_CANCELS = 7
M_ERROR = 8  # first error code, 0 = none
M_HAS_BASE = 9
M_SEQ = 10  # the arrival sequence (time priority) the next order gets; see `apply_event_seq`
N_META = 11

ERR_OFF_GRID = 1  # price not on the tick grid
ERR_OUT_OF_RANGE = 2  # price outside the level array
ERR_FULL = 3  # no free order slot / hash table too full

_EMPTY = np.uint64(0)


@dataclass
class BookState:
    """Arrays of one instrument's book; pass `.arrays` to the numba functions."""

    meta: np.ndarray
    bid_qty: np.ndarray
    ask_qty: np.ndarray
    bid_cnt: np.ndarray
    ask_cnt: np.ndarray
    keys: np.ndarray
    vals: np.ndarray
    o_idx: np.ndarray
    o_size: np.ndarray
    o_side: np.ndarray
    free: np.ndarray
    o_seq: np.ndarray  # per order slot: arrival sequence (time priority), `apply_event_seq`

    @classmethod
    def new(cls, tick_fixed: int, n_levels: int = 1 << 17, max_orders: int = 1 << 17) -> BookState:
        table = 1
        while table < 2 * max_orders:
            table <<= 1
        meta = np.zeros(N_META, np.int64)
        meta[M_TICK] = tick_fixed
        meta[M_BEST_BID] = -1
        meta[M_BEST_ASK] = -1
        meta[M_FREE_TOP] = max_orders
        meta[M_SEQ] = 1  # orders added without a sequence (0) count as ahead of any of ours
        return cls(
            meta=meta,
            bid_qty=np.zeros(n_levels, np.int64),
            ask_qty=np.zeros(n_levels, np.int64),
            bid_cnt=np.zeros(n_levels, np.int32),
            ask_cnt=np.zeros(n_levels, np.int32),
            keys=np.zeros(table, np.uint64),
            vals=np.zeros(table, np.int64),
            o_idx=np.zeros(max_orders, np.int64),
            o_size=np.zeros(max_orders, np.int64),
            o_side=np.zeros(max_orders, np.uint8),
            free=np.arange(max_orders - 1, -1, -1, dtype=np.int64),
            o_seq=np.zeros(max_orders, np.int64),
        )

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        return (
            self.meta, self.bid_qty, self.ask_qty, self.bid_cnt, self.ask_cnt,
            self.keys, self.vals, self.o_idx, self.o_size, self.o_side, self.free,
        )  # fmt: skip

    def check(self, where: str = "") -> None:
        err = int(self.meta[M_ERROR])
        if err:
            what = {
                ERR_OFF_GRID: "a price off the tick grid",
                ERR_OUT_OF_RANGE: "a price outside the book's level range",
                ERR_FULL: "more resting orders than the book has room for",
            }[err]
            raise ValueError(f"order book stopped on {what}{where}")

    def price_of(self, idx: int) -> int:
        return int(self.meta[M_BASE] + idx * self.meta[M_TICK])

    def touch(self) -> tuple[int, int, int, int]:
        """(bid_px, bid_sz, ask_px, ask_sz) in fixed point; size 0 for an empty side."""
        b, a = int(self.meta[M_BEST_BID]), int(self.meta[M_BEST_ASK])
        return (
            self.price_of(b) if b >= 0 else 0,
            int(self.bid_qty[b]) if b >= 0 else 0,
            self.price_of(a) if a >= 0 else 0,
            int(self.ask_qty[a]) if a >= 0 else 0,
        )

    def depth(self, n: int) -> np.ndarray:
        """L2: the best `n` levels per side, rows (bid_px, bid_sz, ask_px, ask_sz)."""
        out = np.zeros((n, 4), np.int64)
        l2_levels(self.meta, self.bid_qty, self.ask_qty, out)
        return out


@njit(cache=True, inline="always")
def _hash(key: np.uint64, mask: int) -> int:
    # Fibonacci hashing spreads sequential exchange order ids across the table
    return int((key * np.uint64(11400714819323198485)) >> np.uint64(40)) & mask


@njit(cache=True, inline="always")
def _find(keys: np.ndarray, key: np.uint64) -> int:
    mask = len(keys) - 1
    i = _hash(key, mask)
    while keys[i] != _EMPTY:
        if keys[i] == key:
            return i
        i = (i + 1) & mask
    return -1


@njit(cache=True, inline="always")
def _insert(keys: np.ndarray, vals: np.ndarray, key: np.uint64, val: int) -> None:
    mask = len(keys) - 1
    i = _hash(key, mask)
    while keys[i] != _EMPTY and keys[i] != key:
        i = (i + 1) & mask
    keys[i] = key
    vals[i] = val


@njit(cache=True, inline="always")
def _delete_at(keys: np.ndarray, vals: np.ndarray, i: int) -> None:
    """Backward-shift deletion keeps probe chains intact without tombstones."""
    mask = len(keys) - 1
    j = i
    while True:
        j = (j + 1) & mask
        if keys[j] == _EMPTY:
            break
        home = _hash(keys[j], mask)
        # move j back to i when its home is not cyclically within (i, j]
        if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
            keys[i] = keys[j]
            vals[i] = vals[j]
            i = j
    keys[i] = _EMPTY


@njit(cache=True, inline="always")
def _level_index(meta: np.ndarray, n_levels: int, price: int) -> int:
    tick = meta[M_TICK]
    if meta[M_HAS_BASE] == 0:
        meta[M_BASE] = price - (n_levels // 2) * tick
        meta[M_HAS_BASE] = 1
    off = price - meta[M_BASE]
    if off % tick != 0:
        if meta[M_ERROR] == 0:
            meta[M_ERROR] = ERR_OFF_GRID
        return -1
    idx = off // tick
    if idx < 0 or idx >= n_levels:
        if meta[M_ERROR] == 0:
            meta[M_ERROR] = ERR_OUT_OF_RANGE
        return -1
    return idx


@njit(cache=True, inline="always")
def _level_add(meta, bid_qty, ask_qty, bid_cnt, ask_cnt, side, idx, qty, new_order):
    if side == BID:
        bid_qty[idx] += qty
        if new_order:
            bid_cnt[idx] += 1
        if idx > meta[M_BEST_BID]:
            meta[M_BEST_BID] = idx
    else:
        ask_qty[idx] += qty
        if new_order:
            ask_cnt[idx] += 1
        if meta[M_BEST_ASK] < 0 or idx < meta[M_BEST_ASK]:
            meta[M_BEST_ASK] = idx


@njit(cache=True, inline="always")
def _level_remove(meta, bid_qty, ask_qty, bid_cnt, ask_cnt, side, idx, qty, gone_order):
    if side == BID:
        bid_qty[idx] -= qty
        if gone_order:
            bid_cnt[idx] -= 1
        if idx == meta[M_BEST_BID] and bid_qty[idx] <= 0:
            b = idx - 1
            while b >= 0 and bid_qty[b] <= 0:
                b -= 1
            meta[M_BEST_BID] = b
    else:
        ask_qty[idx] -= qty
        if gone_order:
            ask_cnt[idx] -= 1
        if idx == meta[M_BEST_ASK] and ask_qty[idx] <= 0:
            a = idx + 1
            n = len(ask_qty)
            while a < n and ask_qty[a] <= 0:
                a += 1
            meta[M_BEST_ASK] = a if a < n else -1


@njit(cache=True)
def _clear(meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, free):
    bid_qty[:] = 0
    ask_qty[:] = 0
    bid_cnt[:] = 0
    ask_cnt[:] = 0
    keys[:] = _EMPTY
    n = len(free)
    for k in range(n):
        free[k] = n - 1 - k
    meta[M_FREE_TOP] = n
    meta[M_N_ORDERS] = 0
    meta[M_BEST_BID] = -1
    meta[M_BEST_ASK] = -1


@njit(cache=True, inline="always")
def _add(meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side, free,
         side, price, size, order_id) -> None:  # fmt: skip
    idx = _level_index(meta, len(bid_qty), price)
    if idx < 0:
        return
    if meta[M_FREE_TOP] == 0 or meta[M_N_ORDERS] * 2 >= len(keys):
        if meta[M_ERROR] == 0:
            meta[M_ERROR] = ERR_FULL
        return
    meta[M_FREE_TOP] -= 1
    slot = free[meta[M_FREE_TOP]]
    o_idx[slot] = idx
    o_size[slot] = size
    o_side[slot] = side
    _insert(keys, vals, np.uint64(order_id), slot)
    meta[M_N_ORDERS] += 1
    _level_add(meta, bid_qty, ask_qty, bid_cnt, ask_cnt, side, idx, size, True)


@njit(cache=True)
def apply_event(
    meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side, free,
    action, side, price, size, order_id,
) -> None:  # fmt: skip
    """Apply one MBO record. Trades and fills change nothing: the exchange follows
    them with the cancel/modify of each resting order they hit."""
    if action == ADD:
        _add(
            meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side, free,
            side, price, size, order_id,
        )  # fmt: skip
    elif action == CANCEL:
        h = _find(keys, np.uint64(order_id))
        if h < 0:
            meta[M_UNKNOWN_CANCELS] += 1
            return
        slot = vals[h]
        qty = size
        if qty > o_size[slot]:
            meta[M_OVERSIZE_CANCELS] += 1
            qty = o_size[slot]
        remaining = o_size[slot] - qty
        gone = remaining <= 0
        _level_remove(
            meta, bid_qty, ask_qty, bid_cnt, ask_cnt, o_side[slot], o_idx[slot], qty, gone
        )
        if gone:
            _delete_at(keys, vals, h)
            free[meta[M_FREE_TOP]] = slot
            meta[M_FREE_TOP] += 1
            meta[M_N_ORDERS] -= 1
        else:
            o_size[slot] = remaining
    elif action == MODIFY:
        h = _find(keys, np.uint64(order_id))
        if h < 0:
            # the order predates a partial snapshot: a modify is then its first sight
            _add(
                meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side,
                free, side, price, size, order_id,
            )  # fmt: skip
            return
        slot = vals[h]
        idx = _level_index(meta, len(bid_qty), price)
        if idx < 0:
            return
        _level_remove(
            meta, bid_qty, ask_qty, bid_cnt, ask_cnt, o_side[slot], o_idx[slot],
            o_size[slot], True,
        )  # fmt: skip
        o_idx[slot] = idx
        o_size[slot] = size
        o_side[slot] = side
        _level_add(meta, bid_qty, ask_qty, bid_cnt, ask_cnt, side, idx, size, True)
    elif action == CLEAR:
        _clear(meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, free)


apply_event_inlined = njit(inline="always")(apply_event.py_func)
"""`apply_event` compiled into its caller: no call and no reference counting per record,
for the replay loop where that is a tenth of the time. The same function; its callers are
cached, so it needs no cache of its own."""


@njit(cache=True, inline="always")
def apply_event_seq(
    meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side, free, o_seq,
    action, side, price, size, order_id,
):  # fmt: skip
    """`apply_event`, also keeping each resting order's arrival sequence in `o_seq`, so an
    order placed later (ours, in the exchange simulator) knows which orders are ahead of it.
    Orders added by plain `apply_event` keep an older sequence than any stamped after them,
    so only orders added while someone watches the queues need this slower path.

    CME time priority: an order keeps its place when a modify only reduces its size at the
    same price; a new price or a larger size sends it to the back. Returns the order a
    cancel or modify touched, as it stood before: (level, side, size, seq); level -1 when
    the event touched no known resting order.
    """
    old_idx, old_side, old_size, old_seq = -1, 0, 0, 0
    slot = -1
    if action in (CANCEL, MODIFY):
        h = _find(keys, np.uint64(order_id))
        if h >= 0:
            slot = vals[h]
            old_idx, old_side = o_idx[slot], o_side[slot]
            old_size, old_seq = o_size[slot], o_seq[slot]
    apply_event_inlined(  # compiled in: a call per record was a quarter of a replay's time
        meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side, free,
        action, side, price, size, order_id,
    )  # fmt: skip
    if meta[M_ERROR] != 0:
        return old_idx, old_side, old_size, old_seq
    if action == ADD or (action == MODIFY and slot < 0):
        # the slot the new order took is the one just popped off the free stack
        o_seq[free[meta[M_FREE_TOP]]] = meta[M_SEQ]
        meta[M_SEQ] += 1
    elif action == MODIFY and (o_idx[slot] != old_idx or o_side[slot] != old_side
                               or size > old_size):  # fmt: skip
        o_seq[slot] = meta[M_SEQ]
        meta[M_SEQ] += 1
    return old_idx, old_side, old_size, old_seq


@njit(cache=True)
def l2_levels(meta, bid_qty, ask_qty, out) -> None:
    """Fill `out[k] = (bid_px, bid_sz, ask_px, ask_sz)` for the k-th best level per side."""
    n = out.shape[0]
    base, tick = meta[M_BASE], meta[M_TICK]
    out[:] = 0
    k, b = 0, meta[M_BEST_BID]
    while b >= 0 and k < n:
        if bid_qty[b] > 0:
            out[k, 0] = base + b * tick
            out[k, 1] = bid_qty[b]
            k += 1
        b -= 1
    k, a = 0, meta[M_BEST_ASK]
    while 0 <= a < len(ask_qty) and k < n:
        if ask_qty[a] > 0:
            out[k, 2] = base + a * tick
            out[k, 3] = ask_qty[a]
            k += 1
        a += 1


@njit(cache=True)
def _replay_l1(ev, meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side,
               free, out):  # fmt: skip
    base_tick = meta[M_TICK]
    for i in range(len(ev)):
        e = ev[i]
        apply_event(
            meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side, free,
            e.action, e.side, e.price, e.size, e.order_id,
        )  # fmt: skip
        if meta[M_ERROR] != 0:
            return i
        b, a = meta[M_BEST_BID], meta[M_BEST_ASK]
        out[i, 0] = meta[M_BASE] + b * base_tick if b >= 0 else 0
        out[i, 1] = bid_qty[b] if b >= 0 else 0
        out[i, 2] = meta[M_BASE] + a * base_tick if a >= 0 else 0
        out[i, 3] = ask_qty[a] if a >= 0 else 0
    return len(ev)


def replay_l1(events: np.ndarray, tick_fixed: int, book: BookState | None = None) -> np.ndarray:
    """The touch after every event: int64 rows (bid_px, bid_sz, ask_px, ask_sz).

    An empty side reads as price 0, size 0. Raises naming the record on a bad price.
    """
    book = book or BookState.new(tick_fixed)
    out = np.zeros((len(events), 4), np.int64)
    stop = _replay_l1(events, *book.arrays, out)
    if stop < len(events):
        book.check(f" at record {stop}")
    return out


def snapshot_end(events: np.ndarray) -> int:
    """Index of the first record after the leading snapshot (0 when there is none)."""
    snap = (events["flags"] & F_SNAPSHOT) != 0
    if not snap.any():
        return 0
    return int(np.flatnonzero(snap)[-1]) + 1


__all__ = [
    "ASK", "BID", "BookState", "apply_event", "apply_event_inlined", "apply_event_seq",
    "l2_levels", "replay_l1", "snapshot_end",
]  # fmt: skip
