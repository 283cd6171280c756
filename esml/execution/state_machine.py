"""The order state machine: every order esml sends, from intent to its final state.

    PENDING ──▶ WORKING ──▶ PARTIALLY_FILLED ──▶ FILLED
       │           │               │
       │           └──▶ CANCEL_PENDING ◀──┘ ──▶ CANCELLED
       └──▶ REJECTED

A broker may report a later state before an earlier one was seen (a market order's first
news is often its fill), so a step forward may skip states: PENDING -> FILLED is legal, the
acknowledgement implied. Nothing moves backward, nothing leaves a final state, fills never
shrink: such a transition raises `IllegalTransition` and changes nothing. A cancel that
the broker refuses returns CANCEL_PENDING to WORKING or PARTIALLY_FILLED.

The journal knows an order by the id esml gives it before sending it (its client id), so
the intent is written before the broker hears of it (write-ahead) and every later state
updates that same record; the broker's own id is bound to it when the broker answers. Each
transition writes its reason to the decision log and then the order (`record_order`): a
crash between the two leaves a reason whose order a restart brings up to date (writing
both again), never a state without its reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from esml.execution.journaling import SOURCE
from esml.execution.orders import Order, OrderRole, OrderStatus
from esml.execution.ports import DecisionRecord, ExecutionJournal

S = OrderStatus
LEGAL: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING: frozenset(
        {S.WORKING, S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.CANCELLED, S.REJECTED}
    ),
    S.WORKING: frozenset({S.WORKING, S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.CANCELLED}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.CANCELLED}),
    S.CANCEL_PENDING: frozenset(
        {S.CANCEL_PENDING, S.WORKING, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED}
    ),
    S.FILLED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
}
# How far along an order is: a report behind what is known is an old snapshot, not news.
_RANK = {
    S.PENDING: 0,
    S.WORKING: 1,
    S.PARTIALLY_FILLED: 2,
    S.CANCEL_PENDING: 3,
    S.FILLED: 4,
    S.CANCELLED: 4,
    S.REJECTED: 4,
}
LIVE = frozenset(s for s in OrderStatus if not s.is_final)


class IllegalTransition(ValueError):
    """An order state change the state machine does not allow; nothing was changed."""


@dataclass
class Tracked:
    """One order as the execution layer holds it: the journal's record and what is in
    flight for it."""

    order: Order  # the journal record: order_id is esml's id (the client id)
    broker_id: str | None = None
    fills_seen: int = 0  # contracts of fills applied to the position
    sent_ns: int = 0
    want_price: float | None = None  # a modify on its way
    want_qty: int | None = None
    want_since_ns: int = 0
    before_cancel: OrderStatus | None = None
    unresolved: bool = False  # sent, but the broker's answer never came

    @property
    def id(self) -> str:
        return self.order.order_id

    @property
    def status(self) -> OrderStatus:
        return self.order.status

    @property
    def role(self) -> OrderRole:
        return self.order.role

    @property
    def live(self) -> bool:
        return self.order.status in LIVE

    @property
    def remaining(self) -> int:
        """Contracts still to fill, counting a quantity change on its way."""
        qty = self.want_qty if self.want_qty is not None else self.order.qty
        return max(qty - self.order.filled_qty, 0)

    @property
    def price(self) -> float | None:
        return self.want_price if self.want_price is not None else self.order.price


def _check_fields(o: Order) -> None:
    if o.qty <= 0 or not 0 <= o.filled_qty <= o.qty:
        raise IllegalTransition(f"order {o.order_id}: {o.filled_qty} filled of {o.qty}")
    prices = (o.avg_fill_price, *(() if o.price is None else (o.price,)))
    if not all(math.isfinite(p) and p >= 0 for p in prices):
        raise IllegalTransition(f"order {o.order_id}: prices must be finite, got {prices}")


def check(old: Order, new: Order) -> None:
    """Raise IllegalTransition unless `old` may become `new`."""
    _check_fields(new)
    if new.status not in LEGAL[old.status]:
        raise IllegalTransition(
            f"order {old.order_id}: {old.status.value} -> {new.status.value} is not allowed"
        )
    if new.filled_qty < old.filled_qty:
        raise IllegalTransition(
            f"order {old.order_id}: filled quantity cannot fall ({old.filled_qty} -> "
            f"{new.filled_qty})"
        )
    if new.status is S.FILLED and new.filled_qty != new.qty:
        raise IllegalTransition(
            f"order {old.order_id}: filled with {new.filled_qty} of {new.qty} contracts"
        )


def reported_status(current: OrderStatus, report: Order) -> OrderStatus:
    """The state a broker's report of an order means, given what is known of it."""
    s = report.status
    if s in (S.WORKING, S.PARTIALLY_FILLED, S.PENDING):
        if current is S.CANCEL_PENDING:
            return current  # the cancel is still on its way; fills are counted
        if s is S.PENDING:
            return current
        return S.PARTIALLY_FILLED if report.filled_qty > 0 else S.WORKING
    return s


