"""A Tradovate-compatible server on loopback: REST, the user WebSocket and the market-data
WebSocket, so clients (ours, the router Lambda, anyone's) are tested against real peers.

REST (`base_url`, `/v1/...`): the token request and renewal; accounts, contracts,
contract maturities and products (tick size and value); `placeorder`, `placeoso`,
`placeoco`, `modifyorder`, `cancelorder`, `liquidateposition`; orders, order versions,
commands (each order's `New` command carries its `clOrdId` and `isAutomated`), fills,
positions, execution reports and cash balances, by `list`, `item(s)` and `deps`. It makes
the checks the real API makes (bad or expired token -> 401; malformed request -> 400 with
`errorText`; business refusals -> 200 with `failureReason` / `failureText`), and is
stricter in two places, to catch client mistakes early: `isAutomated` must be true, and
bracket legs are checked against the entry price when the order is sent (wrong side or
off the tick grid -> `InvalidPrice`) rather than when they are released. Order types:
Market, Limit, Stop and TrailingStop (`pegDifference`; see `esml.sim.tradovate_trail`),
alone, in an OCO or as an OSO leg; others are refused `Unsupported`.

WebSockets (`ws_url`, `md_url`): see `esml.sim.tradovate_ws`. Every change to the user's
orders, fills, positions and cash is pushed as `props` events (`esml.sim.tradovate_props`).

The market is one of two:
- prices set by the caller (`prices={...}`, then `set_price`): market orders fill at the
  current price, resting orders when a new price crosses them, a filled OCO leg cancels the
  other; fills can be capped per price change (`faults.cap_fills`: partial fills);
- a replayed order book (`market=ReplayMarket(...)`, `esml.sim.tradovate_market`): a
  recorded file or SYNTHETIC generated day, matched by the compiled exchange simulator the
  paper broker uses (queues, partial fills against displayed size, OSO/OCO), and the
  source of the md socket's quotes, DOM and charts.

Faults on demand (`faults`, and `POST /sim/fault` while running): `esml.sim.tradovate_faults`.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from esml.market.calendar import trading_date
from esml.market.instruments import instrument_for
from esml.sim.tradovate_faults import FaultError, Faults, Verdict
from esml.sim.tradovate_md import MdSource, PriceTape, md_request, publish_market
from esml.sim.tradovate_props import ENTITY_TYPES, OrderState, PropsJournal, keyed
from esml.sim.tradovate_trail import peg_side_ok, trailed_stop
from esml.sim.tradovate_ws import Session, SocketServer

if TYPE_CHECKING:
    from esml.sim.tradovate_market import ReplayMarket

_ORDER_TYPES = {"Limit", "MIT", "Market", "QTS", "Stop", "StopLimit", "TrailingStop"}
_SUPPORTED_TYPES = {"Market", "Limit", "Stop", "TrailingStop"}
_STOPS = ("Stop", "TrailingStop")
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
    filled: int = 0
    fill_value: float = 0.0
    last_fill: tuple[int, float] | None = None
    text: str = ""
    tif: str = "Day"
    peg: float | None = None  # a TrailingStop's pegDifference (esml.sim.tradovate_trail)

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

    def state(self) -> OrderState:
        terms = (self.qty, self.order_type, self.price, self.stop_price, self.tif, self.peg)
        avg = self.fill_value / self.filled if self.filled else None
        return OrderState(self.public(), terms, self.filled, avg, self.last_fill, self.text)


@dataclass
class _Position:
    net: int = 0
    net_price: float | None = None
    bought: int = 0
    bought_value: float = 0.0
    sold: int = 0
    sold_value: float = 0.0
    timestamp: str = ""


@dataclass
class _Cash:
    amount: float
    realized: float = 0.0
    fees: float = 0.0
    timestamp: str = ""


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    body: Any  # credentials redacted


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _stamp(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _stamp_ns(ts_ns: int) -> str:
    """Nanoseconds since the epoch, without a float's rounding (1.003 s is not 1.002)."""
    whole, ns = divmod(ts_ns, 1_000_000_000)
    return _stamp(datetime.fromtimestamp(whole, UTC) + timedelta(microseconds=ns // 1000))


class _PublishingLock:
    """The simulator's lock: releasing it (outermost) publishes what changed meanwhile,
    so every change, whoever made it, reaches the sockets exactly once."""

    def __init__(self, on_release: Callable[[], None]) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._on_release = on_release

    def __enter__(self) -> _PublishingLock:
        self._lock.acquire()
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._depth == 1:
                self._on_release()
        finally:
            self._depth -= 1
            self._lock.release()


class TradovateSim:
    """One Tradovate user with its accounts, on 127.0.0.1 (ephemeral ports unless given).

    Use as a context manager; `base_url`, `ws_url` and `md_url` are valid inside it.
    """

    def __init__(
        self,
        *,
        name: str,
        password: str,
        cid: int,
        sec: str,
        accounts: Iterable[str],
        prices: Mapping[str, float] | None = None,
        market: ReplayMarket | None = None,
        token_ttl: timedelta = timedelta(minutes=80),
        max_order_qty: int = 50,
        clock: Callable[[], datetime] = _utc_now,
        max_body_bytes: int = 64 * 1024,
        cash: float = 50_000.0,
        commission_per_side: float = 0.0,
        port: int = 0,
        ws_port: int = 0,
        md_port: int = 0,
        heartbeat_s: float = 2.5,
        client_timeout_s: float = 10.0,
    ) -> None:
        if (prices is None) == (market is None):
            raise ValueError("give the simulator either prices or a replay market, not both")
        self._login = (name, password, cid, sec)
        self._accounts = {1000 + i: acct for i, acct in enumerate(accounts)}
        self.market = market
        symbols = [market.symbol] if market is not None else list(prices or {})
        self._contracts = {symbol: 2_000 + i for i, symbol in enumerate(symbols)}
        self._prices = {self._contracts[s]: float(p) for s, p in (prices or {}).items()}
        self._token_ttl = token_ttl
        self._max_qty = max_order_qty
        self._clock = clock
        self.max_body_bytes = max_body_bytes
        self._commission = commission_per_side
        self._tokens: dict[str, datetime] = {}
        self._md_tokens: dict[str, datetime] = {}
        self._orders: dict[int, _Order] = {}
        self._commands: list[dict[str, Any]] = []
        self._fills: list[dict[str, Any]] = []
        self._positions: dict[tuple[int, int], _Position] = {}
        self._cash = {a: _Cash(cash) for a in self._accounts}
        self._ids = 10_000
        self._journal = PropsJournal()
        self._tapes: dict[int, PriceTape] = {}
        self._lock = _PublishingLock(self._publish)
        self.requests: list[RecordedRequest] = []
        self.faults = Faults()
        self.sockets = SocketServer(self, user_port=ws_port, md_port=md_port,
                                    heartbeat_s=heartbeat_s,
                                    client_timeout_s=client_timeout_s)  # fmt: skip
        self.faults.sockets.update(drop=self.sockets.drop, freeze=self.sockets.freeze,
                                   expire=self._expire_tokens)  # fmt: skip
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if market is not None:
            market.attach(self, self._contracts[market.symbol])

    # -- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> TradovateSim:
        handler = type("_Handler", (_Handler,), {"sim": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how soon a stop is noticed
            name="tradovate-sim",
            daemon=True,
        )
        self._thread.start()
        self.sockets.start()
        if self.market is not None:
            self.market.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.market is not None:
            self.market.stop()
        self.sockets.stop()
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

    @property
    def ws_url(self) -> str:
        return self.sockets.url("user")

    @property
    def md_url(self) -> str:
        return self.sockets.url("md")

    def urls(self) -> dict[str, str]:
        """What `esml sim tradovate` prints: the REST base URL and the two sockets."""
        return {"rest": self.base_url, "ws": self.ws_url, "md": self.md_url}

    # -- test controls ----------------------------------------------------------------

    def set_price(self, symbol: str, price: float) -> None:
        """Trade the market at `price`: resting orders it crosses fill."""
        if self.market is not None:
            raise RuntimeError("set_price moves a price-set market; this one is replayed")
        with self._lock:
            contract = self._contracts[symbol]
            self._prices[contract] = float(price)
            self._match(contract)
            self._md_trade(contract, float(price))

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()
            self._md_tokens.clear()

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
                    "pegDifference": o.peg,
                    "filledQty": o.filled,
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

    # -- what the sockets ask (esml.sim.tradovate_ws.Backend) ---------------------------

    def token_ok(self, token: str, kind: str) -> bool:
        tokens = self._tokens if kind == "user" else self._md_tokens
        with self._lock:
            expires = tokens.get(token or "")
            return expires is not None and self._clock() < expires

    def rest(self, method: str, path: str, query: dict[str, str], token: str,
             body: Any) -> tuple[int, Any, str | None]:  # fmt: skip
        """A REST request sent over the user socket (faults apply as over HTTP)."""
        with self._lock:
            self.record(method, path, body)
            status, answer, verdict = self.dispatch(method, path, query, token, body)
        return status, answer, verdict.after

    def snapshot(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """`user/syncrequest`'s answer: every entity type, in Tradovate's order."""
        with self._lock:
            return self._entities()

    def md_request(self, url: str, body: Any, session: Session) -> tuple[int, Any]:
        with self._lock:
            return md_request(self, url, body, session)

    # -- request handling (called with the lock held) ----------------------------------

    def dispatch(
        self, method: str, path: str, query: dict[str, str], token: str | None, body: Any
    ) -> tuple[int, Any, Verdict]:
        """One request through the fault switchboard: (status, answer, the verdict, whose
        `after` says what to do instead of answering: "drop-after-accept" or
        "timeout-after-accept" with its `delay_s`)."""
        verdict = self.faults.verdict(path, body)
        if verdict.answer is not None:
            return *verdict.answer, verdict
        if isinstance(body, dict) and "p-ticket" in body:
            body = {k: v for k, v in body.items() if k != "p-ticket"}
        status, answer = self.handle(method, path, query, token, body)
        if verdict.after == "500-after-accept":
            return 500, {"errorText": "Internal server error (injected fault)"}, verdict
        return status, answer, verdict

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
            ("POST", "/v1/auth/renewaccesstoken"): self._new_token,
            ("GET", "/v1/account/list"): self._account_list,
            ("GET", "/v1/contract/find"): lambda: self._contract_find(query),
            ("GET", "/v1/contract/item"): lambda: self._contract_item(query),
            ("GET", "/v1/contractmaturity/item"): lambda: self._maturity_item(query),
            ("GET", "/v1/product/find"): lambda: self._product_find(query),
            ("GET", "/v1/product/item"): lambda: self._product_item(query),
            ("POST", "/v1/order/placeorder"): lambda: self._place(body, oso=False),
            ("POST", "/v1/order/placeoso"): lambda: self._place(body, oso=True),
            ("POST", "/v1/order/placeoco"): lambda: self._place_oco(body),
            ("POST", "/v1/order/modifyorder"): lambda: self._modify(body),
            ("POST", "/v1/order/cancelorder"): lambda: self._cancel(body),
            ("POST", "/v1/order/liquidateposition"): lambda: self._liquidate(body),
            ("GET", "/v1/order/list"): lambda: [o.public() for o in self._orders.values()],
            ("GET", "/v1/order/item"): lambda: self._item(self._order_rows(), query),
            ("GET", "/v1/order/items"): lambda: self._items(self._order_rows(), query),
            ("GET", "/v1/order/deps"): lambda: self._deps(self._order_rows(), "accountId", query),
            ("GET", "/v1/orderversion/list"): self._journal.all_versions,
            ("GET", "/v1/orderversion/item"): lambda: self._item(
                self._journal.all_versions(), query),
            ("GET", "/v1/orderversion/deps"): lambda: self._deps(
                self._journal.all_versions(), "orderId", query),
            ("GET", "/v1/command/list"): lambda: list(self._commands),
            ("GET", "/v1/command/deps"): lambda: self._deps(self._commands, "orderId", query),
            ("GET", "/v1/fill/list"): lambda: list(self._fills),
            ("GET", "/v1/fill/item"): lambda: self._item(self._fills, query),
            ("GET", "/v1/fill/deps"): lambda: self._fill_deps(query),
            ("GET", "/v1/position/list"): self._position_list,
            ("GET", "/v1/position/deps"): lambda: self._deps(
                self._position_list(), "accountId", query),
            ("GET", "/v1/executionreport/list"): lambda: list(self._journal.reports),
            ("GET", "/v1/executionreport/deps"): lambda: self._deps(
                self._journal.reports, "orderId", query),
            ("GET", "/v1/cashbalance/list"): self._cash_list,
            ("POST", "/v1/cashbalance/getcashbalancesnapshot"): lambda: self._cash_snapshot(
                body),
        }  # fmt: skip
        if route not in handlers and path.endswith("/ldeps"):  # deps of many masters
            deps = handlers.get((method, path[: -len("ldeps")] + "deps"))
            if deps is not None:
                handlers[route] = lambda: self._ldeps(deps, query)
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

    def admin(self, path: str, body: Any) -> tuple[int, Any]:
        """`POST /sim/fault` (see esml.sim.tradovate_faults) and `POST /sim/step`
        (`{"events": n}`: a replay in step mode moves on n events; `{"until_ns": t}`: to
        the engine's clock, in lockstep). The answer: the replay's time, how many fills
        the simulator has made (the news a lockstep engine waits for) and whether any
        position or working order is open (else its book need not move until an order)."""
        try:
            if path == "/sim/fault":
                self.faults.apply(body)
                return 200, {"armed": [f.kind for f in self.faults.armed()],
                             "counts": dict(self.faults.counts)}  # fmt: skip
            if path == "/sim/step" and self.market is not None:
                body = body if isinstance(body, dict) else {}
                n, until = body.get("events"), body.get("until_ns")
                if isinstance(until, int) and until > 0:
                    self.market.step_to(until)
                elif isinstance(n, int) and n >= 1:
                    self.market.step(n)
                else:
                    raise FaultError('the body must be {"events": N} or {"until_ns": T}')
                with self._lock:
                    held = any(p.net for p in self._positions.values())
                    working = any(o.status in _LIVE for o in self._orders.values())
                    return 200, {"ts_ns": self.market.now_ns, "fills": len(self._fills),
                                 "open": held or working}  # fmt: skip
        except FaultError as e:
            return 400, {"errorText": str(e)}
        return 404, {"errorText": f"no simulator control {path}"}

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
        token, md_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        expires = self._clock() + self._token_ttl
        self._tokens[token] = expires
        self._md_tokens[md_token] = expires
        return {
            "accessToken": token,
            "mdAccessToken": md_token,
            "expirationTime": _stamp(expires),
            "userStatus": "Active",
            "userId": 1,
            "name": self._login[0],
            "hasLive": False,
        }

    def _authorised(self, token: str | None) -> bool:
        expires = self._tokens.get(token or "")
        return expires is not None and self._clock() < expires

    def _expire_tokens(self) -> None:
        """Every token expires now; the sockets authorised with one are closed."""
        with self._lock:
            now = self._clock()
            for tokens in (self._tokens, self._md_tokens):
                for t in tokens:
                    tokens[t] = min(tokens[t], now)
        self.sockets.close_tokens(lambda t: True)

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

    def _contract(self, name: str, cid: int) -> dict[str, Any]:
        return {"id": cid, "name": name, "contractMaturityId": 3_000 + cid % 1000,
                "status": "DefinitionChecked",
                "providerTickSize": instrument_for(name).tick_size}  # fmt: skip

    def _contract_find(self, query: dict[str, str]) -> dict[str, Any]:
        name = query.get("name", "")
        if name not in self._contracts:
            raise _NotFound(f"contract {name!r} not found")
        return self._contract(name, self._contracts[name])

    def _contract_item(self, query: dict[str, str]) -> dict[str, Any]:
        by_id = {cid: s for s, cid in self._contracts.items()}
        cid = _int_arg(query, "id")
        if cid not in by_id:
            raise _NotFound(f"contract id {cid} not found")
        return self._contract(by_id[cid], cid)

    def _maturity_item(self, query: dict[str, str]) -> dict[str, Any]:
        mid = _int_arg(query, "id")
        for name, cid in self._contracts.items():
            if 3_000 + cid % 1000 == mid:
                root = instrument_for(name).root
                return {"id": mid, "productId": self._product_id(root), "isFront": True}
        raise _NotFound(f"contract maturity id {mid} not found")

    def _roots(self) -> list[str]:
        return sorted({instrument_for(s).root for s in self._contracts})

    def _product_id(self, root: str) -> int:
        return 4_000 + self._roots().index(root)

    def _product(self, root: str) -> dict[str, Any]:
        ins = instrument_for(root)
        return {"id": self._product_id(root), "name": root, "currencyId": 1,
                "productType": "Futures", "description": ins.description,
                "exchangeId": 1, "tickSize": ins.tick_size, "valuePerPoint": ins.point_value,
                "status": "Verified", "priceFormatType": "Decimal",
                "priceFormat": -2}  # fmt: skip

    def _product_find(self, query: dict[str, str]) -> dict[str, Any]:
        name = query.get("name", "")
        if name not in self._roots():
            raise _NotFound(f"product {name!r} not found")
        return self._product(name)

    def _product_item(self, query: dict[str, str]) -> dict[str, Any]:
        pid = _int_arg(query, "id")
        for root in self._roots():
            if self._product_id(root) == pid:
                return self._product(root)
        raise _NotFound(f"product id {pid} not found")

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

    def _checked_entry(self, body: Any) -> tuple[int, str, int]:
        """(account id, symbol, contract id) of a well-formed, automated order."""
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
        if qty > self._max_qty:
            raise _Refused("MaxOrderQtyLimitReached", f"orderQty {qty} exceeds {self._max_qty}")
        return account_id, symbol, self._contracts[symbol]

    def _new_order(self, account_id: int, contract: int, spec: dict[str, Any], qty: int,
                   priced: tuple[str, float | None, float | None], status: str,
                   parent_id: int | None = None, peg: float | None = None) -> _Order:  # fmt: skip
        kind, px, stop_px = priced
        tif = spec.get("timeInForce") or ("GTC" if parent_id is not None else "Day")
        o = _Order(self._next_id(), account_id, contract, spec["action"], qty, kind, px,
                   stop_px, status, spec.get("clOrdId"), self._now_stamp(),
                   parent_id=parent_id, tif=tif, peg=peg)  # fmt: skip
        self._orders[o.id] = o
        self._command(o, "New", spec.get("clOrdId"))
        return o

    def _command(self, o: _Order, kind: str, cl_ord_id: str | None = None) -> dict[str, Any]:
        command: dict[str, Any] = {"id": self._next_id(), "orderId": o.id,
                                   "timestamp": self._now_stamp(), "commandType": kind,
                                   "commandStatus": "OnBroker", "isAutomated": True}  # fmt: skip
        if cl_ord_id:
            command["clOrdId"] = cl_ord_id
        self._commands.append(command)
        return command

    def _place(self, body: Any, *, oso: bool) -> dict[str, Any]:
        account_id, symbol, contract = self._checked_entry(body)
        entry_priced = _priced(body, "order", symbol)
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
        entry_peg = _peg(body, "order", symbol, body["action"])
        entry_priced = _pegged(entry_priced, entry_peg, self._last_price(contract), symbol)
        entry_type, entry_px, entry_stop = entry_priced
        reference = {"Limit": entry_px}.get(entry_type, entry_stop) or self._last_price(contract)
        priced_legs = []
        for leg in legs:
            peg = _peg(leg, leg["key"], symbol, leg["action"])
            priced = _pegged(_priced(leg, leg["key"], symbol), peg, reference, symbol)
            _check_leg_side(body["action"], leg["key"], *priced, reference)
            priced_legs.append((leg, priced, peg))

        qty = body["orderQty"]
        entry = self._new_order(account_id, contract, body, qty, entry_priced, "Working",
                                peg=entry_peg)  # fmt: skip
        for leg, priced, peg in priced_legs:
            o = self._new_order(account_id, contract, leg, leg.get("orderQty") or qty, priced,
                                "Suspended", parent_id=entry.id, peg=peg)  # fmt: skip
            entry.legs.append(o.id)
        if len(entry.legs) == 2:
            first, second = entry.legs
            self._orders[first].oco_id, self._orders[second].oco_id = second, first
        self._route([entry.id, *entry.legs])
        answer: dict[str, Any] = {"orderId": entry.id}
        for i, leg_id in enumerate(entry.legs, start=1):
            answer[f"oso{i}Id"] = leg_id
        return answer

    def _place_oco(self, body: Any) -> dict[str, Any]:
        """Two orders, one cancels the other: the body is the first, `other` the second."""
        account_id, symbol, contract = self._checked_entry(body)
        other = body.get("other")
        if not isinstance(other, dict):
            raise _BadRequest("placeoco needs the second order as `other`")
        _require(other, ("action", "orderType"), where="other")
        _check_action(other["action"], "other.action")
        last = self._last_price(contract)
        first_peg = _peg(body, "order", symbol, body["action"])
        other_peg = _peg(other, "other", symbol, other["action"])
        first_priced = _pegged(_priced(body, "order", symbol), first_peg, last, symbol)
        other_priced = _pegged(_priced(other, "other", symbol), other_peg, last, symbol)
        qty = body["orderQty"]
        a = self._new_order(account_id, contract, body, qty, first_priced, "Working",
                            peg=first_peg)  # fmt: skip
        b = self._new_order(account_id, contract, other, other.get("orderQty") or qty,
                            other_priced, "Working", peg=other_peg)  # fmt: skip
        a.oco_id, b.oco_id = b.id, a.id
        self._route([a.id, b.id])
        return {"orderId": a.id, "ocoId": b.id}

    def _live_order(self, body: Any) -> _Order:
        if not isinstance(body, dict) or not isinstance(body.get("orderId"), int):
            raise _BadRequest("orderId (integer) is required")
        order = self._orders.get(body["orderId"])
        if order is None:
            raise _NotFound(f"order {body['orderId']} not found")
        if order.status not in _LIVE:
            raise _Refused("TooLate", f"order {order.id} is {order.status}")
        return order

    def _modify(self, body: Any) -> dict[str, Any]:
        o = self._live_order(body)
        _require(body, ("orderQty", "orderType"))
        if body.get("isAutomated") is not True:
            raise _BadRequest("isAutomated must be true for orders not entered by a person")
        if body["orderType"] != o.order_type:
            raise _Refused("Unsupported", "the simulator does not change an order's type")
        qty = body["orderQty"]
        if not isinstance(qty, int) or isinstance(qty, bool) or qty <= o.filled:
            raise _BadRequest("orderQty must be an integer above the quantity filled")
        if qty > self._max_qty:
            raise _Refused("MaxOrderQtyLimitReached", f"orderQty {qty} exceeds {self._max_qty}")
        symbol = self._symbol_of(o.contract_id)
        _, price, stop_price = _priced(body, "order", symbol)
        o.peg = _peg(body, "order", symbol, o.action)  # a TrailingStop trails by it from now
        command = self._command(o, "Modify", body.get("clOrdId"))
        if self.market is not None:
            # a waiting bracket leg is sized by its entry's fills: only its price moves
            waiting_leg = o.status == "Suspended"
            self.market.modify(o.id, price=price if o.order_type == "Limit" else stop_price,
                               qty=0 if waiting_leg else qty)  # fmt: skip
        else:
            o.qty = qty
            o.price, o.stop_price = (
                (price, o.stop_price)
                if o.order_type == "Limit"
                else (o.price, o.stop_price if stop_price is None else stop_price)
            )
            self._route([])
        return {"commandId": command["id"]}

    def _cancel(self, body: Any) -> dict[str, Any]:
        order = self._live_order(body)
        command = self._command(order, "Cancel")
        self._cancel_with_legs(order)
        return {"commandId": command["id"]}

    def _cancel_with_legs(self, order: _Order) -> None:
        if self.market is not None:
            self.market.cancel(order.id)  # its legs go with it at the exchange
            self.market.settle()
            return
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
        if contract not in self._contracts.values():
            raise _Refused("InvalidContract", f"unknown contract id {contract}")
        for o in list(self._orders.values()):
            if o.account_id == account_id and o.contract_id == contract and o.status in _LIVE:
                self._cancel_with_legs(o)
        pos = self._positions.get((account_id, contract))
        if pos is None or pos.net == 0:
            return {}
        spec = {"action": "Sell" if pos.net > 0 else "Buy"}
        close = self._new_order(account_id, contract, spec, abs(pos.net),
                                ("Market", None, None), "Working")  # fmt: skip
        self._route([close.id])
        return {"orderId": close.id}

    # -- reading ------------------------------------------------------------------------

    def _order_rows(self) -> list[dict[str, Any]]:
        return [o.public() for o in self._orders.values()]

    @staticmethod
    def _item(rows: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
        wanted = _int_arg(query, "id")
        for row in rows:
            if row["id"] == wanted:
                return row
        raise _NotFound(f"no entity with id {wanted}")

    @staticmethod
    def _items(rows: list[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
        try:
            ids = {int(i) for i in query.get("ids", "").split(",") if i}
        except ValueError:
            raise _BadRequest("ids must be comma-separated integers") from None
        return [r for r in rows if r["id"] in ids]

    @staticmethod
    def _deps(rows: list[dict[str, Any]], master_key: str,
              query: dict[str, str]) -> list[dict[str, Any]]:  # fmt: skip
        master = _int_arg(query, "masterid")
        return [r for r in rows if r.get(master_key) == master]

    @staticmethod
    def _ldeps(deps: Callable[[], Any], query: dict[str, str]) -> list[dict[str, Any]]:
        """`ldeps?masterids=1,2`: `deps` of each master, in turn."""
        try:
            masters = [int(i) for i in query.get("masterids", "").split(",") if i]
        except ValueError:
            raise _BadRequest("masterids must be comma-separated integers") from None
        rows: list[dict[str, Any]] = []
        for m in masters:
            query["masterid"] = str(m)
            rows.extend(deps())
        return rows

    def _fill_deps(self, query: dict[str, str]) -> list[dict[str, Any]]:
        master = _int_arg(query, "masterid")
        return [f for f in self._fills if f["orderId"] == master]

    def _position_list(self) -> list[dict[str, Any]]:
        trade_date = self._trade_date()
        return [
            {
                "id": account_id * 100_000 + contract,
                "accountId": account_id,
                "contractId": contract,
                "timestamp": p.timestamp,
                "tradeDate": trade_date,
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

    def _cash_list(self) -> list[dict[str, Any]]:
        trade_date = self._trade_date()
        return [
            {"id": 5_000 + a, "accountId": a, "timestamp": c.timestamp,
             "tradeDate": trade_date,
             "currencyId": 1, "amount": round(c.amount + c.realized - c.fees, 2),
             "realizedPnL": round(c.realized, 2), "weekRealizedPnL": round(c.realized, 2)}
            for a, c in self._cash.items()
        ]  # fmt: skip

    def _cash_snapshot(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("accountId"), int):
            raise _BadRequest("accountId (integer) is required")
        cash = self._cash.get(body["accountId"])
        if cash is None:
            raise _Refused("Unauthorized", f"account {body['accountId']} is not this user's")
        open_pnl = 0.0
        for (account_id, contract), p in self._positions.items():
            if account_id == body["accountId"] and p.net and p.net_price is not None:
                ins = instrument_for(self._symbol_of(contract))
                open_pnl += ins.pnl(p.net_price, self._last_price(contract), p.net)
        total = cash.amount + cash.realized - cash.fees
        return {"errorCode": "OK", "totalCashValue": round(total, 2),
                "netLiq": round(total + open_pnl, 2), "openPnL": round(open_pnl, 2),
                "realizedPnL": round(cash.realized, 2), "totalPnL": round(cash.realized +
                                                                          open_pnl, 2)}  # fmt: skip

    def _entities(self) -> list[tuple[str, list[dict[str, Any]]]]:
        rows = {
            "accounts": self._account_list(),
            "positions": self._position_list(),
            "orders": self._order_rows(),
            "orderVersions": self._journal.all_versions(),
            "fills": list(self._fills),
            "executionReports": list(self._journal.reports),
            "cashBalances": self._cash_list(),
        }
        return [(name, rows[name]) for name, _ in ENTITY_TYPES]

    def _publish(self) -> None:
        """Called as the lock is released: history for what changed, then `props`."""
        self._journal.record_history((o.state() for o in self._orders.values()),
                                     self._now_stamp())  # fmt: skip
        events = self._journal.diff(keyed(self._entities()))
        self.sockets.publish("user", events)

    # -- prices and time ----------------------------------------------------------------

    def _symbol_of(self, contract: int) -> str:
        return next(s for s, c in self._contracts.items() if c == contract)

    def _last_price(self, contract: int) -> float:
        if self.market is not None:
            return self.market.last_price()
        return self._prices[contract]

    def _trade_date(self) -> dict[str, int]:
        """The CME trade date now (from 17:00 Chicago time, the next one), as Tradovate
        writes it."""
        if self.market is not None and self.market.now_ns:
            now = datetime.fromtimestamp(self.market.now_ns / 1e9, UTC)
        else:
            now = self._clock()
        try:
            d = trading_date(now)
        except ValueError:  # outside the modelled calendar: the calendar day
            d = now.date()
        return {"year": d.year, "month": d.month, "day": d.day}

    def _now_stamp(self) -> str:
        if self.market is not None and self.market.now_ns:
            return _stamp_ns(self.market.now_ns)
        return _stamp(self._clock())

    def _md_trade(self, contract: int, price: float) -> None:
        """A set price is a trade of one lot: the md socket's quote and tick chart see it."""
        self.md_source(contract).trade(int(self._clock().timestamp() * 1e9), price)
        publish_market(self, {contract})

    def md_source(self, contract: int) -> MdSource:
        """The market the md socket reports for `contract`."""
        if self.market is not None:
            return self.market
        return self._tapes.setdefault(contract, PriceTape())

    # -- matching -----------------------------------------------------------------------

    def _route(self, order_ids: list[int]) -> None:
        """New or changed orders go to the market: the replayed exchange, or the price."""
        if self.market is not None:
            for oid in order_ids:
                self.market.submit(self._orders[oid])
            self.market.settle()
            return
        for contract in {o.contract_id for o in self._orders.values()}:
            self._match(contract)

    def _match(self, contract: int) -> None:
        """Fill every working order the current price reaches, until nothing changes; an
        order fills at most `faults.fill_cap` contracts per price."""
        px = self._prices[contract]
        cap = self.faults.fill_cap
        capped: set[int] = set()
        changed = True
        while changed:
            changed = False
            for o in list(self._orders.values()):
                if o.contract_id != contract or o.status != "Working" or o.id in capped:
                    continue
                fill_px = _fill_price(o, px)
                if fill_px is not None:
                    qty = o.qty - o.filled
                    if cap is not None and cap < qty:
                        qty = cap
                        capped.add(o.id)
                    self._fill(o, fill_px, qty)
                    changed = True
        symbol = self._symbol_of(contract)
        for o in self._orders.values():  # what did not trigger follows the price
            if o.contract_id == contract and o.status == "Working" and o.peg is not None:
                assert o.stop_price is not None
                o.stop_price = trailed_stop(o.action, o.stop_price, o.peg, px, symbol)

    def _book_fill(self, o: _Order, price: float, qty: int, ts_ns: int | None = None) -> None:
        """Record a fill of `qty` at `price` and move the account's position and cash by it;
        stamped `ts_ns` (the replayed exchange's time of the fill), else now."""
        stamp = self._now_stamp() if ts_ns is None else _stamp_ns(ts_ns)
        self._fills.append(
            {
                "id": self._next_id(),
                "orderId": o.id,
                "contractId": o.contract_id,
                "timestamp": stamp,
                "tradeDate": self._trade_date(),
                "action": o.action,
                "qty": qty,
                "price": price,
                "active": True,
                "finallyPaired": 0,
            }
        )
        pos = self._positions.setdefault((o.account_id, o.contract_id), _Position())
        pos.timestamp = stamp
        signed = qty if o.action == "Buy" else -qty
        if o.action == "Buy":
            pos.bought, pos.bought_value = pos.bought + qty, pos.bought_value + qty * price
        else:
            pos.sold, pos.sold_value = pos.sold + qty, pos.sold_value + qty * price
        cash = self._cash.get(o.account_id)
        if pos.net == 0 or (pos.net > 0) == (signed > 0):
            held = abs(pos.net)
            pos.net_price = ((pos.net_price or 0.0) * held + price * qty) / (held + qty)
        elif cash is not None and pos.net_price is not None:  # closing: realise P&L
            closed = min(qty, abs(pos.net))
            ins = instrument_for(self._symbol_of(o.contract_id))
            cash.realized += ins.pnl(pos.net_price, price, closed if pos.net > 0 else -closed)
            if qty > closed:  # turned: the rest opens at this price
                pos.net_price = price
        if cash is not None:
            cash.fees += self._commission * qty
            cash.timestamp = stamp
        pos.net += signed
        if pos.net == 0:
            pos.net_price = None

    def _fill(self, o: _Order, price: float, qty: int | None = None) -> None:
        qty = o.qty - o.filled if qty is None else qty
        o.filled += qty
        o.fill_value += qty * price
        o.last_fill = (qty, price)
        if o.filled >= o.qty:
            o.status = "Filled"
        self._book_fill(o, price, qty)
        for leg_id in o.legs:  # the entry filled: its bracket goes live
            if self._orders[leg_id].status == "Suspended":
                self._orders[leg_id].status = "Working"
        other = self._orders.get(o.oco_id) if o.oco_id is not None else None
        if other is not None and other.status in _LIVE:
            if o.status == "Filled":
                other.status = "Canceled"
            else:  # one-cancels-other, in part
                other.qty -= qty
                if other.qty <= other.filled:
                    other.status = "Canceled"


def _int_arg(query: dict[str, str], key: str) -> int:
    try:
        return int(query.get(key, ""))
    except ValueError:
        raise _BadRequest(f"{key} must be an integer") from None


def _fill_price(o: _Order, px: float) -> float | None:
    sign = 1 if o.action == "Buy" else -1
    if o.order_type == "Market":
        return px
    if o.order_type == "Limit" and o.price is not None:
        return o.price if sign * (o.price - px) >= 0 else None  # price at or through the limit
    if o.order_type in _STOPS and o.stop_price is not None:
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
    needs = {"Limit": "price", "Stop": "stopPrice", "TrailingStop": "stopPrice"}.get(order_type)
    values: dict[str, float | None] = {"price": None, "stopPrice": None}
    if order_type == "TrailingStop" and order.get("stopPrice") is None:
        needs = None  # optional: the stop then starts at the reference price plus the peg
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


def _peg(order: dict[str, Any], where: str, symbol: str, action: str) -> float | None:
    """A TrailingStop's pegDifference: required, on the tick grid, on the holder's side
    (esml.sim.tradovate_trail); any other order type takes none."""
    peg = order.get("pegDifference")
    if order["orderType"] != "TrailingStop":
        if peg is not None:
            raise _BadRequest(f"{where}: pegDifference goes with TrailingStop orders only")
        return None
    if not isinstance(peg, int | float) or isinstance(peg, bool):
        raise _BadRequest(f"{where}: a TrailingStop order needs a numeric pegDifference")
    tick = instrument_for(symbol).tick_size
    if peg == 0 or abs(peg / tick - round(peg / tick)) > 1e-9:
        raise _Refused("InvalidPrice", f"{where}.pegDifference {peg} is not a whole number "
                                       f"of {tick} ticks")  # fmt: skip
    if not peg_side_ok(action, peg):
        side = "below" if action == "Sell" else "above"
        raise _Refused("InvalidPrice", f"{where}.pegDifference {peg} must put a "
                                       f"{action} stop {side} the market")  # fmt: skip
    return float(peg)


def _pegged(
    priced: tuple[str, float | None, float | None],
    peg: float | None,
    reference: float,
    symbol: str,
) -> tuple[str, float | None, float | None]:
    """A TrailingStop sent without a stopPrice starts at `reference` plus its peg."""
    kind, price, stop_price = priced
    if peg is not None and stop_price is None:
        stop_price = instrument_for(symbol).round_to_tick(reference + peg)
    return kind, price, stop_price


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
    if leg_type in _STOPS and stop_price is not None:
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
        if path.startswith("/sim/"):
            self._answer(*self.sim.admin(path, body))
            return
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        with self.sim._lock:
            self.sim.record(method, path, body)
            status, answer, verdict = self.sim.dispatch(method, path, query, token, body)
        if verdict.after == "drop-after-accept":  # carried out; the answer is lost with the line
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if verdict.after == "timeout-after-accept":
            time.sleep(verdict.delay_s)
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
