"""Tradovate order requests and the esml Orders read back from Tradovate's entities.

An entry with a bracket goes out as one `/order/placeoso` request: the entry, `bracket1`
(the protective stop) and `bracket2` (the profit target), the two legs linked as an OCO
that Tradovate releases once the entry fills. Leg prices are set when the order is sent,
from the entry's limit price, or for a market entry from the caller's `reference_price`
(the price the signal or alert saw), plus or minus the bracket's ticks, on the tick grid.
A market fill that slips therefore keeps the legs where the signal meant them: the risk
taken is the one the decision approved.

A bracket with `trail_ticks` sends its stop leg as a `TrailingStop`: `stopPrice` where it
starts (`stop_ticks` from the entry) and `pegDifference`, its signed distance from the
market (negative for a Sell stop), with which Tradovate moves it after the market, never
back; it reads back as an esml STOP whose price is the latest `stopPrice`.

Every order carries `isAutomated: true` and its own `clOrdId` (bracket legs: the entry's
id plus `-stop` / `-target`), so a lost answer can be settled by asking for the clOrdId.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from esml.data.tradovate_time import stamp_ns
from esml.execution.orders import (
    BracketSpec,
    Order,
    OrderIntent,
    OrderRole,
    OrderStatus,
    OrderType,
    Side,
)
from esml.market.instruments import Instrument, instrument_for

TradovateOrderType = Literal["Market", "Limit", "Stop", "StopLimit", "TrailingStop"]

LIVE_STATUSES = ("Working", "Suspended", "PendingNew", "PendingCancel", "PendingReplace")
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
    "PendingNew": OrderStatus.PENDING,
    "PendingCancel": OrderStatus.CANCEL_PENDING,
    "PendingReplace": OrderStatus.WORKING,
    "Filled": OrderStatus.FILLED,
    "Completed": OrderStatus.FILLED,
    "Canceled": OrderStatus.CANCELLED,
    "Expired": OrderStatus.CANCELLED,
    "Rejected": OrderStatus.REJECTED,
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


def peg_difference(instrument: Instrument, distance: float) -> float:
    """A signed distance on the tick grid, never rounded to zero."""
    ticks = max(round(abs(distance) / instrument.tick_size), 1)
    return math.copysign(instrument.round_to_tick(ticks * instrument.tick_size), distance)


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


@dataclass(frozen=True)
class OrderSpec:
    """One Tradovate order of any type the client sends (the Broker protocol's intents
    cover market and limit entries; stops and stop-limits come through here)."""

    client_id: str
    symbol: str
    side: Side
    qty: int
    order_type: TradovateOrderType = "Market"
    price: float | None = None  # limit price (Limit, StopLimit)
    stop_price: float | None = None  # trigger (Stop, StopLimit); a TrailingStop's start
    time_in_force: str = "Day"
    role: OrderRole = OrderRole.ENTRY
    peg: float | None = None  # a TrailingStop's pegDifference (negative for a Sell)

    def __post_init__(self) -> None:
        if self.qty <= 0:
            raise ValueError(f"{self.client_id}: order quantity must be positive")
        trailing = self.order_type == "TrailingStop"
        needs_price = self.order_type in ("Limit", "StopLimit")
        needs_stop = self.order_type in ("Stop", "StopLimit")
        for name, needed, allowed, value in (
            ("price", needs_price, needs_price, self.price),
            # a TrailingStop's stop is optional: Tradovate starts it at the market plus the peg
            ("stop_price", needs_stop, needs_stop or trailing, self.stop_price),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{self.client_id}: {name} must be a positive number")
            if needed and value is None:
                raise ValueError(f"{self.client_id}: a {self.order_type} order needs a {name}")
            if not allowed and value is not None:
                raise ValueError(f"{self.client_id}: a {self.order_type} order takes no {name}")
        if trailing != (self.peg is not None):
            raise ValueError(f"{self.client_id}: a peg goes with a TrailingStop, and only with it")
        if trailing:
            assert self.peg is not None
            if not math.isfinite(self.peg) or self.peg * self.side.sign <= 0:
                where = "below" if self.side is Side.SELL else "above"
                raise ValueError(f"{self.client_id}: a {self.side.value} trailing stop pegs "
                                 f"{where} the market")  # fmt: skip

    def body(self) -> dict[str, Any]:
        """The order fields of a Tradovate request (no account), prices on the tick grid."""
        inst = instrument_for(self.symbol)
        body: dict[str, Any] = {
            "clOrdId": self.client_id,
            "action": self.side.value,
            "symbol": self.symbol,
            "orderQty": self.qty,
            "orderType": self.order_type,
            "timeInForce": self.time_in_force,
            "isAutomated": True,
        }
        if self.price is not None:
            body["price"] = inst.round_to_tick(self.price)
        if self.stop_price is not None:
            body["stopPrice"] = inst.round_to_tick(self.stop_price)
        if self.peg is not None:
            body["pegDifference"] = peg_difference(inst, self.peg)
        return body

    @property
    def esml_type(self) -> OrderType:
        return _TYPES[self.order_type]

    @property
    def resting_price(self) -> float | None:
        """The price esml's Order keeps: the stop for stops, else the limit."""
        body = self.body()
        return body.get("stopPrice") if self.esml_type is OrderType.STOP else body.get("price")


