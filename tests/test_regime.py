"""The regime classifier: the hemispheres' poll on hand-built votes, a fit on real ES features
(plus one generated session, SYNTHETIC) with its ONNX graph equal to it in onnxruntime,
determinism, and skill where a signal exists (a SYNTHETIC table)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from esml.alpha.regime import (
    REGIME_OUTPUT,
    RegimeConfig,
    _poll,
    default_views,
    fit_regime_classifier,
)
from esml.features.batch import batch_features
from esml.features.labels import REGIME_NONE, REGIME_RANGE, REGIME_TREND, regime_labels
from esml.features.streaming import FEATURE_NAMES
from esml.market.instruments import ES
from esml.sim.synthetic import generate_session

FAST = RegimeConfig(tree_count=25, tree_depth=3, mlp_hidden=8, mlp_max_iter=60)


def rows(*probas: list[float]) -> list[np.ndarray]:
    return [np.array([p], np.float64) for p in probas]


def test_poll_agreeing_hemispheres_and_a_majority() -> None:
    out = _poll(
        rows(
            [0.1, 0.8, 0.1],
            [0.2, 0.6, 0.2],
            [0.3, 0.3, 0.4],  # left: trend 2, range 1
            [0.1, 0.7, 0.2],
            [0.2, 0.5, 0.3],
            [0.1, 0.5, 0.4],  # right: trend 3
        )
    )
    assert (out.left[0], out.right[0], out.regime[0]) == (REGIME_TREND,) * 3
    assert out.agreed[0]
    np.testing.assert_allclose(out.proba[0], [1.0 / 6, 3.4 / 6, 1.6 / 6])


@pytest.mark.parametrize(("right_conf", "winner"), [(0.48, REGIME_TREND), (0.42, REGIME_RANGE)])
def test_poll_three_way_split_and_disagreement_by_summed_confidence(right_conf, winner) -> None:
    c = right_conf
    out = _poll(
        rows(
            [0.5, 0.3, 0.2],
            [0.2, 0.6, 0.2],
            [0.05, 0.05, 0.9],  # left 1-1-1: range (0.9)
            [0.3, c, 0.7 - c],
            [0.3, c, 0.7 - c],
            [0.8, 0.1, 0.1],  # right: trend 2 votes
        )
    )
    assert out.left[0] == REGIME_RANGE and out.right[0] == REGIME_TREND and not out.agreed[0]
    assert out.regime[0] == winner  # right's backing 2c against left's 0.9


def test_poll_exact_tie_is_none() -> None:
    out = _poll(
        rows(
            [0.25, 0.5, 0.25],
            [0.25, 0.5, 0.25],
            [0.1, 0.1, 0.8],  # trend, backing 1.0
            [0.25, 0.25, 0.5],
            [0.25, 0.25, 0.5],
            [0.5, 0.25, 0.25],  # range, backing 1.0
        )
    )
    assert (out.left[0], out.right[0], out.regime[0]) == (REGIME_TREND, REGIME_RANGE, REGIME_NONE)
    assert out.margin[0] == 0.0


@pytest.fixture(scope="module")
def es_regimes(es_events):
    """Real ES features and regime labels, then one generated session's (SYNTHETIC)."""
    out = []
    for events in (es_events, generate_session(21, duration_s=1800)):
        frame = batch_features(events, ES.tick_fixed, 1.0)
        y, valid = regime_labels(frame.ts_ns, frame.mid, ES.tick_size, **FAST.label_kwargs())
        out.append((frame.X[valid], y[valid].astype(np.int64)))
    return out


@pytest.fixture(scope="module")
def fitted(es_regimes):
    (x_real, y_real), (x_syn, y_syn) = es_regimes
    cut = int(0.7 * len(y_real))
    # every other second: five-minute labels a second apart are nearly the same row
    x = np.concatenate([x_real[:cut], x_syn])[::2]
    y = np.concatenate([y_real[:cut], y_syn])[::2]
    return fit_regime_classifier(x, y, FEATURE_NAMES, FAST), x_real[cut:]


