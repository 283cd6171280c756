"""Tradovate behind the Broker protocol: orders over REST, order and fill updates over the
user WebSocket (or by polling REST where no socket runs, as in the router Lambda).

One intent is never two orders. Every order carries a `clOrdId`; when an order request's
answer is lost (timeout, dropped connection, 5xx) the client asks Tradovate for that
clOrdId before it sends anything again: found, the order is adopted as if the answer had
come; absent after a grace period, it is sent once more; unknowable (the lookup fails
too), `OutcomeUnknown` goes up and the execution layer keeps the intent unresolved until
its own lookup (`order_for_client`) settles it. Cancels, modifies and liquidations are
settled the same way, by reading the order or position back.

With `connect()` the client opens the user socket (`esml.broker.tradovate.user_sync`):
`take_updates()` then drains what the socket delivered, every fill exactly once, partial
fills included, and a reconnect resynchronises without losing or doubling anything.
Without it, `take_updates()` polls REST. `market_data()` opens the md socket.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import requests

from esml.broker.base import BrokerError, OrderRejected, Placement
from esml.broker.tradovate.counters import Counters
from esml.broker.tradovate.credentials import TradovateCredentials
from esml.broker.tradovate.orders import (
    LIVE_STATUSES,
    OrderSpec,
    intent_body,
    leg_client_id,
    now_ns,
    order_from_entities,
    peg_difference,
    role_of_client_id,
)
from esml.broker.tradovate.rest import (
    OutcomeUnknown,
    RequestRefused,
    Token,
    TradovateRest,
    as_list,
    utc_now,
)
from esml.broker.tradovate.user_sync import OrderSnapshot, UserSync, is_snapshot_part
from esml.data.tradovate_time import stamp_ns
from esml.execution.orders import (
    Fill,
    Order,
    OrderIntent,
    OrderRole,
    OrderStatus,
    OrderType,
    Side,
)
from esml.market.instruments import instrument_for

if TYPE_CHECKING:  # loaded when sockets are asked for: REST alone (a Lambda) needs neither
    from esml.broker.tradovate.market_data import MarketData  # numpy
    from esml.broker.tradovate.transport import LoopThread, TradovateSocket  # websockets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProductSpec:
    """What a contract's product says about its prices: tick size and dollar values."""

    symbol: str
    contract_id: int
    product: str
    tick_size: float
    value_per_point: float

    @property
    def tick_value(self) -> float:
        return self.tick_size * self.value_per_point


