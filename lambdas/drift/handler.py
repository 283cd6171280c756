"""Drift Lambda (hourly): the champion's live signals against realised outcomes, as metrics.

It runs from the training image (a container-image Lambda: the recorded market data is
Parquet, and the labels come from esml's own feature and label code, neither of which
fits a zip Lambda). Reads: the signals journaled in the orders table over the last
WINDOW_HOURS, the champion the tick engine follows (models/), and the recorded market
data under data/ of the stores touched in the window. Publishes DriftSignals,
DriftHitRate, DriftLogLoss, DriftCalibrationError and DriftLogLossExcess (namespace esml,
service esml-drift); the ModelDrift alarm on them starts a retraining run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from esml.alpha import registry, s3_models
from esml.alpha.bundle_manifest import EnsembleManifest, load_json
from esml.journal.dynamodb import DynamoDBJournal
from esml.market.instruments import instrument_for
from lambdas.drift.drift import DriftMetrics, drift_metrics, realised_outcomes
from training.retrain_data import collect_sources

STORE_MANIFEST = "_manifest.json"
DBN_SUFFIXES = (".dbn", ".dbn.zst")

logger = Logger(service="esml-drift")
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "esml"))


def download_recent_data(s3: Any, bucket: str, prefix: str, since: datetime, into: Path) -> Path:
    """Every store under `prefix` with an object written since `since` (whole stores: a
    store's manifest lists all its parts), and every DBN file written since then."""
    objects = [
        obj
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
    ]
    stores = {
        o["Key"][: -len(STORE_MANIFEST)] for o in objects if o["Key"].endswith(STORE_MANIFEST)
    }
    recent_stores = {
        root for root in stores
        if any(o["Key"].startswith(root) and o["LastModified"] >= since for o in objects)
    }  # fmt: skip
    for obj in objects:
        key = obj["Key"]
        wanted = any(key.startswith(root) for root in recent_stores) or (
            key.endswith(DBN_SUFFIXES) and obj["LastModified"] >= since
        )
        if wanted and not key.endswith("/"):
            dest = into / key[len(prefix) :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(dest))
    return into


def check(
    env: Mapping[str, str], s3: Any, dynamodb: Any, now: datetime, work: Path
) -> DriftMetrics | None:
    """The window's drift metrics, or None when there is no champion or no outcome yet."""
    since = now - timedelta(hours=float(env["WINDOW_HOURS"]))
    root = work / "champion"
    s3_models.sync_champion(s3, env["MODEL_BUCKET"], env["MODEL_PREFIX"], root, keep=1)
    name = registry.champion_name(root)
    if name is None:
        logger.info("no champion in S3: nothing to compare")
        return None
    bundle = registry.load_bundle(root / name)
    member = next(m for m in bundle.members if m.kind == "ensemble")
    ensemble = load_json(EnsembleManifest, root / name / member.directory / member.manifest)
    journal = DynamoDBJournal(
        dynamodb.Table(env["ORDERS_TABLE"]), dynamodb.Table(env["FILLS_TABLE"])
    )
    since_ns = int(since.timestamp() * 1e9)
    signals = [s for s in journal.signals() if s.ts_ns >= since_ns]
    data = download_recent_data(s3, env["MODEL_BUCKET"], env["DATA_PREFIX"], since, work / "data")
    sources, _ = collect_sources([data])
    outcomes = realised_outcomes(
        signals,
        [s.events for s in sources],
        instrument_for(bundle.instrument),
        decision_interval_s=bundle.decision_interval_s,
        horizon_s=bundle.horizon_s,
        dead_zone_ticks=ensemble.config.dead_zone_ticks,
    )
    if len(outcomes.realised) == 0:
        logger.info("no signal of the champion has a realised outcome yet",
                    extra={"signals": len(signals), "sources": len(sources)})  # fmt: skip
        return None
    return drift_metrics(outcomes, ensemble.held_out.metrics["log_loss"].value)


def publish(result: DriftMetrics) -> None:
    metrics.add_metric(name="DriftSignals", unit=MetricUnit.Count, value=result.signals)
    metrics.add_metric(name="DriftHitRate", unit=MetricUnit.NoUnit, value=result.hit_rate)
    metrics.add_metric(name="DriftLogLoss", unit=MetricUnit.NoUnit, value=result.log_loss)
    metrics.add_metric(
        name="DriftCalibrationError", unit=MetricUnit.NoUnit, value=result.calibration_error
    )
    metrics.add_metric(
        name="DriftLogLossExcess", unit=MetricUnit.NoUnit, value=result.log_loss_excess
    )


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    work = Path("/tmp") / f"esml-drift-{time.time_ns()}"
    result = check(os.environ, boto3.client("s3"), boto3.resource("dynamodb"),
                   datetime.now(UTC), work)  # fmt: skip
    if result is None:
        return {"published": False}
    publish(result)
    logger.info("drift", extra=result.__dict__)
    return {"published": True, **result.__dict__}
