"""esml.evaluation.model_eval: metrics and intervals on predictions with known answers, the
baselines, the walk-forward purge, and one end-to-end evaluation on the real ES file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, log_loss

from esml.config import FeatureConfig
from esml.evaluation.datasets import (
    EvalDataset,
    Source,
    _previous_labels,
    equity_instrument,
    real_es_dataset,
)
from esml.evaluation.metrics import wilson_interval
from esml.evaluation.model_eval import (
    BASELINES,
    MICROPRICE_FEATURES,
    OFI_FEATURES,
    BlockBootstrap,
    Comparison,
    DatasetResult,
    EvalSettings,
    FoldRows,
    Interval,
    ModelBudget,
    ReportContext,
    Scores,
    check_purged,
    evaluate_dataset,
    feature_columns,
    logistic_baseline,
    majority_baseline,
    metrics_from_sums,
    ofi_columns,
    persistence_baseline,
    render_markdown,
    row_stats,
    score_models,
    walk_forward_folds,
)
from esml.features.streaming import FEATURE_NAMES
from esml.market.instruments import ES

ROOT = Path(__file__).resolve().parents[1]
ES_FILE = ROOT / "data/samples/esh4-glbx-mdp3-20231225.mbo.dbn.zst"
S = 1_000_000_000


def _onehot_proba(pred: np.ndarray, p: float) -> np.ndarray:
    """Probability p on the predicted class, the rest split evenly."""
    out = np.full((len(pred), 3), (1 - p) / 2)
    out[np.arange(len(pred)), pred] = p
    return out


def _metrics(y, proba, pred) -> dict[str, float]:
    return {k: float(v) for k, v in metrics_from_sums(row_stats(y, proba, pred).sum(0)).items()}


# ---------------------------------------------------------------------------- metrics


def test_metrics_of_hand_built_predictions_match_the_arithmetic():
    y = np.array([0, 1, 2, 2])
    pred = np.array([0, 1, 1, 2])
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    m = _metrics(y, proba, pred)
    assert m["accuracy"] == pytest.approx(0.75)
    # F1 per class: down 1, flat 2*1/(2+1+0) = 2/3, up 2*1/(2+0+1) = 2/3
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.8, 0.3, 0.8])))
    brier = [
        0.3**2 + 0.2**2 + 0.1**2,
        0.1**2 + 0.2**2 + 0.1**2,
        0.2**2 + 0.5**2 + 0.7**2,
        0.1**2 + 0.1**2 + 0.2**2,
    ]
    assert m["brier"] == pytest.approx(np.mean(brier))


def test_metrics_agree_with_sklearn_on_random_predictions():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 500)
    proba = rng.dirichlet([1, 1, 1], 500)
    pred = proba.argmax(1)
    m = _metrics(y, proba, pred)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["log_loss"] == pytest.approx(log_loss(y, proba, labels=[0, 1, 2]))
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))


def test_a_class_never_predicted_nor_present_counts_zero_in_macro_f1_as_sklearn_does():
    y, pred = np.array([0, 0, 2]), np.array([0, 0, 2])
    m = _metrics(y, _onehot_proba(pred, 0.9), pred)
    assert m["macro_f1"] == pytest.approx(
        f1_score(y, pred, labels=[0, 1, 2], average="macro", zero_division=0)
    )
    assert m["macro_f1"] == pytest.approx(2 / 3)


def test_bad_predictions_are_refused():
    y = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="sum to 1"):
        row_stats(y, np.full((3, 3), 0.5), np.zeros(3, int))
    with pytest.raises(ValueError, match=r"\[3, 3\]"):
        row_stats(y, np.full((3, 2), 0.5), np.zeros(3, int))
    with pytest.raises(ValueError, match="labels"):
        row_stats(np.array([0, 3, 1]), np.full((3, 3), 1 / 3), np.zeros(3, int))


# ---------------------------------------------------------------------------- intervals


def test_perfect_predictions_have_a_degenerate_interval():
    y = np.tile([0, 1, 2], 100)
    scores, _ = score_models(y, {"m": (np.eye(3)[y], y)}, [], block=10, n_boot=200, seed=1)
    acc = scores["m"].metrics["accuracy"]
    assert (acc.value, acc.low, acc.high) == (1.0, 1.0, 1.0)
    assert scores["m"].n == 300


def test_one_row_blocks_on_independent_rows_reproduce_the_wilson_interval():
    rng = np.random.default_rng(11)
    n = 4000
    y = rng.integers(0, 3, n)
    right = rng.random(n) < 0.6
    pred = np.where(right, y, (y + 1) % 3)
    scores, _ = score_models(
        y, {"m": (_onehot_proba(pred, 0.5), pred)}, [], block=1, n_boot=2000, seed=2
    )
    acc = scores["m"].metrics["accuracy"]
    lo, hi = wilson_interval(int(right.sum()), n)
    assert acc.low == pytest.approx(lo, abs=0.004)
    assert acc.high == pytest.approx(hi, abs=0.004)


def test_blocks_widen_the_interval_when_errors_come_in_runs():
    # correctness in runs of 60 rows (as overlapping 20 s labels make it): 1-row blocks
    # pretend there are 6000 independent answers; 60-row blocks see about 100
    rng = np.random.default_rng(5)
    runs = rng.random(100) < 0.55
    right = np.repeat(runs, 60)
    y = np.zeros(6000, int)
    pred = np.where(right, 0, 1)
    preds = {"m": (_onehot_proba(pred, 0.6), pred)}
    naive, _ = score_models(y, preds, [], block=1, n_boot=1000, seed=3)
    blocked, _ = score_models(y, preds, [], block=60, n_boot=1000, seed=3)
    width = {
        k: s["m"].metrics["accuracy"].high - s["m"].metrics["accuracy"].low
        for k, s in (("naive", naive), ("blocked", blocked))
    }
    assert width["blocked"] > 4 * width["naive"]
    assert (
        blocked["m"].metrics["accuracy"].low < right.mean() < blocked["m"].metrics["accuracy"].high
    )


def test_the_bootstrap_plan_resamples_exactly_n_rows_in_blocks():
    plan = BlockBootstrap(n=103, block=10, n_boot=50, seed=0)
    ones = plan.sums(np.ones((103, 1)))
    assert np.all(ones == 103)
    index = np.arange(103, dtype=float)[:, None]
    # a block sums consecutive (circular) rows: with block = n it is a rotation, sum fixed
    whole = BlockBootstrap(n=103, block=103, n_boot=20, seed=0).sums(index)
    assert np.allclose(whole, index.sum())


def test_a_model_equal_to_its_baseline_does_not_beat_it_and_a_better_one_does():
    rng = np.random.default_rng(9)
    n = 3000
    y = rng.integers(0, 3, n)
    base_pred = rng.integers(0, 3, n)
    good = np.where(rng.random(n) < 0.7, y, base_pred)
    preds = {
        "same": (np.full((n, 3), 1 / 3), base_pred),
        "good": (_onehot_proba(good, 0.6), good),
        "majority": (np.full((n, 3), 1 / 3), base_pred),
    }
    _, comps = score_models(y, preds, ["majority"], block=30, n_boot=500, seed=4)
    by = {c.model: c for c in comps}
    assert set(by["same"].verdicts.values()) == {"no difference"}
    assert (
        by["same"]
        .sentence("same", "majority class")
        .startswith("same does not beat majority class")
    )
    assert by["good"].beats_all
    assert by["good"].sentence("good", "majority class") == (
        "good beats majority class on every metric."
    )
    worse = score_models(
        y, {"bad": preds["majority"], "base": preds["good"]}, ["base"], block=30, n_boot=500, seed=4
    )[1][0]
    assert set(worse.verdicts.values()) == {"worse"}
    assert "does not beat" in worse.sentence("bad", "base")


# ---------------------------------------------------------------------------- baselines


def test_majority_baseline_predicts_the_training_majority_with_its_frequencies():
    proba, pred = majority_baseline(np.array([0, 0, 1, 2]), 3)
    assert np.all(pred == 0)
    assert np.allclose(proba, [[0.5, 0.25, 0.25]] * 3)


def test_persistence_repeats_the_last_move_with_training_transition_frequencies():
    prev_train = np.array([0, 0, 2, 2, 2, -1])
    y_train = np.array([0, 1, 2, 2, 1, 2])
    proba, pred = persistence_baseline(prev_train, y_train, np.array([2, 0, -1, 1]))
    assert pred.tolist() == [2, 0, 2, 1]  # no last move: the training majority (up)
    # after "up": down 0, flat 1, up 2, each plus one → (1, 2, 3) / 6
    assert np.allclose(proba[0], [1 / 6, 2 / 6, 3 / 6])
    assert np.allclose(proba[1], [2 / 5, 2 / 5, 1 / 5])
    assert np.allclose(proba[2], [1 / 6, 2 / 6, 3 / 6])  # class frequencies of y_train
    assert np.allclose(proba[3], [1 / 3] * 3)  # never seen after flat: uniform


def test_previous_labels_are_the_move_that_just_ended_and_never_cross_a_gap():
    ts = np.concatenate([np.arange(0, 100), np.arange(300, 400)]).astype(np.int64) * S
    y = (np.arange(200) % 3).astype(np.int64)
    valid = np.ones(200, bool)
    valid[5] = False
    prev = _previous_labels(ts, y, valid, 20 * S)
    assert prev[30] == y[10] and prev[199] == y[179]
    assert np.all(prev[:20] == -1)  # no decision 20 s earlier
    assert prev[25] == -1  # the decision 20 s earlier has no valid label
    assert np.all(prev[100:120] == -1)  # 20 s earlier falls in the gap


@pytest.mark.parametrize("wanted", [OFI_FEATURES, MICROPRICE_FEATURES])
def test_logistic_baselines_read_only_their_features_and_learn_their_sign(wanted):
    cols = feature_columns(FEATURE_NAMES, wanted)
    assert [FEATURE_NAMES[c] for c in cols] == list(wanted)
    assert list(ofi_columns(FEATURE_NAMES)) == list(feature_columns(FEATURE_NAMES, OFI_FEATURES))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, len(FEATURE_NAMES)))
    signal = x[:, cols[-1]]
    y = np.where(signal > 0.5, 2, np.where(signal < -0.5, 0, 1))
    x_noisy = x.copy()
    x_noisy[:, [i for i in range(x.shape[1]) if i not in cols]] = 1e6  # ignored columns
    proba, pred = logistic_baseline(x_noisy[:1500][:, cols], y[:1500], x[1500:][:, cols])
    assert np.mean(pred == y[1500:]) > 0.9
    assert np.allclose(proba.sum(1), 1)


# ---------------------------------------------------------------------------- walk-forward


def test_walk_forward_folds_are_purged_and_embargoed_around_a_gap():
    ts = np.concatenate([np.arange(0, 3000), np.arange(5000, 8000)]).astype(np.int64) * S
    settings = EvalSettings(n_folds=3, embargo_s=30)
    folds = walk_forward_folds(ts, 20 * S, settings)
    check_purged(ts, folds, 20 * S, 30 * S)
    for f in folds:
        assert ts[f.fit].max() + 50 * S < ts[f.calibration].min()
        assert ts[f.train].max() + 50 * S < ts[f.test].min()
    assert [len(f.test) for f in folds] == [1000, 1000, 1000]
    assert np.array_equal(np.concatenate([f.test for f in folds]), np.arange(3000, 6000))
    leaky = FoldRows(folds[0].fit, folds[0].calibration, folds[0].calibration[-10:] + 1)
    with pytest.raises(AssertionError, match="not purged"):
        check_purged(ts, [leaky], 20 * S, 30 * S)


# ---------------------------------------------------------------------------- end to end


def test_equity_instrument_is_priced_in_cents_like_lobster():
    goog = equity_instrument("goog")
    assert goog.root == "GOOG" and goog.tick_size == 0.01 and goog.tick_fixed == 10_000_000


@pytest.mark.skipif(not ES_FILE.exists(), reason="shipped ES sample missing")
def test_real_es_evaluation_scores_every_model_on_the_same_purged_rows(tmp_path):
    ds, skipped = real_es_dataset([ES_FILE, ES_FILE])  # a copy counts once
    assert ds is not None and len(ds.sources) == 1 and not skipped
    budget = ModelBudget()
    budget = budget.model_copy(
        update={
            "trees": budget.trees.model_copy(update={"n_estimators": 30}),
            "nets": budget.nets.model_copy(update={"epochs": 1, "max_batches_per_epoch": 1}),
        }
    )
    settings = EvalSettings(n_folds=2, n_boot=200)
    r = evaluate_dataset(ds, FeatureConfig(), settings, budget, nets=("tick_lstm",))
    assert r.models == ("trees", "tick_lstm", "ensemble")
    assert r.ensemble_members == ("tick_lstm", "trees")
    assert len(r.training["trees"]) == 2 and r.training["tick_lstm"] == ["epoch 1 of 1 (cap)"] * 2
    n_test = sum(f.test_rows for f in r.folds)
    assert {s.n for s in r.scores.values()} == {n_test}
    assert sum(r.test_class_counts.values()) == n_test
    assert set(r.scores) == {"trees", "tick_lstm", "ensemble", *BASELINES}
    assert len(r.comparisons) == 3 * len(BASELINES)
    for s in r.scores.values():
        for m in s.metrics.values():
            assert m.low <= m.value <= m.high or math.isclose(m.low, m.high)
    ctx = ReportContext("esml evaluate --only es", "today", 1.0, FeatureConfig(), settings, budget)
    doc = render_markdown([r], ctx)
    assert "## CME ES (real MBO)" in doc and "SYNTHETIC DATA" not in doc
    assert "may not have converged: " in doc and "tick LSTM 2 of 2" in doc  # 1 epoch is a cap
    for c in r.comparisons:
        if not c.beats_all:
            assert "does not beat" in doc or " only;" in doc


def test_synthetic_data_sets_are_labelled_synthetic_in_the_report():
    metrics = {m: Interval(0.5, 0.4, 0.6) for m in ("accuracy", "macro_f1", "log_loss", "brier")}
    r = DatasetResult(
        title="ES generated, 1 days (SYNTHETIC)",
        kind="synthetic",
        synthetic=True,
        notes=("generated",),
        sources=(("day", "0" * 64),),
        rows=20,
        folds=(),
        test_class_counts={"down": 3, "flat": 4, "up": 3},
        models=("trees", "ensemble"),
        ensemble_members=("trees",),
        excluded={"bar_lstm": "too short"},
        training={"trees": ["5 rounds"]},
        flat_share={"trees": 0.9, "ensemble": 0.3},
        scores={
            **{n: Scores(10, metrics) for n in ("ensemble", *BASELINES)},
            "trees": Scores(10, {**metrics, "log_loss": Interval(1.1, 1.09, 1.11)}),
        },
        comparisons=tuple(
            Comparison(m, b, metrics) for m in ("trees", "ensemble") for b in BASELINES
        ),
        block_rows=1,
        seconds=1.0,
    )
    doc = render_markdown(
        [r], ReportContext("x", "today", 1.0, FeatureConfig(), EvalSettings(), ModelBudget())
    )
    assert "SYNTHETIC DATA: generated by esml's simulator" in doc
    assert "no evidence of an edge" in doc
    assert "**bar LSTM not judged here**: too short." in doc
    assert "flat is 40% of the test rows, but it is predicted on trees (XGBoost) 90% " in doc
    assert "trees (XGBoost) beats majority class on every metric." in doc
    assert "carry almost no information here: trees (XGBoost) (5 rounds)." in doc


def test_a_data_set_with_overlapping_sources_is_refused():
    from esml.evaluation.datasets import build_rows
    from esml.sim.synthetic import generate_session

    ev = generate_session(3, duration_s=900)
    src = Source("a", ev, "0" * 64)
    ds = EvalDataset("two copies", "synthetic", ES, (src, src), True)
    with pytest.raises(ValueError, match="overlap in time"):
        build_rows(ds, FeatureConfig(), ())


@pytest.mark.skipif(not ES_FILE.exists(), reason="shipped ES sample missing")
def test_evaluate_command_writes_the_report_and_refuses_bad_input(tmp_path):
    from typer.testing import CliRunner

    from esml.cli.train_cmd import evaluate_app

    doc = tmp_path / "docs" / "model-evaluation.md"
    common = ["--es-file", str(ES_FILE), "--data-dir", str(tmp_path), "--out", str(doc)]
    bad = CliRunner().invoke(evaluate_app, ["--only", "es", "--only", "nasdaq", *common])
    assert bad.exit_code == 2 and "unknown data sets ['nasdaq']" in bad.output
    huge = CliRunner().invoke(evaluate_app, ["--only", "es", "--budget", "huge", *common])
    assert huge.exit_code == 2 and "--budget must be one of" in huge.output
    assert not doc.exists()
    small = ["--folds", "1", "--epochs", "1", "--batches", "1", "--n-boot", "100"]
    done = CliRunner().invoke(evaluate_app, ["--only", "es", *small, *common])
    assert done.exit_code == 0, done.output
    text = doc.read_text()
    assert "## CME ES (real MBO)" in text and "## How the models were judged" in text
    assert "**bar LSTM not judged here**" in text  # one hour holds no 60 closed minute bars
    assert "| **DeepLOB** |" in text and "| **ensemble** |" in text
    assert "| baseline: L1 imbalance / microprice logistic |" in text


def test_the_full_budget_trains_trees_past_a_handful_of_rounds():
    """`--budget full` early-stops on the validation block, not on a round or batch cap:
    on SYNTHETIC rows with a slowly learnt signal the trees keep hundreds of rounds, and
    every net epoch sees every training window."""
    from esml.alpha.xgb import fit_booster

    full = ModelBudget.full(seed=3)
    assert full.profile == "full" and full.nets.max_batches_per_epoch == 0
    assert full.nets.epochs >= 30 and full.trees.n_estimators >= 3000
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 6)).astype(np.float32)
    latent = x[:, 0] + 0.5 * x[:, 1] + rng.normal(size=len(x))
    y = np.where(latent > 0.5, 2, np.where(latent < -0.5, 0, 1))
    ts = np.arange(len(x), dtype=np.int64) * 1_000_000_000
    fit = fit_booster(x, y, ts, horizon_ns=20_000_000_000, params=full.trees)
    assert fit.booster.num_boosted_rounds() > 100


def test_data_sets_evaluated_in_worker_processes_score_as_in_one_process():
    """`esml evaluate --jobs N`: the same scores as the sequential run, the progress of each
    worker relayed to the parent's bar, a data set too small for the folds reported as
    skipped with its reason."""
    from rich.progress import Progress

    from esml.evaluation.eval_pool import evaluate_in_parallel
    from esml.sim.synthetic import generate_session

    def dataset(name: str, seed: int, seconds: int) -> EvalDataset:
        source = Source(name, generate_session(seed, duration_s=seconds), f"{seed:064d}")
        return EvalDataset(name, "synthetic", ES, (source,), True)

    budget = ModelBudget()
    budget = budget.model_copy(
        update={
            "trees": budget.trees.model_copy(update={"n_estimators": 20}),
            "ensemble": budget.ensemble.model_copy(update={"calibration": "none"}),
        }
    )
    settings = EvalSettings(n_folds=1, n_boot=100)
    enough, short = dataset("enough", 3, 1500), dataset("short", 4, 120)
    with Progress(disable=True) as progress:
        done, skipped = evaluate_in_parallel(
            [enough, short], FeatureConfig(), settings, budget, 2, progress, nets=()
        )
        relayed = {t.description: (t.completed, t.total) for t in progress.tasks}
    alone = evaluate_dataset(enough, FeatureConfig(), settings, budget, nets=())
    assert [r.title for r in done] == [alone.title]
    assert done[0].scores == alone.scores and done[0].training == alone.training
    assert [s.what for s in skipped] == [short.title] and skipped[0].reason
    finished = relayed[f"{alone.title}: fold 1/1 ensemble"]
    assert finished[0] == finished[1] > 0
