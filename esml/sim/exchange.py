"""The exchange simulator: our orders against a replayed or generated book.

Rules (each proved by tests/test_exchange_sim.py):
- Market orders walk the other side of the book, never taking more than is displayed at
  that instant; as on CME Globex they carry protection: what is left at the protection
  price (`protection_ticks` beyond the best price) rests there as a limit order.
- Limit orders that cross take liquidity the same way, up to their price; the rest joins
  the queue behind everything displayed at its price. FIFO on MBO (L3) data: a cancel or
  a reduction of an order that arrived before ours moves us up, one behind us does not
  (the book keeps each order's arrival sequence; CME priority). Probabilistic on L1/L2
  data (chosen from the data's F_MBP flag unless configured): a size reduction at our
  price was ahead of us with probability queue / level size, drawn from the seeded stream.
  A trade at our price fills us with whatever it took beyond the queue ahead; a trade
  through our price, or an order placed on the other side at or through it, fills us
  outright.
- Stops trigger on a trade at or through the stop and then execute as market orders.
- Brackets are one-sends-other: the legs wait for the entry to fill, are sized by its
  fills (a partial entry fill gives partial legs) and priced in ticks from its first fill;
  the legs are one-cancels-other (a fill on one takes as much off the other; filling it
  cancels the other).
- Fees are per contract per side on every fill.
- Rejects, with the reason: size over the limit, a limit price outside the band around
  the last trade (CME price banding: bids too high, offers too low), market closed
  (`esml.market.calendar.is_open`; a synthetic market is open whenever it has events),
  no market to trade against.
- Latency: a request sent at t reaches the book at t + feed + order entry latency (feed
  latency is charged to the order path: a decision made on data `feed` old acts that
  much later); what the exchange reports reaches the strategy after the response latency.
  Constant, or lognormal with that mean, drawn from the seeded stream; requests and reports
  each keep their order, as on one session.
- A crossed book (the pre-open, an auction) matches nothing: orders rest until it uncrosses.
- The replayed book is not changed by our orders (the standard replay assumption): our
  fills do not remove others' liquidity and our resting orders are invisible to others. One
  order never takes more than is displayed, but two orders of ours can each take the same
  displayed depth: the replay keeps no memory of what we took.
Deterministic: one seed, one outcome.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from esml.market import calendar
from esml.market.events import F_MBP, is_synthetic
from esml.sim.exchange_config import ExchangeConfig, LatencyConfig
from esml.sim.exchange_core import (
    C_ENTRY_FILL,
    C_FLATTEN,
    C_NOTHING_TO_CLOSE,
    C_OCO,
    C_PARENT,
    C_PROTECTION,
    C_REQUESTED,
    K_ACCEPTED,
    K_CANCELLED,
    K_FILL,
    K_MODIFIED,
    K_MODIFY_REJECTED,
    K_REJECTED,
    NEVER,
    O_ARRIVE,
    O_CANCEL_AT,
    O_FIELDS,
    O_HAS_OFFSET,
    O_LEVEL,
    O_MOD_AT,
    O_MOD_PRICE,
    O_MOD_QTY,
    O_OCO,
    O_OFFSET,
    O_PARENT,
    O_PRE_REJECT,
    O_PRICE,
    O_QTY,
    O_QUEUE,
    O_SIDE,
    O_STATE,
    O_TYPE,
    QUEUE_FIFO,
    QUEUE_PROBABILISTIC,
    R_CODE,
    R_FIELDS,
    R_KIND,
    R_PRICE,
    R_QTY,
    R_SLOT,
    R_TS,
    R_VISIBLE,
    REJ_BAD_QTY,
    REJ_BAND,
    REJ_CLOSED,
    REJ_NO_MARKET,
    REJ_PARENT,
    REJ_SIZE,
    REJ_TOO_LATE,
    S_IN_FLIGHT,
    T_FLATTEN,
    T_LIMIT,
    T_MARKET,
    T_STOP,
    X_BAND_TICKS,
    X_FIELDS,
    X_LAST_ARRIVAL,
    X_LAST_VISIBLE,
    X_MAX_QTY,
    X_N_ACTIVE,
    X_N_ORDERS,
    X_N_REPORTS,
    X_NEXT_ACTION,
    X_NEXT_VISIBLE,
    X_POSITION,
    X_PROTECT_TICKS,
    X_QUEUE_MODE,
    X_RESPONSE_NS,
    X_RNG,
    XF_FIELDS,
    XF_SIGMA,
    exchange_actions,
    latency_ns,
    watch,
)

REPORT_HEADROOM = 1024  # room one market event's reports can need; the kernel stops below it


class ReportKind(enum.IntEnum):
    ACCEPTED = K_ACCEPTED
    FILL = K_FILL
    CANCELLED = K_CANCELLED
    REJECTED = K_REJECTED
    MODIFIED = K_MODIFIED
    REQUEST_REJECTED = K_MODIFY_REJECTED


class OrderKind(enum.IntEnum):
    MARKET = T_MARKET
    LIMIT = T_LIMIT
    STOP = T_STOP
    FLATTEN = T_FLATTEN


_WHY = {
    (K_REJECTED, REJ_SIZE): "size is not between 1 and the {max_qty} contract limit",
    (K_REJECTED, REJ_BAND): "price outside the band ({band} ticks from the last trade)",
    (K_REJECTED, REJ_CLOSED): "market closed",
    (K_REJECTED, REJ_NO_MARKET): "no market to trade against",
    (K_REJECTED, REJ_PARENT): "its entry was rejected",
    (K_CANCELLED, C_REQUESTED): "cancelled as requested",
    (K_CANCELLED, C_OCO): "the other bracket leg filled",
    (K_CANCELLED, C_PARENT): "its entry ended without a fill",
    (K_CANCELLED, C_FLATTEN): "cancelled by a flatten",
    (K_CANCELLED, C_NOTHING_TO_CLOSE): "nothing to close: no position in that direction",
    (K_MODIFIED, C_REQUESTED): "modified as requested",
    (K_MODIFIED, C_OCO): "the other bracket leg filled part",
    (K_MODIFIED, C_PROTECTION): "the rest of a market order rests at its protection price",
    (K_MODIFIED, C_ENTRY_FILL): "the entry filled more",
    (K_MODIFY_REJECTED, REJ_TOO_LATE): "too late: the order had already ended",
    (K_MODIFY_REJECTED, REJ_BAD_QTY): "quantity at or below what has filled, or over the limit",
    (K_MODIFY_REJECTED, REJ_BAND): "price outside the band around the last trade",
}


@dataclass(frozen=True)
class Report:
    """One message from the exchange about one of our orders."""

    kind: ReportKind
    slot: int
    ts_ns: int  # when it happened at the exchange
    visible_ns: int  # when the strategy learns of it
    qty: int
    price: int  # fixed point; 0 when none
    code: int
    reason: str = ""


class Exchange:
    """Our orders at the simulated exchange, as the flat arrays the compiled kernel matches
    per market event (`esml.features.kernel.advance_exchange`)."""

    def __init__(self, cfg: ExchangeConfig, tick_fixed: int, capacity: int = 64) -> None:
        self.cfg = cfg
        self.tick_fixed = tick_fixed
        self.always_open = cfg.market_hours == "always_open"
        self.xm = np.zeros(X_FIELDS, np.int64)
        self.xm[X_NEXT_ACTION] = NEVER
        self.xm[X_NEXT_VISIBLE] = NEVER
        self.xm[X_RNG] = (
            np.random.SeedSequence(cfg.seed).generate_state(1, np.uint64)[0].view(np.int64)
        )
        self.xm[X_QUEUE_MODE] = QUEUE_PROBABILISTIC if cfg.queue == "probabilistic" else QUEUE_FIFO
        lat = cfg.latency
        self.xm[X_RESPONSE_NS] = round(lat.response_us * 1000)
        self.xm[X_MAX_QTY] = cfg.max_order_qty
        self.xm[X_BAND_TICKS] = cfg.price_band_ticks
        self.xm[X_PROTECT_TICKS] = cfg.protection_ticks
        self.xf = np.zeros(XF_FIELDS, np.float64)
        self.xf[XF_SIGMA] = lat.sigma
        self._entry_ns = round((lat.feed_us + lat.order_entry_us) * 1000)
        self.xo = np.zeros((capacity, O_FIELDS), np.int64)
        self.xa = np.zeros(capacity, np.int64)
        self.xr = np.zeros((4 * REPORT_HEADROOM, R_FIELDS), np.int64)
        watch(self.xm, self.xo, self.xa)

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """(xm, xo, xa, xr, xf) for the kernel; fetch again after submitting (they grow)."""
        return self.xm, self.xo, self.xa, self.xr, self.xf

    @property
    def position(self) -> int:
        """Signed contracts as the exchange holds them (the strategy learns with latency)."""
        return int(self.xm[X_POSITION])

    @property
    def next_visible_ns(self) -> int:
        return int(self.xm[X_NEXT_VISIBLE])

    @property
    def last_visible_ns(self) -> int:
        """When the last report made so far reaches the strategy."""
        return int(self.xm[X_LAST_VISIBLE])

    def queue_ahead(self, slot: int) -> int:
        return int(self.xo[slot, O_QUEUE])

    def observe(self, events: np.ndarray) -> None:
        """Settle the config's "auto" choices from the data: a synthetic market trades
        whenever it has events (exchange data follows the CME calendar); level data (MBP,
        flagged F_MBP) has no order ids, so its queues are probabilistic."""
        if not len(events):
            return
        if self.cfg.market_hours == "auto":
            self.always_open = is_synthetic(events)
        if self.cfg.queue == "auto":
            level_data = bool(np.any(events["flags"] & F_MBP))
            self.xm[X_QUEUE_MODE] = QUEUE_PROBABILISTIC if level_data else QUEUE_FIFO

    # --- requests from the strategy --------------------------------------------------
    def submit(
        self, now_ns: int, side: int, kind: OrderKind, qty: int, price: int = 0, *,
        parent: int = -1, offset_ticks: int | None = None,
    ) -> int:  # fmt: skip
        """Send an order; returns its slot. A bracket leg (`parent` set) travels with its
        entry and waits for its fills; `offset_ticks` prices it from the entry's first fill."""
        if side not in (1, -1):
            raise ValueError(f"side must be +1 (buy) or -1 (sell), got {side}")
        if parent < 0 and kind is not OrderKind.FLATTEN and qty <= 0:
            raise ValueError(f"order quantity must be positive, got {qty}")
        priced = kind in (OrderKind.LIMIT, OrderKind.STOP) and offset_ticks is None
        if priced and (price <= 0 or price % self.tick_fixed):
            raise ValueError(f"price {price} is not a positive multiple of the tick")
        slot = self._new_slot()
        o = self.xo[slot]
        o[:] = 0
        o[O_SIDE] = side
        o[O_TYPE] = int(kind)
        o[O_PRICE] = price
        o[O_QTY] = qty
        o[O_LEVEL] = -1
        o[O_CANCEL_AT] = NEVER
        o[O_MOD_AT] = NEVER
        o[O_OCO] = -1
        o[O_PARENT] = parent
        o[O_STATE] = S_IN_FLIGHT
        if offset_ticks is not None:
            o[O_OFFSET] = offset_ticks
            o[O_HAS_OFFSET] = 1
        if parent >= 0:
            o[O_QTY] = 0  # sized by the entry's fills
            o[O_ARRIVE] = NEVER
        else:
            arrive = self._arrival(now_ns)
            o[O_ARRIVE] = arrive
            if not self._open(arrive):
                o[O_PRE_REJECT] = REJ_CLOSED
            self.xm[X_NEXT_ACTION] = min(int(self.xm[X_NEXT_ACTION]), arrive)
        self.xa[self.xm[X_N_ACTIVE]] = slot
        self.xm[X_N_ACTIVE] += 1
        return slot

    def pair_oco(self, a: int, b: int) -> None:
        self.xo[a, O_OCO] = b
        self.xo[b, O_OCO] = a

    def cancel(self, now_ns: int, slot: int) -> None:
        self._check_slot(slot)
        self.xo[slot, O_CANCEL_AT] = self._request(now_ns, slot)

    def modify(self, now_ns: int, slot: int, *, price: int = 0, qty: int = 0) -> None:
        """A new price and/or total quantity (0 keeps it). A modify sent while another of
        the same order is on its way replaces it: the later values arrive, once."""
        self._check_slot(slot)
        if price < 0 or price % self.tick_fixed:
            raise ValueError(f"price {price} is not a multiple of the tick")
        if qty < 0:
            raise ValueError(f"quantity must be positive, got {qty}")
        o = self.xo[slot]
        o[O_MOD_PRICE] = price
        o[O_MOD_QTY] = qty
        o[O_MOD_AT] = self._request(now_ns, slot)

    # --- what comes back -------------------------------------------------------------
    def take_reports(self, now_ns: int) -> list[Report]:
        """Reports the strategy can see at `now_ns`, oldest first; each is given once."""
        n = int(self.xm[X_N_REPORTS])
        rows = self.xr[:n]
        k = int(np.searchsorted(rows[:, R_VISIBLE], now_ns, side="right"))
        out = [self._report(r) for r in rows[:k].tolist()]
        rest = n - k
        self.xr[:rest] = self.xr[k:n]
        self.xm[X_N_REPORTS] = rest
        self.xm[X_NEXT_VISIBLE] = self.xr[0, R_VISIBLE] if rest else NEVER
        return out

    def make_room(self) -> None:
        """More room for reports (the kernel stopped because it was running short)."""
        self.xr = np.concatenate([self.xr, np.zeros_like(self.xr)])

    def run_requests(self, meta: np.ndarray, bid_qty: np.ndarray, ask_qty: np.ndarray,
                     until_ns: int | None = None) -> None:  # fmt: skip
        """Carry out the requests reaching the exchange by `until_ns` (all of them when
        None: the data has ended and nothing sent may be left hanging) on the book as it
        stands: no market event happens meanwhile."""
        before = NEVER if until_ns is None else until_ns + 1
        exchange_actions(self.xm, self.xo, self.xa, self.xr, self.xf, meta, bid_qty, ask_qty,
                         before)  # fmt: skip

    # --- internals -------------------------------------------------------------------
    def _new_slot(self) -> int:
        slot = int(self.xm[X_N_ORDERS])
        if slot == len(self.xo):
            self.xo = np.concatenate([self.xo, np.zeros_like(self.xo)])
            self.xa = np.concatenate([self.xa, np.zeros_like(self.xa)])
        self.xm[X_N_ORDERS] = slot + 1
        return slot

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.xm[X_N_ORDERS]:
            raise ValueError(f"no order in slot {slot}")

    def _arrival(self, now_ns: int) -> int:
        """Requests travel one session in order, each reaching the exchange after the last."""
        t = now_ns + latency_ns(self.xm, self.xf, self._entry_ns)
        t = max(t, int(self.xm[X_LAST_ARRIVAL]) + 1)
        self.xm[X_LAST_ARRIVAL] = t
        return t

    def _request(self, now_ns: int, slot: int) -> int:
        t = self._arrival(now_ns)
        if slot not in self.xa[: self.xm[X_N_ACTIVE]]:  # ended: answer the request anyway
            self.xa[self.xm[X_N_ACTIVE]] = slot
            self.xm[X_N_ACTIVE] += 1
            self.xa[: self.xm[X_N_ACTIVE]].sort()
        self.xm[X_NEXT_ACTION] = min(int(self.xm[X_NEXT_ACTION]), t)
        return t

    def _open(self, ts_ns: int) -> bool:
        if self.always_open:
            return True
        if self.cfg.market_hours == "auto":
            try:
                return calendar.is_open(ts_ns)
            except ValueError:  # before the modelled hours: the data decides when it trades
                return True
        return calendar.is_open(ts_ns)

    def _report(self, row: list[int]) -> Report:
        kind = ReportKind(row[R_KIND])
        code = row[R_CODE]
        why = _WHY.get((int(kind), code), "")
        why = why.format(max_qty=self.cfg.max_order_qty, band=self.cfg.price_band_ticks)
        return Report(kind, row[R_SLOT], row[R_TS], row[R_VISIBLE], row[R_QTY], row[R_PRICE],
                      code, why)  # fmt: skip


__all__ = [
    "Exchange",
    "ExchangeConfig",
    "LatencyConfig",
    "OrderKind",
    "Report",
    "ReportKind",
]
