"""The trading service's stack pieces (Template.from_stack of a small stack holding only
the tick engine and what it needs): the engine's settings, the health check, the alarms
on its EMF metrics, and a task role that reaches only the tables, models and secret."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk.assertions import Template

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "cdk"))
from esml_cdk.data import DataStore  # noqa: E402
from esml_cdk.trading_service import EngineSettings, TradingService  # noqa: E402


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    app = cdk.App()
    stack = cdk.Stack(app, "LiveEngine")
    data = DataStore(stack, "Data")
    code = lambda_.Code.from_inline("x = 1")
    risk = lambda_.Function(
        stack, "Risk", runtime=lambda_.Runtime.PYTHON_3_11, handler="index.handler", code=code
    )
    secret = secretsmanager.Secret(stack, "Tradovate")
    TradingService(stack, "Trading", repo_root=REPO_ROOT, data=data, risk_function=risk,
                   tradovate_secret=secret, esml_config_json=None, tradovate_base_url=None,
                   engine=EngineSettings(symbol="ESH5", broker="tradovate"))  # fmt: skip
    return Template.from_stack(stack).to_json()


def _of(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r["Properties"] for r in template["Resources"].values() if r["Type"] == kind]


def test_the_container_runs_the_engine_from_its_settings_with_a_health_check(template) -> None:
    (task,) = _of(template, "AWS::ECS::TaskDefinition")
    (container,) = task["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    want = {
        "ESML_SOURCE": "tradovate",
        "ESML_BROKER": "tradovate",
        "ESML_SYMBOL": "ESH5",
        "ESML_ON_STOP": "flatten",
        "ESML_LOCKOUT_S": "10",
    }
    assert {k: env[k] for k in want} == want
    assert {"ORDERS_TABLE", "FILLS_TABLE", "RISK_STATE_TABLE", "TRADOVATE_SECRET_ARN"} <= set(env)
    assert "RISK_FUNCTION_NAME" not in env
    check = container["HealthCheck"]
    assert check["Command"] == ["CMD", "python", "containers/tick_engine/health.py"]


def test_alarms_watch_stale_data_broker_errors_mismatch_and_daily_loss(template) -> None:
    alarms = {a["MetricName"]: a for a in _of(template, "AWS::CloudWatch::Alarm")}
    assert set(alarms) == {"DataAge", "BrokerErrors", "PositionMismatch", "RealizedPnL"}
    for a in alarms.values():
        assert a["Namespace"] == "esml"
        dims = {d["Name"]: d["Value"] for d in a["Dimensions"]}
        assert dims == {"Service": "tick-engine", "Instrument": "ES"}  # as main.py emits
    assert alarms["RealizedPnL"]["Threshold"] == -1500
    assert alarms["DataAge"]["TreatMissingData"] == "breaching"


def test_the_task_role_reaches_tables_models_captures_and_secret_only(template) -> None:
    roles = [p for p in _of(template, "AWS::IAM::Policy")]
    task_policy = [p for p in roles if "TaskRole" in str(p["Roles"])]
    statements = [st for p in task_policy for st in p["PolicyDocument"]["Statement"]]
    actions = {a for st in statements for a in np.atleast_1d(st["Action"]).tolist()}
    assert not any(a.startswith("lambda:") for a in actions), "no risk Lambda call"
    assert {a.split(":")[0] for a in actions} <= {"dynamodb", "s3", "secretsmanager"}
    assert not any(a.startswith("s3:Delete") for a in actions)
    puts = [st for st in statements if any(str(a).startswith("s3:Put") for a in
                                           np.atleast_1d(st["Action"]).tolist())]  # fmt: skip
    assert puts and all("/data/live/*" in str(st["Resource"]) for st in puts), "captures only"
