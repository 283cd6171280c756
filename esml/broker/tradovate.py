"""Tradovate's REST API behind the Broker protocol: entries with an exchange-held OCO bracket.

An entry with a bracket goes out as one `/order/placeoso` request: the entry, `bracket1`
(the protective stop) and `bracket2` (the profit target), the two legs linked as an OCO
that Tradovate releases once the entry fills. Leg prices are set when the order is sent,
from the entry's limit price, or for a market entry from the caller's `reference_price`
(the price the signal or alert saw), plus or minus the bracket's ticks, on the tick grid.
A market fill that slips therefore keeps the legs where the signal meant them: the risk
taken is the one the decision approved.

Access tokens are requested once, renewed `renew_margin` before they expire, and
requested afresh after a 401. Every request has a timeout; every refusal becomes
`OrderRejected` (Tradovate said no, nothing was placed) or `BrokerError` (unreachable,
or an answer that cannot be trusted). Credentials are never logged or repr'd.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from esml.broker.base import BrokerError, OrderRejected, Placement
from esml.execution.orders import (
    BracketSpec,
    Fill,
    Order,
    OrderIntent,
    OrderRole,
    OrderStatus,
    OrderType,
    Side,
)
from esml.market.instruments import Instrument, instrument_for

log = logging.getLogger(__name__)

TRADOVATE_URLS = {
    "demo": "https://demo.tradovateapi.com/v1",
    "live": "https://live.tradovateapi.com/v1",
}

_LIVE = ("Working", "Suspended", "PendingNew", "PendingCancel", "PendingReplace")
_TYPES = {
    "Market": OrderType.MARKET,
    "Limit": OrderType.LIMIT,
    "MIT": OrderType.LIMIT,
    "QTS": OrderType.MARKET,
    "Stop": OrderType.STOP,
    "StopLimit": OrderType.STOP,
    "TrailingStop": OrderType.STOP,
    "TrailingStopLimit": OrderType.STOP,
}

_STATUS = {
    "Working": OrderStatus.WORKING,
    "Suspended": OrderStatus.WORKING,  # a bracket leg held until its entry fills
    "PendingCancel": OrderStatus.WORKING,
    "PendingReplace": OrderStatus.WORKING,
    "Filled": OrderStatus.FILLED,
    "Completed": OrderStatus.FILLED,
    "Canceled": OrderStatus.CANCELLED,
    "Expired": OrderStatus.CANCELLED,
    "Rejected": OrderStatus.REJECTED,
}


class TradovateCredentials(BaseModel):
    """The API key and user of one Tradovate account, as kept in Secrets Manager."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    password: SecretStr
    appId: str = Field(min_length=1)
    appVersion: str = Field(min_length=1)
    cid: int
    sec: SecretStr
    deviceId: str = Field(min_length=1)
    env: Literal["demo", "live"]
    accountSpec: str | None = None
    accountId: int | None = None

    @property
    def base_url(self) -> str:
        return TRADOVATE_URLS[self.env]

    def token_request(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "password": self.password.get_secret_value(),
            "appId": self.appId,
            "appVersion": self.appVersion,
            "cid": self.cid,
            "sec": self.sec.get_secret_value(),
            "deviceId": self.deviceId,
        }


def leg_client_id(client_id: str, role: OrderRole) -> str:
    """Bracket legs get their own client ids so each order has one journal record."""
    return f"{client_id}-{role.value}"


def role_of_client_id(client_id: str) -> OrderRole:
    """What an order is, from the client id it was sent with (`leg_client_id`)."""
    for role in (OrderRole.STOP, OrderRole.TARGET):
        if client_id.endswith(f"-{role.value}"):
            return role
    return OrderRole.ENTRY


def bracket_prices(
    instrument: Instrument, side: Side, entry_price: float, bracket: BracketSpec
) -> tuple[float, float]:
    """(stop, target) on the tick grid: the stop on the losing side of the entry."""
    entry = instrument.round_to_tick(entry_price)
    stop = instrument.round_to_tick(entry - side.sign * bracket.stop_ticks * instrument.tick_size)
    target = instrument.round_to_tick(
        entry + side.sign * bracket.target_ticks * instrument.tick_size
    )
    return stop, target