class TradovateClient:
    """One account at Tradovate (demo, live, or the loopback simulator)."""

    def __init__(
        self,
        credentials: TradovateCredentials,
        base_url: str | None = None,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = (3.05, 10.0),
        clock: Callable[[], datetime] = utc_now,
        renew_margin: timedelta = timedelta(minutes=10),
        commission_per_side: float = 0.0,
        *,
        ws_url: str | None = None,
        md_url: str | None = None,
        rate_limit_budget_s: float = 30.0,
        lookup_grace_s: float = 0.5,
        socket_options: dict[str, float] | None = None,
        counters: Counters | None = None,
    ) -> None:
        self.counters = counters or Counters()
        self._creds = credentials
        self.rest = TradovateRest(
            credentials,
            base_url,
            http=session,
            timeout=timeout,
            clock=clock,
            renew_margin=renew_margin,
            rate_limit_budget_s=rate_limit_budget_s,
            counters=self.counters,
        )
        self._clock = clock
        self._renew_margin = renew_margin
        self._ws_url = ws_url or credentials.ws_url
        self._md_url = md_url or credentials.md_url
        self._socket_options = socket_options or {}
        self._commission = commission_per_side
        self._grace = lookup_grace_s
        self._account: tuple[int, str] | None = None
        self._contract_ids: dict[str, int] = {}
        self._contract_names: dict[int, str] = {}
        self._placed: dict[str, Placement | OrderRejected] = {}
        self._flattened: dict[str, Order | None] = {}
        self._known: dict[str, tuple[str, OrderRole]] = {}  # order id -> (client id, role)
        self._protected: dict[str, Order | OrderRejected] = {}
        self._tracked: dict[str, Order] = {}  # orders whose changes take_updates reports
        self._taken_fills: set[str] = set()
        self._account_id = 0
        self._loop: LoopThread | None = None
        self._user: TradovateSocket | None = None
        self._user_run: concurrent.futures.Future[None] | None = None
        self._md: list[MarketData] = []
        self.sync: UserSync | None = None

    def __repr__(self) -> str:
        return f"TradovateClient(user={self._creds.name!r}, base_url={self.rest.base_url!r})"

    # -- Broker protocol ------------------------------------------------------------

    def place(self, intent: OrderIntent, reference_price: float | None = None) -> Placement:
        """Idempotent on `intent.client_id` within this client, refusals included.

        `reference_price` prices the bracket of a market entry; a limit entry's bracket
        is priced from its limit price.
        """
        earlier = self._placed.get(intent.client_id)
        if isinstance(earlier, OrderRejected):
            raise earlier
        if earlier is not None:
            return earlier
        body, stop_px, target_px = intent_body(intent, reference_price)
        path = "/order/placeoso" if intent.bracket is not None else "/order/placeorder"
        try:
            answer = self._submit(path, body, intent.client_id)
        except OrderRejected as rejected:
            self._placed[intent.client_id] = rejected
            raise
        ids = ("orderId", "oso1Id", "oso2Id") if intent.bracket is not None else ("orderId",)
        if not all(isinstance(answer.get(k), int) for k in ids):
            raise BrokerError(f"{path} answered without the order ids {ids}: {answer!r}")
        entry = Order(
            order_id=str(answer["orderId"]),
            client_id=intent.client_id,
            symbol=intent.symbol,
            side=intent.side,
            qty=intent.qty,
            order_type=intent.order_type,
            role=OrderRole.ENTRY,
            price=body.get("price"),
            ts_ns=intent.ts_ns,
        )
        stop = target = None
        if intent.bracket is not None:
            stop, target = (
                Order(
                    order_id=str(answer[key]),
                    client_id=leg_client_id(intent.client_id, role),
                    symbol=intent.symbol,
                    side=intent.side.opposite,
                    qty=intent.qty,
                    order_type=order_type,
                    role=role,
                    price=price,
                    parent_id=entry.order_id,
                    oco_id=str(answer[other]),
                    ts_ns=intent.ts_ns,
                )
                for key, other, role, order_type, price in (
                    ("oso1Id", "oso2Id", OrderRole.STOP, OrderType.STOP, stop_px),
                    ("oso2Id", "oso1Id", OrderRole.TARGET, OrderType.LIMIT, target_px),
                )
            )
        placement = Placement(entry=entry, stop=stop, target=target)
        self._adopt(placement.orders)
        self._placed[intent.client_id] = placement
        log.info("placed %s: %s", intent.client_id, [o.order_id for o in placement.orders])
        return placement

    def cancel(self, order_id: str) -> None:
        body = {"orderId": int(order_id), "isAutomated": True}
        try:
            answer = self.rest.post("/order/cancelorder", body)
        except OutcomeUnknown:
            if self._order_status(order_id) in ("Canceled", "Filled", "Expired", "Rejected"):
                log.warning("cancel of %s: answer lost, the order is already final", order_id)
                return
            self.counters.add("resent_after_lookup")
            answer = self.rest.post("/order/cancelorder", body)
        except RequestRefused as e:
            raise BrokerError(f"cancel of order {order_id} refused: {e.reason}") from None
        if not isinstance(answer, dict):
            raise BrokerError(f"cancel of order {order_id}: unexpected answer {answer!r}")
        if answer.get("failureReason") not in (None, "Success") or answer.get("errorText"):
            raise BrokerError(f"cancel of order {order_id} refused: {_failure(answer)}")

    def flatten(self, symbol: str, client_id: str, reason: str) -> Order | None:
        """Liquidate the symbol at Tradovate (its working orders are cancelled with it).
        None when there was no position to close. Liquidating is idempotent in effect
        (a flat position is left alone), so a lost answer is settled by reading the
        position and, if it is still open, asking once more."""
        if client_id in self._flattened:
            return self._flattened[client_id]
        held = self.position(symbol)
        account_id, _ = self._resolve_account()
        body = {
            "accountId": account_id,
            "contractId": self._contract_id(symbol),
            "admin": False,
            "isAutomated": True,
        }
        try:
            answer = self.rest.post("/order/liquidateposition", body)
        except OutcomeUnknown:
            if self.position(symbol) == 0:
                log.warning("liquidation of %s: answer lost, the position is flat", symbol)
                answer = {"orderId": self._latest_close(symbol, held)}
            else:
                self.counters.add("resent_after_lookup")
                answer = self.rest.post("/order/liquidateposition", body)
        except RequestRefused as e:
            raise OrderRejected(client_id, e.reason) from None
        _raise_on_failure(answer, client_id)
        order: Order | None = None
        if held != 0 and isinstance(answer.get("orderId"), int):
            order = Order(
                order_id=str(answer["orderId"]),
                client_id=client_id,
                symbol=symbol,
                side=Side.of_position(-held),
                qty=abs(held),
                order_type=OrderType.MARKET,
                role=OrderRole.EXIT,
                ts_ns=now_ns(),
            )
            self._adopt([order])
        log.info("flattened %s for %s (%s): held %+d", symbol, client_id, reason, held)
        self._flattened[client_id] = order
        return order

    def position(self, symbol: str) -> int:
        account_id, _ = self._resolve_account()
        contract_id = self._contract_id(symbol)
        return sum(
            int(p["netPos"])
            for p in self.position_list()
            if p.get("accountId") == account_id and p.get("contractId") == contract_id
        )

    def fills(self) -> list[Fill]:
        """Every active fill of the user's accounts at Tradovate, oldest first. Commission
        is the configured per-side estimate: /fill/list carries no fees."""
        rows = [r for r in self.fill_list() if r.get("active", True)]
        self._learn_client_ids({str(r["orderId"]) for r in rows})
        return [
            self._fill_of(r)
            for r in sorted(rows, key=lambda r: (stamp_ns(r["timestamp"]), r["id"]))
        ]

    # -- more order types ---------------------------------------------------------------------

    def place_order(self, spec: OrderSpec) -> Order:
        """One order of any Tradovate type (Market, Limit, Stop, StopLimit). Idempotent on
        `spec.client_id` as `place` is."""
        earlier = self._protected.get(spec.client_id)
        if isinstance(earlier, OrderRejected):
            raise earlier
        if earlier is not None:
            return earlier
        try:
            answer = self._submit("/order/placeorder", spec.body(), spec.client_id)
        except OrderRejected as rejected:
            self._protected[spec.client_id] = rejected
            raise
        if not isinstance(answer.get("orderId"), int):
            raise BrokerError(f"/order/placeorder answered without an order id: {answer!r}")
        order = self._order_of_spec(spec, answer["orderId"])
        self._adopt([order])
        self._protected[spec.client_id] = order
        return order

    def place_oco(self, first: OrderSpec, second: OrderSpec) -> tuple[Order, Order]:
        """Two orders, one cancelling the other (`/order/placeoco`), e.g. a stop and a
        target protecting a position. Sent under the first order's clOrdId."""
        if first.symbol != second.symbol:
            raise ValueError("the two orders of an OCO must be for the same contract")
        other = {k: v for k, v in second.body().items() if k not in ("symbol", "isAutomated")}
        answer = self._submit(
            "/order/placeoco",
            {**first.body(), "other": other},
            first.client_id,
            second_client_id=second.client_id,
        )
        if not all(isinstance(answer.get(k), int) for k in ("orderId", "ocoId")):
            raise BrokerError(f"/order/placeoco answered without the order ids: {answer!r}")
        a = self._order_of_spec(first, answer["orderId"], oco=answer["ocoId"])
        b = self._order_of_spec(second, answer["ocoId"], oco=answer["orderId"])
        self._adopt([a, b])
        return a, b

    def modify(
        self,
        order_id: str,
        *,
        price: float | None = None,
        qty: int | None = None,
        stop_price: float | None = None,
        peg: float | None = None,
    ) -> None:
        """A new limit or stop price and/or total quantity for a working order
        (`/order/modifyorder` needs the order's type and quantity: read first). `price`
        is the order's resting price (the stop's trigger for a Stop or TrailingStop);
        `stop_price` is the trigger of a StopLimit; `peg` a TrailingStop's new distance
        from the market (its pegDifference, negative for a Sell)."""
        if price is None and qty is None and stop_price is None and peg is None:
            raise ValueError("modify needs a price, a quantity or a peg")
        if qty is not None and qty <= 0:
            raise ValueError(f"order quantity must be positive, got {qty}")
        for p in (price, stop_price):
            if p is not None and not (math.isfinite(p) and p > 0):
                raise ValueError(f"price must be a positive number, got {p}")
        snap = self._snapshots([order_id]).get(order_id)
        if snap is None or snap.version is None:
            raise BrokerError(f"Tradovate knows no order {order_id}")
        current = self._order_view(snap)
        name = current.client_id or order_id
        if current.status.is_final:
            raise OrderRejected(name, f"order {order_id} is already {current.status.value}")
        kind = str(snap.version["orderType"])
        inst = instrument_for(current.symbol)
        body: dict[str, Any] = {
            "orderId": int(order_id),
            "orderQty": qty if qty is not None else current.qty,
            "orderType": kind,
            "isAutomated": True,
        }
        if peg is not None and kind != "TrailingStop":
            raise ValueError(f"order {order_id} is a {kind}: it has no peg to change")
        terms = [("stopPrice" if kind in ("Stop", "TrailingStop") else "price", price)]
        if kind == "StopLimit":
            terms.append(("stopPrice", stop_price))
        for key, new in terms:
            old = snap.version.get(key)
            if new is not None or old is not None:
                body[key] = inst.round_to_tick(new if new is not None else float(old))
        if kind == "TrailingStop":  # Tradovate needs the peg with every modify of one
            body["pegDifference"] = peg_difference(
                inst, peg if peg is not None else float(snap.version["pegDifference"])
            )
        try:
            answer = self.rest.post("/order/modifyorder", body)
        except OutcomeUnknown:
            now = self._snapshots([order_id]).get(order_id)
            keys = ("orderQty", "price", "stopPrice", "pegDifference")
            wanted = {k: body[k] for k in keys if k in body}
            if now is not None and now.version is not None and _in_force(now.version, wanted):
                self.counters.add("lookup_found")
                log.warning("modify of %s: answer lost, the new terms are in force", order_id)
                return
            self.counters.add("lookup_absent")
            self.counters.add("resent_after_lookup")
            answer = self.rest.post("/order/modifyorder", body)
        except RequestRefused as e:
            raise OrderRejected(name, e.reason) from None
        _raise_on_failure(answer, name)
        log.info("modified %s (%s): %s", order_id, name, body)

    # -- optional capabilities used by esml.execution ------------------------------------

    def working_orders(self, symbol: str) -> list[Order]:
        """The symbol's live orders in this account, whoever placed them; from now on
        `take_updates` reports their changes."""
        account_id, _ = self._resolve_account()
        contract_id = self._contract_id(symbol)
        ids = [
            str(r["id"])
            for r in self.order_list()
            if r.get("accountId") == account_id
            and r.get("contractId") == contract_id
            and r.get("ordStatus") in LIVE_STATUSES
        ]
        views = self._views(ids)
        orders = [views[i] for i in ids if i in views]
        self._track(orders)
        return orders

    def order_for_client(self, client_id: str) -> Order | None:
        """The order Tradovate received under `client_id`, in whatever state; None when it
        never received one."""
        ids = self._ids_for_client(client_id)
        if not ids:
            return None
        if len(ids) > 1:
            raise BrokerError(f"client id {client_id} names {len(ids)} orders at Tradovate")
        self._known.setdefault(ids[0], (client_id, role_of_client_id(client_id)))
        view = self._views(ids).get(ids[0])
        if view is not None:
            self._track([view])
        return view

    def protect(
        self, symbol: str, side: Side, qty: int, stop_price: float, client_id: str
    ) -> Order:
        """A stand-alone GTC stop closing `qty` of an open position. Idempotent on
        `client_id` within this client, refusals included."""
        if qty <= 0 or not (math.isfinite(stop_price) and stop_price > 0):
            raise ValueError(f"{client_id}: a stop needs a positive quantity and price")
        order = self.place_order(
            OrderSpec(
                client_id,
                symbol,
                side,
                qty,
                "Stop",
                stop_price=stop_price,
                time_in_force="GTC",
                role=OrderRole.STOP,
            )
        )
        log.info(
            "protective stop %s for %s: %s %d at %s", order.order_id, symbol, side, qty, order.price
        )
        return order

    def take_updates(self) -> tuple[list[Order], list[Fill]]:
        """Order changes and fills not handed out yet. With the user socket connected,
        what it delivered; otherwise polled from REST (on a new client, every fill of the
        day: the journal keeps each fill id once)."""
        if self.sync is not None:
            return self._drain_socket()
        live = [o for o in self._tracked.values() if not o.status.is_final]
        views = self._views([o.order_id for o in live]) if live else {}
        changed = [v for o in live if (v := views.get(o.order_id)) and self._changed(v)]
        fills = [f for f in self.fills() if f.fill_id not in self._taken_fills]
        self._taken_fills.update(f.fill_id for f in fills)
        return changed, fills

    # -- REST reads (item 4 of the issue: complete for a trading program) ----------------------

    def accounts(self) -> list[dict[str, Any]]:
        return as_list(self.rest.get("/account/list"), "/account/list")

    def order_list(self) -> list[dict[str, Any]]:
        return as_list(self.rest.get("/order/list"), "/order/list")

    def order_versions(self, order_id: str) -> list[dict[str, Any]]:
        """The order's versions, oldest first (each modify adds one)."""
        rows = as_list(
            self.rest.get("/orderVersion/deps", masterid=int(order_id)), "/orderVersion/deps"
        )
        return sorted(rows, key=lambda v: v["id"])

    def fill_list(self) -> list[dict[str, Any]]:
        return as_list(self.rest.get("/fill/list"), "/fill/list")

    def position_list(self) -> list[dict[str, Any]]:
        return as_list(self.rest.get("/position/list"), "/position/list")

    def execution_reports(self) -> list[dict[str, Any]]:
        return as_list(self.rest.get("/executionReport/list"), "/executionReport/list")

    def cash_balances(self) -> list[dict[str, Any]]:
        return as_list(self.rest.get("/cashBalance/list"), "/cashBalance/list")

    def contract(self, symbol: str) -> dict[str, Any]:
        found = self.rest.get("/contract/find", name=symbol)
        if not isinstance(found, dict) or not isinstance(found.get("id"), int):
            raise BrokerError(f"Tradovate knows no contract {symbol!r}: {found!r}")
        self._contract_ids[symbol] = found["id"]
        self._contract_names[found["id"]] = symbol
        return found

    def product(self, symbol: str) -> ProductSpec:
        """Tick size and point value from Tradovate's product of the contract (contract ->
        contractMaturity -> product)."""
        contract = self.contract(symbol)
        maturity = self.rest.get("/contractMaturity/item", id=contract["contractMaturityId"])
        if not isinstance(maturity, dict) or "productId" not in maturity:
            raise BrokerError(f"no maturity for {symbol}: {maturity!r}")
        product = self.rest.get("/product/item", id=maturity["productId"])
        if not isinstance(product, dict) or not product.get("tickSize"):
            raise BrokerError(f"no product for {symbol}: {product!r}")
        return ProductSpec(
            symbol,
            int(contract["id"]),
            str(product.get("name")),
            float(product["tickSize"]),
            float(product["valuePerPoint"]),
        )

    # -- the user socket -----------------------------------------------------------------------

    def connect(self, timeout_s: float = 15.0) -> None:
        """Open the user socket, authorise, and take the first `user/syncrequest`
        snapshot; from now on `take_updates` drains the socket."""
        if self._user is not None:
            return
        from esml.broker.tradovate.transport import TradovateSocket

        self._account_id = self._resolve_account()[0]
        self.sync = UserSync(self.counters)
        self._user = TradovateSocket(
            self._ws_url,
            name="user",
            token=self._access_token,
            on_event=self._on_user_event,
            on_open=self._resync,
            renew=self._renew_socket,
            counters=self.counters,
            renew_margin_s=self._renew_margin.total_seconds(),
            **self._socket_options,
        )
        self._user_run = self.loop.submit(self._user.run())
        if not self.loop.wait_until(self._user.ready, timeout_s):
            raise BrokerError(f"the user socket at {self._ws_url} did not sync in {timeout_s:g} s")

    def market_data(
        self, book: Literal["quote", "dom"] = "quote", timeout_s: float = 15.0
    ) -> MarketData:
        """Open the md socket (authorised with the md access token). `book` picks what
        builds the book: the quotes' touch or the 10-level DOM."""
        from esml.broker.tradovate.market_data import MarketData

        md = MarketData(
            self._md_url, token=self.md_token, contract_id=self._contract_id, loop=self.loop,
            counters=self.counters, renew=self._renew_socket, book=book,
            socket_options=self._socket_options,
        )  # fmt: skip
        self._md.append(md)
        return md.start(timeout_s)

    def wait_for_updates(self, timeout_s: float) -> bool:
        """Block until the user socket delivered something for `take_updates` (False after
        `timeout_s`, or without a socket): an engine can await this in a worker thread."""
        return self.sync is not None and self.sync.wait(timeout_s)

    def wait_for_sync(self, timeout_s: float = 15.0) -> bool:
        """Block until the user socket is open and synced (after a reconnect, too)."""
        if self._loop is None or self._user is None:
            return False
        return self._loop.wait_until(self._user.ready, timeout_s)

    @property
    def user_socket(self) -> TradovateSocket | None:
        return self._user

    @property
    def loop(self) -> LoopThread:
        """The sockets' event-loop thread, started on first use."""
        if self._loop is None:
            from esml.broker.tradovate.transport import LoopThread

            self._loop = LoopThread()
        return self._loop

    def close(self) -> None:
        """Log off: close the sockets cleanly and stop their loop."""
        if self._loop is None:
            return
        for md in self._md:
            md.close()
        self._md.clear()
        if self._user is not None and self._user_run is not None:
            self._loop.run(self._user.close())
            self._user_run.result(10)  # its reconnect loop has ended
        self._user = self._user_run = None
        self._loop.stop()
        self._loop = None

    def __enter__(self) -> TradovateClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _access_token(self, refused: str | None) -> Token:
        s = self.rest.session_without(refused)
        return Token(s.access_token, s.expires)

    def md_token(self, refused: str | None) -> Token:
        s = self.rest.session_without(refused)
        return Token(s.md_access_token, s.expires)

    async def _renew_socket(self, socket: TradovateSocket) -> Token:
        """Renew the session over REST (once for both sockets) and authorise the open
        socket again with the new token."""
        loop = asyncio.get_running_loop()
        s = await loop.run_in_executor(None, self.rest.renewed_after, socket.token_expires)
        token = Token(s.md_access_token if socket.name == "md" else s.access_token, s.expires)
        await socket.reauthorize(token)
        return token

    async def _resync(self, socket: TradovateSocket) -> None:
        assert self.sync is not None
        self.sync.begin_sync()
        first = await socket.request(
            "user/syncrequest", {"splitResponses": True, "accounts": [self._account_id]}
        )
        self.sync.apply_snapshot(first)

    def _on_user_event(self, event: str, data: Any) -> None:
        assert self.sync is not None
        if event == "props":
            self.sync.apply_props(data)
        elif event == "answer" and isinstance(data, dict) and is_snapshot_part(data.get("d")):
            self.sync.apply_snapshot(data["d"])  # a further part of a split snapshot

    def _drain_socket(self) -> tuple[list[Order], list[Fill]]:
        assert self.sync is not None
        drained = self.sync.drain()
        changed = []
        for snap in drained.orders:
            if snap.version is None:
                continue  # its version follows in the same batch of events
            view = self._order_view(snap)
            if self._changed(view):
                changed.append(view)
        fills = [self._fill_of(r) for r in drained.fills]
        fresh = [f for f in fills if f.fill_id not in self._taken_fills]
        self._taken_fills.update(f.fill_id for f in fresh)
        return changed, fresh

    def _changed(self, view: Order) -> bool:
        """Whether `view` differs from what was last reported of the order (and remember it)."""
        last = self._tracked.get(view.order_id)
        now = (view.status, view.qty, view.price, view.filled_qty, view.avg_fill_price)
        if last is not None and now == (
            last.status,
            last.qty,
            last.price,
            last.filled_qty,
            last.avg_fill_price,
        ):
            return False
        self._tracked[view.order_id] = replace(view)
        return True

    # -- lost answers ----------------------------------------------------------------------------

    def _submit(
        self, path: str, body: dict[str, Any], client_id: str, second_client_id: str | None = None
    ) -> dict[str, Any]:
        """POST an order request; a lost answer is settled by looking the clOrdId up
        before anything is sent again."""
        account_id, account_spec = self._resolve_account()
        body = {"accountSpec": account_spec, "accountId": account_id, **body}
        for attempt in (1, 2):
            try:
                answer = self.rest.post(path, body)
            except RequestRefused as e:
                self.counters.add("rest_rejected")
                raise OrderRejected(client_id, e.reason) from None
            except OutcomeUnknown as lost:
                log.warning("%s for %s: %s; looking the clOrdId up", path, client_id, lost)
                found = self._settle_lost(path, client_id, second_client_id)
                if found is not None:
                    self.counters.add("lookup_found")
                    log.info("%s: the lost order exists at Tradovate: %s", client_id, found)
                    return found
                self.counters.add("lookup_absent")
                if attempt == 2:
                    raise
                self.counters.add("resent_after_lookup")
                log.warning("%s: not at Tradovate after the lost answer; sending again", client_id)
                continue
            if not isinstance(answer, dict):
                raise BrokerError(f"order {client_id}: unexpected answer {answer!r}")
            if answer.get("failureReason") not in (None, "Success") or answer.get("errorText"):
                self.counters.add("rest_rejected")
            _raise_on_failure(answer, client_id)
            return answer
        raise AssertionError("unreachable")

    def _settle_lost(
        self, path: str, client_id: str, second_client_id: str | None
    ) -> dict[str, Any] | None:
        """The answer the lost request would have had, rebuilt from Tradovate's records,
        or None when Tradovate has no order under `client_id` (looked at twice, `grace`
        apart, in case the request was still being processed). A failing lookup raises
        OutcomeUnknown: nothing may be sent while the outcome is unknown."""
        for look in (1, 2):
            try:
                ids = self._ids_for_client(client_id)
            except BrokerError as e:
                raise OutcomeUnknown(
                    f"{client_id}: answer lost and the lookup failed: {e}"
                ) from None
            if ids:
                if len(ids) > 1:
                    raise BrokerError(f"client id {client_id} names {len(ids)} orders at Tradovate")
                return self._answer_for(path, int(ids[0]), client_id, second_client_id)
            if look == 1:
                time.sleep(self._grace)
        return None

    def _answer_for(
        self, path: str, order_id: int, client_id: str, second_client_id: str | None
    ) -> dict[str, Any]:
        if path.endswith("placeorder"):
            return {"orderId": order_id}
        if path.endswith("placeoco"):
            assert second_client_id is not None
            other = self._ids_for_client(second_client_id)
            if len(other) != 1:
                raise OutcomeUnknown(f"{client_id}: OCO found, its second order not")
            return {"orderId": order_id, "ocoId": int(other[0])}
        legs = {}
        for key, role in (("oso1Id", OrderRole.STOP), ("oso2Id", OrderRole.TARGET)):
            found = self._ids_for_client(leg_client_id(client_id, role))
            if len(found) != 1:
                raise OutcomeUnknown(f"{client_id}: entry found, its {role.value} leg not")
            legs[key] = int(found[0])
        return {"orderId": order_id, **legs}

    def _ids_for_client(self, client_id: str) -> list[str]:
        """Order ids Tradovate holds under `client_id`: each order's `New` command
        carries the clOrdId it was sent with."""
        commands = as_list(self.rest.get("/command/list"), "/command/list")
        return sorted(
            str(c["orderId"])
            for c in commands
            if c.get("clOrdId") == client_id and c.get("commandType") == "New"
        )

    def _order_status(self, order_id: str) -> str | None:
        rows = as_list(self.rest.get("/order/items", ids=order_id), "/order/items")
        return str(rows[0].get("ordStatus")) if rows else None

    def _latest_close(self, symbol: str, held: int) -> int | None:
        """The liquidation order a lost answer hid: the newest filled market order on the
        contract on the closing side."""
        contract_id = self._contract_id(symbol)
        side = Side.of_position(-held).value if held else None
        rows = [
            r
            for r in self.order_list()
            if r.get("contractId") == contract_id
            and r.get("action") == side
            and r.get("ordStatus") == "Filled"
        ]
        return max((int(r["id"]) for r in rows), default=None)

    # -- views of orders and fills -----------------------------------------------------------

    def _adopt(self, orders: list[Order]) -> None:
        """Orders just placed: known by id, status read back, tracked for updates."""
        for o in orders:
            self._known[o.order_id] = (o.client_id, o.role)
            o.status = OrderStatus.WORKING  # acknowledged with an id
        try:
            views = self._views([o.order_id for o in orders])
        except BrokerError as e:
            log.warning("placed, but could not read back order status: %s", e)
            views = {}
        for o in orders:
            v = views.get(o.order_id)
            if v is not None:
                o.status, o.filled_qty, o.avg_fill_price = v.status, v.filled_qty, v.avg_fill_price
            self._tracked[o.order_id] = replace(o)

    def _track(self, orders: list[Order]) -> None:
        for o in orders:
            self._tracked[o.order_id] = replace(o)

    def _order_of_spec(self, spec: OrderSpec, order_id: int, oco: int | None = None) -> Order:
        return Order(
            order_id=str(order_id),
            client_id=spec.client_id,
            symbol=spec.symbol,
            side=spec.side,
            qty=spec.qty,
            order_type=spec.esml_type,
            role=spec.role,
            price=spec.resting_price,
            oco_id=None if oco is None else str(oco),
            ts_ns=now_ns(),
        )

    def _views(self, ids: list[str]) -> dict[str, Order]:
        return {
            oid: self._order_view(s)
            for oid, s in self._snapshots(ids).items()
            if s.version is not None
        }

    def _snapshots(self, ids: list[str]) -> dict[str, OrderSnapshot]:
        """Orders as Tradovate holds them now (`/order/items`, their versions and fills by
        `ldeps`: three requests however many orders), read over REST."""
        if not ids:
            return {}
        joined = ",".join(ids)
        rows = as_list(self.rest.get("/order/items", ids=joined), "/order/items")
        versions: dict[str, dict[str, Any]] = {}
        found = as_list(
            self.rest.get("/orderVersion/ldeps", masterids=joined), "/orderVersion/ldeps"
        )
        for v in sorted(found, key=lambda v: v["id"]):
            versions[str(v["orderId"])] = v  # the latest version wins
        fills: dict[str, list[dict[str, Any]]] = {}
        for f in as_list(self.rest.get("/fill/ldeps", masterids=joined), "/fill/ldeps"):
            fills.setdefault(str(f["orderId"]), []).append(f)
        self._learn_client_ids(set(ids))
        return {
            str(r["id"]): OrderSnapshot(
                r, versions.get(str(r["id"])), fills.get(str(r["id"]), []), None
            )
            for r in rows
        }

    def _order_view(self, snap: OrderSnapshot) -> Order:
        oid = str(snap.order["id"])
        if oid not in self._known and snap.client_id:
            self._known[oid] = (snap.client_id, role_of_client_id(snap.client_id))
        self._learn_client_ids({oid})
        client_id, role = self._known.get(oid, ("", OrderRole.ENTRY))
        try:
            return order_from_entities(
                snap.order,
                snap.version,
                snap.fills,
                symbol=self._contract_name(int(snap.order["contractId"])),
                client_id=client_id,
                role=role,
            )
        except ValueError as e:
            raise BrokerError(str(e)) from None

    def _fill_of(self, row: dict[str, Any]) -> Fill:
        client_id, role = self._known.get(str(row["orderId"]), ("", OrderRole.ENTRY))
        return Fill(
            fill_id=str(row["id"]),
            order_id=str(row["orderId"]),
            client_id=client_id,
            symbol=self._contract_name(int(row["contractId"])),
            side=Side(row["action"]),
            qty=int(row["qty"]),
            price=float(row["price"]),
            commission=self._commission * int(row["qty"]),
            ts_ns=stamp_ns(str(row["timestamp"])),
            role=role,
        )

    def _learn_client_ids(self, order_ids: set[str]) -> None:
        """Client ids (and so roles) of orders this client did not place, e.g. before a
        restart: each order's `New` command carries its clOrdId. Looked up once."""
        unknown = sorted(i for i in order_ids if i not in self._known)
        if not unknown:
            return
        commands = as_list(
            self.rest.get("/command/ldeps", masterids=",".join(unknown)), "/command/ldeps"
        )
        sent = {
            str(c["orderId"]): str(c["clOrdId"])
            for c in commands
            if c.get("commandType") == "New" and c.get("clOrdId")
        }
        for oid in unknown:
            client_id = sent.get(oid, "")
            self._known[oid] = (client_id, role_of_client_id(client_id))

    # -- account and contracts ----------------------------------------------------------------

    def _resolve_account(self) -> tuple[int, str]:
        if self._account is None:
            accounts = self.accounts()
            wanted = [
                a
                for a in accounts
                if a.get("active", True)
                and (self._creds.accountId is None or a.get("id") == self._creds.accountId)
                and (self._creds.accountSpec is None or a.get("name") == self._creds.accountSpec)
            ]
            if len(wanted) != 1:
                names = sorted(str(a.get("name")) for a in accounts)
                raise BrokerError(
                    f"cannot choose one Tradovate account (accountId={self._creds.accountId}, "
                    f"accountSpec={self._creds.accountSpec!r}); the user has {names}"
                )
            self._account = (int(wanted[0]["id"]), str(wanted[0]["name"]))
        return self._account

    def _contract_id(self, symbol: str) -> int:
        if symbol not in self._contract_ids:
            self.contract(symbol)
        return self._contract_ids[symbol]

    def _contract_name(self, contract_id: int) -> str:
        if contract_id not in self._contract_names:
            found = self.rest.get("/contract/item", id=contract_id)
            if not isinstance(found, dict) or not found.get("name"):
                raise BrokerError(f"Tradovate knows no contract id {contract_id}: {found!r}")
            self._contract_names[contract_id] = str(found["name"])
        return self._contract_names[contract_id]


def _failure(answer: dict[str, Any]) -> str:
    text = answer.get("failureText") or answer.get("errorText") or ""
    return f"{answer.get('failureReason') or 'Error'}: {text}".rstrip(": ")


def _in_force(version: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether an order's latest version carries the terms a modify asked for; a trailing
    stop may have moved on since, towards the market (its peg says which way)."""
    peg = version.get("pegDifference")
    for key, value in wanted.items():
        now = version.get(key)
        if key == "stopPrice" and peg is not None and now is not None:
            if (float(now) - value) * -peg < 0:  # a Sell stop (peg < 0) only moves up
                return False
        elif now != value:
            return False
    return True


def _raise_on_failure(answer: Any, client_id: str) -> None:
    if not isinstance(answer, dict):
        raise BrokerError(f"order {client_id}: unexpected answer {answer!r}")
    if answer.get("failureReason") not in (None, "Success") or answer.get("errorText"):
        raise OrderRejected(client_id, _failure(answer))
