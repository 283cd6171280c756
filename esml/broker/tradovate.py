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
from collections.abc import Callable
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
