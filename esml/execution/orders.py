"""The order domain model shared by the engine, the paper broker, Tradovate and the journal."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field

from esml.market.side import Side


class OrderType(enum.StrEnum):
    MARKET = "Market"
    LIMIT = "Limit"
    STOP = "Stop"


class OrderStatus(enum.StrEnum):
    PENDING = "Pending"  # sent, not yet acknowledged
    WORKING = "Working"
    PARTIALLY_FILLED = "PartiallyFilled"  # working, some filled
    CANCEL_PENDING = "CancelPending"  # cancel sent, not yet confirmed (fills may still come)
    FILLED = "Filled"
    CANCELLED = "Canceled"
    REJECTED = "Rejected"

    @property
    def is_final(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED)


class OrderRole(enum.StrEnum):
    ENTRY = "entry"
    STOP = "stop"
    TARGET = "target"
    EXIT = "exit"


@dataclass(frozen=True)
class BracketSpec:
    """Exchange-held OCO protection, in ticks from the entry fill. With `trail_ticks` the
    stop is a trailing stop: it starts `stop_ticks` away and follows the market at
    `trail_ticks`, never back (the Tradovate client sends it as a `TrailingStop`)."""

    stop_ticks: int
    target_ticks: int
    trail_ticks: int | None = None

    def __post_init__(self) -> None:
        if self.stop_ticks <= 0 or self.target_ticks <= 0:
            raise ValueError("bracket stop and target must be positive tick distances")
        if self.trail_ticks is not None and not 0 < self.stop_ticks <= self.trail_ticks:
            raise ValueError("a trailing stop starts no further away than it trails")


@dataclass(frozen=True)
class OrderIntent:
    """What the decision layer wants: one entry with its bracket, or a flattening exit.

    `client_id` is deterministic from the intent's origin so a retried request can never
    place a second order.
    """

    client_id: str
    symbol: str
    side: Side
    qty: int
    order_type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    bracket: BracketSpec | None = None
    reason: str = ""
    ts_ns: int = 0

    def __post_init__(self) -> None:
        if self.qty <= 0:
            raise ValueError("order quantity must be positive")
        if self.order_type is OrderType.LIMIT and self.limit_price is None:
            raise ValueError("a limit order needs a limit price")


def client_order_id(*parts: object) -> str:
    """A stable id from what caused the order (source, signal time, ...)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()
    return f"esml-{digest[:24]}"


@dataclass
class Order:
    """One order at the broker, as esml tracks it."""

    order_id: str
    client_id: str
    symbol: str
    side: Side
    qty: int
    order_type: OrderType
    role: OrderRole
    price: float | None = None  # limit or stop price
    status: OrderStatus = OrderStatus.PENDING
    filled_qty: int = 0
    avg_fill_price: float = 0.0
    parent_id: str | None = None  # bracket legs point at their entry
    oco_id: str | None = None  # the other leg of an OCO pair
    ts_ns: int = 0
    reject_reason: str = ""

    @property
    def remaining(self) -> int:
        return self.qty - self.filled_qty


@dataclass(frozen=True)
class Fill:
    fill_id: str
    order_id: str
    client_id: str
    symbol: str
    side: Side
    qty: int
    price: float
    commission: float
    ts_ns: int
    role: OrderRole = field(default=OrderRole.ENTRY)