def test_onnx_graph_equals_the_classifier_in_onnxruntime(fitted, es_regimes) -> None:
    clf, held_out = fitted
    assert clf.members == [
        "left.trees", "left.logistic", "left.mlp", "right.trees", "right.logistic", "right.mlp",
    ]  # fmt: skip
    data = clf.export_onnx(held_out)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = np.concatenate([held_out, es_regimes[1][0]]).astype(np.float32)
    proba, regime = session.run(["probabilities", REGIME_OUTPUT], {"features": x})
    want = clf.predict(x)
    np.testing.assert_allclose(proba, want.proba, rtol=0, atol=1e-5)
    assert proba.shape == (len(x), 3) and regime.dtype == np.int64
    np.testing.assert_array_equal(regime, want.regime)
    assert len(np.unique(want.regime)) >= 2  # it is not a constant answer
    assert 0.0 < np.mean(want.agreed) < 1.0  # the hemispheres do disagree, sometimes
    split = ~want.agreed  # a disagreement resolves to one hemisphere's call, or "none"
    sides = np.stack([want.left[split], want.right[split], np.full(split.sum(), REGIME_NONE)])
    assert np.all(np.any(sides == want.regime[split], axis=0))


def test_fitting_is_deterministic(es_regimes) -> None:
    (x_real, y_real), (x_syn, y_syn) = es_regimes
    x = np.concatenate([x_real, x_syn])[::8]
    y = np.concatenate([y_real, y_syn])[::8]
    first, second = (fit_regime_classifier(x, y, FEATURE_NAMES, FAST) for _ in range(2))
    assert first.to_onnx().SerializeToString() == second.to_onnx().SerializeToString()


def test_skill_where_the_signal_is_in_one_view() -> None:
    """SYNTHETIC: the regime depends on the first two "price" columns only, so the left
    hemisphere must beat the right, and the classifier the majority class, out of sample."""
    rng = np.random.default_rng(4)
    n = 3000
    x = rng.normal(size=(n, 6))
    score = 1.5 * x[:, 0] + x[:, 1] ** 2 + 0.5 * rng.normal(size=n)
    y = np.where(score > 1.8, REGIME_TREND, np.where(score < 0.0, REGIME_RANGE, REGIME_NONE))
    names = ["ret_5s", "realized_vol_60s", "momentum_30s", "ofi_5s", "imbalance_l1", "spread"]
    assert default_views(names) == (names[:3], names[3:])
    clf = fit_regime_classifier(x[:2000], y[:2000], names, FAST)
    out = clf.predict(x[2000:])
    truth = y[2000:]
    majority = np.mean(truth == np.bincount(y[:2000]).argmax())
    assert np.mean(out.left == truth) > np.mean(out.right == truth) + 0.2
    assert np.mean(out.regime == truth) > majority + 0.2


def test_views_cover_every_feature_and_bad_input_is_refused(es_regimes) -> None:
    left, right = default_views(FEATURE_NAMES)
    assert left and right and set(left) | set(right) == set(FEATURE_NAMES)
    x, y = es_regimes[0]
    with pytest.raises(ValueError, match="cover all of"):
        fit_regime_classifier(x, np.where(y == REGIME_TREND, REGIME_NONE, y), FEATURE_NAMES, FAST)
    with pytest.raises(ValueError, match="unknown"):
        fit_regime_classifier(x, y, FEATURE_NAMES, FAST, views=(["no_such"], FEATURE_NAMES[:2]))
    bad = x.copy()
    bad[5, 3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        fit_regime_classifier(bad, y, FEATURE_NAMES, FAST)
    with pytest.raises(ValueError, match="must be below trend_efficiency"):
        RegimeConfig(range_efficiency=0.4)
    with pytest.raises(ValueError, match="shape"):
        fit_regime_classifier(x[:, :-1], y, FEATURE_NAMES, FAST)
