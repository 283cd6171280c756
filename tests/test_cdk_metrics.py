"""The metric names the stack's alarms watch (cdk/esml_cdk/metric_names.py) are the names
the Lambdas emit: each alarm's event is made to happen on the real handlers (DynamoDB and
Secrets Manager through moto, the loopback Tradovate simulator over HTTP) and the EMF
records they print are read back. The namespace and the `service` dimension come from the
environment the stack gives each function (tests/test_cdk.py checks it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from lambdas.webhook import handler as webhook_handler
from tests.alert_stack import Stack
from tests.aws_fixtures import alert

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cdk"))

from esml_cdk import metric_names as names

# the three handlers share Powertools' metric buffer in one process: the innermost flushes it
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


def emitted(out: str) -> dict[str, list[dict[str, Any]]]:
    """Metric name -> the EMF records (printed JSON lines) that carry it."""
    records: dict[str, list[dict[str, Any]]] = {}
    for line in out.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if not isinstance(doc, dict) or "_aws" not in doc:
            continue
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                records.setdefault(metric["Name"], []).append(doc)
    return records


def watched_for(service: str) -> set[str]:
    return {name for name, services in names.EMITTERS.items() if service in services}


def test_the_webhook_emits_what_its_alarms_watch(
    make_stack: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    stack: Stack = make_stack()
    assert stack.post(alert(passphrase="not it"))[0] == 401
    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack.env["SECRET_ARN"], SecretString=json.dumps({"pass": "x"})
    )
    webhook_handler.use(
        webhook_handler.Webhook.from_env(stack.env, risk=lambda p: {}, clock=stack.clock)
    )
    assert stack.post(alert())[0] == 500
    seen = emitted(capsys.readouterr().out)
    assert watched_for(names.WEBHOOK_SERVICE) == {"Alert401", "WebhookMisconfigured"}
    assert watched_for(names.WEBHOOK_SERVICE) <= set(seen)


def test_the_router_emits_what_its_alarms_watch(
    make_stack: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    stack: Stack = make_stack()
    stack.sim.faults.rest("reject", path="/order/placeoso", times=1)
    status, answer = stack.post(alert())
    assert (status, answer["status"]) == (200, "broker_rejected")
    # a lost answer the client-id look-up cannot settle either: the outcome is unknown
    stack.sim.faults.rest("504", path="/order/placeoso", times=1, delay_s=1.5)
    stack.sim.faults.rest("500", path="/command/list", times=1000)
    status, answer = stack.post(alert(contracts=2))
    assert (status, answer["status"]) == (200, "unknown")
    seen = emitted(capsys.readouterr().out)
    assert watched_for(names.ROUTER_SERVICE) == {"OrderRejected", "OrderOutcomeUnknown"}
    assert watched_for(names.ROUTER_SERVICE) <= set(seen)


def test_risk_counts_a_daily_loss_refusal_under_the_gate_the_alarm_watches(
    make_stack: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    stack: Stack = make_stack({"risk": {"max_daily_loss": 100.0}})

    def lost_today(state: Any) -> None:
        state.risk.realized_pnl = -150.0

    stack.store.update("primary", lost_today)
    status, answer = stack.post(alert())
    assert (status, answer["status"], answer["gate"]) == (200, "risk_rejected", "daily_loss")
    (record,) = emitted(capsys.readouterr().out)[names.PROPOSAL_REJECTED]
    assert record[names.GATE_DIMENSION] == names.DAILY_LOSS_GATE
    (directive,) = record["_aws"]["CloudWatchMetrics"]
    assert names.GATE_DIMENSION in directive["Dimensions"][0]
