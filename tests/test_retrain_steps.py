"""The retraining jobs' own code on the real CME ES hour, and the drift check on its champion.

One challenger is trained once for the module (the trees and the ensemble, so it takes
seconds), exactly as the train job does: the data split in time, the stack trained on the
part before the cutoff. The evaluate, promote and drift steps then run against moto's S3
and DynamoDB, as the jobs and the drift Lambda do against AWS's.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import numpy as np
import pytest
from moto import mock_aws

from esml.alpha import registry, s3_models
from esml.alpha.bundle_manifest import EnsembleManifest, load_json
from esml.data import store
from esml.data.dbn import DataFileError, read_mbo
from esml.evaluation.model_eval import BASELINES
from esml.features.batch import batch_features
from esml.features.dataset import events_sha256
from esml.features.labels import direction_labels
from esml.journal.base import SignalRecord
from esml.journal.dynamodb import DynamoDBJournal
from esml.market.instruments import ES
from lambdas.drift import handler as drift_handler
from lambdas.drift.drift import Outcomes, drift_metrics
from lambdas.retrain_verdict.handler import read_report, verdict
from training import retrain_steps
from training.retrain_data import collect_sources, read_split
from training.retrain_evaluate import PromotionPolicy, decide

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "data" / "samples" / "esh4-glbx-mdp3-20231225.mbo.dbn.zst"
BUCKET = "esml-models"
REGION = "us-east-1"


def archive_of(directory: Path, into: Path) -> Path:
    """What SageMaker uploads from a job's model directory: model.tar.gz."""
    path = into / "model.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for item in sorted(directory.iterdir()):
            tar.add(item, arcname=item.name)
    return path


@pytest.fixture(scope="module")
def challenger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The train job's archive: a challenger trained on the real hour before its cutoff."""
    out = tmp_path_factory.mktemp("train-out")
    # one real hour: hold out a fifth, so the ensemble's calibration fold has the rows its
    # calibrator asks for (esml.alpha.calibration.MIN_ROWS)
    argv = ["--esml_step", "train", "--data", str(REAL), "--no-shipped-data",
            "--holdout_fraction", "0.2", "--models", "trees,ensemble",
            "--out", str(out)]  # fmt: skip
    assert retrain_steps.main(argv, env={}) == 0
    return archive_of(out, tmp_path_factory.mktemp("train-archive"))


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        yield client


def run_step(step: str, challenger: Path, out: Path, *extra: str) -> int:
    argv = ["--esml_step", step, "--data", str(REAL), "--no-shipped-data", "--challenger",
            str(challenger), "--out", str(out), "--n_boot", "200", *extra]  # fmt: skip
    return retrain_steps.main(argv, env={})


