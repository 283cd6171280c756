"""The ensemble: vote arithmetic, minimum agreement, the meta-learner (moves toward the model
that was right, never sees an outcome before its horizon), streaming equal to batch,
calibration fitted on its own fold, determinism.

Mids and features are the real ES file's. The three members are real predictors on those
features: trees (XGBoost trained on the first half of the hour), a logistic regression on
order-flow features and a last-move persistence rule; they stand in for the tick LSTM, the
trees and the bar LSTM by name only.
"""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sklearn.linear_model import LogisticRegression

from esml.alpha.ensemble import (
    Ensemble,
    EnsembleConfig,
    MetaLearner,
    ensemble_batch,
    fit_ensemble_calibrator,
)
from esml.alpha.xgb import XGBParams, fit_booster
from esml.features.batch import batch_features
from esml.features.labels import DOWN, FLAT, UP, direction_labels
from esml.features.streaming import FEATURE_NAMES
from esml.market.instruments import ES

NS = 1_000_000_000
TICK = ES.tick_size
NAMES = ["tick_lstm", "trees", "bar_lstm"]
FIXED = EnsembleConfig(meta_sharpness=0.0, calibration="none")


class Echo:
    """A model whose input row is its answer: lets a test hand each model its probabilities."""

    def __init__(self, name: str) -> None:
        self.name = name

    def predict_one(self, row: np.ndarray) -> tuple[float, float, float]:
        return float(row[0]), float(row[1]), float(row[2])


@pytest.fixture(scope="module")
def es(es_events):
    """(ts, mid, probas [n, 3 models, 3]) on the real ES hour's second half."""
    frame = batch_features(es_events, ES.tick_fixed, 1.0)
    y, valid = direction_labels(frame.ts_ns, frame.mid, 20.0, 0.5, TICK)
    half = len(y) // 2
    fit = fit_booster(
        frame.X[:half][valid[:half]],
        y[:half][valid[:half]].astype(np.int64),
        frame.ts_ns[:half][valid[:half]],
        horizon_ns=20 * NS,
        params=XGBParams(n_estimators=60, max_depth=3, n_jobs=1, n_folds=0),
    )
    flow = [FEATURE_NAMES.index(f) for f in FEATURE_NAMES if "imbalance" in f or "flow" in f]
    logit = LogisticRegression(max_iter=500).fit(
        frame.X[:half][valid[:half]][:, flow], y[:half][valid[:half]]
    )
    ts, mid, x = frame.ts_ns[half:], frame.mid[half:], frame.X[half:]
    back = np.maximum(np.searchsorted(frame.ts_ns, ts - 20 * NS, "right") - 1, 0)
    move = (mid - frame.mid[back]) / TICK
    persist = np.full((len(ts), 3), 0.25)
    persist[np.arange(len(ts)), np.where(move > 0.5, UP, np.where(move < -0.5, DOWN, FLAT))] = 0.5
    trees = fit.booster.predict(xgb.DMatrix(x)).astype(np.float64)
    probas = np.stack([logit.predict_proba(x[:, flow]), trees, persist], axis=1)
    return ts, mid, probas / probas.sum(axis=2, keepdims=True)


def decide(ens: Ensemble, t: int, p: dict[str, list[float]]):
    return ens.decide(t, 4800.0, {k: np.asarray(v) for k, v in p.items()})


def test_weighted_vote_arithmetic() -> None:
    ens = Ensemble(FIXED, [Echo(n) for n in NAMES], tick_size=TICK)
    d = decide(
        ens,
        0,
        {"tick_lstm": [0.5, 0.3, 0.2], "trees": [0.2, 0.2, 0.6], "bar_lstm": [0.1, 0.3, 0.6]},
    )
    assert d.weights == {"tick_lstm": 0.25, "trees": 0.5, "bar_lstm": 0.25}
    assert d.votes == {"tick_lstm": "down", "trees": "up", "bar_lstm": "up"}
    assert d.agreement == pytest.approx(0.75) and d.agreed and d.direction == "up"
    # 0.25 [.5 .3 .2] + 0.5 [.2 .2 .6] + 0.25 [.1 .3 .6]
    assert (d.p_down, d.p_flat, d.p_up) == pytest.approx((0.25, 0.25, 0.5))
    assert d.confidence == pytest.approx(0.5)


