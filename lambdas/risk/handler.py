"""Risk Lambda: the same gate stack as the tick engine, over the shared account state.

For each alert: first the account is brought level with the broker (the router's
`sync`: new fills applied, open reservations looked up by client id); then the alert is
planned against its contract's position (`esml.decision.alert_plan`), gated, and its
orders reserved, in one conditional write, so two alerts racing for the last contract
of a limit cannot both win; then the router carries the plan out, and each order's
reservation follows its outcome: placed (kept until its fills arrive), rejected or not
sent (released), unknown (kept, marked UNKNOWN, until a look-up at the broker tells).
Every time gate and the cooldown measure from the server's clock.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from esml.config import EsmlConfig, ExecutionConfig
from esml.decision.account_store import AccountStore
from esml.decision.alert_decision import AlertDecision, decide_alert, settle
from esml.decision.broker_sync import mark
from esml.decision.gates import GateStack
from esml.decision.proposal import ReservationStatus, SharedAccount
from lambdas.invoker import Invoker, LambdaInvoker
from lambdas.messages import (
    EntryLegView,
    RiskAnswer,
    RiskRequest,
    RouteAnswer,
    RouteRequest,
    SyncRequest,
)
from lambdas.wiring import ColdStart, config_from_env

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "esml-risk")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "esml")
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE)

DEFAULT_MIN_CONFIDENCE = 0.87  # seed 002's minimum for an alert's model confidence

CONFIG = config_from_env(os.environ)  # a bad ESML_CONFIG fails the cold start, loudly


@dataclass
class Risk:
    store: AccountStore
    gates: GateStack
    execution: ExecutionConfig
    router: Invoker
    min_confidence: float = DEFAULT_MIN_CONFIDENCE

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        config: EsmlConfig | None = None,
        router: Invoker | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> Risk:
        cfg = config or config_from_env(env)
        table = boto3.resource("dynamodb").Table(env["RISK_STATE_TABLE"])
        if router is None:
            no_retries = Config(read_timeout=60, retries={"total_max_attempts": 1})
            router = LambdaInvoker(
                env["ROUTER_FUNCTION_NAME"], boto3.client("lambda", config=no_retries)
            )
        gates = GateStack.from_config(
            cfg.risk, cfg.instrument_spec, cfg.execution.commission_per_side
        )
        store = AccountStore(table) if clock is None else AccountStore(table, clock)
        minimum = float(env.get("ALERT_MIN_CONFIDENCE") or DEFAULT_MIN_CONFIDENCE)
        if not 0 <= minimum <= 1:
            raise ValueError(f"ALERT_MIN_CONFIDENCE must be within [0, 1], got {minimum}")
        return cls(store, gates, cfg.execution, router, minimum)

    def decide(self, req: RiskRequest) -> RiskAnswer:
        alert = req.alert
        self._sync(req.account)
        now = self.store.now_ns()

        def reserve(state: SharedAccount) -> AlertDecision:
            return decide_alert(
                alert, state, self.gates, now, self.min_confidence,
                self.execution.stop_ticks, self.execution.target_ticks,
            )  # fmt: skip

        state, d = self.store.update(req.account, reserve)
        symbol = d.symbol
        if d.duplicate is not None:
            return RiskAnswer(
                status=d.duplicate,
                client_id=d.client_id,
                symbol=symbol,
                duplicate=True,
                reason="this alert is being routed or was routed",
                position=state.position(symbol),
            )
        if d.plan is None:
            logger.warning("alert refused", client_id=d.client_id, gate=d.gate, reason=d.reason)
            with single_metric(
                name="ProposalRejected", unit=MetricUnit.Count, value=1, namespace=NAMESPACE
            ) as metric:
                metric.add_dimension(name="gate", value=str(d.gate))
            return RiskAnswer(
                status="risk_rejected",
                client_id=d.client_id,
                symbol=symbol,
                gate=d.gate,
                reason=d.reason,
                position=state.position(symbol),
            )
        metrics.add_metric(name="ProposalApproved", unit=MetricUnit.Count, value=1)
        plan = d.plan
        route = RouteRequest(
            account=req.account,
            client_id=d.client_id,
            kind=plan.kind,
            symbol=plan.symbol,
            side=plan.side,
            close_qty=plan.close_qty,
            close_client_id=d.close_client_id,
            entries=[
                EntryLegView(
                    client_id=leg.client_id,
                    qty=leg.qty,
                    stop_ticks=leg.stop_ticks,
                    target_ticks=leg.target_ticks,
                    trail_ticks=leg.trail_ticks,
                )
                for leg in plan.entries
            ],
            cancel_entries=plan.cancel_entries,
            order_type="Limit" if alert.order_type == "limit" else "Market",
            limit_price=alert.limit_price,
            reference_price=alert.price,
            reason=f"tradingview {alert.action} {alert.ticker} x{alert.contracts} @ {alert.price}",
            ts_ns=now,
        )
        try:
            routed = RouteAnswer.model_validate(self.router(route.model_dump(mode="json")))
        except Exception as e:  # the router's fate is unknown: so is every order's
            logger.error("router failed; reservations kept as unknown", error=type(e).__name__)
            metrics.add_metric(name="RouterFailed", unit=MetricUnit.Count, value=1)
            for cid in d.reserved:
                mark(self.store, req.account, cid, ReservationStatus.UNKNOWN)
            return RiskAnswer(
                status="unknown",
                client_id=d.client_id,
                symbol=symbol,
                reason="the orders' outcome is unknown until the broker is asked",
                position=self.store.load(req.account).position(symbol),
            )
        settle(self.store, req.account, d.reserved, routed.outcomes, routed.duplicate)
        status = {"rejected": "broker_rejected"}.get(routed.status, routed.status)
        return RiskAnswer(
            status=status,  # type: ignore[arg-type]
            client_id=d.client_id,
            symbol=symbol,
            reason=routed.reason,
            duplicate=routed.duplicate,
            position=self.store.load(req.account).position(symbol),
            orders=routed.orders,
        )

    def _sync(self, account: str) -> None:
        """The router's sync; a failure leaves the account as it is (entries on a contract
        with an UNKNOWN reservation are then refused)."""
        try:
            self.router(SyncRequest(account=account).model_dump(mode="json"))
        except Exception as e:
            logger.warning("sync with the broker failed", error=type(e).__name__)
            metrics.add_metric(name="SyncFailed", unit=MetricUnit.Count, value=1)


_app: ColdStart[Risk] = ColdStart(lambda env: Risk.from_env(env, config=CONFIG))
use = _app.use


@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = RiskRequest.model_validate(event)
    return _app.get().decide(request).model_dump(mode="json")