def intent_body(
    intent: OrderIntent, reference_price: float | None
) -> tuple[dict[str, Any], float | None, float | None]:
    """The request for an intent without its account, and the bracket's (stop, target)
    prices. Checked before anything is sent."""
    if intent.order_type is OrderType.STOP:
        raise ValueError(f"{intent.client_id}: stop entries are not supported (no stop price)")
    inst = instrument_for(intent.symbol)
    body = OrderSpec(
        intent.client_id,
        intent.symbol,
        intent.side,
        intent.qty,
        "Limit" if intent.order_type is OrderType.LIMIT else "Market",
        price=intent.limit_price if intent.order_type is OrderType.LIMIT else None,
    ).body()
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
    if intent.bracket.trail_ticks is not None:  # the stop side is opposite the entry
        trail = -intent.side.sign * intent.bracket.trail_ticks * inst.tick_size
        body["bracket1"]["orderType"] = "TrailingStop"
        body["bracket1"]["pegDifference"] = peg_difference(inst, trail)
    body["bracket2"] = {
        **leg,
        "orderType": OrderType.LIMIT.value,
        "price": target_px,
        "clOrdId": leg_client_id(intent.client_id, OrderRole.TARGET),
    }
    return body, stop_px, target_px


def now_ns() -> int:
    ts = datetime.now(UTC)
    return int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1_000


def order_from_entities(
    order: dict[str, Any],
    version: dict[str, Any] | None,
    fills: list[dict[str, Any]],
    *,
    symbol: str,
    client_id: str,
    role: OrderRole,
) -> Order:
    """An esml Order from Tradovate's order entity, its latest version and its fills: a
    working order with some fills is PARTIALLY_FILLED, never reported as unfilled."""
    oid = str(order["id"])
    if version is None:
        raise ValueError(f"Tradovate has no version of order {oid}")
    order_type = _TYPES.get(str(version.get("orderType")))
    if order_type is None:
        raise ValueError(f"order {oid} has an unknown type {version.get('orderType')!r}")
    active = [f for f in fills if f.get("active", True)]
    qty = sum(int(f["qty"]) for f in active)
    value = sum(int(f["qty"]) * float(f["price"]) for f in active)
    price = version.get("stopPrice") if order_type is OrderType.STOP else version.get("price")
    status = _STATUS.get(str(order.get("ordStatus")), OrderStatus.WORKING)
    if status is OrderStatus.WORKING and qty > 0:
        status = OrderStatus.PARTIALLY_FILLED
    return Order(
        order_id=oid,
        client_id=client_id,
        symbol=symbol,
        side=Side(order["action"]),
        qty=int(version["orderQty"]),
        order_type=order_type,
        role=role,
        price=None if price is None else float(price),
        status=status,
        filled_qty=qty,
        avg_fill_price=value / qty if qty else 0.0,
        parent_id=str(order["parentId"]) if order.get("parentId") is not None else None,
        oco_id=str(order["ocoId"]) if order.get("ocoId") is not None else None,
        ts_ns=stamp_ns(str(order["timestamp"])),
    )