def test_minimum_agreement() -> None:
    up, down = [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]
    ens = Ensemble(FIXED, [Echo(n) for n in NAMES], tick_size=TICK)
    d = decide(ens, 0, {"tick_lstm": down, "trees": up, "bar_lstm": down})
    assert d.agreement == pytest.approx(0.5)  # the trees' 2 against the LSTMs' 1 + 1
    assert not d.agreed and d.direction == "flat" and d.confidence == 0.0
    for min_agreement, agreed in [(0.75, True), (0.8, False)]:
        cfg = FIXED.model_copy(update={"min_agreement": min_agreement})
        ens = Ensemble(cfg, [Echo(n) for n in NAMES], tick_size=TICK)
        d = decide(ens, 0, {"tick_lstm": up, "trees": up, "bar_lstm": down})
        assert d.agreed is agreed and d.direction == ("up" if agreed else "flat")
        assert d.confidence == (pytest.approx(d.p_up) if agreed else 0.0)


def test_meta_learner_moves_weight_to_the_model_that_was_right(es) -> None:
    """An oracle (it is handed the real outcome) against a model that is always wrong."""
    ts, mid, probas = es
    y, valid = direction_labels(ts, mid, 20.0, 0.5, TICK)
    oracle = np.full((len(y), 3), 0.1)
    oracle[np.arange(len(y)), y] = 0.8
    wrong = np.roll(oracle, 1, axis=1)  # always a class that did not happen
    p = np.stack([oracle, probas[:, 1], wrong], axis=1)
    out = ensemble_batch(EnsembleConfig(calibration="none"), NAMES, ts, mid, p, TICK)
    first = np.flatnonzero(ts >= ts[0] + 20 * NS)[0]  # the first row that can know an outcome
    np.testing.assert_allclose(out.weights[:first], [[0.25, 0.5, 0.25]] * first)
    assert out.weights[first + 30, 0] > 0.25 > out.weights[first + 30, 2]
    share = out.weights[:, 0]
    assert share[first + 30] < share[first + 100] < share[first + 300]
    assert share[-1] > 0.8 and out.weights[-1, 2] < 0.01
    # with the oracle dominating, the ensemble agrees with it
    later = valid & (np.arange(len(y)) >= first + 200)
    assert np.mean(out.direction[later] == y[later]) > 0.95


def test_outcomes_wait_for_their_horizon_in_the_stream() -> None:
    cfg = EnsembleConfig(calibration="none", horizon_s=20.0)
    meta = MetaLearner(cfg, NAMES, TICK)
    t0 = 1_700_000_000 * NS
    meta.observe(t0, 4800.0)
    meta.record(t0, 4800.0, np.array([UP, UP, DOWN], np.int8))
    for s in range(1, 20):
        meta.observe(t0 + s * NS, 4801.0)
        assert meta.resolved == 0  # 19 s later the outcome is still unknown
    meta.observe(t0 + 20 * NS, 4801.0)
    assert meta.resolved == 1
    w = meta.weights()
    assert w[0] / w[2] > 0.25 / 0.25 and w[1] / w[2] > 2.0  # the two "up" votes were right
    with pytest.raises(ValueError, match="forward"):
        meta.observe(t0 + 20 * NS, 4801.0)
    with pytest.raises(ValueError, match="observe the decision"):
        meta.record(t0 + 5 * NS, 4801.0, np.array([UP, UP, UP], np.int8))


@settings(max_examples=15, deadline=None)
@given(cut=st.integers(50, 1_500), seed=st.integers(0, 2**16))
def test_no_decision_depends_on_anything_after_it(es, cut, seed) -> None:
    """Replacing every mid and every model answer after row `cut` changes no decision up to
    `cut`: weights, probabilities, votes, confidence."""
    ts, mid, probas = es
    rng = np.random.default_rng(seed)
    mid2, p2 = mid.copy(), probas.copy()
    mid2[cut + 1 :] += rng.integers(-6, 7, len(mid) - cut - 1) * TICK
    p2[cut + 1 :] = rng.dirichlet(np.ones(3), (len(mid) - cut - 1, 3))
    cfg = EnsembleConfig(calibration="none", meta_window=50)
    a = ensemble_batch(cfg, NAMES, ts, mid, probas, TICK)
    b = ensemble_batch(cfg, NAMES, ts, mid2, p2, TICK)
    for field in ("weights", "proba", "direction", "confidence", "agreement", "votes"):
        np.testing.assert_array_equal(getattr(a, field)[: cut + 1], getattr(b, field)[: cut + 1])
    assert not np.array_equal(a.weights, b.weights)  # the later rows did change


