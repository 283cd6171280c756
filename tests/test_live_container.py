"""The tick-engine container's entry point, run in process from its environment: the real
ES file replayed into the paper exchange, DynamoDB (moto) as journal and shared account,
EMF metrics on stdout, the health file, and a bad environment refused."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import boto3
import numpy as np
import pytest

from containers.tick_engine import health
from containers.tick_engine import main as tick_engine
from esml.data import store
from esml.data.book import snapshot_end
from esml.data.dbn import main_instrument, read_mbo
from esml.decision.account_store import AccountStore
from tests.aws_fixtures import (
    FILLS_TABLE,
    ORDERS_TABLE,
    REGION,
    RISK_STATE_TABLE,
    all_items,
    aws,  # noqa: F401
    aws_session,  # noqa: F401
    create_tables,
)

ES_FILE = Path(__file__).resolve().parents[1] / "data/samples/esh4-glbx-mdp3-20231225.mbo.dbn.zst"


def _env(tmp_path: Path, **more: str) -> dict[str, str]:
    return {
        "ESML_SOURCE": "replay",
        "ESML_BROKER": "paper",
        "ESML_DATA": str(ES_FILE),
        "ESML_SPEED": "max",
        "ESML_STRATEGY": "momentum",
        "ESML_LOCKOUT_S": "0",
        "ESML_METRICS_S": "0",
        "ESML_HEALTH_FILE": str(tmp_path / "health"),
        "ORDERS_TABLE": ORDERS_TABLE,
        "FILLS_TABLE": FILLS_TABLE,
        "RISK_STATE_TABLE": RISK_STATE_TABLE,
        "ESML_ACCOUNT": "DEMO1",
        **more,
    }


def test_the_container_trades_a_replay_into_dynamodb_with_metrics_and_capture(
    aws, tmp_path: Path, capsys  # noqa: F811
) -> None:
    tables = create_tables(ORDERS_TABLE, FILLS_TABLE, RISK_STATE_TABLE)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="models")
    env = _env(tmp_path, ESML_CAPTURE_DIR=str(tmp_path / "capture"), MODEL_BUCKET="models")
    engine = asyncio.run(tick_engine.run_service(env))
    fills = engine.broker.fills()
    assert len(fills) >= 4 and engine.broker.position("ES") == 0
    assert sorted(i["fill_id"] for i in all_items(tables[FILLS_TABLE])) == sorted(
        f.fill_id for f in fills
    )
    assert AccountStore(tables[RISK_STATE_TABLE]).load("DEMO1").position("ES") == 0
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert records, "EMF records on stdout"
    names = {m["Name"] for r in records for m in r["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"Decisions", "Orders", "Fills", "Position", "DataAge", "PositionMismatch"} <= names
    assert sum(r["Fills"] for r in records) == len(fills), "counts are deltas that add up"
    assert all(r["PositionMismatch"] == 0 for r in records)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="models")["Contents"])
    hours = [f"data/live/ES/20231225-{h}/" for h in ("00", "22", "23")]
    assert [k for k in keys if k.endswith(store.MANIFEST)] == [h + store.MANIFEST for h in hours]
    kept = [store.read_events(p, "mbo", "ES") for p in sorted((tmp_path / "capture/ES").iterdir())]
    # each later hour opens on the book at its top (a snapshot), then what was received
    kept = np.concatenate([kept[0], *(k[snapshot_end(k) :] for k in kept[1:])])
    replayed = read_mbo(ES_FILE)
    replayed = replayed[replayed["instrument_id"] == main_instrument(replayed)]
    assert np.array_equal(kept, replayed), "the hourly stores hold exactly what was received"
    assert health.healthy(env)
    os.utime(tmp_path / "health", (time.time() - 60, time.time() - 60))
    assert not health.healthy(env)


def test_a_bad_environment_is_refused_before_anything_starts(aws, tmp_path: Path) -> None:  # noqa: F811
    for bad in ({"ESML_SOURCE": "telnet"}, {"ESML_ON_STOP": "panic"},
                {"ESML_BROKER": "tradovate"}):  # fmt: skip
        with pytest.raises(SystemExit) as e:
            asyncio.run(tick_engine.run_service(_env(tmp_path, **bad)))
        assert e.value.code == 2
