"""Router Lambda: place an approved trade at Tradovate, exactly once per client id.

The order item is claimed in the orders table (a conditional put) before anything goes to
the broker; a client id that already has an item gets the recorded answer back and the
broker hears nothing. A broker refusal is recorded as Rejected with its reason and
answered, never retried. A broker that cannot be reached leaves the item Pending with
the error noted (the outcome is unknown: only a reconciliation with Tradovate can tell)
and fails the invocation so the risk Lambda releases its reservation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.typing import LambdaContext

from esml.broker.base import BrokerError, OrderRejected, Placement
from esml.broker.tradovate import TradovateClient, TradovateCredentials, leg_client_id
from esml.execution.orders import (
    BracketSpec,
    Order,
    OrderIntent,
    OrderRole,
    OrderStatus,
    OrderType,
)
from esml.journal.dynamodb import DynamoDBJournal
from lambdas.messages import OrderView, RouteAnswer, RouteRequest, RouteStatus
from lambdas.wiring import ColdStart

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "esml-router"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "esml"))

NO_POSITION = "no position at the broker"


class BracketBroker(Protocol):
    """The Broker protocol as the router uses it: market entries priced from a reference."""

    def place(self, intent: OrderIntent, reference_price: float | None = None) -> Placement: ...

    def flatten(self, symbol: str, client_id: str, reason: str) -> Order | None: ...


@dataclass
class Router:
    journal: DynamoDBJournal
    broker: BracketBroker

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Router:
        dynamodb = boto3.resource("dynamodb")
        secrets = SecretsProvider(boto3_client=boto3.client("secretsmanager"))
        secret = secrets.get(env["TRADOVATE_SECRET_ARN"], transform="json")
        broker = TradovateClient(
            TradovateCredentials.model_validate(secret),
            base_url=env.get("TRADOVATE_BASE_URL") or None,
        )
        journal = DynamoDBJournal(
            dynamodb.Table(env["ORDERS_TABLE"]), dynamodb.Table(env["FILLS_TABLE"])
        )
        return cls(journal, broker)

    def route(self, req: RouteRequest) -> RouteAnswer:
        claim = Order(
            order_id="",
            client_id=req.client_id,
            symbol=req.symbol,
            side=req.side,
            qty=req.qty,
            order_type=OrderType.MARKET,
            role=OrderRole.EXIT if req.is_exit else OrderRole.ENTRY,
            ts_ns=req.ts_ns,
        )
        earlier = self.journal.claim(
            claim, account=req.account, reason=req.reason, request=req.model_dump_json()
        )
        if earlier is not None:
            logger.info("client id already routed; nothing sent", client_id=req.client_id)
            metrics.add_metric(name="OrderDuplicate", unit=MetricUnit.Count, value=1)
            return self._recorded(earlier)
        try:
            if req.is_exit:
                return self._flatten(req, claim)
            placement = self.broker.place(
                OrderIntent(
                    client_id=req.client_id,
                    symbol=req.symbol,
                    side=req.side,
                    qty=req.qty,
                    bracket=BracketSpec(req.stop_ticks, req.target_ticks),
                    reason=req.reason,
                    ts_ns=req.ts_ns,
                ),
                reference_price=req.reference_price,
            )
        except OrderRejected as e:
            claim.status, claim.reject_reason = OrderStatus.REJECTED, e.reason
            self.journal.record_order(claim)
            logger.warning("broker rejected the order", client_id=req.client_id, reason=e.reason)
            metrics.add_metric(name="OrderRejected", unit=MetricUnit.Count, value=1)
            return RouteAnswer(
                status="rejected",
                client_id=req.client_id,
                duplicate=False,
                reason=e.reason,
                orders=[OrderView.of(claim)],
            )
        except BrokerError as e:
            claim.reject_reason = f"broker error, outcome unknown: {e}"
            self.journal.record_order(claim)
            logger.error("broker unreachable; order outcome unknown", client_id=req.client_id)
            metrics.add_metric(name="BrokerError", unit=MetricUnit.Count, value=1)
            raise
        for order in placement.orders:
            self.journal.record_order(order)
        metrics.add_metric(name="OrderPlaced", unit=MetricUnit.Count, value=1)
        logger.info("order placed", client_id=req.client_id, order_id=placement.entry.order_id)
        return RouteAnswer(
            status="placed",
            client_id=req.client_id,
            duplicate=False,
            orders=[OrderView.of(o) for o in placement.orders],
        )

    def _flatten(self, req: RouteRequest, claim: Order) -> RouteAnswer:
        closed = self.broker.flatten(req.symbol, req.client_id, req.reason)
        if closed is None:
            claim.status, claim.reject_reason = OrderStatus.CANCELLED, NO_POSITION
            self.journal.record_order(claim)
            return RouteAnswer(
                status="flat",
                client_id=req.client_id,
                duplicate=False,
                reason=NO_POSITION,
                orders=[OrderView.of(claim)],
            )
        self.journal.record_order(closed)
        metrics.add_metric(name="PositionFlattened", unit=MetricUnit.Count, value=1)
        return RouteAnswer(
            status="placed",
            client_id=req.client_id,
            duplicate=False,
            orders=[OrderView.of(closed)],
        )

    def _recorded(self, entry: Order) -> RouteAnswer:
        legs = [self.journal.order(leg_client_id(entry.client_id, r)) for r in _LEGS]
        orders = [entry, *(o for o in legs if o is not None)]
        if entry.status is OrderStatus.REJECTED:
            status: RouteStatus = "rejected"
        elif entry.status is OrderStatus.PENDING:
            status = "unknown"
        elif entry.role is OrderRole.EXIT and entry.reject_reason == NO_POSITION:
            status = "flat"
        else:
            status = "placed"
        return RouteAnswer(
            status=status,
            client_id=entry.client_id,
            duplicate=True,
            reason=entry.reject_reason,
            orders=[OrderView.of(o) for o in orders],
        )


_LEGS = (OrderRole.STOP, OrderRole.TARGET)

_app: ColdStart[Router] = ColdStart(Router.from_env)
use = _app.use


@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = RouteRequest.model_validate(event)
    return _app.get().route(request).model_dump(mode="json")