@pytest.fixture(scope="module")
def first_evaluation(challenger: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The evaluate job of a first run: no bucket champion to follow yet."""
    out = tmp_path_factory.mktemp("evaluation")
    assert run_step("evaluate", challenger, out) == 0
    return out


def test_the_challenger_learnt_only_from_data_before_the_cutoff(
    challenger: Path, tmp_path: Path
) -> None:
    root = retrain_steps.unpack_challenger(challenger, tmp_path)
    split = read_split(root, [REAL])
    events = read_mbo(REAL)
    assert events["ts_recv"][0] < split.cutoff_ns < events["ts_recv"][-1]
    bundle = registry.load_bundle(retrain_steps.challenger_bundle(root))
    assert not bundle.synthetic_training_data
    (trained_on,) = bundle.data_sha256.values()
    (source,) = split.sources
    prefix = source.events[source.events["ts_recv"] < split.cutoff_ns]
    assert trained_on == events_sha256(prefix) != source.sha256


def test_evaluation_without_a_champion_rejects_a_challenger_the_baselines_beat(
    first_evaluation: Path, tmp_path: Path
) -> None:
    out = first_evaluation
    report = json.loads((out / "evaluation.json").read_text())
    assert report["champion"] is None
    assert report["held_out_rows"] >= 100
    assert {c["opponent"] for c in report["comparisons"]} == set(BASELINES)
    # On this thin holiday hour the challenger's log loss is worse than the majority's:
    # the interval-based rule rejects it, and says why.
    assert report["decision"] == "reject"
    assert report["reasons"] and "does not clear" in report["reasons"][0]
    assert "# Retraining evaluation: REJECT" in (out / "evaluation.md").read_text()
    # the verdict Lambda reads exactly this from the job's archive
    answer = verdict(read_report(archive_of(out, tmp_path).read_bytes()))
    assert answer["decision"] == "reject" and answer["summary"] == report["summary"]


def test_the_margins_decide_on_the_interval_bounds(first_evaluation: Path) -> None:
    """The same comparisons promote under a margin the intervals clear, and reject under
    one they do not: the decision reads the lower bounds, not the point estimates."""
    report = json.loads((first_evaluation / "evaluation.json").read_text())
    from esml.evaluation.model_eval import Comparison, Interval

    comparisons = [
        Comparison(c["model"], c["opponent"],
                   {m: Interval(*v) for m, v in c["improvement"].items()})
        for c in report["comparisons"]
    ]  # fmt: skip
    lowest = min(c.improvement[m].low for c in comparisons for m in ("log_loss", "brier"))
    lenient = PromotionPolicy(margin_vs_baselines=lowest - 1e-9)
    strict = PromotionPolicy(margin_vs_baselines=lowest)
    assert decide(comparisons, lenient, has_champion=False)[0] == "promote"
    decision, summary, reasons = decide(comparisons, strict, has_champion=False)
    at_the_bound = [(c, m) for c in comparisons for m in ("log_loss", "brier")
                    if c.improvement[m].low == lowest]  # fmt: skip
    assert decision == "reject" and summary.startswith("reject: vs ")
    assert len(reasons) == len(at_the_bound) >= 1


def test_promotion_writes_the_bundle_then_the_pointer_the_engine_follows(
    challenger: Path, tmp_path: Path, s3
) -> None:
    assert run_step("promote", challenger, tmp_path / "promotion", "--bucket", BUCKET) == 0
    name = json.loads((tmp_path / "promotion" / "promoted.json").read_text())["champion"]
    pointer = s3.get_object(Bucket=BUCKET, Key="models/champion")["Body"].read()
    assert pointer == f"{name}\n".encode()
    # the tick engine's way in: follow the pointer, verify, publish locally
    engine_root = tmp_path / "engine-models"
    assert s3_models.sync_champion(s3, BUCKET, "models/", engine_root) == name
    registry.load_bundle(engine_root / name)

    # the next run's evaluation finds this champion; the same bundle cannot beat itself
    out = tmp_path / "evaluation"
    assert run_step("evaluate", challenger, out, "--bucket", BUCKET) == 0
    report = json.loads((out / "evaluation.json").read_text())
    assert report["champion"] == name
    (vs_champion,) = [c for c in report["comparisons"] if c["opponent"] == "champion"]
    assert all(v == [0.0, 0.0, 0.0] for v in vs_champion["improvement"].values())
    assert report["decision"] == "reject"
    assert any(r.startswith("vs the champion") for r in report["reasons"])


def test_evaluation_refuses_when_the_training_data_is_gone(
    challenger: Path, tmp_path: Path
) -> None:
    root = retrain_steps.unpack_challenger(challenger, tmp_path)
    with pytest.raises(DataFileError, match="training data is gone"):
        read_split(root, [ROOT / "data" / "samples" / "databento-fixtures"])


def test_a_challenger_archive_cannot_write_outside_its_folder(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(tarfile.OutsideDestinationError):
        retrain_steps.unpack_challenger(evil, tmp_path / "into")
    assert not (tmp_path / "outside.txt").exists()


# ---------------------------------------------------------------- drift


def test_drift_metrics_by_hand() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2]])
    realised = np.array([0, 1, 0, 2])
    m = drift_metrics(Outcomes(proba, realised), champion_log_loss=1.0)
    expected_ll = -np.mean(np.log([0.7, 0.8, 0.2, 0.2]))
    assert m.signals == 4
    assert m.hit_rate == 0.5
    assert m.log_loss == pytest.approx(expected_ll)
    assert m.log_loss_excess == pytest.approx(expected_ll - 1.0)
    # bins: 0.5 (miss), 0.6 (miss), 0.7 (hit), 0.8 (hit): each alone in its bin
    assert m.calibration_error == pytest.approx((0.5 + 0.6 + 0.3 + 0.2) / 4)
    with pytest.raises(ValueError, match="no signal"):
        drift_metrics(Outcomes(np.zeros((0, 3)), np.zeros(0, np.int64)), 1.0)


def test_the_drift_check_reads_signals_champion_and_recorded_data(
    challenger: Path, tmp_path: Path, s3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The promoted champion, the real hour recorded as an esml store under data/ (as the
    live engine records it), and SYNTHETIC signals (uniform probabilities at every
    decision of the hour) journaled in the orders table."""
    assert run_step("promote", challenger, tmp_path / "promotion", "--bucket", BUCKET) == 0
    recorded = tmp_path / "store"
    store.ingest(recorded, [REAL])
    for path in recorded.rglob("*"):
        if path.is_file():
            key = f"data/live/2023-12-25T22/{path.relative_to(recorded).as_posix()}"
            s3.upload_file(str(path), BUCKET, key)
    dynamodb = boto3.resource("dynamodb", region_name=REGION)
    tables = {}
    for name, key in (("orders", "client_id"), ("fills", "fill_id")):
        tables[name] = dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    journal = DynamoDBJournal(tables["orders"], tables["fills"])
    (day,) = collect_sources([recorded])[0]  # the store's trading day, as the check reads it
    frame = batch_features(day.events, ES.tick_fixed, 1.0)
    active = frame.ts_ns[frame.ts_ns >= frame.ts_ns[-1] - 600 * 10**9]  # the last 10 minutes
    for ts in active[::5]:
        journal.record_signal(SignalRecord(int(ts), "ESH4", "tick-engine", 1 / 3, 1 / 3, 1 / 3,
                                           1 / 3, "champion"))  # fmt: skip
    env = {"ORDERS_TABLE": "orders", "FILLS_TABLE": "fills", "MODEL_BUCKET": BUCKET,
           "MODEL_PREFIX": "models/", "DATA_PREFIX": "data/", "WINDOW_HOURS": "24"}  # fmt: skip
    now = datetime.fromtimestamp(int(frame.ts_ns[-1]) / 1e9, UTC)
    result = drift_handler.check(env, s3, dynamodb, now, tmp_path / "work")
    assert result is not None
    champion = registry.champion_name(tmp_path / "work" / "champion")
    bundle = registry.load_bundle(tmp_path / "work" / "champion" / champion)
    member = next(m for m in bundle.members if m.kind == "ensemble")
    manifest = load_json(
        EnsembleManifest, tmp_path / "work" / "champion" / champion / member.directory
        / member.manifest,
    )  # fmt: skip
    y, valid = direction_labels(frame.ts_ns, frame.mid, bundle.horizon_s,
                                manifest.config.dead_zone_ticks, ES.tick_size)  # fmt: skip
    signalled = np.isin(frame.ts_ns, active[::5]) & valid
    assert result.signals == int(signalled.sum()) > 50
    assert result.log_loss == pytest.approx(np.log(3))  # uniform probabilities
    assert result.hit_rate == pytest.approx(np.mean(y[signalled] == 0))  # argmax: "down"
    assert result.calibration_error == pytest.approx(abs(result.hit_rate - 1 / 3))
    assert result.log_loss_excess == pytest.approx(
        np.log(3) - manifest.held_out.metrics["log_loss"].value
    )
    # an hour with no signals publishes nothing
    later = datetime(2024, 6, 1, tzinfo=UTC)
    assert drift_handler.check(env, s3, dynamodb, later, tmp_path / "later") is None
