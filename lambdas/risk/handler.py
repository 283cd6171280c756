"""Risk Lambda: the same gate stack as the tick engine, over the shared account state.

Deciding and reserving are one step: the gates run on the account item as read, and the
approved position change is written back under the item's optimistic lock, so two
alerts racing for the last contract of a limit cannot both win. Only then is the router
called. When the router refuses, fails, or finds the order was already routed, the
reservation is taken back, so the account state never counts an order that is not at
the broker because of this call.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from esml.config import ConfigError, EsmlConfig, ExecutionConfig, load_config
from esml.decision.account_store import AccountStore
from esml.decision.alerts import NothingToExit
from esml.decision.gates import GateStack
from esml.decision.proposal import AccountState, Proposal
from esml.decision.protections import note_entry
from lambdas.invoker import Invoker, LambdaInvoker
from lambdas.messages import RiskAnswer, RiskRequest, RouteAnswer, RouteRequest
from lambdas.wiring import ColdStart

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "esml-risk")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "esml")
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE)


def config_from_env(env: Mapping[str, str]) -> EsmlConfig:
    """ESML_CONFIG holds EsmlConfig fields as JSON; absent means the defaults."""
    raw = env.get("ESML_CONFIG") or "{}"
    try:
        fields = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"ESML_CONFIG is not valid JSON: {e}") from e
    if not isinstance(fields, dict):
        raise ConfigError(f"ESML_CONFIG must be a JSON object of EsmlConfig fields, not {raw!r}")
    return load_config(**fields)


CONFIG = config_from_env(os.environ)  # a bad ESML_CONFIG fails the cold start, loudly


@dataclass(frozen=True)
class _Decision:
    outcome: Literal["approved", "rejected", "nothing_to_exit"]
    proposal: Proposal | None = None
    gate: str | None = None
    reason: str = ""
    prior_entry_ns: int = 0  # the cooldown's reference before this approval moved it


@dataclass
class Risk:
    store: AccountStore
    gates: GateStack
    execution: ExecutionConfig
    router: Invoker

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], config: EsmlConfig | None = None, router: Invoker | None = None
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
        return cls(AccountStore(table), gates, cfg.execution, router)

    def decide(self, req: RiskRequest) -> RiskAnswer:
        alert, client_id = req.alert, req.alert.client_order_id()

        def reserve(state: AccountState) -> _Decision:
            try:
                proposal = alert.to_proposal(state.position)
            except NothingToExit as e:
                return _Decision("nothing_to_exit", reason=str(e))
            verdict = self.gates.evaluate(proposal, state)
            if not verdict.approved:
                return _Decision("rejected", proposal, verdict.gate, verdict.reason)
            proposal = replace(proposal, qty=verdict.qty)  # a gate may have capped it
            prior = state.last_entry_ns
            state.position += proposal.signed_qty
            if not proposal.is_exit:
                note_entry(state, proposal.ts_ns)
            return _Decision("approved", proposal, prior_entry_ns=prior)

        state, decision = self.store.update(req.account, reserve)
        if decision.outcome == "nothing_to_exit":
            logger.info("exit alert while flat", client_id=client_id)
            return RiskAnswer(
                status="nothing_to_exit",
                client_id=client_id,
                reason=decision.reason,
                position=state.position,
            )
        if decision.outcome == "rejected":
            logger.warning(
                "proposal rejected", client_id=client_id, gate=decision.gate, reason=decision.reason
            )
            with single_metric(
                name="ProposalRejected", unit=MetricUnit.Count, value=1, namespace=NAMESPACE
            ) as metric:
                metric.add_dimension(name="gate", value=str(decision.gate))
            return RiskAnswer(
                status="risk_rejected",
                client_id=client_id,
                gate=decision.gate,
                reason=decision.reason,
                position=state.position,
            )
        assert decision.proposal is not None
        proposal = decision.proposal
        metrics.add_metric(name="ProposalApproved", unit=MetricUnit.Count, value=1)
        route = RouteRequest(
            account=req.account,
            client_id=client_id,
            symbol=proposal.symbol,
            side=proposal.side,
            qty=proposal.qty,
            is_exit=proposal.is_exit,
            reference_price=alert.price,
            stop_ticks=self.execution.stop_ticks,
            target_ticks=self.execution.target_ticks,
            reason=f"tradingview {alert.action} {alert.ticker} x{alert.contracts} @ {alert.price}",
            ts_ns=proposal.ts_ns,
        )
        try:
            routed = RouteAnswer.model_validate(self.router(route.model_dump(mode="json")))
        except Exception:
            self._release(req.account, decision, client_id, "router failed")
            raise
        keeps_reservation = not routed.duplicate and routed.status in ("placed", "flat")
        if not keeps_reservation:
            state = self._release(req.account, decision, client_id, f"router: {routed.status}")
        status = "broker_rejected" if routed.status == "rejected" else routed.status
        return RiskAnswer(
            status=status,
            client_id=client_id,
            reason=routed.reason,
            duplicate=routed.duplicate,
            position=state.position,
            orders=routed.orders,
        )

    def _release(self, account: str, d: _Decision, client_id: str, why: str) -> AccountState:
        """Compensate a reservation that bought nothing: take its position change and its
        cooldown start back."""
        p = d.proposal
        assert p is not None

        def undo(state: AccountState) -> None:
            state.position -= p.signed_qty
            if not p.is_exit and state.last_entry_ns == p.ts_ns:
                state.last_entry_ns = d.prior_entry_ns

        state, _ = self.store.update(account, undo)
        logger.info("reservation released", client_id=client_id, why=why, position=state.position)
        metrics.add_metric(name="ReservationReleased", unit=MetricUnit.Count, value=1)
        return state


_app: ColdStart[Risk] = ColdStart(lambda env: Risk.from_env(env, config=CONFIG))
use = _app.use


@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = RiskRequest.model_validate(event)
    return _app.get().decide(request).model_dump(mode="json")
