"""Carrying out an approved alert plan at the broker, exactly once per client id.

Each order is claimed in the orders journal (a conditional put) before it goes to the
broker; a plan whose first order was claimed before gets the recorded outcomes back and
the broker hears nothing. In order: cancel the contract's working orders (all of them
before a close, the entries only for a `cancel`), close with a market order, then place
each entry leg (one OSO per target). Each order's outcome is one of:

* placed: the broker has it;
* rejected: the broker refused, or certainly never handled it (`not_handled`: a rate
  limit, a captcha): its reservation can go;
* unknown: the answer was lost and the broker client could not find the order by its
  client id either; the journal item stays Pending with the error noted and the risk
  state keeps the reservation until a later look-up tells (`broker_sync`);
* not_sent: an earlier step failed, so this order was never sent.

After every plan the account is synced (`broker_sync.sync_account`), so the fills of what
was just placed are in the account before the answer goes back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, Protocol

from esml.decision.alert_plan import EntryLeg
from esml.decision.broker_sync import SyncReport, move_stops_to_breakeven, sync_account
from esml.decision.fills import FillLedger
from esml.execution.orders import (
    BracketSpec,
    Fill,
    Order,
    OrderIntent,
    OrderRole,
    OrderStatus,
    OrderType,
)
from esml.execution.ports import BrokerFailure, OrderRefused
from esml.market.side import Side

log = logging.getLogger(__name__)

Outcome = Literal["placed", "rejected", "unknown", "not_sent"]


class PlacedOrders(Protocol):
    @property
    def orders(self) -> list[Order]: ...


class RoutingBroker(Protocol):
    """What routing uses of a broker (TradovateClient has it all)."""

    def place(self, intent: OrderIntent, reference_price: float | None = None) -> PlacedOrders: ...

    def cancel(self, order_id: str) -> None: ...

    def working_orders(self, symbol: str) -> list[Order]: ...

    def order_for_client(self, client_id: str) -> Order | None: ...

    def modify(self, order_id: str, *, price: float | None = None) -> None: ...

    def fills(self) -> list[Fill]: ...


class OrderJournal(Protocol):
    def claim(self, o: Order, **context: str) -> Order | None: ...

    def order(self, client_id: str) -> Order | None: ...

    def record_order(self, o: Order) -> None: ...


@dataclass(frozen=True)
class RoutePlan:
    account: str
    client_id: str  # the alert's
    symbol: str
    side: Side  # of the entries; of the close, which moves the same way
    close_qty: int
    close_client_id: str
    entries: tuple[EntryLeg, ...]
    cancel_entries: bool
    limit_price: float | None  # None: market entries
    reference_price: float  # prices a market entry's bracket
    reason: str
    ts_ns: int

    @property
    def order_ids(self) -> list[str]:
        close = [self.close_client_id] if self.close_qty else []
        return close + [e.client_id for e in self.entries]


@dataclass
class Routed:
    status: Literal["placed", "rejected", "unknown", "cancelled"]
    outcomes: dict[str, Outcome]
    orders: list[Order] = field(default_factory=list)
    reason: str = ""
    duplicate: bool = False


class AlertRouter:
    def __init__(
        self,
        journal: OrderJournal,
        broker: RoutingBroker,
        ledger: FillLedger,
        not_handled: tuple[type[Exception], ...] = (),
    ) -> None:
        self.journal = journal
        self.broker = broker
        self.ledger = ledger
        self._not_handled = (OrderRefused, *not_handled)

    def sync(self, account: str) -> SyncReport:
        """The account level with the broker; then stops moved to break-even where a
        first target filled (a failure there is logged; the next sync tries again)."""
        report = sync_account(account, self.broker, self.ledger, self.journal)
        try:
            for cid in move_stops_to_breakeven(self.broker, self.journal, report.applied):
                log.info("stop %s moved to break-even", cid)
        except BrokerFailure as e:
            log.warning("could not move stops to break-even: %s", type(e).__name__)
        return report

    def route(self, plan: RoutePlan) -> Routed:
        ids = plan.order_ids
        if ids and self.journal.order(ids[0]) is not None:
            return self._recorded(ids)
        outcomes: dict[str, Outcome] = dict.fromkeys(ids, "not_sent")
        orders: list[Order] = []
        if plan.cancel_entries or plan.close_qty:
            try:
                self._cancel_working(plan)
            except BrokerFailure as e:
                log.error("%s: cancel failed (%s); nothing else sent", plan.client_id, e)
                return _routed(plan, outcomes, orders, f"cancel failed: {type(e).__name__}")
        reason = ""
        if plan.close_qty:
            close = self._order(plan, plan.close_client_id, plan.close_qty, OrderRole.EXIT)
            outcomes[close.client_id], reason, placed = self._send(close, plan, None)
            orders.extend(placed)
        if not plan.close_qty or outcomes[plan.close_client_id] == "placed":
            for leg in plan.entries:
                entry = self._order(plan, leg.client_id, leg.qty, OrderRole.ENTRY)
                bracket = BracketSpec(leg.stop_ticks, leg.target_ticks, leg.trail_ticks)
                outcomes[leg.client_id], reason, placed = self._send(entry, plan, bracket)
                orders.extend(placed)
                if outcomes[leg.client_id] != "placed":
                    break
        try:
            self.sync(plan.account)
        except BrokerFailure as e:  # the next sync, before the next decision, catches up
            log.warning("sync after routing failed: %s", type(e).__name__)
        return _routed(plan, outcomes, orders, reason)

    def _cancel_working(self, plan: RoutePlan) -> None:
        for o in self.broker.working_orders(plan.symbol):
            if plan.close_qty or o.role is OrderRole.ENTRY:
                self.broker.cancel(o.order_id)
                stored = self.journal.order(o.client_id) if o.client_id else None
                if stored is not None:
                    stored.status = OrderStatus.CANCELLED
                    self.journal.record_order(stored)

    @staticmethod
    def _order(plan: RoutePlan, client_id: str, qty: int, role: OrderRole) -> Order:
        limit = role is OrderRole.ENTRY and plan.limit_price is not None
        return Order(
            order_id="",
            client_id=client_id,
            symbol=plan.symbol,
            side=plan.side,
            qty=qty,
            order_type=OrderType.LIMIT if limit else OrderType.MARKET,
            role=role,
            price=plan.limit_price if limit else None,
            ts_ns=plan.ts_ns,
        )

    def _send(
        self, claim: Order, plan: RoutePlan, bracket: BracketSpec | None
    ) -> tuple[Outcome, str, list[Order]]:
        if self.journal.claim(claim, account=plan.account, reason=plan.reason) is not None:
            return "unknown", "claimed by an earlier attempt", []
        intent = OrderIntent(
            client_id=claim.client_id,
            symbol=claim.symbol,
            side=claim.side,
            qty=claim.qty,
            order_type=claim.order_type,
            limit_price=claim.price,
            bracket=bracket,
            reason=plan.reason,
            ts_ns=plan.ts_ns,
        )
        try:
            placement = self.broker.place(intent, reference_price=plan.reference_price)
        except self._not_handled as e:
            why = str(getattr(e, "reason", "")) or type(e).__name__
            claim.status, claim.reject_reason = OrderStatus.REJECTED, why
            self.journal.record_order(claim)
            log.warning("%s refused: %s", claim.client_id, why)
            return "rejected", why, [claim]
        except BrokerFailure as e:
            claim.reject_reason = f"outcome unknown: {type(e).__name__}"
            self.journal.record_order(claim)
            log.error("%s: outcome unknown (%s)", claim.client_id, type(e).__name__)
            return "unknown", "the broker's answer was lost", [claim]
        placed = list(placement.orders)
        for o in placed:
            if o.client_id == claim.client_id:
                o.role = claim.role  # a close goes out as a plain order: it is an exit
            self.journal.record_order(o)
        log.info("%s placed: %s", claim.client_id, [o.order_id for o in placed])
        return "placed", "", placed

    def _recorded(self, ids: list[str]) -> Routed:
        """The outcomes an earlier attempt recorded; nothing is sent."""
        outcomes: dict[str, Outcome] = {}
        orders: list[Order] = []
        for cid in ids:
            o = self.journal.order(cid)
            if o is None:
                outcomes[cid] = "not_sent"
                continue
            legs = (self.journal.order(f"{cid}-{r}") for r in (OrderRole.STOP, OrderRole.TARGET))
            orders.extend([o, *(leg for leg in legs if leg is not None)])
            if o.status is OrderStatus.REJECTED:
                outcomes[cid] = "rejected"
            elif o.status is OrderStatus.PENDING:
                outcomes[cid] = "unknown"
            else:
                outcomes[cid] = "placed"
        routed = _routed(None, outcomes, orders, "")
        routed.duplicate = True
        return routed


def _routed(
    plan: RoutePlan | None, outcomes: dict[str, Outcome], orders: list[Order], reason: str
) -> Routed:
    values = set(outcomes.values())
    if "unknown" in values:
        status: Literal["placed", "rejected", "unknown", "cancelled"] = "unknown"
    elif "placed" in values:
        status = "placed"
    elif not outcomes and plan is not None and plan.cancel_entries:
        status = "cancelled"
    else:
        status = "rejected"
    return Routed(status, outcomes, orders, reason)