def test_streaming_equals_batch_and_is_deterministic(es) -> None:
    ts, mid, probas = es
    cfg = EnsembleConfig(meta_window=120)  # vector scaling, the default
    cal_rows = slice(0, 800)
    calibrator = fit_ensemble_calibrator(
        cfg, NAMES, ts[cal_rows], mid[cal_rows], probas[cal_rows], TICK
    )
    _, v_cal = direction_labels(ts[cal_rows], mid[cal_rows], 20.0, 0.5, TICK)
    assert calibrator is not None and calibrator.fitted_rows == v_cal.sum()
    rest = slice(800, None)
    batch = ensemble_batch(cfg, NAMES, ts[rest], mid[rest], probas[rest], TICK, calibrator)
    again = ensemble_batch(cfg, NAMES, ts[rest], mid[rest], probas[rest], TICK, calibrator)
    for field in ("weights", "proba", "direction", "confidence", "agreement", "votes"):
        np.testing.assert_array_equal(getattr(batch, field), getattr(again, field))
    ens = Ensemble(cfg, [Echo(n) for n in NAMES], tick_size=TICK, calibrator=calibrator)
    for i, (t, m, p) in enumerate(zip(ts[rest], mid[rest], probas[rest], strict=True)):
        d = ens.decide(int(t), float(m), dict(zip(NAMES, p, strict=True)))
        np.testing.assert_allclose([d.p_down, d.p_flat, d.p_up], batch.proba[i], atol=1e-12)
        np.testing.assert_allclose(list(d.weights.values()), batch.weights[i], atol=1e-12)
        assert d.direction == ("down", "flat", "up")[batch.direction[i]]
        assert d.confidence == pytest.approx(batch.confidence[i], abs=1e-12)
    np.testing.assert_allclose(batch.proba.sum(axis=1), 1.0, atol=1e-9)
    assert set(np.unique(batch.direction)) >= {FLAT} and batch.agreed.mean() > 0.3


def test_configuration_is_strict_and_models_must_match() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        EnsembleConfig(wieghts={"trees": 1.0})
    with pytest.raises(ValidationError, match=r"greater than 0\.5"):
        EnsembleConfig(min_agreement=0.5)
    with pytest.raises(ValidationError, match="finite and positive"):
        EnsembleConfig(weights={"trees": 0.0})
    with pytest.raises(ValueError, match="pass the calibrator"):
        Ensemble(EnsembleConfig(), [Echo(n) for n in NAMES], tick_size=TICK)
    with pytest.raises(ValueError, match="configured for"):
        Ensemble(FIXED, [Echo("trees"), Echo("deeplob")], tick_size=TICK)
    ens = Ensemble(FIXED, [Echo(n) for n in NAMES], tick_size=TICK)
    with pytest.raises(ValueError, match="sum to 1"):
        decide(ens, 0, {n: [0.5, 0.5, 0.5] for n in NAMES})
    with pytest.raises(ValueError, match="ensemble's models"):
        decide(ens, 0, {"trees": [0.2, 0.3, 0.5]})
    with pytest.raises(ValueError, match="vector"):
        Ensemble(
            EnsembleConfig(calibration="none"),
            [Echo(n) for n in NAMES],
            tick_size=TICK,
            calibrator=fit_ensemble_calibrator(
                EnsembleConfig(),
                NAMES,
                np.arange(200, dtype=np.int64) * NS,
                4800 + TICK * np.round(np.sin(np.arange(200) / 7) * 4),
                np.random.default_rng(0).dirichlet(np.ones(3), (200, 3)),
                TICK,
            ),
        )
