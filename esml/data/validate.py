"""Checks that a rebuilt book is consistent with the exchange's own prints.

Two properties hold for correct CME MBO reconstruction:
- once continuous trading has started (the first trade after the snapshot uncrosses the
  pre-open auction), the book is never crossed at the end of an exchange packet;
- every aggressor trade prints at or inside the touch of the book just before it. The
  exchange sends a match as trades and fills first and the resting orders' book updates
  at the end of the packet, so "just before" means the book less the fills already
  printed in the same packet: a sweep's second print hits the level that became the
  touch when the first was used up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from esml.data.book import (
    M_BASE,
    M_BEST_ASK,
    M_BEST_BID,
    M_ERROR,
    M_TICK,
    BookState,
    apply_event,
)
from esml.market.events import BID, F_LAST, F_SNAPSHOT, FILL, NO_SIDE, TRADE


@dataclass(frozen=True)
class BookCheck:
    records: int
    packets_checked: int
    crossed_packets: int
    preopen_crossed_packets: int  # crossed before the opening trade: the auction, legal
    trades_checked: int
    trades_outside_touch: int
    first_bad_trade: int  # record index, -1 when none
    first_crossed: int  # record index, -1 when none

    @property
    def ok(self) -> bool:
        return self.crossed_packets == 0 and self.trades_outside_touch == 0


@njit(cache=True)
def _effective_best(meta, qty, filled_px, filled_qty, n_filled, side_is_bid):
    """Best level index of one side after removing this packet's earlier fills."""
    base, tick = meta[M_BASE], meta[M_TICK]
    idx = meta[M_BEST_BID] if side_is_bid else meta[M_BEST_ASK]
    step = -1 if side_is_bid else 1
    while 0 <= idx < len(qty):
        px = base + idx * tick
        used = 0
        for k in range(n_filled):
            if filled_px[k] == px:
                used += filled_qty[k]
        if qty[idx] - used > 0:
            return idx
        idx += step
    return -1


@njit(cache=True)
def _check(ev, meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side, free,
           counts):  # fmt: skip
    max_fills = 4096
    f_px_b = np.zeros(max_fills, np.int64)
    f_q_b = np.zeros(max_fills, np.int64)
    f_px_a = np.zeros(max_fills, np.int64)
    f_q_a = np.zeros(max_fills, np.int64)
    nb = 0
    na = 0
    opened = False
    counts[6] = -1
    counts[7] = -1
    base, tick = meta[M_BASE], meta[M_TICK]
    for i in range(len(ev)):
        e = ev[i]
        in_snapshot = (e.flags & F_SNAPSHOT) != 0
        if e.action == TRADE and not in_snapshot:
            if opened and e.side != NO_SIDE:
                counts[2] += 1
                b = _effective_best(meta, bid_qty, f_px_b, f_q_b, nb, True)
                a = _effective_best(meta, ask_qty, f_px_a, f_q_a, na, False)
                base, tick = meta[M_BASE], meta[M_TICK]
                lo = base + b * tick if b >= 0 else -(1 << 62)
                hi = base + a * tick if a >= 0 else 1 << 62
                if e.price < lo or e.price > hi:
                    counts[3] += 1
                    if counts[6] < 0:
                        counts[6] = i
            opened = True
        elif e.action == FILL and not in_snapshot:
            if e.side == BID:
                if nb < max_fills:
                    f_px_b[nb] = e.price
                    f_q_b[nb] = e.size
                    nb += 1
            elif na < max_fills:
                f_px_a[na] = e.price
                f_q_a[na] = e.size
                na += 1
        apply_event(
            meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side, free,
            e.action, e.side, e.price, e.size, e.order_id,
        )  # fmt: skip
        if meta[M_ERROR] != 0:
            return i
        if (e.flags & F_LAST) != 0:
            nb = 0
            na = 0
            if not in_snapshot:
                bb, ba = meta[M_BEST_BID], meta[M_BEST_ASK]
                counts[0] += 1
                if bb >= 0 and ba >= 0 and bb >= ba:
                    if opened:
                        counts[1] += 1
                        if counts[7] < 0:
                            counts[7] = i
                    else:
                        counts[4] += 1
    return len(ev)


def check_book(events: np.ndarray, tick_fixed: int) -> BookCheck:
    book = BookState.new(tick_fixed)
    counts = np.zeros(8, np.int64)
    stop = _check(events, *book.arrays, counts)
    if stop < len(events):
        book.check(f" at record {stop}")
    return BookCheck(
        records=len(events),
        packets_checked=int(counts[0]),
        crossed_packets=int(counts[1]),
        preopen_crossed_packets=int(counts[4]),
        trades_checked=int(counts[2]),
        trades_outside_touch=int(counts[3]),
        first_bad_trade=int(counts[6]),
        first_crossed=int(counts[7]),
    )