def _order_body(
    intent: OrderIntent, reference_price: float | None
) -> tuple[dict[str, Any], float | None, float | None]:
    """The order request without its account, and the bracket's (stop, target) prices.
    Checked before anything is sent."""
    if intent.order_type is OrderType.STOP:
        raise ValueError(f"{intent.client_id}: stop entries are not supported (no stop price)")
    inst = instrument_for(intent.symbol)
    body: dict[str, Any] = {
        "clOrdId": intent.client_id,
        "action": intent.side.value,
        "symbol": intent.symbol,
        "orderQty": intent.qty,
        "orderType": intent.order_type.value,
        "timeInForce": "Day",
        "isAutomated": True,
    }
    if intent.order_type is OrderType.LIMIT:
        body["price"] = inst.round_to_tick(intent.limit_price or 0.0)
    if intent.bracket is None:
        return body, None, None
    entry_px = body.get("price", reference_price)
    if entry_px is None:
        raise ValueError(
            f"{intent.client_id}: a market entry with a bracket needs a reference_price"
        )
    stop_px, target_px = bracket_prices(inst, intent.side, entry_px, intent.bracket)
    leg = {"action": intent.side.opposite.value, "timeInForce": "GTC"}
    body["bracket1"] = {
        **leg,
        "orderType": OrderType.STOP.value,
        "stopPrice": stop_px,
        "clOrdId": leg_client_id(intent.client_id, OrderRole.STOP),
    }
    body["bracket2"] = {
        **leg,
        "orderType": OrderType.LIMIT.value,
        "price": target_px,
        "clOrdId": leg_client_id(intent.client_id, OrderRole.TARGET),
    }
    return body, stop_px, target_px


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _parse_time(text: str) -> datetime:
    ts = datetime.fromisoformat(text)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _ns(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1_000


class TradovateClient:
    """One account at Tradovate (demo or live)."""

    def __init__(
        self,
        credentials: TradovateCredentials,
        base_url: str | None = None,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = (3.05, 10.0),
        clock: Callable[[], datetime] = _utc_now,
        renew_margin: timedelta = timedelta(minutes=10),
        commission_per_side: float = 0.0,
    ) -> None:
        self._creds = credentials
        self._base = (base_url or credentials.base_url).rstrip("/")
        self._http = session or requests.Session()
        self._timeout = timeout
        self._clock = clock
        self._renew_margin = renew_margin
        self._commission = commission_per_side
        self._token: str | None = None
        self._expires: datetime | None = None
        self._account: tuple[int, str] | None = None
        self._contract_ids: dict[str, int] = {}
        self._contract_names: dict[int, str] = {}
        self._placed: dict[str, Placement | OrderRejected] = {}
        self._flattened: dict[str, Order | None] = {}
        self._known: dict[str, tuple[str, OrderRole]] = {}  # order id -> (client id, role)
        self._protected: dict[str, Order | OrderRejected] = {}
        self._tracked: dict[str, Order] = {}  # orders whose changes take_updates reports
        self._taken_fills: set[str] = set()

    def __repr__(self) -> str:
        return f"TradovateClient(user={self._creds.name!r}, base_url={self._base!r})"

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
        body, stop_px, target_px = _order_body(intent, reference_price)
        account_id, account_spec = self._resolve_account()
        body = {"accountSpec": account_spec, "accountId": account_id, **body}
        path = "/order/placeoso" if intent.bracket is not None else "/order/placeorder"
        try:
            answer = self._call("POST", path, json=body, rejectable_as=intent.client_id)
            _raise_on_failure(answer, intent.client_id)
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
        for o in placement.orders:
            self._known[o.order_id] = (o.client_id, o.role)
        self._placed[intent.client_id] = placement
        self._refresh(placement.orders)
        self._track(placement.orders)
        log.info("placed %s: %s", intent.client_id, [o.order_id for o in placement.orders])
        return placement

    def cancel(self, order_id: str) -> None:
        answer = self._call(
            "POST", "/order/cancelorder", json={"orderId": int(order_id), "isAutomated": True}
        )
        if not isinstance(answer, dict):
            raise BrokerError(f"cancel of order {order_id}: unexpected answer {answer!r}")
        if answer.get("failureReason") not in (None, "Success") or answer.get("errorText"):
            raise BrokerError(f"cancel of order {order_id} refused: {_failure(answer)}")

    def flatten(self, symbol: str, client_id: str, reason: str) -> Order | None:
        """Liquidate the symbol at Tradovate (its working orders are cancelled with it).
        None when there was no position to close."""
        if client_id in self._flattened:
            return self._flattened[client_id]
        held = self.position(symbol)
        account_id, _ = self._resolve_account()
        answer = self._call(
            "POST",
            "/order/liquidateposition",
            json={
                "accountId": account_id,
                "contractId": self._contract_id(symbol),
                "admin": False,
                "isAutomated": True,
            },
            rejectable_as=client_id,
        )
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
                ts_ns=_ns(self._clock()),
            )
            self._known[order.order_id] = (client_id, OrderRole.EXIT)
            self._refresh([order])
            self._track([order])
        log.info("flattened %s for %s (%s): held %+d", symbol, client_id, reason, held)
        self._flattened[client_id] = order
        return order

    def position(self, symbol: str) -> int:
        account_id, _ = self._resolve_account()
        contract_id = self._contract_id(symbol)
        positions = self._call("GET", "/position/list")
        return sum(
            int(p["netPos"])
            for p in _as_list(positions, "/position/list")
            if p.get("accountId") == account_id and p.get("contractId") == contract_id
        )

    def fills(self) -> list[Fill]:
        """Every active fill of the user's accounts at Tradovate, oldest first. Commission
        is the configured per-side estimate: /fill/list carries no fees."""
        rows = _as_list(self._call("GET", "/fill/list"), "/fill/list")
        self._learn_client_ids({str(r["orderId"]) for r in rows if r.get("active", True)})
        fills = []
        for row in sorted(rows, key=lambda r: (_parse_time(r["timestamp"]), r["id"])):
            if not row.get("active", True):
                continue
            client_id, role = self._known.get(str(row["orderId"]), ("", OrderRole.ENTRY))
            fills.append(
                Fill(
                    fill_id=str(row["id"]),
                    order_id=str(row["orderId"]),
                    client_id=client_id,
                    symbol=self._contract_name(int(row["contractId"])),
                    side=Side(row["action"]),
                    qty=int(row["qty"]),
                    price=float(row["price"]),
                    commission=self._commission * int(row["qty"]),
                    ts_ns=_ns(_parse_time(row["timestamp"])),
                    role=role,
                )
            )
        return fills

    # -- optional capabilities used by esml.execution ------------------------------------

    def modify(self, order_id: str, *, price: float | None = None, qty: int | None = None) -> None:
        """A new limit or stop price and/or total quantity for a working order
        (`/order/modifyorder`, which needs the order's type and quantity: read first)."""
        if price is None and qty is None:
            raise ValueError("modify needs a price or a quantity")
        if qty is not None and qty <= 0:
            raise ValueError(f"order quantity must be positive, got {qty}")
        if price is not None and not (math.isfinite(price) and price > 0):
            raise ValueError(f"price must be a positive number, got {price}")
        current = self._views([order_id]).get(order_id)
        if current is None:
            raise BrokerError(f"Tradovate knows no order {order_id}")
        name = current.client_id or order_id
        if current.status.is_final:
            raise OrderRejected(name, f"order {order_id} is already {current.status.value}")
        body: dict[str, Any] = {
            "orderId": int(order_id),
            "orderQty": qty if qty is not None else current.qty,
            "orderType": current.order_type.value,
            "isAutomated": True,
        }
        if price is not None or current.price is not None:
            inst = instrument_for(current.symbol)
            key = "stopPrice" if current.order_type is OrderType.STOP else "price"
            body[key] = inst.round_to_tick(price if price is not None else current.price or 0.0)
        answer = self._call("POST", "/order/modifyorder", json=body, rejectable_as=name)
        _raise_on_failure(answer, name)
        log.info("modified %s (%s): %s", order_id, name, body)

    def working_orders(self, symbol: str) -> list[Order]:
        """The symbol's live orders in this account, whoever placed them; from now on
        `take_updates` reports their changes."""
        account_id, _ = self._resolve_account()
        contract_id = self._contract_id(symbol)
        rows = _as_list(self._call("GET", "/order/list"), "/order/list")
        ids = [
            str(r["id"])
            for r in rows
            if r.get("accountId") == account_id
            and r.get("contractId") == contract_id
            and r.get("ordStatus") in _LIVE
        ]
        views = self._views(ids)
        orders = [views[i] for i in ids if i in views]
        self._track(orders)
        return orders

    def order_for_client(self, client_id: str) -> Order | None:
        """The order Tradovate received under `client_id` (its `New` command carries the
        clOrdId), in whatever state; None when it never received one."""
        commands = _as_list(self._call("GET", "/command/list"), "/command/list")
        ids = sorted(
            str(c["orderId"])
            for c in commands
            if c.get("clOrdId") == client_id and c.get("commandType") == "New"
        )
        if not ids:
            return None
        if len(ids) > 1:
            raise BrokerError(f"client id {client_id} names {len(ids)} orders at Tradovate")
        self._known.setdefault(ids[0], (client_id, role_of_client_id(client_id)))
        view = self._views(ids).get(ids[0])
        if view is not None:
            self._track([view])
        return view

    def protect(self, symbol: str, side: Side, qty: int, stop_price: float,
                client_id: str) -> Order:  # fmt: skip
        """A stand-alone GTC stop closing `qty` of an open position. Idempotent on
        `client_id` within this client, refusals included."""
        earlier = self._protected.get(client_id)
        if isinstance(earlier, OrderRejected):
            raise earlier
        if earlier is not None:
            return earlier
        if qty <= 0 or not (math.isfinite(stop_price) and stop_price > 0):
            raise ValueError(f"{client_id}: a stop needs a positive quantity and price")
        account_id, account_spec = self._resolve_account()
        stop_px = instrument_for(symbol).round_to_tick(stop_price)
        body = {
            "accountSpec": account_spec,
            "accountId": account_id,
            "clOrdId": client_id,
            "action": side.value,
            "symbol": symbol,
            "orderQty": qty,
            "orderType": OrderType.STOP.value,
            "stopPrice": stop_px,
            "timeInForce": "GTC",
            "isAutomated": True,
        }
        try:
            answer = self._call("POST", "/order/placeorder", json=body, rejectable_as=client_id)
            _raise_on_failure(answer, client_id)
        except OrderRejected as rejected:
            self._protected[client_id] = rejected
            raise
        if not isinstance(answer.get("orderId"), int):
            raise BrokerError(f"/order/placeorder answered without an order id: {answer!r}")
        order = Order(
            order_id=str(answer["orderId"]),
            client_id=client_id,
            symbol=symbol,
            side=side,
            qty=qty,
            order_type=OrderType.STOP,
            role=OrderRole.STOP,
            price=stop_px,
            ts_ns=_ns(self._clock()),
        )
        self._known[order.order_id] = (client_id, OrderRole.STOP)
        self._protected[client_id] = order
        self._refresh([order])
        self._track([order])
        log.info("protective stop %s for %s: %s %d at %s", order.order_id, symbol, side, qty,
                 stop_px)  # fmt: skip
        return order

    def take_updates(self) -> tuple[list[Order], list[Fill]]:
        """Poll Tradovate: the tracked orders whose status, quantity, price or fills have
        changed since the last call, and the fills not handed out yet (on a new client,
        every fill of the day: the journal keeps each fill id once)."""
        live = [o for o in self._tracked.values() if not o.status.is_final]
        views = self._views([o.order_id for o in live]) if live else {}
        changed = []
        for o in live:
            v = views.get(o.order_id)
            if v is None:
                continue
            now = (v.status, v.qty, v.price, v.filled_qty, v.avg_fill_price)
            if now != (o.status, o.qty, o.price, o.filled_qty, o.avg_fill_price):
                o.status, o.qty, o.price, o.filled_qty, o.avg_fill_price = now
                changed.append(replace(o))
        fills = [f for f in self.fills() if f.fill_id not in self._taken_fills]
        self._taken_fills.update(f.fill_id for f in fills)
        return changed, fills

    def _track(self, orders: list[Order]) -> None:
        for o in orders:
            self._tracked[o.order_id] = replace(o)

    def _views(self, ids: list[str]) -> dict[str, Order]:
        """Orders as Tradovate holds them now: status (`/order/items`), quantity, type and
        prices (the latest `/orderVersion`), fills (`/fill/ldeps`), client ids."""
        if not ids:
            return {}
        joined = ",".join(ids)
        rows = _as_list(self._call("GET", "/order/items", params={"ids": joined}), "/order/items")
        versions: dict[str, dict[str, Any]] = {}
        found = _as_list(
            self._call("GET", "/orderVersion/ldeps", params={"masterids": joined}),
            "/orderVersion/ldeps",
        )
        for v in sorted(found, key=lambda v: v["id"]):
            versions[str(v["orderId"])] = v  # the latest version wins
        own: dict[str, list[dict[str, Any]]] = {}
        for f in _as_list(
            self._call("GET", "/fill/ldeps", params={"masterids": joined}), "/fill/ldeps"
        ):
            if f.get("active", True):
                own.setdefault(str(f["orderId"]), []).append(f)
        self._learn_client_ids(set(ids))
        out = {}
        for r in rows:
            oid, v = str(r["id"]), versions.get(str(r["id"]))
            if v is None:
                raise BrokerError(f"Tradovate has no version of order {oid}")
            order_type = _TYPES.get(str(v.get("orderType")))
            if order_type is None:
                raise BrokerError(f"order {oid} has an unknown type {v.get('orderType')!r}")
            qty = sum(int(f["qty"]) for f in own.get(oid, []))
            value = sum(int(f["qty"]) * float(f["price"]) for f in own.get(oid, []))
            price = v.get("stopPrice") if order_type is OrderType.STOP else v.get("price")
            client_id, role = self._known.get(oid, ("", OrderRole.ENTRY))
            out[oid] = Order(
                order_id=oid,
                client_id=client_id,
                symbol=self._contract_name(int(r["contractId"])),
                side=Side(r["action"]),
                qty=int(v["orderQty"]),
                order_type=order_type,
                role=role,
                price=None if price is None else float(price),
                status=_STATUS.get(str(r.get("ordStatus")), OrderStatus.WORKING),
                filled_qty=qty,
                avg_fill_price=value / qty if qty else 0.0,
                parent_id=str(r["parentId"]) if r.get("parentId") is not None else None,
                oco_id=str(r["ocoId"]) if r.get("ocoId") is not None else None,
                ts_ns=_ns(_parse_time(str(r["timestamp"]))),
            )
        return out

    def _learn_client_ids(self, order_ids: set[str]) -> None:
        """Client ids (and so roles) of orders this client did not place, e.g. before a
        restart: each order's `New` command carries its clOrdId. Looked up once."""
        unknown = sorted(i for i in order_ids if i not in self._known)
        if not unknown:
            return
        commands = _as_list(
            self._call("GET", "/command/ldeps", params={"masterids": ",".join(unknown)}),
            "/command/ldeps",
        )
        sent = {
            str(c["orderId"]): str(c["clOrdId"])
            for c in commands
            if c.get("commandType") == "New" and c.get("clOrdId")
        }
        for oid in unknown:
            client_id = sent.get(oid, "")
            self._known[oid] = (client_id, role_of_client_id(client_id))

    # -- plumbing ---------------------------------------------------------------------

    def _refresh(self, orders: list[Order]) -> None:
        """Status and fills of just-placed orders, from Tradovate's own records. The orders
        exist whatever happens here, so a failure to look is logged, never raised."""
        for o in orders:
            o.status = OrderStatus.WORKING  # acknowledged with an id
        try:
            self._look_up(orders)
        except BrokerError as e:
            log.warning("placed, but could not read back order status: %s", e)

    def _look_up(self, orders: list[Order]) -> None:
        ids = ",".join(o.order_id for o in orders)
        rows = _as_list(self._call("GET", "/order/items", params={"ids": ids}), "/order/items")
        status = {str(r["id"]): r.get("ordStatus") for r in rows}
        for o in orders:
            o.status = _STATUS.get(status.get(o.order_id) or "", o.status)
            if o.status is OrderStatus.FILLED:
                own = _as_list(
                    self._call("GET", "/fill/deps", params={"masterid": o.order_id}),
                    "/fill/deps",
                )
                qty = sum(int(f["qty"]) for f in own if f.get("active", True))
                if qty:
                    o.filled_qty = qty
                    o.avg_fill_price = (
                        sum(int(f["qty"]) * float(f["price"]) for f in own if f.get("active", True))
                        / qty
                    )

    def _resolve_account(self) -> tuple[int, str]:
        if self._account is None:
            accounts = _as_list(self._call("GET", "/account/list"), "/account/list")
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
            found = self._call("GET", "/contract/find", params={"name": symbol})
            if not isinstance(found, dict) or not isinstance(found.get("id"), int):
                raise BrokerError(f"Tradovate knows no contract {symbol!r}: {found!r}")
            self._contract_ids[symbol] = found["id"]
            self._contract_names[found["id"]] = symbol
        return self._contract_ids[symbol]

    def _contract_name(self, contract_id: int) -> str:
        if contract_id not in self._contract_names:
            found = self._call("GET", "/contract/item", params={"id": contract_id})
            if not isinstance(found, dict) or not found.get("name"):
                raise BrokerError(f"Tradovate knows no contract id {contract_id}: {found!r}")
            self._contract_names[contract_id] = str(found["name"])
        return self._contract_names[contract_id]

    def _bearer(self) -> str:
        now = self._clock()
        if self._token is None or self._expires is None or now >= self._expires:
            self._authenticate()
        elif now >= self._expires - self._renew_margin:
            self._renew()
        assert self._token is not None
        return self._token

    def _authenticate(self) -> None:
        answer = self._send("POST", "/auth/accesstokenrequest", json=self._creds.token_request())
        self._take_token(answer, "access token request")
        log.info("Tradovate session opened until %s", self._expires)

    def _renew(self) -> None:
        try:
            answer = self._send(
                "GET", "/auth/renewaccesstoken", headers={"Authorization": f"Bearer {self._token}"}
            )
            self._take_token(answer, "token renewal")
            log.info("Tradovate token renewed until %s", self._expires)
        except BrokerError as e:
            log.warning("token renewal failed (%s); requesting a new token", e)
            self._authenticate()

    def _take_token(self, answer: Any, what: str) -> None:
        if not isinstance(answer, dict) or answer.get("errorText") or not answer.get("accessToken"):
            text = answer.get("errorText") if isinstance(answer, dict) else None
            raise BrokerError(f"Tradovate {what} failed: {text or 'no accessToken in answer'}")
        self._token = str(answer["accessToken"])
        self._expires = _parse_time(str(answer["expirationTime"]))

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        rejectable_as: str | None = None,
    ) -> Any:
        """An authorised request; a 401 gets one fresh token and one retry (a 401 means
        the request was not processed, so repeating it cannot double anything)."""
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self._bearer()}"}
            try:
                return self._send(method, path, json=json, params=params, headers=headers)
            except _Unauthorized:
                self._token = None
                if attempt == 2:
                    raise BrokerError(
                        f"{method} {path}: unauthorized after a fresh token"
                    ) from None
            except _ClientError as e:
                if rejectable_as is not None:
                    raise OrderRejected(rejectable_as, e.reason) from None
                raise BrokerError(f"{method} {path}: {e.reason}") from None
        raise AssertionError("unreachable")

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        try:
            r = self._http.request(
                method,
                self._base + path,
                json=json,
                params=params,
                headers={"Accept": "application/json", **(headers or {})},
                timeout=self._timeout,
            )
        except requests.RequestException as e:
            raise BrokerError(
                f"{method} {path}: Tradovate unreachable ({type(e).__name__}); "
                "the outcome of an order request is unknown"
            ) from None
        if r.status_code == 401:
            raise _Unauthorized(f"{method} {path}: HTTP 401 unauthorized")
        if 400 <= r.status_code < 500:
            raise _ClientError(f"HTTP {r.status_code}: {_error_text(r)}")
        if r.status_code >= 300:
            raise BrokerError(f"{method} {path}: HTTP {r.status_code}: {_error_text(r)}")
        try:
            return r.json()
        except ValueError:
            raise BrokerError(f"{method} {path}: answer is not JSON: {r.text[:200]!r}") from None


class _Unauthorized(BrokerError):
    pass


class _ClientError(BrokerError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _error_text(r: requests.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:200] or r.reason
    if isinstance(body, dict) and body.get("errorText"):
        return str(body["errorText"])
    return str(body)[:200]


def _failure(answer: dict[str, Any]) -> str:
    text = answer.get("failureText") or answer.get("errorText") or ""
    return f"{answer.get('failureReason') or 'Error'}: {text}".rstrip(": ")


def _raise_on_failure(answer: Any, client_id: str) -> None:
    if not isinstance(answer, dict):
        raise BrokerError(f"order {client_id}: unexpected answer {answer!r}")
    if answer.get("failureReason") not in (None, "Success") or answer.get("errorText"):
        raise OrderRejected(client_id, _failure(answer))


def _as_list(answer: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(answer, list):
        raise BrokerError(f"{path}: expected a list, got {answer!r}")
    return answer