class OrderTracker:
    """Every order of one symbol, by esml's id, each change journaled with its reason."""

    def __init__(self, journal: ExecutionJournal, symbol: str) -> None:
        self.journal = journal
        self.symbol = symbol
        self._orders: dict[str, Tracked] = {}
        self._by_broker: dict[str, str] = {}

    def __contains__(self, order_id: str) -> bool:
        return order_id in self._orders

    def get(self, order_id: str) -> Tracked:
        return self._orders[order_id]

    def by_broker(self, broker_id: str) -> Tracked | None:
        our = self._by_broker.get(broker_id)
        return None if our is None else self._orders[our]

    def all(self) -> list[Tracked]:
        return list(self._orders.values())

    def live(self, *roles: OrderRole) -> list[Tracked]:
        return [t for t in self._orders.values() if t.live and (not roles or t.role in roles)]

    # --- changes -----------------------------------------------------------------------
    def new(self, order: Order, why: str) -> Tracked:
        """Journal an intent (PENDING) before it is sent."""
        if order.order_id in self._orders:
            raise IllegalTransition(f"order {order.order_id} already exists")
        if order.status is not S.PENDING or order.filled_qty:
            raise IllegalTransition(f"order {order.order_id} must start PENDING and unfilled")
        if order.symbol != self.symbol:
            raise ValueError(f"order {order.order_id} is for {order.symbol}, not {self.symbol}")
        _check_fields(order)
        self._note(order, f"new {order.role.value} order ({order.status.value}): {why}")
        self.journal.record_order(order)
        t = Tracked(order, sent_ns=order.ts_ns)
        self._orders[order.order_id] = t
        return t

    def load(self, order: Order) -> Tracked:
        """An order read back from the journal (a restart): nothing is written."""
        if order.order_id in self._orders:
            raise IllegalTransition(f"order {order.order_id} loaded twice")
        t = Tracked(order, sent_ns=order.ts_ns)
        self._orders[order.order_id] = t
        return t

    def bind(self, t: Tracked, broker_id: str) -> None:
        known = self._by_broker.get(broker_id)
        if known is not None and known != t.id:
            raise IllegalTransition(f"broker order {broker_id} is already {known}, not {t.id}")
        if t.broker_id is not None and t.broker_id != broker_id:
            raise IllegalTransition(f"order {t.id} is broker order {t.broker_id}, not {broker_id}")
        t.broker_id = broker_id
        self._by_broker[broker_id] = t.id

    def move(
        self, t: Tracked, status: OrderStatus, ts_ns: int, why: str, **changes: object
    ) -> bool:
        """Change an order's state (and fields: filled_qty, avg_fill_price, price, qty,
        reject_reason). Journaled; False when nothing changed."""
        new = replace(t.order, status=status, **changes)  # type: ignore[arg-type]
        if new == t.order:
            return False
        check(t.order, new)
        old = t.order
        self._note(new, f"{old.status.value} -> {status.value}: {why}", ts_ns)
        self.journal.record_order(new)
        t.order = new
        if status is S.CANCEL_PENDING and old.status is not S.CANCEL_PENDING:
            t.before_cancel = old.status
        return True

    def apply(self, t: Tracked, report: Order, ts_ns: int, why: str = "broker report") -> bool:
        """The broker's view of the order: it wins on status, fills, price and quantity.
        A report behind what is known (an older snapshot) changes nothing."""
        status = reported_status(t.status, report)
        behind = _RANK[status] < _RANK[t.status] and report.filled_qty <= t.order.filled_qty
        if behind or (status is t.status and t.status.is_final):
            return False
        changes: dict[str, object] = {  # fills never shrink: a lower count is older news
            "filled_qty": max(report.filled_qty, t.order.filled_qty),
            "avg_fill_price": report.avg_fill_price or t.order.avg_fill_price,
        }
        if report.qty > 0:
            changes["qty"] = report.qty
        if report.price is not None:
            changes["price"] = report.price
        if status is S.REJECTED:
            changes["reject_reason"] = report.reject_reason or "rejected by the broker"
        if t.want_price is not None and report.price == t.want_price:
            t.want_price = None
        if t.want_qty is not None and report.qty == t.want_qty:
            t.want_qty = None
        if status is S.FILLED:
            changes["filled_qty"] = changes.get("qty", t.order.qty)
        said = [
            f"{k} {getattr(t.order, k)} -> {v}"
            for k, v in changes.items()
            if k in ("qty", "price", "filled_qty") and getattr(t.order, k) != v
        ]
        return self.move(t, status, ts_ns, "; ".join([why, *said]), **changes)

    def note(self, ts_ns: int, qty: int, side: str, reason: str) -> None:
        """A reason without a state change: a modify requested, a rule that fired."""
        self.journal.record_decision(
            DecisionRecord(ts_ns, self.symbol, SOURCE, side, qty, True, None, reason)
        )

    def _note(self, o: Order, what: str, ts_ns: int | None = None) -> None:
        rejected = o.status is S.REJECTED
        self.journal.record_decision(
            DecisionRecord(
                o.ts_ns if ts_ns is None else ts_ns,
                o.symbol,
                SOURCE,
                o.side.value,
                o.qty,
                not rejected,
                "broker" if rejected else None,
                f"order {o.order_id}: {what}",
            )
        )
