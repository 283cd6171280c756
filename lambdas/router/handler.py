"""Router Lambda: carry out an approved plan at Tradovate, exactly once per client id
(`esml.decision.alert_routing`), and keep the shared account level with the broker
(`{"op": "sync"}`, also fit for a schedule: `esml.decision.broker_sync`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import TypeAdapter

from esml.broker.tradovate import (
    CaptchaRequired,
    RateLimited,
    TradovateClient,
    TradovateCredentials,
)
from esml.decision.account_store import AccountStore
from esml.decision.alert_plan import EntryLeg
from esml.decision.alert_routing import AlertRouter, RoutePlan, RoutingBroker
from esml.decision.fills import FillLedger
from esml.journal.dynamodb import DynamoDBJournal
from lambdas.messages import OrderView, RouteAnswer, RouteRequest, SyncAnswer, SyncRequest
from lambdas.wiring import ColdStart, config_from_env

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "esml-router"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "esml"))

NOT_HANDLED = (RateLimited, CaptchaRequired)
"""Besides a refusal: failures after which Tradovate certainly holds no order."""

_METRIC = {
    "placed": "OrderPlaced",
    "rejected": "OrderRejected",
    "unknown": "OrderOutcomeUnknown",
    "not_sent": "OrderNotSent",
}


@dataclass
class Router:
    core: AlertRouter

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
        fills = dynamodb.Table(env["FILLS_TABLE"])
        journal = DynamoDBJournal(dynamodb.Table(env["ORDERS_TABLE"]), fills)
        table = dynamodb.Table(env["RISK_STATE_TABLE"])
        store = AccountStore(table) if clock is None else AccountStore(table, clock)
        ledger = FillLedger(store, fills, config_from_env(env).risk)
        return cls(AlertRouter(journal, broker, ledger, NOT_HANDLED))

    def sync(self, req: SyncRequest) -> SyncAnswer:
        report = self.core.sync(req.account)
        if report.applied:
            n = len(report.applied)
            metrics.add_metric(name="FillsApplied", unit=MetricUnit.Count, value=n)
        return SyncAnswer(
            applied_fills=len(report.applied),
            released=report.released,
            placed=report.placed,
            expired=report.expired,
        )

    def route(self, req: RouteRequest) -> RouteAnswer:
        plan = RoutePlan(
            account=req.account,
            client_id=req.client_id,
            symbol=req.symbol,
            side=req.side,
            close_qty=req.close_qty,
            close_client_id=req.close_client_id,
            entries=tuple(
                EntryLeg(e.client_id, e.qty, e.stop_ticks, e.target_ticks, e.trail_ticks)
                for e in req.entries
            ),
            cancel_entries=req.cancel_entries,
            limit_price=req.limit_price if req.order_type == "Limit" else None,
            reference_price=req.reference_price,
            reason=req.reason,
            ts_ns=req.ts_ns,
        )
        routed = self.core.route(plan)
        if routed.duplicate:
            metrics.add_metric(name="OrderDuplicate", unit=MetricUnit.Count, value=1)
        else:
            for outcome in routed.outcomes.values():
                metrics.add_metric(name=_METRIC[outcome], unit=MetricUnit.Count, value=1)
        logger.info("routed", client_id=req.client_id, outcomes=routed.outcomes)
        return RouteAnswer(
            status=routed.status,
            client_id=req.client_id,
            duplicate=routed.duplicate,
            reason=routed.reason,
            outcomes=routed.outcomes,
            orders=[OrderView.of(o) for o in routed.orders],
        )


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
