"""The paper broker: our orders filled against the rebuilt book, with commissions.

Market orders walk the book's levels; the bracket's stop triggers on a trade at or
through it and fills at market; the target (a resting limit) fills when a trade prints
through its price, the conservative rule for an order of unknown queue position. One
leg filling cancels the other (OCO). The engine tells the broker where its triggers are
so the compiled kernel hands control back only when one may fire.
"""

from __future__ import annotations

import numpy as np

from esml.broker.base import OrderRejected, Placement
from esml.data.book import BookState
from esml.execution.orders import (
    Fill,
    Order,
    OrderIntent,
    OrderRole,
    OrderStatus,
    OrderType,
    Side,
)
from esml.features.kernel import NO_TRIGGER_HI, NO_TRIGGER_LO
from esml.market.instruments import PRICE_SCALE, Instrument

DEPTH_LEVELS = 10


class PaperBroker:
    def __init__(self, instrument: Instrument, book: BookState, commission_per_side: float):
        self.instrument = instrument
        self.book = book
        self.commission = commission_per_side
        self.now_ns = 0
        self._orders: dict[str, Order] = {}
        self._working: dict[str, Order] = {}  # what a trade can still fill
        self._by_client: dict[str, Placement] = {}
        self._fills: list[Fill] = []
        self._position: dict[str, int] = {}
        self._changed: dict[str, Order] = {}  # orders created or changed since the last take
        self._new_fills: list[Fill] = []

    # --- Broker protocol -------------------------------------------------------------
    def place(self, intent: OrderIntent) -> Placement:
        if intent.client_id in self._by_client:
            return self._by_client[intent.client_id]
        if intent.order_type is not OrderType.MARKET:
            raise OrderRejected(intent.client_id, "the paper broker takes market entries only")
        entry = self._new_order(intent.client_id, intent.symbol, intent.side, intent.qty,
                                OrderType.MARKET, OrderRole.ENTRY)  # fmt: skip
        price = self._market_fill_price(intent.side, intent.qty)
        if price is None:
            entry.reject_reason = "not enough liquidity in the book"
            self._set(entry, OrderStatus.REJECTED)
            self._by_client[intent.client_id] = Placement(entry)
            raise OrderRejected(intent.client_id, entry.reject_reason)
        self._fill(entry, price)
        stop = target = None
        if intent.bracket is not None:
            tick = self.instrument.tick_size
            sign = intent.side.sign
            exit_side = intent.side.opposite
            stop = self._leg(intent, exit_side, OrderType.STOP, OrderRole.STOP, entry)
            stop.price = price - sign * intent.bracket.stop_ticks * tick
            target = self._leg(intent, exit_side, OrderType.LIMIT, OrderRole.TARGET, entry)
            target.price = price + sign * intent.bracket.target_ticks * tick
            stop.oco_id, target.oco_id = target.order_id, stop.order_id
            self._set(stop, OrderStatus.WORKING)
            self._set(target, OrderStatus.WORKING)
        placement = Placement(entry, stop, target)
        self._by_client[intent.client_id] = placement
        return placement

    def cancel(self, order_id: str) -> None:
        o = self._orders[order_id]
        if not o.status.is_final:
            self._set(o, OrderStatus.CANCELLED)

    def flatten(self, symbol: str, client_id: str, reason: str) -> Order | None:
        for o in self.working_orders(symbol):
            self.cancel(o.order_id)
        pos = self.position(symbol)
        if pos == 0:
            return None
        side = Side.of_position(-pos)
        exit_ = self._new_order(client_id, symbol, side, abs(pos), OrderType.MARKET,
                                OrderRole.EXIT)  # fmt: skip
        price = self._market_fill_price(side, abs(pos))
        if price is None:
            exit_.reject_reason = f"{reason}: not enough liquidity in the book"
            self._set(exit_, OrderStatus.REJECTED)
            raise OrderRejected(client_id, exit_.reject_reason)
        self._fill(exit_, price)
        return exit_

    def position(self, symbol: str) -> int:
        return self._position.get(symbol, 0)

    def fills(self) -> list[Fill]:
        return list(self._fills)

    # --- what the engine needs -------------------------------------------------------
    def take_updates(self) -> tuple[list[Order], list[Fill]]:
        """Orders created or changed, and fills made, since the last call: what to journal."""
        orders, fills = list(self._changed.values()), self._new_fills
        self._changed, self._new_fills = {}, []
        return orders, fills

    def working_orders(self, symbol: str) -> list[Order]:
        return [o for o in self._working.values() if o.symbol == symbol]

    def trigger_levels(self) -> tuple[int, int]:
        """Fixed-point prices: a trade at or below `lo`, or at or above `hi`, may fill us."""
        lo, hi = NO_TRIGGER_LO, NO_TRIGGER_HI
        tick = self.instrument.tick_fixed
        for o in self._working.values():
            if o.price is None:
                continue
            px = self.instrument.to_fixed(o.price)
            if o.order_type is OrderType.STOP:
                if o.side is Side.SELL:
                    lo = max(lo, px)
                else:
                    hi = min(hi, px)
            elif o.side is Side.SELL:  # a sell limit fills on a print through it
                hi = min(hi, px + tick)
            else:
                lo = max(lo, px - tick)
        return lo, hi

    def on_trade(self, price_fixed: int) -> list[Fill]:
        """A trade printed at `price_fixed`: fill whichever working leg it reaches."""
        before = len(self._fills)
        price = price_fixed / PRICE_SCALE
        tick = self.instrument.tick_size
        for o in list(self._working.values()):
            if o.status is not OrderStatus.WORKING or o.price is None:
                continue  # its OCO partner filled earlier in this loop
            if o.order_type is OrderType.STOP:
                hit = price <= o.price if o.side is Side.SELL else price >= o.price
                fill_px = self._market_fill_price(o.side, o.remaining) if hit else None
            else:
                hit = price >= o.price + tick if o.side is Side.SELL else price <= o.price - tick
                fill_px = o.price if hit else None
            if fill_px is not None:
                self._fill(o, fill_px)
                if o.oco_id:
                    self.cancel(o.oco_id)
        return self._fills[before:]

    # --- internals -------------------------------------------------------------------
    def _new_order(self, client_id: str, symbol: str, side: Side, qty: int, kind: OrderType,
                   role: OrderRole, parent: str | None = None) -> Order:  # fmt: skip
        oid = f"{client_id}/{role.value}"  # unique across runs sharing one journal
        o = Order(oid, client_id, symbol, side, qty, kind, role, parent_id=parent,
                  ts_ns=self.now_ns)  # fmt: skip
        self._orders[oid] = o
        self._changed[oid] = o
        return o

    def _set(self, o: Order, status: OrderStatus) -> None:
        o.status = status
        if status is OrderStatus.WORKING:
            self._working[o.order_id] = o
        else:
            self._working.pop(o.order_id, None)
        self._changed[o.order_id] = o

    def _leg(self, intent: OrderIntent, side: Side, kind: OrderType, role: OrderRole,
             entry: Order) -> Order:  # fmt: skip
        return self._new_order(intent.client_id, intent.symbol, side, intent.qty, kind, role,
                               parent=entry.order_id)  # fmt: skip

    def _market_fill_price(self, side: Side, qty: int) -> float | None:
        """Average price of walking the opposite side of the book for `qty`."""
        depth = self.book.depth(DEPTH_LEVELS)
        px_col, sz_col = (2, 3) if side is Side.BUY else (0, 1)
        need, cost = qty, 0
        for px, sz in zip(depth[:, px_col], depth[:, sz_col], strict=True):
            if sz <= 0:
                break
            take = min(need, int(sz))
            cost += take * int(px)
            need -= take
            if need == 0:
                return float(np.float64(cost) / qty / PRICE_SCALE)
        return None

    def _fill(self, o: Order, price: float) -> None:
        qty = o.remaining
        o.filled_qty += qty
        o.avg_fill_price = price
        self._set(o, OrderStatus.FILLED)
        self._position[o.symbol] = self.position(o.symbol) + o.side.sign * qty
        fill = Fill(
            fill_id=f"{o.order_id}-F{len(self._fills) + 1}",
            order_id=o.order_id,
            client_id=o.client_id,
            symbol=o.symbol,
            side=o.side,
            qty=qty,
            price=price,
            commission=self.commission * qty,
            ts_ns=self.now_ns,
            role=o.role,
        )
        self._fills.append(fill)
        self._new_fills.append(fill)
