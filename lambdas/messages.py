"""What the Lambdas say to each other: strict models, so a malformed hand-off fails loudly
at the receiving end instead of trading on a guess."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from esml.decision.alerts import AlertOrder
from esml.execution.orders import Order, OrderRole, OrderStatus, Side

DEFAULT_ACCOUNT = "primary"
"""One deployment trades one Tradovate account; the key leaves room for a second."""

_ACCOUNT = Field(DEFAULT_ACCOUNT, pattern=r"^[A-Za-z0-9_.-]{1,64}$")


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RiskRequest(_Message):
    """webhook -> risk: an authenticated, de-duplicated alert."""

    account: str = _ACCOUNT
    alert: AlertOrder


class RouteRequest(_Message):
    """risk -> router: an approved trade, already counted in the account state."""

    account: str = _ACCOUNT
    client_id: str = Field(min_length=1, max_length=64)
    symbol: str = Field(min_length=2, max_length=16)
    side: Side
    qty: int = Field(gt=0)
    is_exit: bool
    reference_price: float = Field(gt=0, allow_inf_nan=False)
    stop_ticks: int = Field(gt=0)
    target_ticks: int = Field(gt=0)
    reason: str
    ts_ns: int


class OrderView(_Message):
    client_id: str
    order_id: str
    role: OrderRole
    side: Side
    qty: int
    price: float | None
    status: OrderStatus
    reject_reason: str = ""

    @classmethod
    def of(cls, o: Order) -> OrderView:
        return cls(
            client_id=o.client_id,
            order_id=o.order_id,
            role=o.role,
            side=o.side,
            qty=o.qty,
            price=o.price,
            status=o.status,
            reject_reason=o.reject_reason,
        )


RouteStatus = Literal["placed", "rejected", "flat", "unknown"]


class RouteAnswer(_Message):
    """router -> risk. `duplicate`: this client id was routed before and nothing was sent
    now; the orders are those recorded then. `unknown`: an earlier attempt claimed the id
    but never learned the broker's answer; a person must reconcile it."""

    status: RouteStatus
    client_id: str
    duplicate: bool
    reason: str = ""
    orders: list[OrderView] = []


class RiskAnswer(_Message):
    """risk -> webhook, and the webhook's answer to TradingView."""

    status: Literal[
        "placed", "risk_rejected", "broker_rejected", "nothing_to_exit", "flat", "unknown"
    ]
    client_id: str
    gate: str | None = None
    reason: str = ""
    duplicate: bool = False
    position: int
    orders: list[OrderView] = []
