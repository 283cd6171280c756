"""A Tradovate-compatible REST server on loopback, so the client and the router Lambda are
tested against a real HTTP peer rather than a mock.

It serves exactly what `esml.broker.tradovate.TradovateClient` uses: token request and
renewal, accounts, contracts, `placeorder` / `placeoso`, `cancelorder`,
`liquidateposition`, orders, positions and fills, with in-memory state and the checks the
real API makes (bad or expired token -> 401; malformed request -> 400 with `errorText`;
business refusals -> 200 with `failureReason` / `failureText`). It is stricter than
Tradovate in two places, to catch client mistakes early: `isAutomated` must be true, and
bracket legs are checked against the entry price when the order is sent (wrong side or
off the tick grid -> `InvalidPrice`) rather than when they are released.

Prices move only when a test calls `set_price`; market orders fill at the current price,
resting orders fill when a new price crosses them, and a filled OCO leg cancels the other.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from esml.market.instruments import instrument_for

_ORDER_TYPES = {"Limit", "MIT", "Market", "QTS", "Stop", "StopLimit", "TrailingStop"}
_SUPPORTED_TYPES = {"Market", "Limit", "Stop"}
_LIVE = {"Working", "Suspended"}
_REDACTED = {"password", "sec"}


class _BadRequest(Exception):
    """-> HTTP 400 with errorText."""


class _NotFound(Exception):
    """-> HTTP 404 with errorText."""


class _Refused(Exception):
    """-> HTTP 200 with failureReason / failureText, as Tradovate refuses orders."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text


@dataclass
class _Order:
    id: int
    account_id: int
    contract_id: int
    action: str
    qty: int
    order_type: str
    price: float | None
    stop_price: float | None
    status: str
    cl_ord_id: str | None
    timestamp: str
    parent_id: int | None = None
    oco_id: int | None = None
    legs: list[int] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "accountId": self.account_id,
            "contractId": self.contract_id,
            "timestamp": self.timestamp,
            "action": self.action,
            "ordStatus": self.status,
            "admin": False,
        }
        if self.parent_id is not None:
            d["parentId"] = self.parent_id
        if self.oco_id is not None:
            d["ocoId"] = self.oco_id
        return d


