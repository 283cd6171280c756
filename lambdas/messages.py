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


class EntryLegView(_Message):
    client_id: str = Field(min_length=1, max_length=80)
    qty: int = Field(gt=0)
    stop_ticks: int = Field(gt=0)
    target_ticks: int = Field(gt=0)
    trail_ticks: int | None = Field(None, gt=0)  # the stop trails at this distance


class RouteRequest(_Message):
    """risk -> router: an approved plan, already reserved in the account state. In order:
    cancel the contract's working orders (all of them before a close, the entries only
    for `cancel`), close `close_qty` with a market order, then place each entry leg."""

    op: Literal["route"] = "route"
    account: str = _ACCOUNT
    client_id: str = Field(min_length=1, max_length=64)
    kind: str
    symbol: str = Field(min_length=2, max_length=16)
    side: Side
    close_qty: int = Field(ge=0)
    close_client_id: str
    entries: list[EntryLegView] = []
    cancel_entries: bool = False
    order_type: Literal["Market", "Limit"] = "Market"
    limit_price: float | None = Field(None, gt=0, allow_inf_nan=False)
    reference_price: float = Field(gt=0, allow_inf_nan=False)
    reason: str
    ts_ns: int


class SyncRequest(_Message):
    """risk (or a schedule) -> router: bring the account level with the broker."""

    op: Literal["sync"] = "sync"
    account: str = _ACCOUNT


Outcome = Literal["placed", "rejected", "unknown", "not_sent"]


class SyncAnswer(_Message):
    applied_fills: int
    released: list[str] = []
    placed: list[str] = []
    expired: list[str] = []


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


RouteStatus = Literal["placed", "rejected", "unknown", "cancelled"]


class RouteAnswer(_Message):
    """router -> risk. `outcomes`: per order client id, what became of it: placed (the
    broker has it), rejected (it has not and never will: release its reservation),
    unknown (the answer was lost: keep the reservation until a look-up tells), not_sent
    (an earlier step failed). `duplicate`: the alert was routed before; nothing was sent
    now and the outcomes are those recorded then."""

    status: RouteStatus
    client_id: str
    duplicate: bool = False
    reason: str = ""
    outcomes: dict[str, Outcome] = {}
    orders: list[OrderView] = []


class RiskAnswer(_Message):
    """risk -> webhook, and the webhook's answer to TradingView."""

    status: Literal["placed", "cancelled", "risk_rejected", "broker_rejected", "unknown"]
    client_id: str
    symbol: str = ""
    gate: str | None = None
    reason: str = ""
    duplicate: bool = False
    position: int = 0  # the contract's filled position after this alert, as known now
    orders: list[OrderView] = []
