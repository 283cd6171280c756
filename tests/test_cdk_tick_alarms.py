"""The tick engine's alarms watch the limits of the config it trades with: the daily-loss
threshold is that config's `risk.max_daily_loss` and the metrics' `Instrument` dimension
its instrument, both read from the `esml:esmlConfig` context the container gets as
ESML_CONFIG (Template.from_stack of the trading service alone)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk.assertions import Template

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "cdk"))
from esml_cdk.data import DataStore  # noqa: E402
from esml_cdk.settings import Settings, SettingsError  # noqa: E402
from esml_cdk.trading_service import TradingService  # noqa: E402

CONTEXT = {
    "esml:offlineAccount": "123456789012",
    "esml:offlineRegion": "us-east-1",
    "esml:alarmEmail": "alarms@example.invalid",
}


def _template(esml_config: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_context({**CONTEXT, "esml:esmlConfig": esml_config}.get, {})
    app = cdk.App()
    stack = cdk.Stack(app, "TickAlarms")
    code = lambda_.Code.from_inline("x = 1")
    risk = lambda_.Function(
        stack, "Risk", runtime=lambda_.Runtime.PYTHON_3_11, handler="index.handler", code=code
    )
    TradingService(stack, "Trading", repo_root=REPO_ROOT, data=DataStore(stack, "Data"),
                   risk_function=risk, tradovate_secret=secretsmanager.Secret(stack, "Tv"),
                   esml_config_json=settings.esml_config_json,
                   tradovate_base_url=None)  # fmt: skip
    return Template.from_stack(stack).to_json()


def test_daily_loss_alarm_and_dimension_come_from_the_engine_config() -> None:
    cfg = {"instrument": "MES", "risk": {"max_daily_loss": 640.0}}
    t = _template(cfg)
    res = [r["Properties"] for r in t["Resources"].values()]
    alarms = {p["MetricName"]: p for p in res if "MetricName" in p and "Threshold" in p}
    assert alarms["RealizedPnL"]["Threshold"] == -640
    for a in alarms.values():
        dims = {d["Name"]: d["Value"] for d in a["Dimensions"]}
        assert dims == {"Service": "tick-engine", "Instrument": "MES"}
    (task,) = [p for p in res if "ContainerDefinitions" in p]
    env = {e["Name"]: e["Value"] for e in task["ContainerDefinitions"][0]["Environment"]}
    # the container trades with exactly this config: same limit, same instrument
    assert json.loads(env["ESML_CONFIG"]) == cfg
    # a config the engine would refuse stops the synth, naming the key
    with pytest.raises(SettingsError, match="esml:esmlConfig"):
        Settings.from_context({**CONTEXT, "esml:esmlConfig": {"risk": {"max_daily_loss": -1}}}.get,
                              {})  # fmt: skip