@dataclass
class _Position:
    net: int = 0
    net_price: float | None = None
    bought: int = 0
    bought_value: float = 0.0
    sold: int = 0
    sold_value: float = 0.0


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    body: Any  # credentials redacted


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _stamp(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TradovateSim:
    """One Tradovate user with its accounts, on 127.0.0.1 at an ephemeral port.

    Use as a context manager; `base_url` is valid inside it.
    """

    def __init__(
        self,
        *,
        name: str,
        password: str,
        cid: int,
        sec: str,
        accounts: Iterable[str],
        prices: Mapping[str, float],
        token_ttl: timedelta = timedelta(minutes=80),
        max_order_qty: int = 50,
        clock: Callable[[], datetime] = _utc_now,
        max_body_bytes: int = 64 * 1024,
    ) -> None:
        self._login = (name, password, cid, sec)
        self._accounts = {1000 + i: acct for i, acct in enumerate(accounts)}
        self._contracts = {symbol: 2_000 + i for i, symbol in enumerate(prices)}
        self._prices = {self._contracts[s]: float(p) for s, p in prices.items()}
        self._token_ttl = token_ttl
        self._max_qty = max_order_qty
        self._clock = clock
        self.max_body_bytes = max_body_bytes
        self._tokens: dict[str, datetime] = {}
        self._orders: dict[int, _Order] = {}
        self._fills: list[dict[str, Any]] = []
        self._positions: dict[tuple[int, int], _Position] = {}
        self._ids = 10_000
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> TradovateSim:
        handler = type("_Handler", (_Handler,), {"sim": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how soon a stop is noticed
            name="tradovate-sim",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the Tradovate simulator is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    # -- test controls ----------------------------------------------------------------

    def set_price(self, symbol: str, price: float) -> None:
        """Trade the market at `price`: resting orders it crosses fill."""
        with self._lock:
            contract = self._contracts[symbol]
            self._prices[contract] = float(price)
            self._match(contract)

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def orders(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    **o.public(),
                    "clOrdId": o.cl_ord_id,
                    "orderType": o.order_type,
                    "orderQty": o.qty,
                    "price": o.price,
                    "stopPrice": o.stop_price,
                }
                for o in self._orders.values()
            ]

    def net_position(self, account: str, symbol: str) -> int:
        account_id = next(i for i, n in self._accounts.items() if n == account)
        with self._lock:
            pos = self._positions.get((account_id, self._contracts[symbol]))
            return pos.net if pos else 0

    def calls(self, endpoint: str) -> list[RecordedRequest]:
        """The requests made to e.g. "/order/placeoso", oldest first."""
        return [r for r in self.requests if r.path == "/v1" + endpoint.lower()]

    # -- request handling (called with the lock held) ----------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], token: str | None, body: Any
    ) -> tuple[int, Any]:
        route = (method, path)
        if route == ("POST", "/v1/auth/accesstokenrequest"):
            return 200, self._access_token(body)
        if not self._authorised(token):
            return 401, {"errorText": "Access is denied"}
        handlers: dict[tuple[str, str], Callable[[], Any]] = {
            ("GET", "/v1/auth/renewaccesstoken"): self._new_token,
            ("GET", "/v1/account/list"): self._account_list,
            ("GET", "/v1/contract/find"): lambda: self._contract_find(query),
            ("GET", "/v1/contract/item"): lambda: self._contract_item(query),
            ("POST", "/v1/order/placeorder"): lambda: self._place(body, oso=False),
            ("POST", "/v1/order/placeoso"): lambda: self._place(body, oso=True),
            ("POST", "/v1/order/cancelorder"): lambda: self._cancel(body),
            ("POST", "/v1/order/liquidateposition"): lambda: self._liquidate(body),
            ("GET", "/v1/order/items"): lambda: self._order_items(query),
            ("GET", "/v1/position/list"): self._position_list,
            ("GET", "/v1/fill/list"): lambda: list(self._fills),
            ("GET", "/v1/fill/deps"): lambda: self._fill_deps(query),
        }
        if route not in handlers:
            return 404, {"errorText": f"no endpoint {method} {path}"}
        try:
            return 200, handlers[route]()
        except _BadRequest as e:
            return 400, {"errorText": str(e)}
        except _NotFound as e:
            return 404, {"errorText": str(e)}
        except _Refused as e:
            return 200, {"failureReason": e.reason, "failureText": e.text}

    def record(self, method: str, path: str, body: Any) -> None:
        if isinstance(body, dict):
            body = {k: ("***" if k in _REDACTED else v) for k, v in body.items()}
        self.requests.append(RecordedRequest(method, path, body))

    def _access_token(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            return {"errorText": "request body must be a JSON object"}
        missing = [
            k for k in ("name", "password", "appId", "appVersion", "cid", "sec") if k not in body
        ]
        if missing:
            return {"errorText": f"missing credentials: {', '.join(missing)}"}
        given = (body["name"], body["password"], body["cid"], body["sec"])
        if given != self._login:
            return {"errorText": "Incorrect username or password. Please try again."}
        return self._new_token()

    def _new_token(self) -> dict[str, Any]:
        token = secrets.token_urlsafe(24)
        expires = self._clock() + self._token_ttl
        self._tokens[token] = expires
        return {
            "accessToken": token,
            "mdAccessToken": secrets.token_urlsafe(24),
            "expirationTime": _stamp(expires),
            "userStatus": "Active",
            "userId": 1,
            "name": self._login[0],
            "hasLive": False,
        }

    def _authorised(self, token: str | None) -> bool:
        expires = self._tokens.get(token or "")
        return expires is not None and self._clock() < expires

    def _account_list(self) -> list[dict[str, Any]]:
        return [
            {
                "id": i,
                "name": n,
                "userId": 1,
                "accountType": "Customer",
                "active": True,
                "marginAccountType": "Speculator",
                "legalStatus": "Individual",
            }
            for i, n in self._accounts.items()
        ]

    def _contract_find(self, query: dict[str, str]) -> dict[str, Any]:
        name = query.get("name", "")
        if name not in self._contracts:
            raise _NotFound(f"contract {name!r} not found")
        return {"id": self._contracts[name], "name": name, "contractMaturityId": 1}

    def _contract_item(self, query: dict[str, str]) -> dict[str, Any]:
        by_id = {cid: s for s, cid in self._contracts.items()}
        try:
            cid = int(query.get("id", ""))
        except ValueError:
            raise _BadRequest("id must be an integer") from None
        if cid not in by_id:
            raise _NotFound(f"contract id {cid} not found")
        return {"id": cid, "name": by_id[cid], "contractMaturityId": 1}

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _account_of(self, body: dict[str, Any]) -> int:
        account_id, spec = body.get("accountId"), body.get("accountSpec")
        if account_id is None and spec is None:
            raise _BadRequest("accountId or accountSpec is required")
        if account_id is None:
            matches = [i for i, n in self._accounts.items() if n == spec]
            if not matches:
                raise _Refused("Unauthorized", f"no account {spec!r} for this user")
            return matches[0]
        if account_id not in self._accounts:
            raise _Refused("Unauthorized", f"account {account_id} is not this user's")
        if spec is not None and self._accounts[account_id] != spec:
            raise _BadRequest(f"accountSpec {spec!r} does not name account {account_id}")
        return int(account_id)

    def _place(self, body: Any, *, oso: bool) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _BadRequest("request body must be a JSON object")
        _require(body, ("action", "symbol", "orderQty", "orderType"))
        _check_action(body["action"], "action")
        qty = body["orderQty"]
        if not isinstance(qty, int) or isinstance(qty, bool) or qty <= 0:
            raise _BadRequest("orderQty must be a positive integer")
        if body.get("isAutomated") is not True:
            raise _BadRequest("isAutomated must be true for orders not entered by a person")
        account_id = self._account_of(body)
        symbol = body["symbol"]
        if symbol not in self._contracts:
            raise _Refused("InvalidContract", f"unknown contract {symbol!r}")
        contract = self._contracts[symbol]
        if qty > self._max_qty:
            raise _Refused("MaxOrderQtyLimitReached", f"orderQty {qty} exceeds {self._max_qty}")
        entry_type, entry_px, entry_stop = _priced(body, "order", symbol)
        legs: list[dict[str, Any]] = []
        if oso:
            for key in ("bracket1", "bracket2"):
                if key not in body and key == "bracket2":
                    continue
                leg = body.get(key)
                if not isinstance(leg, dict):
                    raise _BadRequest(f"{key} must be an order object")
                _require(leg, ("action", "orderType"), where=key)
                _check_action(leg["action"], f"{key}.action")
                if leg["action"] == body["action"]:
                    raise _BadRequest(f"{key}.action must be opposite the entry's")
                legs.append({"key": key, **leg})
        elif any(k in body for k in ("bracket1", "bracket2")):
            raise _BadRequest("brackets belong to /order/placeoso")
        reference = {"Limit": entry_px, "Stop": entry_stop}.get(entry_type, self._prices[contract])
        priced_legs = [(leg, *_priced(leg, leg["key"], symbol)) for leg in legs]
        for leg, leg_type, px, stop_px in priced_legs:
            _check_leg_side(body["action"], leg["key"], leg_type, px, stop_px, reference)

        now = _stamp(self._clock())
        entry = _Order(
            self._next_id(),
            account_id,
            contract,
            body["action"],
            qty,
            entry_type,
            entry_px,
            entry_stop,
            "Working",
            body.get("clOrdId"),
            now,
        )
        self._orders[entry.id] = entry
        for leg, leg_type, px, stop_px in priced_legs:
            o = _Order(
                self._next_id(),
                account_id,
                contract,
                leg["action"],
                qty,
                leg_type,
                px,
                stop_px,
                "Suspended",
                leg.get("clOrdId"),
                now,
                parent_id=entry.id,
            )
            self._orders[o.id] = o
            entry.legs.append(o.id)
        if len(entry.legs) == 2:
            first, second = entry.legs
            self._orders[first].oco_id, self._orders[second].oco_id = second, first
        self._match(contract)
        answer: dict[str, Any] = {"orderId": entry.id}
        for i, leg_id in enumerate(entry.legs, start=1):
            answer[f"oso{i}Id"] = leg_id
        return answer

    def _cancel(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("orderId"), int):
            raise _BadRequest("orderId (integer) is required")
        order = self._orders.get(body["orderId"])
        if order is None:
            raise _NotFound(f"order {body['orderId']} not found")
        if order.status not in _LIVE:
            raise _Refused("TooLate", f"order {order.id} is {order.status}")
        self._cancel_with_legs(order)
        return {"commandId": self._next_id()}

    def _cancel_with_legs(self, order: _Order) -> None:
        order.status = "Canceled"
        for leg_id in order.legs:
            if self._orders[leg_id].status in _LIVE:
                self._orders[leg_id].status = "Canceled"

    def _liquidate(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _BadRequest("request body must be a JSON object")
        _require(body, ("accountId", "contractId", "admin"))
        account_id, contract = body["accountId"], body["contractId"]
        if account_id not in self._accounts:
            raise _Refused("Unauthorized", f"account {account_id} is not this user's")
        if contract not in self._prices:
            raise _Refused("InvalidContract", f"unknown contract id {contract}")
        for o in list(self._orders.values()):
            if o.account_id == account_id and o.contract_id == contract and o.status in _LIVE:
                o.status = "Canceled"
        pos = self._positions.get((account_id, contract))
        if pos is None or pos.net == 0:
            return {}
        close = _Order(
            self._next_id(),
            account_id,
            contract,
            "Sell" if pos.net > 0 else "Buy",
            abs(pos.net),
            "Market",
            None,
            None,
            "Working",
            None,
            _stamp(self._clock()),
        )
        self._orders[close.id] = close
        self._match(contract)
        return {"orderId": close.id}

    def _order_items(self, query: dict[str, str]) -> list[dict[str, Any]]:
        try:
            ids = [int(i) for i in query.get("ids", "").split(",") if i]
        except ValueError:
            raise _BadRequest("ids must be comma-separated integers") from None
        return [self._orders[i].public() for i in ids if i in self._orders]

    def _fill_deps(self, query: dict[str, str]) -> list[dict[str, Any]]:
        try:
            master = int(query.get("masterid", ""))
        except ValueError:
            raise _BadRequest("masterid must be an integer") from None
        return [f for f in self._fills if f["orderId"] == master]

    def _position_list(self) -> list[dict[str, Any]]:
        today = self._clock().date()
        return [
            {
                "id": account_id * 100_000 + contract,
                "accountId": account_id,
                "contractId": contract,
                "timestamp": _stamp(self._clock()),
                "tradeDate": {"year": today.year, "month": today.month, "day": today.day},
                "netPos": p.net,
                "netPrice": p.net_price,
                "bought": p.bought,
                "boughtValue": p.bought_value,
                "sold": p.sold,
                "soldValue": p.sold_value,
                "prevPos": 0,
            }
            for (account_id, contract), p in self._positions.items()
        ]

    # -- matching -----------------------------------------------------------------------

    def _match(self, contract: int) -> None:
        """Fill every working order the current price reaches, until nothing changes."""
        px = self._prices[contract]
        changed = True
        while changed:
            changed = False
            for o in list(self._orders.values()):
                if o.contract_id != contract or o.status != "Working":
                    continue
                fill_px = _fill_price(o, px)
                if fill_px is not None:
                    self._fill(o, fill_px)
                    changed = True

    def _book_fill(self, o: _Order, price: float, qty: int) -> None:
        """Record a fill of `qty` at `price` and move the account's position by it."""
        now = self._clock()
        self._fills.append(
            {
                "id": self._next_id(),
                "orderId": o.id,
                "contractId": o.contract_id,
                "timestamp": _stamp(now),
                "tradeDate": {"year": now.year, "month": now.month, "day": now.day},
                "action": o.action,
                "qty": qty,
                "price": price,
                "active": True,
                "finallyPaired": 0,
            }
        )
        pos = self._positions.setdefault((o.account_id, o.contract_id), _Position())
        signed = qty if o.action == "Buy" else -qty
        if o.action == "Buy":
            pos.bought, pos.bought_value = pos.bought + qty, pos.bought_value + qty * price
        else:
            pos.sold, pos.sold_value = pos.sold + qty, pos.sold_value + qty * price
        if pos.net == 0 or (pos.net > 0) == (signed > 0):
            held = abs(pos.net)
            pos.net_price = ((pos.net_price or 0.0) * held + price * qty) / (held + qty)
        pos.net += signed
        if pos.net == 0:
            pos.net_price = None

    def _fill(self, o: _Order, price: float) -> None:
        o.status = "Filled"
        self._book_fill(o, price, o.qty)
        for leg_id in o.legs:  # the entry filled: its bracket goes live
            if self._orders[leg_id].status == "Suspended":
                self._orders[leg_id].status = "Working"
        if o.oco_id is not None and self._orders[o.oco_id].status in _LIVE:
            self._orders[o.oco_id].status = "Canceled"


def _fill_price(o: _Order, px: float) -> float | None:
    sign = 1 if o.action == "Buy" else -1
    if o.order_type == "Market":
        return px
    if o.order_type == "Limit" and o.price is not None:
        return o.price if sign * (o.price - px) >= 0 else None  # price at or through the limit
    if o.order_type == "Stop" and o.stop_price is not None:
        return px if sign * (px - o.stop_price) >= 0 else None  # price reached the stop
    return None


def _require(body: dict[str, Any], keys: Iterable[str], where: str = "order") -> None:
    missing = [k for k in keys if body.get(k) is None]
    if missing:
        raise _BadRequest(f"{where}: missing required field(s) {', '.join(missing)}")


def _check_action(action: Any, where: str) -> None:
    if action not in ("Buy", "Sell"):
        raise _BadRequest(f"{where} must be Buy or Sell, not {action!r}")


def _priced(
    order: dict[str, Any], where: str, symbol: str
) -> tuple[str, float | None, float | None]:
    """(orderType, price, stopPrice), checked for presence, type and the tick grid."""
    order_type = order["orderType"]
    if order_type not in _ORDER_TYPES:
        raise _BadRequest(f"{where}.orderType {order_type!r} is not a Tradovate order type")
    if order_type not in _SUPPORTED_TYPES:
        raise _Refused("Unsupported", f"the simulator does not take {order_type} orders")
    needs = {"Limit": "price", "Stop": "stopPrice"}.get(order_type)
    values: dict[str, float | None] = {"price": None, "stopPrice": None}
    if needs is not None:
        value = order.get(needs)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _BadRequest(f"{where}: a {order_type} order needs a numeric {needs}")
        tick = instrument_for(symbol).tick_size
        if value <= 0 or abs(value / tick - round(value / tick)) > 1e-9:
            raise _Refused(
                "InvalidPrice", f"{where}.{needs} {value} is not on the {tick} tick grid"
            )
        values[needs] = float(value)
    return order_type, values["price"], values["stopPrice"]


def _check_leg_side(
    entry_action: str,
    key: str,
    leg_type: str,
    price: float | None,
    stop_price: float | None,
    reference: float,
) -> None:
    """A protective stop lies on the losing side of the entry, a target on the winning side."""
    long_entry = entry_action == "Buy"
    if leg_type == "Stop" and stop_price is not None:
        wrong = stop_price >= reference if long_entry else stop_price <= reference
        if wrong:
            raise _Refused(
                "InvalidPrice",
                f"{key} stop {stop_price} is on the wrong side of the entry at {reference}",
            )
    if leg_type == "Limit" and price is not None:
        wrong = price <= reference if long_entry else price >= reference
        if wrong:
            raise _Refused(
                "InvalidPrice",
                f"{key} target {price} is on the wrong side of the entry at {reference}",
            )


class _Handler(BaseHTTPRequestHandler):
    sim: TradovateSim
    timeout = 5  # seconds a client may take to send its request
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.lower()
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= self.sim.max_body_bytes:
            self._answer(413, {"errorText": "request body missing a valid length or too large"})
            self.close_connection = True
            return
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._answer(400, {"errorText": "request body is not valid JSON"})
            return
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        with self.sim._lock:
            self.sim.record(method, path, body)
            status, answer = self.sim.handle(method, path, query, token, body)
        self._answer(status, answer)

    def _answer(self, status: int, answer: Any) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `TradovateSim.requests` instead."""
