"""Router Lambda: carry out an approved plan at Tradovate, exactly once per client id, and
keep the shared account level with the broker (`op: "sync"`).

Each order is claimed in the orders table (a conditional put) before it goes to the
broker; a plan whose first order was claimed before gets the recorded outcomes back and
the broker hears nothing. Each order's outcome is one of: placed; rejected (the broker
refused, or never handled it: a rate limit, a captcha); unknown (5xx, timeout, dropped
connection: the item stays Pending with the error noted, and the risk state keeps the
reservation until a look-up by client id tells); not_sent (an earlier step failed).
After every plan the account is synced (fills applied, orders followed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import TypeAdapter

from esml.broker.base import BrokerError, OrderRejected, Placement
from esml.broker.tradovate import (
    CaptchaRequired,
    RateLimited,
    TradovateClient,
    TradovateCredentials,
    leg_client_id,
)
from esml.decision.account_store import AccountStore
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
from esml.journal.dynamodb import DynamoDBJournal
from lambdas.messages import (
    OrderView,
    Outcome,
    RouteAnswer,
    RouteRequest,
    SyncAnswer,
    SyncRequest,
)
from lambdas.wiring import ColdStart, config_from_env

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "esml-router"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "esml"))

NOT_HANDLED = (OrderRejected, RateLimited, CaptchaRequired)
"""Refusals after which the broker certainly holds no order."""


class RoutingBroker(Protocol):
    """What the router uses of TradovateClient."""

    def place(self, intent: OrderIntent, reference_price: float | None = None) -> Placement: ...

    def cancel(self, order_id: str) -> None: ...

    def working_orders(self, symbol: str) -> list[Order]: ...

    def order_for_client(self, client_id: str) -> Order | None: ...

    def modify(self, order_id: str, *, price: float | None = None) -> None: ...

    def fills(self) -> list[Fill]: ...


@dataclass
class Router:
    journal: DynamoDBJournal
    broker: RoutingBroker
    ledger: FillLedger

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        broker: RoutingBroker | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> Router:
        dynamodb = boto3.resource("dynamodb")
        if broker is None:
            secrets = SecretsProvider(boto3_client=boto3.client("secretsmanager"))
            secret = secrets.get(env["TRADOVATE_SECRET_ARN"], transform="json")
            broker = TradovateClient(
                TradovateCredentials.model_validate(secret),
                base_url=env.get("TRADOVATE_BASE_URL") or None,
            )
        journal = DynamoDBJournal(
            dynamodb.Table(env["ORDERS_TABLE"]), dynamodb.Table(env["FILLS_TABLE"])
        )
        table = dynamodb.Table(env["RISK_STATE_TABLE"])
        store = AccountStore(table) if clock is None else AccountStore(table, clock)
        ledger = FillLedger(store, dynamodb.Table(env["FILLS_TABLE"]), config_from_env(env).risk)
        return cls(journal, broker, ledger)

    # -- sync ---------------------------------------------------------------------------

    def sync(self, req: SyncRequest) -> SyncAnswer:
        report = sync_account(req.account, self.broker, self.ledger, self.journal)
        self._breakeven(report)
        if report.applied:
            metrics.add_metric(
                name="FillsApplied", unit=MetricUnit.Count, value=len(report.applied)
            )
        return SyncAnswer(
            applied_fills=len(report.applied),
            released=report.released,
            placed=report.placed,
            expired=report.expired,
        )

    def _breakeven(self, report: SyncReport) -> None:
        try:
            moved = move_stops_to_breakeven(self.broker, self.journal, report.applied)
        except BrokerError as e:  # the stops stay where they were; the next sync retries
            logger.warning("could not move stops to break-even", error=str(e))
            return
        for cid in moved:
            logger.info("stop moved to break-even", client_id=cid)

    # -- routing ------------------------------------------------------------------------

    def route(self, req: RouteRequest) -> RouteAnswer:
        order_ids = ([req.close_client_id] if req.close_qty else []) + [
            e.client_id for e in req.entries
        ]
        outcomes: dict[str, Outcome] = dict.fromkeys(order_ids, "not_sent")
        orders: list[Order] = []
        if order_ids:
            earlier = self.journal.order(order_ids[0])
            if earlier is not None:
                return self._recorded(req, order_ids)
        if req.cancel_entries or req.close_qty:
            try:
                self._cancel_working(req)
            except BrokerError as e:
                logger.error("cancel failed; nothing else sent", client_id=req.client_id)
                metrics.add_metric(name="BrokerError", unit=MetricUnit.Count, value=1)
                return self._answer(req, outcomes, orders, f"cancel failed: {_short(e)}")
        reason = ""
        if req.close_qty:
            close = self._order(req, req.close_client_id, req.close_qty, OrderRole.EXIT)
            outcome, reason, placed = self._send(close, req, None)
            outcomes[close.client_id] = outcome
            orders.extend(placed)
        if not req.close_qty or outcomes[req.close_client_id] == "placed":
            for leg in req.entries:
                entry = self._order(req, leg.client_id, leg.qty, OrderRole.ENTRY)
                bracket = BracketSpec(leg.stop_ticks, leg.target_ticks)
                outcome, reason, placed = self._send(entry, req, bracket)
                outcomes[leg.client_id] = outcome
                orders.extend(placed)
                if outcome != "placed":
                    break
        self._sync_after(req.account)
        return self._answer(req, outcomes, orders, reason)

    def _cancel_working(self, req: RouteRequest) -> None:
        """Before a close: every working order of the contract (its bracket legs); for
        `cancel`: its working entries only."""
        for o in self.broker.working_orders(req.symbol):
            if req.close_qty or o.role is OrderRole.ENTRY:
                self.broker.cancel(o.order_id)
                stored = self.journal.order(o.client_id) if o.client_id else None
                if stored is not None:
                    stored.status = OrderStatus.CANCELLED
                    self.journal.record_order(stored)

    def _order(self, req: RouteRequest, client_id: str, qty: int, role: OrderRole) -> Order:
        limit = role is OrderRole.ENTRY and req.order_type == "Limit"
        return Order(
            order_id="",
            client_id=client_id,
            symbol=req.symbol,
            side=req.side,
            qty=qty,
            order_type=OrderType.LIMIT if limit else OrderType.MARKET,
            role=role,
            price=req.limit_price if limit else None,
            ts_ns=req.ts_ns,
        )

    def _send(
        self, claim: Order, req: RouteRequest, bracket: BracketSpec | None
    ) -> tuple[Outcome, str, list[Order]]:
        if self.journal.claim(claim, account=req.account, reason=req.reason) is not None:
            return "unknown", "claimed by an earlier attempt", []
        intent = OrderIntent(
            client_id=claim.client_id,
            symbol=claim.symbol,
            side=claim.side,
            qty=claim.qty,
            order_type=claim.order_type,
            limit_price=claim.price,
            bracket=bracket,
            reason=req.reason,
            ts_ns=req.ts_ns,
        )
        try:
            placement = self.broker.place(intent, reference_price=req.reference_price)
        except NOT_HANDLED as e:
            why = e.reason if isinstance(e, OrderRejected) else type(e).__name__
            claim.status, claim.reject_reason = OrderStatus.REJECTED, why
            self.journal.record_order(claim)
            logger.warning("broker refused the order", client_id=claim.client_id, reason=why)
            metrics.add_metric(name="OrderRejected", unit=MetricUnit.Count, value=1)
            return "rejected", why, [claim]
        except BrokerError as e:
            claim.reject_reason = f"outcome unknown: {_short(e)}"
            self.journal.record_order(claim)
            logger.error("order outcome unknown", client_id=claim.client_id)
            metrics.add_metric(name="OrderOutcomeUnknown", unit=MetricUnit.Count, value=1)
            return "unknown", "the broker's answer was lost", [claim]
        for o in placement.orders:
            if o is placement.entry:
                o.role = claim.role
            self.journal.record_order(o)
        metrics.add_metric(name="OrderPlaced", unit=MetricUnit.Count, value=1)
        logger.info("order placed", client_id=claim.client_id, order_id=placement.entry.order_id)
        return "placed", "", placement.orders

    def _sync_after(self, account: str) -> None:
        """Fills of what was just placed, into the account; a failure is only logged (the
        next sync, before the next decision, catches up)."""
        try:
            self.sync(SyncRequest(account=account))
        except BrokerError as e:
            logger.warning("sync after routing failed", error=_short(e))

    def _recorded(self, req: RouteRequest, order_ids: list[str]) -> RouteAnswer:
        logger.info("plan routed before; nothing sent", client_id=req.client_id)
        metrics.add_metric(name="OrderDuplicate", unit=MetricUnit.Count, value=1)
        outcomes: dict[str, Outcome] = {}
        orders: list[Order] = []
        for cid in order_ids:
            o = self.journal.order(cid)
            if o is None:
                outcomes[cid] = "not_sent"
                continue
            orders.append(o)
            orders.extend(leg for r in _LEGS if (leg := self.journal.order(leg_client_id(cid, r))))
            if o.status is OrderStatus.REJECTED:
                outcomes[cid] = "rejected"
            elif o.status is OrderStatus.PENDING:
                outcomes[cid] = "unknown"
            else:
                outcomes[cid] = "placed"
        answer = self._answer(req, outcomes, orders, "")
        return answer.model_copy(update={"duplicate": True})

    def _answer(
        self, req: RouteRequest, outcomes: dict[str, Outcome], orders: list[Order], reason: str
    ) -> RouteAnswer:
        values = set(outcomes.values())
        if "unknown" in values:
            status = "unknown"
        elif "placed" in values:
            status = "placed"
        elif not outcomes and req.cancel_entries:
            status = "cancelled"
        else:
            status = "rejected"
        return RouteAnswer(
            status=status,
            client_id=req.client_id,
            reason=reason,
            outcomes=outcomes,
            orders=[OrderView.of(o) for o in orders],
        )


def _short(e: Exception) -> str:
    return type(e).__name__


_LEGS = (OrderRole.STOP, OrderRole.TARGET)
_REQUEST: TypeAdapter[RouteRequest | SyncRequest] = TypeAdapter(RouteRequest | SyncRequest)

_app: ColdStart[Router] = ColdStart(Router.from_env)
use = _app.use


@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = _REQUEST.validate_python(event)
    if isinstance(request, SyncRequest):
        return _app.get().sync(request).model_dump(mode="json")
    return _app.get().route(request).model_dump(mode="json")
