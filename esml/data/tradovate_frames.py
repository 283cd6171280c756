"""Tradovate market-data frames (`md` quotes and DOM, `chart` ticks and minute bars) as
esml's event arrays, so the same book, features and engine run on them.

Tradovate's data is aggregated by price level, never by order (it is not MBO):

- a quote is the touch (best bid and offer with their sizes) and the last trade;
- a DOM is the 10 best price levels a side, with the total size resting at each;
- a tick chart is every trade (price, size, the touch it met, a tick id);
- minute bars are OHLCV with up/down volume.

Events: the touch of a quote becomes one pseudo-order per side, modified as the touch
moves (the same ids and F_MBP flag as DBN's MBP-1: `esml.data.dbn.L1_BID_ORDER_ID`); a DOM
level becomes one pseudo-order per (side, price), added, resized and cancelled as the
level appears, changes and disappears; a trade becomes a TRADE event whose side is the
aggressor's, inferred from the touch it met (at or through the offer: a buyer, BID; at or
through the bid: a seller, ASK; inside the spread: unknown). Every event carries F_MBP.

What that allows, honestly: L1 and L2 features (spread, microprice, imbalance over the
10 levels, depth, order-flow imbalance from level changes, trade flow with inferred
aggressor) are computed exactly as on MBP data. What it cannot give: queue position
(no order ids: the exchange simulator falls back to its probabilistic queue for F_MBP
data), per-order features (order counts, order ages, cancellation of individual orders,
iceberg refills), and depth beyond the 10th level (a level leaving the 10-level window is
cancelled here even if it still rests at the exchange).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from esml.data.dbn import L1_ASK_ORDER_ID, L1_BID_ORDER_ID
from esml.data.schemas import OHLCV_DTYPE, RTYPE_OHLCV_1M
from esml.data.tradovate_time import stamp_ns
from esml.market.events import (
    ADD,
    ASK,
    BID,
    CANCEL,
    F_LAST,
    F_MBP,
    MBO_DTYPE,
    MODIFY,
    NO_SIDE,
    TRADE,
    empty_events,
)
from esml.market.instruments import PRICE_SCALE

# Events converted from Tradovate's feed: not a CME publisher id, and not the simulator's
# synthetic id either (`esml.market.events.PUBLISHER_SYNTHETIC`).
PUBLISHER_TRADOVATE = 0xFFFE
_DOM_ID_BASE = 1 << 40  # DOM level pseudo-orders: base + side bit + price in ticks
_ASK_BIT = 1 << 39


def _fixed(price: float) -> int:
    return round(float(price) * PRICE_SCALE)


@dataclass
class _Event:
    action: int
    side: int
    price: float
    size: int
    order_id: int = 0


@dataclass
class TradovateFrames:
    """One contract's md and chart frames into events, in arrival order.

    `book` picks which frames build the book: "quote" (the touch) or "dom" (10 levels);
    the other kind's levels are ignored so no size is counted twice. Trades come from
    tick charts when one is subscribed (`trades="chart"`: every trade, with its tick id),
    otherwise from the quotes' rising total volume (`trades="quote"`)."""

    instrument_id: int
    tick_size: float
    book: str = "quote"
    trades: str = "quote"
    _touch: dict[int, tuple[float, int] | None] = field(default_factory=dict)
    _levels: dict[int, dict[float, int]] = field(default_factory=lambda: {BID: {}, ASK: {}})
    _volume: int | None = None
    _seen_ticks: set[int] = field(default_factory=set)
    _bars: dict[int, np.void] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.book not in ("quote", "dom") or self.trades not in ("quote", "chart"):
            raise ValueError(
                f"book must be quote|dom, trades quote|chart: {self.book}, {self.trades}"
            )
        if not self.tick_size > 0:
            raise ValueError(f"tick size must be positive, got {self.tick_size}")

    # -- md frames ------------------------------------------------------------------------------

    def quote(self, q: dict[str, Any]) -> np.ndarray:
        """One entry of an `md` event's `quotes` list."""
        ts = stamp_ns(str(q["timestamp"]))
        entries = q.get("entries") or {}
        out: list[_Event] = []
        if self.trades == "quote":
            total = (entries.get("TotalTradeVolume") or {}).get("size")
            trade = entries.get("Trade") or {}
            if total is not None:
                total = int(total)
                if self._volume is not None and total > self._volume and trade.get("price"):
                    price = float(trade["price"])
                    out.append(_Event(TRADE, self._aggressor(price), price, total - self._volume))
                self._volume = total
        if self.book == "quote":
            for side, key, oid in ((BID, "Bid", L1_BID_ORDER_ID), (ASK, "Offer", L1_ASK_ORDER_ID)):
                e = entries.get(key) or {}
                now = (float(e["price"]), int(e["size"])) if e.get("size") else None
                before = self._touch.get(side)
                if now == before:
                    continue
                if now is None:
                    assert before is not None
                    out.append(_Event(CANCEL, side, before[0], before[1], oid))
                else:
                    out.append(_Event(MODIFY, side, now[0], now[1], oid))
                self._touch[side] = now
        return self._events(out, ts)

    def dom(self, d: dict[str, Any]) -> np.ndarray:
        """One entry of an `md` event's `doms` list: the new 10 levels a side."""
        if self.book != "dom":
            return empty_events(0)
        ts = stamp_ns(str(d["timestamp"]))
        out: list[_Event] = []
        for side, key in ((BID, "bids"), (ASK, "offers")):
            now = {float(lv["price"]): int(lv["size"]) for lv in d.get(key) or [] if lv.get("size")}
            before = self._levels[side]
            for price in sorted(set(before) | set(now)):
                oid = self._level_id(side, price)
                if price not in now:
                    out.append(_Event(CANCEL, side, price, before[price], oid))
                elif price not in before:
                    out.append(_Event(ADD, side, price, now[price], oid))
                elif now[price] != before[price]:
                    out.append(_Event(MODIFY, side, price, now[price], oid))
            self._levels[side] = now
        return self._events(out, ts)

    # -- chart frames -------------------------------------------------------------------------

    def ticks(self, packet: dict[str, Any]) -> np.ndarray:
        """One tick-chart packet (`bp`, `bt`, `ts`, `tks`): its trades not seen before
        (history and live subscriptions overlap), in time order."""
        base_px, base_ms = int(packet["bp"]), int(packet["bt"])
        tick = float(packet.get("ts") or self.tick_size)
        rows = sorted(packet.get("tks") or [], key=lambda t: (t["t"], t.get("id", 0)))
        events = []
        for t in rows:
            tid = t.get("id")
            if tid is not None:
                if tid in self._seen_ticks:
                    continue
                self._seen_ticks.add(int(tid))
            price = (base_px + int(t["p"])) * tick
            side = NO_SIDE
            if "a" in t and price >= (base_px + int(t["a"])) * tick:
                side = BID
            elif "b" in t and price <= (base_px + int(t["b"])) * tick:
                side = ASK
            ts = (base_ms + int(t["t"])) * 1_000_000
            events.append(self._events([_Event(TRADE, side, price, int(t["s"]))], ts))
        return np.concatenate(events) if events else empty_events(0)

    def seen(self, tick_ids: list[int]) -> None:
        """Trades taken elsewhere (a warm start's history): not converted again."""
        self._seen_ticks.update(int(t) for t in tick_ids)

    def minute_bars(self, packet: dict[str, Any]) -> np.ndarray:
        """One minute-bar packet's bars as OHLCV records; a bar sent again (the forming
        minute, updated) replaces the earlier copy in `bars()`."""
        rows = packet.get("bars") or []
        out = np.zeros(len(rows), OHLCV_DTYPE)
        out["length"] = OHLCV_DTYPE.itemsize // 4
        out["rtype"] = RTYPE_OHLCV_1M
        out["publisher_id"] = PUBLISHER_TRADOVATE
        out["instrument_id"] = self.instrument_id
        for i, b in enumerate(rows):
            out[i]["ts_event"] = stamp_ns(str(b["timestamp"]))
            for k in ("open", "high", "low", "close"):
                out[i][k] = _fixed(b[k])
            out[i]["volume"] = int(b.get("upVolume", 0)) + int(b.get("downVolume", 0))
            self._bars[int(out[i]["ts_event"])] = out[i].copy()
        return out

    def bars(self) -> np.ndarray:
        """Every minute bar received, one per minute (its latest copy), in time order."""
        keys = sorted(self._bars)
        return np.array([self._bars[k] for k in keys], OHLCV_DTYPE)

    # -- helpers ------------------------------------------------------------------------------

    def _aggressor(self, price: float) -> int:
        """The side of the book the trade met, from the touch before it (a trade that
        takes a level moves the touch after it)."""
        if self.book == "dom":
            bids, asks = self._levels[BID], self._levels[ASK]
            bid = (max(bids), 0) if bids else None
            ask = (min(asks), 0) if asks else None
        else:
            bid, ask = self._touch.get(BID), self._touch.get(ASK)
        if ask is not None and price >= ask[0]:
            return BID
        if bid is not None and price <= bid[0]:
            return ASK
        return NO_SIDE

    def _level_id(self, side: int, price: float) -> int:
        return _DOM_ID_BASE | (_ASK_BIT if side == ASK else 0) | round(price / self.tick_size)

    def _events(self, items: list[_Event], ts_ns: int) -> np.ndarray:
        ev = empty_events(len(items))
        if not items:
            return ev
        ev["publisher_id"] = PUBLISHER_TRADOVATE
        ev["instrument_id"] = self.instrument_id
        ev["ts_event"] = ev["ts_recv"] = ts_ns
        ev["flags"] = F_MBP
        for i, it in enumerate(items):
            ev[i]["action"], ev[i]["side"] = it.action, it.side
            ev[i]["price"], ev[i]["size"], ev[i]["order_id"] = (
                _fixed(it.price),
                it.size,
                it.order_id,
            )
        ev[-1]["flags"] |= F_LAST
        return ev


def concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, MBO_DTYPE)
