"""training/train.py end to end: SageMaker-style on real CME ES MBO data, locally on
SYNTHETIC simulator sessions, and the errors that must leave nothing behind."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from esml.alpha.manifest import MANIFEST_FILE, MODEL_FILE, ModelManifest
from esml.alpha.model import OnnxAlphaModel
from esml.alpha.xgb import XGBParams, train_direction_model
from esml.config import EsmlConfig
from esml.data.dbn import main_instrument, read_mbo
from esml.features.dataset import build_dataset, events_sha256
from esml.sim.synthetic import generate_session

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "train.py"
DATA = Path(os.environ.get("ESML_DATA_DIR", ROOT.parent / "shared" / "data")) / "cme-es"
REAL_MBO = DATA / "esh4-glbx-mdp3-20231225.mbo.dbn.zst"  # 1 h of ESH4, 2023-12-25
REAL_TRADES = DATA / "futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
SMALL = ["--n_estimators", "60", "--n-folds", "2", "--max_depth", "3"]

needs_real_data = pytest.mark.skipif(
    not (REAL_MBO.exists() and REAL_TRADES.exists()), reason=f"real ES data not under {DATA}"
)


def load_train_module():
    spec = importlib.util.spec_from_file_location("esml_training_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@needs_real_data
def test_sagemaker_run_on_real_mbo_writes_a_loadable_honestly_scored_model(tmp_path):
    channel, model_dir, output = tmp_path / "train", tmp_path / "model", tmp_path / "output"
    channel.mkdir()
    shutil.copy(REAL_MBO, channel)
    shutil.copy(REAL_TRADES, channel)  # another schema in the channel is skipped, not read
    env = os.environ | {
        "SM_CHANNEL_TRAIN": str(channel),
        "SM_MODEL_DIR": str(model_dir),
        "SM_OUTPUT_DATA_DIR": str(output / "data"),
        "SM_OUTPUT_DIR": str(output),
    }
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *SMALL], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert f"skipping {channel / REAL_TRADES.name}" in done.stderr
    assert "validation:accuracy=" in done.stdout

    events = read_mbo(REAL_MBO)
    events = events[events["instrument_id"] == main_instrument(events)]
    cfg = EsmlConfig()
    ds = build_dataset(events, cfg.instrument_spec, cfg.features)
    model = OnnxAlphaModel.load(
        model_dir, feature_names=ds.feature_names, feature_version=ds.feature_version
    )
    m = model.manifest
    assert m.data_sha256 == {REAL_MBO.name: events_sha256(events)}
    assert m.synthetic_training_data is False and len(m.folds) == 2
    assert m.hyperparameters["max_depth"] == 3 and m.hyperparameters["n_folds"] == 2
    metrics = json.loads((output / "data" / "metrics.json").read_text())
    assert metrics["validation"] == m.validation.model_dump()

    # recompute the validation scores from the data: the reported rows are the last ones,
    # the training rows end a full horizon before them, and the numbers are theirs
    v = m.validation
    val = (ds.ts_ns >= v.first_ts_ns) & (ds.ts_ns <= v.last_ts_ns)
    train = ds.ts_ns + round(cfg.features.horizon_s * 1e9) < v.first_ts_ns
    assert val.sum() == v.rows and val[-v.rows :].all()
    assert train.sum() == v.train_rows == m.training_rows
    predicted = model.predict_proba(ds.X[val]).argmax(axis=1)
    assert abs(np.mean(predicted == ds.y[val]) - v.accuracy) <= 1 / v.rows  # argmax ties only
    majority = np.bincount(ds.y[train], minlength=3).argmax()
    assert v.majority_class == ("down", "flat", "up")[majority]
    assert v.majority_baseline_accuracy == pytest.approx(np.mean(ds.y[val] == majority))


def test_local_synthetic_run_is_labelled_synthetic(tmp_path):
    train = load_train_module()
    out = tmp_path / "model"
    argv = ["--synthetic-days", "2", "--seed", "3", "--session-s", "1500", "--out", str(out)]
    assert train.main([*argv, *SMALL, "--learning-rate", "0.1"]) == 0
    m = OnnxAlphaModel.load(out).manifest
    assert m.synthetic_training_data is True
    assert set(m.data_sha256) == {"synthetic-seed-3", "synthetic-seed-4"}
    expected = events_sha256(
        generate_session(4, start_ns=train.DEFAULT_START_NS + 86_400 * 10**9, duration_s=1500)
    )
    assert m.data_sha256["synthetic-seed-4"] == expected
    assert m.hyperparameters["learning_rate"] == 0.1
    assert len(m.folds) == 2
    # walk-forward blocks are in time order and end where the validation block ends
    assert m.folds[0].last_ts_ns < m.folds[1].first_ts_ns
    assert m.folds[-1].last_ts_ns == m.validation.last_ts_ns


def test_undeclared_synthetic_events_are_refused_and_nothing_is_written(tmp_path):
    events = generate_session(5, duration_s=600)
    with pytest.raises(ValueError, match="synthetic; pass synthetic=True"):
        train_direction_model([events], EsmlConfig(), tmp_path / "m", synthetic=False)
    assert not (tmp_path / "m").exists()


def test_bad_input_exits_with_a_clear_error_and_writes_nothing(tmp_path, capsys):
    train = load_train_module()
    out = tmp_path / "model"
    assert train.main(["--data", str(tmp_path / "nope.dbn.zst"), "--out", str(out)]) == 2
    assert "nope.dbn.zst: no such file or directory" in capsys.readouterr().err
    if REAL_TRADES.exists():
        assert train.main(["--data", str(REAL_TRADES), "--out", str(out)]) == 2
        assert "not MBO" in capsys.readouterr().err
    assert train.main(["--synthetic-days", "1", "--out", str(out), "--max_depth", "0"]) == 2
    assert "max_depth" in capsys.readouterr().err
    assert train.main(["--out", str(out), "--local", "--synthetic-days", "1", "--data", "x"]) == 2
    assert "not both" in capsys.readouterr().err
    assert not out.exists()


def test_retraining_replaces_model_and_manifest_together(tmp_path):
    out, cfg = tmp_path / "model", EsmlConfig()
    params = XGBParams(n_estimators=40, n_folds=0)
    first = train_direction_model(
        [generate_session(1, duration_s=1800)], cfg, out, synthetic=True, params=params
    )
    second = train_direction_model(
        [generate_session(2, duration_s=1800)], cfg, out, synthetic=True, params=params
    )
    assert ModelManifest.load(out) == second and second.folds == []
    assert first.data_sha256 != second.data_sha256
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_FILE, MODEL_FILE]  # no temp files
