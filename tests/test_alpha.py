"""The direction model: walk-forward splits, XGBoost training and its scores, ONNX export
parity, the manifest's tamper check and the onnxruntime-served model.

Data here is SYNTHETIC tabular data with a fixed seed: correlated features, a latent
signal observed through some of them, a 3-class label with a dead zone and rare "down"
so the per-class intercepts differ; timestamps one second apart across two sessions.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score, f1_score, log_loss

from esml.alpha.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    ModelFileError,
    ModelManifest,
    file_sha256,
)
from esml.alpha.model import AlphaModel, FeatureMismatchError, OnnxAlphaModel
from esml.alpha.onnx_export import OnnxExportError, export_onnx
from esml.alpha.splits import holdout_split, walk_forward_split
from esml.alpha.xgb import (
    LightGBMParams,
    XGBParams,
    _float32_at_or_below,
    class_weights,
    export_lightgbm_onnx,
    fit_booster,
    fit_lightgbm,
    lightgbm_available,
)

NS = 1_000_000_000
HORIZON_NS = 20 * NS
FEATURES = [f"f{i}" for i in range(8)]
FAST = XGBParams(
    n_estimators=150, max_depth=3, learning_rate=0.2, early_stopping_rounds=10, n_jobs=1
)


def synthetic_table(n: int = 6000, seed: int = 11, signal: float = 1.0):
    """SYNTHETIC labelled rows: (x float32 [n, 8], y int, ts_ns int64)."""
    rng = np.random.default_rng(seed)
    cov = 0.5 * np.ones((8, 8)) + 0.5 * np.eye(8)
    x = rng.multivariate_normal(np.zeros(8), cov, size=n)
    latent = signal * (x[:, 0] - 0.7 * x[:, 3] + 0.5 * x[:, 5] * x[:, 6]) + rng.normal(size=n)
    y = np.where(latent > 0.6, 2, np.where(latent < -1.4, 0, 1))
    x[rng.random(x.shape) < 0.02] = np.nan  # missing values take XGBoost's default branch
    start = np.where(np.arange(n) < n // 2, 0, 86_400 * NS)  # two sessions a day apart
    ts = start + np.arange(n, dtype=np.int64) * NS
    return x.astype(np.float32), y, ts


@pytest.fixture(scope="module")
def table():
    return synthetic_table()


@pytest.fixture(scope="module")
def fitted(table):
    x, y, ts = table
    return fit_booster(x, y, ts, horizon_ns=HORIZON_NS, params=FAST)


# ------------------------------------------------------------------ splits


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 40 * NS), min_size=30, max_size=300),
    n_folds=st.integers(1, 4),
    horizon_s=st.integers(1, 30),
    embargo_s=st.integers(0, 10),
)
def test_walk_forward_folds_are_purged_ordered_and_disjoint(gaps, n_folds, horizon_s, embargo_s):
    ts = np.cumsum(np.asarray(gaps, dtype=np.int64))
    gap = (horizon_s + embargo_s) * NS
    try:
        folds = walk_forward_split(
            ts, n_folds=n_folds, horizon_ns=horizon_s * NS, embargo_ns=embargo_s * NS
        )
    except ValueError as e:  # only when some fold would have nothing to train on
        assert "no training rows" in str(e) or "too few" in str(e)
        return
    tests = np.concatenate([f.test for f in folds])
    assert np.array_equal(tests, np.arange(tests[0], len(ts)))  # contiguous blocks to the end
    for fold in folds:
        assert len(fold.train) and len(fold.test)
        assert not set(fold.train) & set(fold.test)
        first_test = ts[fold.test[0]]
        assert ts[fold.train].max() + gap < first_test  # label windows end before the test
        # maximal: the next row after the training prefix would violate the gap
        nxt = fold.train[-1] + 1
        assert nxt in fold.test or ts[nxt] + gap >= first_test
    assert all(len(a.train) <= len(b.train) for a, b in itertools.pairwise(folds))


def test_holdout_purges_the_label_horizon_before_validation():
    ts = np.arange(1000, dtype=np.int64) * NS
    fold = holdout_split(ts, test_fraction=0.2, horizon_ns=HORIZON_NS, embargo_ns=5 * NS)
    assert fold.test[0] == 800 and fold.test[-1] == 999
    assert fold.train[-1] == 774  # 774 + 20 + 5 = 799 < 800; 775 would touch row 800
    assert np.array_equal(fold.train, np.arange(775))


def test_splits_refuse_unsorted_or_too_short_data():
    with pytest.raises(ValueError, match="sorted"):
        holdout_split(np.array([3, 1, 2]) * NS, test_fraction=0.3, horizon_ns=NS)
    with pytest.raises(ValueError, match="no training rows"):
        holdout_split(np.arange(10) * NS, test_fraction=0.5, horizon_ns=HORIZON_NS)
    with pytest.raises(ValueError, match="too few"):
        walk_forward_split(np.arange(3) * NS, n_folds=5, horizon_ns=NS)


# ------------------------------------------------------------------ training


def test_class_weights_give_each_class_equal_total_weight():
    y = np.array([1] * 90 + [0] * 3 + [2] * 7)
    w = class_weights(y)[y]
    totals = [w[y == c].sum() for c in range(3)]
    assert np.allclose(totals, len(y) / 3)


def test_validation_scores_are_computed_on_the_purged_later_rows(table, fitted):
    x, y, ts = table
    tr, va = fitted.split.train, fitted.split.test
    assert ts[tr].max() + HORIZON_NS < ts[va].min()
    m = fitted.validation
    proba = fitted.booster.predict(xgb.DMatrix(x[va]))
    majority = np.bincount(y[tr]).argmax()
    assert m.rows == len(va) and m.train_rows == len(tr)
    assert (m.first_ts_ns, m.last_ts_ns) == (ts[va][0], ts[va][-1])
    assert m.class_counts == dict(
        zip(("down", "flat", "up"), np.bincount(y[va]).tolist(), strict=True)
    )
    assert m.accuracy == pytest.approx(np.mean(proba.argmax(1) == y[va]))
    assert m.macro_f1 == pytest.approx(f1_score(y[va], proba.argmax(1), average="macro"))
    assert m.log_loss == pytest.approx(log_loss(y[va], proba), rel=1e-6)
    assert m.majority_class == ("down", "flat", "up")[majority]
    assert m.majority_baseline_accuracy == pytest.approx(np.mean(y[va] == majority))
    prior = np.bincount(y[tr]) / len(tr)
    assert m.prior_log_loss == pytest.approx(log_loss(y[va], np.tile(prior, (len(va), 1))))
    # the signal is real, so the model must beat the naive baselines on those rows
    assert m.log_loss < m.prior_log_loss
    assert m.macro_f1 > f1_score(y[va], np.full(len(va), majority), average="macro")


def test_no_signal_means_no_better_than_the_prior():
    """Labels independent of the features: any apparent skill would be a leak."""
    x, y, ts = synthetic_table(n=4000, seed=3, signal=0.0)
    m = fit_booster(x, y, ts, horizon_ns=HORIZON_NS, params=FAST).validation
    assert m.log_loss > m.prior_log_loss - 0.01


def test_training_refuses_a_missing_class_and_bad_labels(table):
    x, y, ts = table
    with pytest.raises(ValueError, match=r"no \['down'\] labels"):
        fit_booster(x, np.where(y == 0, 1, y), ts, horizon_ns=HORIZON_NS, params=FAST)
    with pytest.raises(ValueError, match="labels must be"):
        fit_booster(x, y + 1, ts, horizon_ns=HORIZON_NS, params=FAST)


def test_class_balanced_trees_find_the_rare_class(table, fitted):
    """Against the same trees trained unweighted: the balanced model recalls far more of the
    rare "down" rows and has the better balanced accuracy (mean recall per class, what
    class weights aim at) on the purged validation rows. Macro F1 is not promised: the
    recall is bought with precision, and on this table the two F1s sit within 0.02."""
    x, y, _ = table
    tr, va = fitted.split.train, fitted.split.test
    plain = xgb.XGBClassifier(
        objective="multi:softprob",
        n_estimators=fitted.booster.num_boosted_rounds(),
        max_depth=FAST.max_depth,
        learning_rate=FAST.learning_rate,
        subsample=FAST.subsample,
        colsample_bytree=FAST.colsample_bytree,
        min_child_weight=FAST.min_child_weight,
        n_jobs=1,
        random_state=FAST.random_state,
    ).fit(x[tr], y[tr])
    balanced = fitted.booster.predict(xgb.DMatrix(x[va])).argmax(1)
    unweighted = plain.predict_proba(x[va]).argmax(1)
    down = y[va] == 0
    assert np.mean(balanced[down] == 0) > np.mean(unweighted[down] == 0) + 0.15
    assert balanced_accuracy_score(y[va], balanced) > balanced_accuracy_score(y[va], unweighted)


# ------------------------------------------------------------------ ONNX export


def test_onnx_matches_xgboost_predict_proba_on_held_out_rows(table):
    x, y, _ = table
    tr, va = slice(0, 4000), slice(4500, None)
    clf = xgb.XGBClassifier(
        objective="multi:softprob",
        tree_method="hist",
        n_estimators=300,
        max_depth=4,
        learning_rate=0.3,
        gamma=2.0,  # produces single-leaf trees too
        early_stopping_rounds=5,
        n_jobs=1,
        random_state=0,
    )
    clf.fit(x[tr], y[tr], eval_set=[(x[4000:4500], y[4000:4500])], verbose=False)
    booster = clf.get_booster()
    assert clf.best_iteration + 1 < booster.num_boosted_rounds()  # trees past the best exist
    intercept = json.loads(
        json.loads(booster.save_config())["learner"]["learner_model_param"]["base_score"]
    )
    assert np.ptp(intercept) > 0.5  # per-class intercepts that a converter must not drop

    data = export_onnx(booster[: clf.best_iteration + 1], x.shape[1], check_rows=x[tr][:50])
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"features": x[va]})[0]
    assert got.shape == (len(x[va]), 3)
    assert np.isnan(x[va]).any()
    np.testing.assert_allclose(got, clf.predict_proba(x[va]), rtol=0, atol=1e-5)


def test_export_refuses_what_it_cannot_represent(table):
    x, y, _ = table
    binary = xgb.XGBClassifier(n_estimators=3, max_depth=2, n_jobs=1).fit(x[:500], (y[:500] == 2))
    with pytest.raises(OnnxExportError, match="objective"):
        export_onnx(binary.get_booster(), x.shape[1], check_rows=x[:5])
    multi = xgb.XGBClassifier(n_estimators=3, max_depth=2, n_jobs=1).fit(x[:500], y[:500])
    with pytest.raises(OnnxExportError, match="trained on 8 features, not 7"):
        export_onnx(multi.get_booster(), 7, check_rows=x[:5, :7])


# ------------------------------------------------------------------ manifest and serving


def write_model_dir(out: Path, fitted, x: np.ndarray) -> ModelManifest:
    data = export_onnx(fitted.booster, x.shape[1], check_rows=x[fitted.split.test])
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_FILE).write_bytes(data)
    manifest = ModelManifest(
        name="es_direction_20s",
        version="test-1",
        created_at=datetime.now(UTC),
        instrument="ES",
        feature_names=FEATURES,
        feature_version="synthetic-table-1",
        decision_interval_s=1.0,
        horizon_s=20.0,
        dead_zone_ticks=0.5,
        data_sha256={"synthetic-table-seed-11": "0" * 64},
        training_rows=fitted.validation.train_rows,
        n_trees=fitted.booster.num_boosted_rounds(),
        hyperparameters=FAST.model_dump(),
        validation=fitted.validation,
        folds=[],
        training_time_s=1.0,
        onnx_sha256=file_sha256(out / MODEL_FILE),
        synthetic_training_data=True,
    )
    manifest.save(out)
    return manifest


@pytest.fixture
def model_dir(tmp_path, table, fitted) -> Path:
    write_model_dir(tmp_path / "model", fitted, table[0])
    return tmp_path / "model"


def test_served_model_reproduces_the_booster(model_dir, table, fitted):
    x = table[0][fitted.split.test]
    model = OnnxAlphaModel.load(
        model_dir, feature_names=FEATURES, feature_version="synthetic-table-1"
    )
    assert isinstance(model, AlphaModel)
    assert model.name == "es_direction_20s" and model.feature_names == FEATURES
    want = fitted.booster.predict(xgb.DMatrix(x))
    proba = model.predict_proba(x)
    np.testing.assert_allclose(proba, want, atol=1e-5)
    for i in (0, 7, len(x) - 1):
        np.testing.assert_allclose(model.predict_one(x[i]), want[i], atol=1e-5)
    assert ModelManifest.load(model_dir).synthetic_training_data is True


def test_served_model_rejects_wrong_shapes(model_dir):
    model = OnnxAlphaModel.load(model_dir)
    with pytest.raises(ValueError, match=r"shape \[n, 8\]"):
        model.predict_proba(np.zeros((2, 7), np.float32))
    with pytest.raises(ValueError, match="one row of 8"):
        model.predict_one(np.zeros(9, np.float32))


def test_feature_list_must_match_the_manifest(model_dir):
    with pytest.raises(FeatureMismatchError, match=r"missing \['f7'\], unexpected \['g'\]"):
        OnnxAlphaModel.load(model_dir, feature_names=[*FEATURES[:-1], "g"])
    with pytest.raises(FeatureMismatchError, match="different order"):
        OnnxAlphaModel.load(model_dir, feature_names=FEATURES[::-1])
    with pytest.raises(FeatureMismatchError, match="version 'synthetic-table-1'"):
        OnnxAlphaModel.load(model_dir, feature_names=FEATURES, feature_version="v2")


def test_tampered_onnx_is_refused(model_dir):
    path = model_dir / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"model\.onnx: sha256 .* modified or replaced"):
        OnnxAlphaModel.load(model_dir)


def test_missing_or_corrupt_files_are_named(model_dir):
    manifest_path = model_dir / MANIFEST_FILE
    original = manifest_path.read_text()
    manifest_path.write_text(original[:-20])
    with pytest.raises(ModelFileError, match=r"manifest\.json: unreadable manifest"):
        OnnxAlphaModel.load(model_dir)
    # garbage that matches its recorded hash still fails, naming the onnx file
    (model_dir / MODEL_FILE).write_bytes(b"not an onnx model")
    body = json.loads(original)
    body["onnx_sha256"] = file_sha256(model_dir / MODEL_FILE)
    manifest_path.write_text(json.dumps(body))
    with pytest.raises(ModelFileError, match=r"model\.onnx: not a loadable ONNX model"):
        OnnxAlphaModel.load(model_dir)
    (model_dir / MODEL_FILE).unlink()
    with pytest.raises(ModelFileError, match=r"model\.onnx: model file not found"):
        OnnxAlphaModel.load(model_dir)
    manifest_path.unlink()
    with pytest.raises(ModelFileError, match=r"manifest\.json: manifest not found"):
        OnnxAlphaModel.load(model_dir)


def test_manifest_refuses_to_describe_another_file(model_dir):
    manifest = ModelManifest.load(model_dir)
    other = manifest.model_copy(update={"onnx_sha256": "f" * 64})
    with pytest.raises(ModelFileError, match="refusing to write"):
        other.save(model_dir)
    assert ModelManifest.load(model_dir) == manifest  # the good manifest is untouched


# ------------------------------------------------------------------ LightGBM (optional)

LGB_FAST = LightGBMParams(
    n_estimators=150, num_leaves=7, learning_rate=0.2, early_stopping_rounds=10
)
needs_lightgbm = pytest.mark.skipif(not lightgbm_available(), reason="lightgbm not installed")


@needs_lightgbm
def test_lightgbm_backend_trains_like_xgboost_and_exports_with_parity(table, fitted):
    x, y, ts = table
    fit = fit_lightgbm(x, y, ts, horizon_ns=HORIZON_NS, params=LGB_FAST)
    assert np.array_equal(fit.split.train, fitted.split.train)  # the same purged holdout
    m = fit.validation
    assert m.log_loss < m.prior_log_loss and m.rows == len(fit.split.test)
    va = x[fit.split.test]
    assert np.isnan(va).any()
    data = export_lightgbm_onnx(fit.booster, x.shape[1], check_rows=x[:50])
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"features": va})[0]
    np.testing.assert_allclose(got, fit.booster.predict(va), rtol=0, atol=1e-5)


@needs_lightgbm
def test_lightgbm_export_follows_missing_values_and_single_leaf_trees(table):
    """Trained without NaN, LightGBM reads NaN as 0.0 (missing_type None); trained on rows it
    cannot split, a tree is a single leaf. The graph must do both as LightGBM does."""
    import lightgbm as lgb

    x, y, _ = table
    clean = np.nan_to_num(x[:3000], nan=0.5)
    booster = lgb.train(
        {"objective": "multiclass", "num_class": 3, "num_leaves": 7, "verbosity": -1,
         "deterministic": True, "num_threads": 1, "min_data_in_leaf": 5},
        lgb.Dataset(clean, y[:3000]), num_boost_round=30,
    )  # fmt: skip
    types = {n.get("missing_type") for t in booster.dump_model()["tree_info"]
             for n in _split_nodes(t["tree_structure"])}  # fmt: skip
    assert types == {"None"}
    probe = x[3000:].copy()
    probe[::3, :] = np.nan  # whole rows of NaN, plus the table's scattered ones
    probe[1::7, 0] = 0.0
    data = export_lightgbm_onnx(booster, x.shape[1], check_rows=probe)
    got = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(
        ["probabilities"], {"features": probe}
    )[0]
    np.testing.assert_allclose(got, booster.predict(probe), rtol=0, atol=1e-5)
    stumps = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbosity": -1, "min_data_in_leaf": 10_000,
         "num_threads": 1},
        lgb.Dataset(clean, y[:3000]), num_boost_round=3,
    )  # fmt: skip
    assert all("leaf_value" in t["tree_structure"] for t in stumps.dump_model()["tree_info"])
    export_lightgbm_onnx(stumps, x.shape[1], check_rows=probe)


@needs_lightgbm
def test_lightgbm_export_refuses_what_it_cannot_represent(table):
    import lightgbm as lgb

    x, y, _ = table
    binary = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_threads": 1},
        lgb.Dataset(x[:500], y[:500] == 2),
        3,
    )
    with pytest.raises(OnnxExportError, match="objective"):
        export_lightgbm_onnx(binary, x.shape[1], check_rows=x[:5])
    multi = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbosity": -1, "num_threads": 1},
        lgb.Dataset(x[:500], y[:500]),
        3,
    )  # fmt: skip
    with pytest.raises(OnnxExportError, match="trained on 8 features, not 7"):
        export_lightgbm_onnx(multi, 7, check_rows=x[:5, :7])


@settings(max_examples=200, deadline=None)
@given(threshold=st.floats(-1e6, 1e6, allow_nan=False), x=st.floats(-1e6, 1e6, width=32))
def test_thresholds_round_down_to_the_same_float32_comparison(threshold, x):
    """LightGBM compares the float32 feature widened to double; the graph compares float32."""
    low = _float32_at_or_below(threshold)
    for v in (np.float32(x), low, np.nextafter(low, np.float32(np.inf))):
        assert (float(v) <= threshold) == bool(v <= low)


def _split_nodes(node: dict):
    if "leaf_value" not in node:
        yield node
        yield from _split_nodes(node["left_child"])
        yield from _split_nodes(node["right_child"])
