"""training/ end to end: train.py SageMaker-style on real CME ES MBO data and locally on
SYNTHETIC simulator sessions; the whole stack as one bundle (complete manifests, the same
models from the same seeds, the atomic swap of the champion); and the errors that must
leave nothing behind."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from esml.alpha import registry
from esml.alpha.bundle_manifest import (
    EnsembleManifest,
    HeldOutScores,
    MetricInterval,
    RegimeManifest,
    judge_promotion,
    load_json,
    promotion_line,
)
from esml.alpha.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    ModelFileError,
    ModelManifest,
    file_sha256,
)
from esml.alpha.model import OnnxAlphaModel
from esml.alpha.sequence_model import OnnxSequenceModel
from esml.alpha.xgb import XGBParams, train_direction_model
from esml.config import EsmlConfig
from esml.data.dbn import main_instrument, read_mbo
from esml.evaluation.model_eval import BASELINES
from esml.features.dataset import build_dataset, events_sha256
from esml.features.sequences import TICK
from esml.features.streaming import FEATURE_NAMES, FEATURE_VERSION
from esml.sim.synthetic import DEFAULT_START_NS, generate_session
from tests.tiny_stack import TINY
from training.stack import train_stack

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "train.py"
DATA = Path(os.environ.get("ESML_DATA_DIR", ROOT.parent / "shared" / "data")) / "cme-es"
REAL_MBO = DATA / "esh4-glbx-mdp3-20231225.mbo.dbn.zst"  # 1 h of ESH4, 2023-12-25
REAL_TRADES = DATA / "futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
SMALL = ["--n_estimators", "60", "--n-folds", "2", "--max_depth", "3", "--n_jobs", "1"]

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
        generate_session(4, start_ns=DEFAULT_START_NS + 86_400 * 10**9, duration_s=1500)
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
    params = XGBParams(n_estimators=40, n_folds=0, n_jobs=1)
    first = train_direction_model(
        [generate_session(1, duration_s=1800)], cfg, out, synthetic=True, params=params
    )
    second = train_direction_model(
        [generate_session(2, duration_s=1800)], cfg, out, synthetic=True, params=params
    )
    assert ModelManifest.load(out) == second and second.folds == []
    assert first.data_sha256 != second.data_sha256
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_FILE, MODEL_FILE]  # no temp files


# ---------------------------------------------------------------------------- the stack


def test_stack_bundle_is_the_champion_and_every_manifest_is_complete(stack, sessions):
    root = stack.path.parent
    assert registry.champion(root) == stack.path
    assert (root / registry.CHAMPION_FILE).read_text() == stack.path.name + "\n"
    m = registry.load_bundle(stack.path)
    assert m == stack.manifest
    assert [x.kind for x in m.members] == ["trees", "tick_lstm", "regime", "ensemble"]
    assert m.synthetic_training_data and m.training_time_s > 0 and m.seed == TINY.seed
    assert m.data_sha256 == {n: events_sha256(ev) for n, ev in sessions.items()}
    assert m.feature_names == list(FEATURE_NAMES) and m.feature_version == FEATURE_VERSION
    # the components saw only the events before the cutoff
    before = {n: events_sha256(ev[ev["ts_recv"] < m.cutoff_ns]) for n, ev in sessions.items()}

    trees = OnnxAlphaModel.load(
        stack.path / "trees", feature_names=FEATURE_NAMES, feature_version=FEATURE_VERSION
    ).manifest
    tick = OnnxSequenceModel.load(
        stack.path / "tick_lstm", window_name=TICK.name, window_version=TICK.version
    ).manifest
    regime = load_json(RegimeManifest, stack.path / "regime" / MANIFEST_FILE)
    for member in (trees, tick, regime):
        assert member.synthetic_training_data and member.training_time_s > 0
        assert member.data_sha256 == before
        assert len(member.folds) == 1
    assert trees.hyperparameters["random_state"] == TINY.seed
    assert tick.hyperparameters["seed"] == TINY.seed and tick.onnx_parity_max_abs <= 1e-5
    assert regime.feature_names == list(FEATURE_NAMES) and regime.classes == [
        "none",
        "trend",
        "range",
    ]
    session = ort.InferenceSession(str(stack.path / "regime" / MODEL_FILE))
    proba = session.run(["probabilities"], {"features": np.zeros((2, 77), np.float32)})[0]
    assert proba.shape == (2, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)

    ens = stack.ensemble
    assert ens == load_json(EnsembleManifest, stack.path / "ensemble" / "ensemble.json")
    assert {x.name: x.onnx_sha256 for x in ens.members} == {
        "trees": trees.onnx_sha256,
        "tick_lstm": tick.onnx_sha256,
    }
    assert ens.config.weights == {"tick_lstm": 1.0, "trees": 2.0}
    assert ens.calibrator is not None and ens.calibrator.method == "vector"
    h = ens.held_out
    assert m.cutoff_ns < ens.calibration_first_ts_ns
    assert ens.calibration_last_ts_ns + 20 * 10**9 < h.first_ts_ns
    assert set(h.metrics) == {"accuracy", "macro_f1", "log_loss", "brier"}
    assert set(h.baselines) == set(h.improvements) == set(BASELINES)
    assert len(h.verdicts) == 4 and all("the ensemble" in v for v in h.verdicts)
    assert 0 <= h.ece < 1 and 0 <= h.ece_uncalibrated < 1
    assert h.reachable_max is not None and min(h.reachable_max) > 0.6
    p = m.promotion
    assert p is not None and p.forced and p.metrics == ["log_loss", "accuracy"]
    assert p.beats_baselines == (not p.shortfalls)
    plans = [(o.plan.stop_ticks, o.plan.target_ticks, o.plan.time_exit_s)
             for o in ens.exit_outcomes]  # fmt: skip
    assert plans == [(10, 16, 20.0), (10, 25, 20.0), (12, 16, 20.0)]  # the session budgets'
    for o in ens.exit_outcomes:
        assert o.trades > 100 and o.share_target + o.share_stop + o.share_time == pytest.approx(1)


def test_the_same_seeds_train_the_same_models(stack, sessions, tmp_path):
    """...and, not forced, a bundle that does not beat the baselines is kept beside the
    champion without becoming it."""
    again = train_stack(sessions, EsmlConfig(), tmp_path, synthetic=True, params=TINY)
    assert not again.promotion.forced and not again.promotion.beats_baselines
    assert not again.champion and registry.champion_name(tmp_path) is None
    assert registry.load_bundle(again.path) == again.manifest
    assert "NOT promoted" in promotion_line(again.manifest)

    def onnx_shas(path: Path) -> dict[str, str]:
        return {d: file_sha256(path / d / MODEL_FILE) for d in ("trees", "tick_lstm", "regime")}

    assert onnx_shas(again.path) == onnx_shas(stack.path)
    assert again.ensemble.calibrator == stack.ensemble.calibrator
    assert again.ensemble.held_out == stack.ensemble.held_out
    assert again.manifest.cutoff_ns == stack.manifest.cutoff_ns


def _stage_copy(bundle: Path, root: Path) -> Path:
    staged = registry.staging_dir(root, "copy")
    shutil.rmtree(staged)
    shutil.copytree(bundle, staged)
    return staged


def test_publishing_swaps_the_champion_atomically_and_keeps_the_newest(stack, tmp_path):
    root = tmp_path / "models"
    first = registry.publish(_stage_copy(stack.path, root), root, "b1", keep=2)
    second = registry.publish(_stage_copy(stack.path, root), root, "b2", keep=2)
    assert registry.champion(root) == second and registry.load_bundle(first)  # old one intact
    third = registry.publish(_stage_copy(stack.path, root), root, "b3", keep=2)
    assert registry.champion(root) == third
    assert sorted(p.name for p in root.iterdir()) == ["b2", "b3", registry.CHAMPION_FILE]

    staged = _stage_copy(stack.path, root)
    with pytest.raises(FileExistsError):  # a published bundle is never overwritten
        registry.publish(staged, root, "b2")
    tampered = staged / "trees" / MANIFEST_FILE
    tampered.write_text(
        tampered.read_text().replace(
            '"synthetic_training_data": true', '"synthetic_training_data": false'
        )
    )
    with pytest.raises(ModelFileError, match="modified after training"):
        registry.publish(staged, root, "b4")
    assert registry.champion(root) == third and not (root / "b4").exists()
    registry.discard(staged)
    assert sorted(p.name for p in root.iterdir()) == ["b2", "b3", registry.CHAMPION_FILE]


def _held_out(improvement_low: dict[str, float]) -> HeldOutScores:
    """Held-out scores whose improvement over every baseline has the given lower bounds."""
    iv = {m: MetricInterval(value=low + 0.01, low=low, high=low + 0.02)
          for m, low in improvement_low.items()}  # fmt: skip
    return HeldOutScores(rows=100, first_ts_ns=0, last_ts_ns=1, metrics=iv, baselines={},
                         verdicts=[], improvements={b: iv for b in BASELINES})  # fmt: skip


def test_promotion_needs_every_improvement_interval_clear_of_the_margin():
    wins = _held_out({"log_loss": 0.004, "accuracy": 0.02, "brier": -0.01})
    p = judge_promotion(wins, ["log_loss", "accuracy"], 0.0, forced=False)
    assert p.beats_baselines and not p.shortfalls and "earned" in promotion_line_of(p)
    tight = judge_promotion(wins, ["log_loss", "accuracy"], 0.005, forced=False)
    assert not tight.beats_baselines and len(tight.shortfalls) == len(BASELINES)
    assert all(s.startswith("log_loss vs ") for s in tight.shortfalls)
    forced = judge_promotion(wins, ["brier"], 0.0, forced=True)
    assert forced.forced and not forced.beats_baselines
    assert "FORCED (--force)" in promotion_line_of(forced)
    assert not judge_promotion(wins, ["log_loss"], 0.0, forced=True).forced  # not needed
    alone = judge_promotion(None, ["log_loss"], 0.0, forced=False)
    assert not alone.beats_baselines and "no ensemble" in alone.shortfalls[0]


def promotion_line_of(p) -> str:
    from esml.alpha.bundle_manifest import BundleManifest

    return promotion_line(BundleManifest.model_construct(promotion=p))


def test_a_bundle_published_without_promotion_stays_beside_the_champion(stack, tmp_path):
    root = tmp_path / "models"
    champ = registry.publish(_stage_copy(stack.path, root), root, "b1", keep=1)
    loser = registry.publish(_stage_copy(stack.path, root), root, "b2", keep=1, champion=False)
    assert registry.champion(root) == champ and loser.is_dir()  # keep=1 spares the new one
    registry.publish(_stage_copy(stack.path, root), root, "b3", keep=1, champion=False)
    assert sorted(p.name for p in root.iterdir()) == ["b1", "b3", registry.CHAMPION_FILE]


def test_a_failed_training_run_leaves_the_champion_and_no_partial_bundle(
    stack, sessions, tmp_path, monkeypatch
):
    root = tmp_path / "models"
    published = registry.publish(_stage_copy(stack.path, root), root, "good")
    before = sorted(p.name for p in root.iterdir())

    def boom(*args, **kwargs):
        raise RuntimeError("the net diverged")

    monkeypatch.setattr("training.stack.train_sequence_model", boom)
    with pytest.raises(RuntimeError, match="diverged"):
        train_stack(sessions, EsmlConfig(), root, synthetic=True, params=TINY)
    assert sorted(p.name for p in root.iterdir()) == before  # no .tmp-* left behind
    assert registry.champion(root) == published
    (root / registry.CHAMPION_FILE).write_text("../elsewhere\n")
    with pytest.raises(ModelFileError, match="not a bundle name"):
        registry.champion(root)


def test_undeclared_synthetic_stack_is_refused_before_any_work(sessions, tmp_path):
    with pytest.raises(ValueError, match="synthetic; pass synthetic=True"):
        train_stack(sessions, EsmlConfig(), tmp_path / "m", synthetic=False, params=TINY)
    assert not (tmp_path / "m").exists()


@needs_real_data
def test_stack_command_on_the_real_es_file(tmp_path, capsys):
    train = load_train_module()
    root = tmp_path / "models"
    argv = [
        "--stack",
        "--data",
        str(REAL_MBO),
        "--out",
        str(root),
        "--models",
        "trees,tick_lstm,bar_lstm,ensemble",
        "--n_estimators",
        "20",
        "--n_folds",
        "1",
        "--net-epochs",
        "1",
        "--net-max-batches-per-epoch",
        "1",
        "--net-n-folds",
        "0",
    ]
    assert train.main(argv) == train.NOT_PROMOTED  # an hour of ES and one-round trees
    out = capsys.readouterr()
    assert "heldout:ensemble_log_loss=" in out.out and "NOT promoted" in out.err
    assert registry.champion_name(root) is None and len(registry.bundles(root)) == 1
    assert train.main([*argv, "--force"]) == 0
    assert "FORCED (--force)" in capsys.readouterr().err
    m = registry.load_bundle(registry.champion(root))
    assert m.promotion is not None and m.promotion.forced
    assert not m.synthetic_training_data
    assert [x.kind for x in m.members] == ["trees", "tick_lstm", "ensemble"]
    assert "bar_lstm" in m.left_out and "window is ready on 0%" in m.left_out["bar_lstm"]
    assert train.main([*argv[:5], "--models", "trees,lasers"]) == 2
    assert "unknown ['lasers']" in capsys.readouterr().err
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []


def test_the_shipped_champion_was_judged_for_promotion_and_can_sell():
    """models/ as shipped (`make models`, SYNTHETIC days): its promotion verdict is recorded
    and honest (forced exactly when it failed), its calibrator lets every side clear the
    confidence floor, its held-out calibration error is stated, and its exit outcomes show
    the time exit closing almost every trade."""
    from esml.alpha.calibration import reachable_max

    path = registry.champion(ROOT / "models")
    m = registry.load_bundle(path)
    assert m.synthetic_training_data and m.promotion is not None
    assert m.promotion.forced == (not m.promotion.beats_baselines)
    em = load_json(EnsembleManifest, path / "ensemble" / "ensemble.json")
    assert em.calibrator is not None and em.calibrator.method == "vector"
    assert min(reachable_max(em.calibrator)) > 0.55
    assert em.held_out.ece is not None and em.held_out.ece_uncalibrated is not None
    assert em.exit_outcomes and all(o.share_time > 0.9 for o in em.exit_outcomes)
