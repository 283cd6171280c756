"""The paper broker: the Broker protocol over the exchange simulator (`esml.sim.exchange`).

Orders go to the simulated exchange with their latency; what it reports (accepted, fills,
cancels, rejects) reaches the broker's view, as it would a real client, once the response
latency has passed: `position` and the orders here are the strategy's view, the exchange
holds the truth. Matching runs in the engine's compiled per-event kernel; without an
engine, `replay` drives the same kernel over events (book and matching only).

A bracket is one OSO package: the entry with its stop and target, which wait for the
entry's fills and are priced in ticks from its first fill. `flatten` is the exchange-side
liquidation: it cancels every order of ours and closes the position the exchange holds
when it arrives, so an exit can never double a fill still on its way.
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
from esml.features.kernel import (
    END,
    ERROR,
    FULL,
    PER_EVENT_NOTHING,
    UPDATE,
    advance_exchange,
)
from esml.features.streaming import FeatureState
from esml.market.instruments import PRICE_SCALE, Instrument, instrument_for
from esml.sim.exchange import Exchange, ExchangeConfig, OrderKind, Report, ReportKind

_KIND = {OrderType.MARKET: OrderKind.MARKET, OrderType.LIMIT: OrderKind.LIMIT}
NEVER = np.iinfo(np.int64).max


class PaperBroker:
    def __init__(self, instrument: Instrument, book: BookState,
                 exchange: ExchangeConfig | None = None) -> None:  # fmt: skip
        self.instrument = instrument
        self.book = book
        self.config = exchange or ExchangeConfig()
        self.exchange = Exchange(self.config, instrument.tick_fixed)
        self.now_ns = 0
        self._orders: dict[str, Order] = {}
        self._by_slot: list[Order] = []
        self._slot_of: dict[str, int] = {}
        self._by_client: dict[str, Placement | Order] = {}
        self._fills: list[Fill] = []
        self._fill_count: dict[str, int] = {}
        self._position: dict[str, int] = {}
        self._changed: dict[str, Order] = {}  # orders created or changed since the last take
        self._new_fills: list[Fill] = []
        self.request_rejections: list[tuple[str, str]] = []  # (order id, why)
        self._exit_reasons: dict[str, str] = {}
        self._scratch = FeatureState()
        self._observed = False

    def observe(self, events: np.ndarray) -> None:
        """The first events decide the exchange config's "auto" choices (market hours,
        queue model): see `Exchange.observe`."""
        if not self._observed and len(events):
            self.exchange.observe(events)
            self._observed = True

    # --- Broker protocol -------------------------------------------------------------
    def place(self, intent: OrderIntent) -> Placement:
        known = self._by_client.get(intent.client_id)
        if isinstance(known, Placement):
            return known
        if known is not None:
            raise OrderRejected(intent.client_id, "client id already used by another order")
        self._check_symbol(intent.client_id, intent.symbol)
        kind = _KIND.get(intent.order_type)
        if kind is None:
            raise OrderRejected(intent.client_id, "entries are market or limit orders")
        if kind is OrderKind.MARKET and intent.limit_price is not None:
            raise OrderRejected(intent.client_id, "a market order takes no limit price")
        price = 0
        if kind is OrderKind.LIMIT:
            price = self._fixed_price(intent.client_id, float(intent.limit_price or 0.0))
        sign = intent.side.sign
        entry = self._new_order(intent.client_id, intent.symbol, intent.side, intent.qty,
                                intent.order_type, OrderRole.ENTRY)  # fmt: skip
        if kind is OrderKind.LIMIT:
            entry.price = price / PRICE_SCALE
        slot = self.exchange.submit(self.now_ns, sign, kind, intent.qty, price)
        self._track(entry, slot)
        stop = target = None
        if intent.bracket is not None:
            exit_side = intent.side.opposite
            stop = self._new_order(intent.client_id, intent.symbol, exit_side, intent.qty,
                                   OrderType.STOP, OrderRole.STOP, entry.order_id)  # fmt: skip
            target = self._new_order(intent.client_id, intent.symbol, exit_side, intent.qty,
                                     OrderType.LIMIT, OrderRole.TARGET, entry.order_id)  # fmt: skip
            b = intent.bracket
            s_slot = self.exchange.submit(self.now_ns, -sign, OrderKind.STOP, 0, parent=slot,
                                          offset_ticks=-sign * b.stop_ticks)  # fmt: skip
            t_slot = self.exchange.submit(self.now_ns, -sign, OrderKind.LIMIT, 0, parent=slot,
                                          offset_ticks=sign * b.target_ticks)  # fmt: skip
            self.exchange.pair_oco(s_slot, t_slot)
            self._track(stop, s_slot)
            self._track(target, t_slot)
            stop.oco_id, target.oco_id = target.order_id, stop.order_id
        placement = Placement(entry, stop, target)
        self._by_client[intent.client_id] = placement
        return placement

    def cancel(self, order_id: str) -> None:
        o = self._order(order_id)
        if not o.status.is_final:
            self.exchange.cancel(self.now_ns, self._slot_of[order_id])

    def modify(self, order_id: str, *, price: float | None = None, qty: int | None = None) -> None:
        """A new limit or stop price (a trailing stop) and/or total quantity; the exchange
        answers after the round trip (`take_updates`; refusals in `request_rejections`)."""
        o = self._order(order_id)
        if price is None and qty is None:
            raise ValueError("modify needs a price or a quantity")
        if o.status.is_final:
            raise OrderRejected(o.client_id, f"order {order_id} is already {o.status.value}")
        fixed = 0 if price is None else self._fixed_price(o.client_id, price)
        if qty is not None and qty <= 0:
            raise OrderRejected(o.client_id, f"quantity must be positive, got {qty}")
        self.exchange.modify(self.now_ns, self._slot_of[order_id], price=fixed, qty=qty or 0)

    def flatten(self, symbol: str, client_id: str, reason: str) -> Order | None:
        """Close the position and cancel every working order, at the exchange in one
        request. None when there is nothing to close or cancel."""
        known = self._by_client.get(client_id)
        if isinstance(known, Order):
            return known
        self._check_symbol(client_id, symbol)
        pos = self.position(symbol)
        if pos == 0:
            for o in self.working_orders(symbol):
                self.cancel(o.order_id)
            return None
        side = Side.of_position(-pos)
        exit_ = self._new_order(client_id, symbol, side, abs(pos), OrderType.MARKET,
                                OrderRole.EXIT)  # fmt: skip
        slot = self.exchange.submit(self.now_ns, side.sign, OrderKind.FLATTEN, abs(pos))
        self._track(exit_, slot)
        self._by_client[client_id] = exit_
        self._exit_reasons[exit_.order_id] = reason
        return exit_

    def position(self, symbol: str) -> int:
        return self._position.get(symbol, 0)

    def fills(self) -> list[Fill]:
        return list(self._fills)

    # --- what the engine needs -------------------------------------------------------
    def take_updates(self) -> tuple[list[Order], list[Fill]]:
        """Orders created or changed, and fills made, that the strategy has seen by
        `now_ns` and not yet taken: what to journal."""
        self._receive(self.now_ns)
        orders, fills = list(self._changed.values()), self._new_fills
        self._changed, self._new_fills = {}, []
        return orders, fills

    def working_orders(self, symbol: str) -> list[Order]:
        """Orders not yet final, as the strategy knows them (sent, waiting or working)."""
        return [o for o in self._orders.values() if o.symbol == symbol and not o.status.is_final]

    def replay(self, events: np.ndarray) -> None:
        """Drive book and matching over `events` (no engine, no features), delivering every
        report as it becomes visible; `now_ns` ends at the last event."""
        self.observe(events)
        i, n = 0, len(events)
        while i < n:
            i, why = advance_exchange(
                events, i, *self.book.arrays, self.book.o_seq, self._scratch.s,
                self._scratch.ring, PER_EVENT_NOTHING, NEVER, *self.exchange.arrays,
            )  # fmt: skip
            if why == UPDATE:
                self.now_ns = self.exchange.next_visible_ns
                self._receive(self.now_ns)
            elif why == FULL:
                self.exchange.make_room()
            elif why == ERROR:
                self.book.check(f" at record {i}")
            elif why == END:
                break
        if n:
            self.now_ns = max(self.now_ns, int(events["ts_recv"][-1]))
            self._receive(self.now_ns)

    def advance_to(self, ts_ns: int) -> None:
        """Time passes to `ts_ns` with no market event (a quiet market, a live feed's
        heartbeat): requests that reach the exchange by then are carried out on the book as
        it stands, and reports visible by then are delivered."""
        meta, bid_qty, ask_qty = self.book.meta, self.book.bid_qty, self.book.ask_qty
        self.exchange.run_requests(meta, bid_qty, ask_qty, until_ns=ts_ns)
        self.now_ns = max(self.now_ns, ts_ns)
        self._receive(self.now_ns)

    def settle(self) -> None:
        """The data has ended: every request still on its way is carried out against the
        book as it stands, and every report is delivered."""
        meta, bid_qty, ask_qty = self.book.meta, self.book.bid_qty, self.book.ask_qty
        self.exchange.run_requests(meta, bid_qty, ask_qty)
        self.now_ns = max(self.now_ns, self.exchange.last_visible_ns)
        self._receive(self.now_ns)

    @property
    def next_update_ns(self) -> int:
        """When the next report reaches the strategy (NEVER when none is on its way)."""
        return self.exchange.next_visible_ns

    # --- internals -------------------------------------------------------------------
    def _check_symbol(self, client_id: str, symbol: str) -> None:
        try:
            same = instrument_for(symbol) == self.instrument
        except ValueError as e:
            raise OrderRejected(client_id, str(e)) from e
        if not same:
            raise OrderRejected(client_id, f"this paper exchange trades {self.instrument.root} "
                                           f"only, not {symbol}")  # fmt: skip

    def _fixed_price(self, client_id: str, price: float) -> int:
        fixed = self.instrument.to_fixed(price)
        if price <= 0 or fixed % self.instrument.tick_fixed:
            raise OrderRejected(client_id, f"price {price} is not on the "
                                           f"{self.instrument.tick_size} tick grid")  # fmt: skip
        return fixed

    def _order(self, order_id: str) -> Order:
        try:
            return self._orders[order_id]
        except KeyError:
            raise ValueError(f"unknown order {order_id}") from None

    def _new_order(self, client_id: str, symbol: str, side: Side, qty: int, kind: OrderType,
                   role: OrderRole, parent: str | None = None) -> Order:  # fmt: skip
        oid = f"{client_id}/{role.value}"  # unique across runs sharing one journal
        o = Order(oid, client_id, symbol, side, qty, kind, role, parent_id=parent,
                  ts_ns=self.now_ns)  # fmt: skip
        self._orders[oid] = o
        self._changed[oid] = o
        return o

    def _track(self, o: Order, slot: int) -> None:
        assert slot == len(self._by_slot), "exchange slots and broker orders out of step"
        self._by_slot.append(o)
        self._slot_of[o.order_id] = slot

    def _receive(self, now_ns: int) -> None:
        for r in self.exchange.take_reports(now_ns):
            self._apply(r)

    def _apply(self, r: Report) -> None:
        o = self._by_slot[r.slot]
        if r.kind is ReportKind.FILL:
            self._fill(o, r)
        elif r.kind is ReportKind.ACCEPTED:
            o.status = OrderStatus.WORKING
            o.qty = r.qty or o.qty
            if r.price:
                o.price = r.price / PRICE_SCALE
        elif r.kind is ReportKind.MODIFIED:
            o.qty = r.qty
            o.price = r.price / PRICE_SCALE if r.price else o.price
        elif r.kind is ReportKind.CANCELLED:
            o.status = OrderStatus.CANCELLED
        elif r.kind is ReportKind.REJECTED:
            o.status = OrderStatus.REJECTED
            why = self._exit_reasons.get(o.order_id)
            o.reject_reason = f"{why}: {r.reason}" if why else r.reason
        else:
            self.request_rejections.append((o.order_id, r.reason))
            return
        self._changed[o.order_id] = o

    def _fill(self, o: Order, r: Report) -> None:
        price = r.price / PRICE_SCALE
        value = o.avg_fill_price * o.filled_qty + price * r.qty
        o.filled_qty += r.qty
        o.avg_fill_price = value / o.filled_qty
        o.status = OrderStatus.FILLED if o.filled_qty >= o.qty else OrderStatus.WORKING
        self._position[o.symbol] = self.position(o.symbol) + o.side.sign * r.qty
        k = self._fill_count.get(o.order_id, 0) + 1
        self._fill_count[o.order_id] = k
        fill = Fill(
            fill_id=f"{o.order_id}-F{k}",
            order_id=o.order_id,
            client_id=o.client_id,
            symbol=o.symbol,
            side=o.side,
            qty=r.qty,
            price=price,
            commission=self.config.fee_per_side * r.qty,
            ts_ns=r.ts_ns,
            role=o.role,
        )
        self._fills.append(fill)
        self._new_fills.append(fill)
        self._changed[o.order_id] = o
