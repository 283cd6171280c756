"""Honest scores of 3-class direction predictions: metrics with intervals, baselines, verdicts.

Metrics: accuracy, macro F1, log loss and the multi-class Brier score (sum over the three
classes of the squared gap between probability and outcome; 0 is perfect, 2/3 is the
uniform guess). Each comes with a 95% interval from a circular block bootstrap: decisions
one second apart share most of their 20-second label window, so rows are far from
independent and a Wilson or plain bootstrap interval would be too narrow. Blocks of
contiguous rows (default 60 s, three label horizons) are resampled instead; every model
and baseline is resampled with the same blocks, so a model's advantage over a baseline
gets its own (paired) interval. A model beats a baseline on a metric only when that
interval lies wholly on the better side of zero.

Every metric is a function of per-row statistics summed over rows (the confusion matrix
cells, the row's log loss and Brier score), so one bootstrap replicate is a sum of block
sums read off prefix sums: thousands of replicates cost milliseconds.

Baselines, all fitted on the training fold only:
- majority class: the training fold's most frequent label; probabilities the training
  class frequencies;
- last-move persistence: the label of the decision one horizon earlier (the move that has
  just ended, known at decision time); probabilities the training fold's frequencies of
  the next label given the last one (the best a persistence rule can state);
- OFI logistic regression: a multinomial logistic regression on the order-flow imbalance
  features alone (Cont, Kukanov & Stoikov's OFI over 1, 5, 10, 30 and 60 s), standardised;
- L1 imbalance / microprice logistic regression: the same on the top-of-book state alone,
  the queue imbalance at the best bid and ask and the microprice's offset from the mid
  (Stoikov 2018): the cheapest signal a book model must beat.

`ModelBudget.full()` is the `--budget full` profile: every model trains until early
stopping on its purged validation block ends it, not until a batch cap does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

import numpy as np
import xgboost as xgb
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import TaskID
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from esml.alpha.ensemble import EnsembleConfig, ensemble_batch, fit_ensemble_calibrator
from esml.alpha.splits import holdout_split, walk_forward_split
from esml.alpha.torch_train import TrainParams, fit_net, predict_proba
from esml.alpha.xgb import XGBParams, fit_booster
from esml.config import FeatureConfig
from esml.evaluation.datasets import EvalDataset, Rows, Skipped, build_rows
from esml.features.labels import CLASSES
from esml.features.streaming import FEATURE_NAMES

N_CLASSES = len(CLASSES)
METRICS = ("accuracy", "macro_f1", "log_loss", "brier")
METRIC_LABELS = {
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "log_loss": "log loss",
    "brier": "Brier",
}
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "log_loss": False, "brier": False}
BASELINES = ("majority", "persistence", "ofi_logistic", "microprice_logistic")
BASELINE_LABELS = {
    "majority": "majority class",
    "persistence": "last-move persistence",
    "ofi_logistic": "OFI logistic",
    "microprice_logistic": "L1 imbalance / microprice logistic",
}
OFI_FEATURES = tuple(f for f in FEATURE_NAMES if f.startswith("ofi_"))
MICROPRICE_FEATURES = ("imbalance_l1", "microprice_offset_ticks")
PROBABILITY_FLOOR = 1e-15  # log loss of a zero probability is clipped here, as sklearn does
_N_STATS = N_CLASSES * N_CLASSES + 2  # confusion cells, log loss, Brier
_CHUNK_CELLS = 4_000_000  # block sums held at once by the bootstrap (32 MB)

Verdict = Literal["better", "worse", "no difference"]


# ---------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Scores:
    """A model's metrics on `n` rows, each with its 95% interval."""

    n: int
    metrics: dict[str, Interval]


@dataclass(frozen=True)
class Comparison:
    """A model against one baseline: the improvement on each metric (positive = the model
    is better; for log loss and Brier that is baseline minus model) with its paired 95%
    interval, and the verdict it supports."""

    model: str
    baseline: str
    improvement: dict[str, Interval]

    @property
    def verdicts(self) -> dict[str, Verdict]:
        return {m: _verdict(iv) for m, iv in self.improvement.items()}

    @property
    def beats_all(self) -> bool:
        return all(v == "better" for v in self.verdicts.values())

    def sentence(self, model_label: str, baseline_label: str) -> str:
        """The plain-language verdict."""
        v = self.verdicts
        better = [METRIC_LABELS[m] for m in METRICS if v[m] == "better"]
        worse = [METRIC_LABELS[m] for m in METRICS if v[m] == "worse"]
        tied = [METRIC_LABELS[m] for m in METRICS if v[m] == "no difference"]
        if len(better) == len(METRICS):
            return f"{model_label} beats {baseline_label} on every metric."
        parts = []
        if worse:
            parts.append(f"worse on {_join(worse)}")
        if tied:
            parts.append(f"no better on {_join(tied)} (the interval spans zero)")
        if not better:
            return f"{model_label} does not beat {baseline_label}: {'; '.join(parts)}."
        return f"{model_label} beats {baseline_label} on {_join(better)} only; {'; '.join(parts)}."


def _verdict(iv: Interval) -> Verdict:
    if iv.low > 0:
        return "better"
    if iv.high < 0:
        return "worse"
    return "no difference"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def check_predictions(y: np.ndarray, proba: np.ndarray, pred: np.ndarray) -> None:
    """Refuse predictions that would score silently wrong."""
    n = len(y)
    if (
        y.ndim != 1
        or not np.issubdtype(y.dtype, np.integer)
        or (n and (y.min() < 0 or y.max() >= N_CLASSES))
    ):
        raise ValueError(f"labels must be a 1-d integer array of 0..{N_CLASSES - 1}")
    if proba.shape != (n, N_CLASSES):
        raise ValueError(f"probabilities must be [{n}, {N_CLASSES}], got {proba.shape}")
    if not np.all(np.isfinite(proba)) or np.any(proba < 0):
        raise ValueError("probabilities must be finite and non-negative")
    worst = float(np.max(np.abs(proba.sum(axis=1) - 1.0))) if n else 0.0
    if worst > 1e-3:
        raise ValueError(f"probability rows must sum to 1 (off by up to {worst:.3g})")
    if pred.shape != (n,) or (n and (pred.min() < 0 or pred.max() >= N_CLASSES)):
        raise ValueError(f"predicted classes must be {n} values in 0..{N_CLASSES - 1}")


def row_stats(y: np.ndarray, proba: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-row statistics [n, 11]: one-hot confusion cell (true * 3 + predicted), the row's
    log loss and its Brier score. Every metric is a function of their column sums."""
    y = np.asarray(y)
    proba = np.asarray(proba, np.float64)
    pred = np.asarray(pred)
    check_predictions(y, proba, pred)
    n = len(y)
    out = np.zeros((n, _N_STATS))
    out[np.arange(n), y * N_CLASSES + pred] = 1.0
    out[:, -2] = -np.log(np.maximum(proba[np.arange(n), y], PROBABILITY_FLOOR))
    onehot = np.eye(N_CLASSES)[y]
    out[:, -1] = np.sum((proba - onehot) ** 2, axis=1)
    return out


def metrics_from_sums(sums: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of summed row statistics [..., 11] (any leading shape: bootstrap replicates)."""
    s = np.asarray(sums, np.float64)
    cm = s[..., : N_CLASSES * N_CLASSES].reshape(*s.shape[:-1], N_CLASSES, N_CLASSES)
    n = cm.sum(axis=(-2, -1))
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    fp = cm.sum(axis=-2) - tp  # predicted c, true another
    fn = cm.sum(axis=-1) - tp  # true c, predicted another
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "accuracy": tp.sum(axis=-1) / n,
        "macro_f1": f1.mean(axis=-1),
        "log_loss": s[..., -2] / n,
        "brier": s[..., -1] / n,
    }


class BlockBootstrap:
    """A circular block bootstrap plan over n time-ordered rows, shared by every model
    scored on those rows (so model and baseline replicates are paired).

    Each replicate lays ceil(n / block) blocks of `block` contiguous rows (wrapping at the
    end) from uniform random starts, the last cut to make exactly n rows."""

    def __init__(self, n: int, block: int, n_boot: int, seed: int) -> None:
        if n < 2:
            raise ValueError(f"need at least 2 rows to bootstrap, got {n}")
        if block < 1 or n_boot < 10:
            raise ValueError(f"block must be >= 1 and n_boot >= 10, got {block}, {n_boot}")
        self.n, self.block, self.n_boot = n, min(block, n), n_boot
        k = math.ceil(n / self.block)
        rng = np.random.default_rng(seed)
        self._starts = rng.integers(0, n, size=(n_boot, k))
        lengths = np.full(k, self.block)
        lengths[-1] = n - (k - 1) * self.block
        self._ends = self._starts + lengths

    def sums(self, stats: np.ndarray) -> np.ndarray:
        """Column sums [n_boot, m] of per-row statistics [n, m] in each replicate."""
        if stats.shape[0] != self.n:
            raise ValueError(f"the plan is for {self.n} rows, got {stats.shape[0]}")
        m = stats.shape[1]
        prefix = np.zeros((2 * self.n + 1, m))
        np.cumsum(np.vstack([stats, stats]), axis=0, out=prefix[1:])
        out = np.empty((self.n_boot, m))
        step = max(1, _CHUNK_CELLS // (self._starts.shape[1] * m))  # bounded memory
        for r in range(0, self.n_boot, step):
            ends, starts = self._ends[r : r + step], self._starts[r : r + step]
            out[r : r + step] = (prefix[ends] - prefix[starts]).sum(axis=1)
        return out


def block_rows(n: int, block_s: float, interval_s: float, min_blocks: int = 20) -> int:
    """Rows per bootstrap block: `block_s` of decisions, but at least `min_blocks` blocks."""
    rows = max(1, round(block_s / interval_s))
    return max(1, min(rows, n // min_blocks))


def score_models(
    y: np.ndarray,
    predictions: Mapping[str, tuple[np.ndarray, np.ndarray]],
    baselines: Sequence[str],
    *,
    block: int,
    n_boot: int,
    seed: int,
) -> tuple[dict[str, Scores], list[Comparison]]:
    """Scores of every prediction ({name: (proba [n, 3], predicted class [n])}) on labels
    `y` in time order, and each non-baseline against each baseline."""
    missing = [b for b in baselines if b not in predictions]
    if missing:
        raise ValueError(f"baselines {missing} have no predictions")
    plan = BlockBootstrap(len(y), block, n_boot, seed)
    point: dict[str, dict[str, float]] = {}
    replicates: dict[str, dict[str, np.ndarray]] = {}
    for name, (proba, pred) in predictions.items():
        stats = row_stats(y, proba, pred)
        point[name] = {m: float(v) for m, v in metrics_from_sums(stats.sum(axis=0)).items()}
        replicates[name] = metrics_from_sums(plan.sums(stats))
    scores = {
        name: Scores(
            len(y),
            {m: Interval(point[name][m], *_percentiles(replicates[name][m])) for m in METRICS},
        )
        for name in predictions
    }
    comparisons = []
    for name in predictions:
        if name in baselines:
            continue
        for base in baselines:
            improvement = {}
            for m in METRICS:
                sign = 1.0 if HIGHER_IS_BETTER[m] else -1.0
                value = sign * (point[name][m] - point[base][m])
                reps = sign * (replicates[name][m] - replicates[base][m])
                improvement[m] = Interval(value, *_percentiles(reps))
            comparisons.append(Comparison(name, base, improvement))
    return scores, comparisons


def _percentiles(x: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(x, [2.5, 97.5])
    return float(lo), float(hi)


# ---------------------------------------------------------------------------- baselines


Prediction = tuple[np.ndarray, np.ndarray]  # (proba [n, 3], predicted class [n])


def majority_baseline(y_train: np.ndarray, n: int) -> Prediction:
    """The training fold's most frequent class, with its class frequencies as probabilities."""
    counts = np.bincount(np.asarray(y_train), minlength=N_CLASSES).astype(np.float64)
    if counts.sum() == 0:
        raise ValueError("the training fold has no labels")
    prior = counts / counts.sum()
    return np.tile(prior, (n, 1)), np.full(n, int(np.argmax(counts)), np.int64)


def persistence_baseline(
    prev_train: np.ndarray, y_train: np.ndarray, prev_test: np.ndarray
) -> Prediction:
    """Predict the last move's class again. `prev_*` is the label one horizon earlier (-1
    where there is none: those rows get the training majority). Probabilities: the training
    fold's frequencies of the label after each last-move class (add-one smoothed)."""
    prev_train, y_train, prev_test = map(np.asarray, (prev_train, y_train, prev_test))
    if prev_train.shape != y_train.shape:
        raise ValueError("prev_train and y_train must have the same shape")
    prior_proba, majority = majority_baseline(y_train, 1)
    table = np.ones((N_CLASSES, N_CLASSES))
    known = prev_train >= 0
    np.add.at(table, (prev_train[known], y_train[known]), 1.0)
    table /= table.sum(axis=1, keepdims=True)
    has = prev_test >= 0
    proba = np.where(has[:, None], table[np.maximum(prev_test, 0)], prior_proba[0])
    pred = np.where(has, prev_test, majority[0]).astype(np.int64)
    return proba, pred


def logistic_baseline(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int = 7
) -> Prediction:
    """A multinomial logistic regression on a few columns (the OFI ones, or the L1 imbalance
    and microprice offset), standardised on the training fold, unweighted: its
    probabilities estimate the class frequencies it sees."""
    if x_train.ndim != 2 or x_train.shape[1] != x_test.shape[1] or len(x_train) != len(y_train):
        raise ValueError("x_train [n, k], y_train [n] and x_test [m, k] must agree")
    present = np.unique(y_train)
    model = Pipeline(
        [
            ("scale", StandardScaler()),
            ("head", LogisticRegression(max_iter=1000, random_state=seed)),
        ]
    )
    model.fit(x_train.astype(np.float64), y_train)
    proba = np.full((len(x_test), N_CLASSES), 0.0)
    proba[:, present] = model.predict_proba(x_test.astype(np.float64))
    return proba, proba.argmax(axis=1).astype(np.int64)


def ofi_columns(feature_names: Sequence[str]) -> np.ndarray:
    return feature_columns(feature_names, OFI_FEATURES)


def feature_columns(feature_names: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
    """Indices of `wanted` in `feature_names`, or a clear error naming what is missing."""
    names = list(feature_names)
    missing = [f for f in wanted if f not in names]
    if missing or not wanted:
        raise ValueError(f"the feature list lacks the baseline features {missing}")
    return np.array([names.index(f) for f in wanted], np.int64)


# ---------------------------------------------------------------------------- walk-forward


class EvalSettings(BaseModel):
    """The evaluation's walk-forward and interval settings (recorded in the report)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_folds: int = Field(3, ge=1, le=20)
    initial_train_fraction: float = Field(0.5, gt=0, lt=1)
    embargo_s: float = Field(30.0, ge=0)
    calibration_fraction: float = Field(0.25, gt=0, lt=1)
    block_s: float = Field(60.0, gt=0)
    n_boot: int = Field(1000, ge=100)
    seed: int = 7


@dataclass(frozen=True)
class FoldRows:
    """Row indices of one walk-forward fold: models fit on `fit`, the ensemble's calibrator
    on `calibration` (later, purged), everything scored on `test` (later, purged). The
    baselines fit on `fit` and `calibration` together: the whole training fold."""

    fit: np.ndarray
    calibration: np.ndarray
    test: np.ndarray

    @property
    def train(self) -> np.ndarray:
        return np.concatenate([self.fit, self.calibration])


def walk_forward_folds(
    ts_ns: np.ndarray, horizon_ns: int, settings: EvalSettings
) -> list[FoldRows]:
    """Expanding-window folds with purge and embargo (`esml.alpha.splits`), each training
    fold split again, with the same purge, into model-fitting and calibration rows."""
    embargo_ns = round(settings.embargo_s * 1e9)
    folds = []
    for fold in walk_forward_split(
        ts_ns,
        n_folds=settings.n_folds,
        horizon_ns=horizon_ns,
        embargo_ns=embargo_ns,
        initial_train_fraction=settings.initial_train_fraction,
    ):
        inner = holdout_split(
            ts_ns[fold.train],
            test_fraction=settings.calibration_fraction,
            horizon_ns=horizon_ns,
            embargo_ns=embargo_ns,
        )
        folds.append(FoldRows(fold.train[inner.train], fold.train[inner.test], fold.test))
    return folds


def check_purged(
    ts_ns: np.ndarray, folds: Sequence[FoldRows], horizon_ns: int, embargo_ns: int
) -> None:
    """Raise unless every label window used for fitting ends, with the embargo, before the
    rows it is judged or calibrated on begin."""
    for k, f in enumerate(folds):
        for before, after, what in (
            (f.fit, f.calibration, "fit/calibration"),
            (f.train, f.test, "train/test"),
        ):
            if (
                len(before)
                and len(after)
                and (ts_ns[before].max() + horizon_ns + embargo_ns >= ts_ns[after].min())
            ):
                raise AssertionError(f"fold {k}: {what} rows are not purged")


FoldFitter = Callable[[FoldRows, int], dict[str, np.ndarray]]
"""(fold, fold number) → {model name: probabilities [len(calibration) + len(test), 3]}: the
models fitted on `fit`, predicting the calibration rows then the test rows."""


def baseline_predictions(rows: Rows, fold: FoldRows, seed: int) -> dict[str, Prediction]:
    """The baselines, fitted on the whole training fold, on the fold's test rows."""
    tr, te = fold.train, fold.test
    y, prev_y = rows.y, rows.prev_y
    ofi = rows.x[:, ofi_columns(rows.feature_names)]
    l1 = rows.x[:, feature_columns(rows.feature_names, MICROPRICE_FEATURES)]
    return {
        "majority": majority_baseline(y[tr], len(te)),
        "persistence": persistence_baseline(prev_y[tr], y[tr], prev_y[te]),
        "ofi_logistic": logistic_baseline(ofi[tr], y[tr], ofi[te], seed),
        "microprice_logistic": logistic_baseline(l1[tr], y[tr], l1[te], seed),
    }


# ---------------------------------------------------------------------------- the models


NET_KINDS = ("tick_lstm", "bar_lstm", "deeplob")
ENSEMBLE = "ensemble"
MODEL_LABELS = {
    "trees": "trees (XGBoost)",
    "tick_lstm": "tick LSTM",
    "bar_lstm": "bar LSTM",
    "deeplob": "DeepLOB",
    ENSEMBLE: "ensemble",
}
SMALL_DEEPLOB = {"conv_channels": 8, "inception_channels": 16, "lstm_hidden": 32}
"""DeepLOB's architecture at a quarter of the paper's widths, so a walk-forward of five data
sets trains in minutes on two CPU cores."""


def _default_trees() -> XGBParams:
    return XGBParams(n_estimators=300, early_stopping_rounds=20, n_folds=0, n_jobs=1)


def _default_nets() -> TrainParams:
    return TrainParams(
        epochs=3, batch_size=256, max_batches_per_epoch=8, patience=2, n_folds=0, threads=1
    )


class ModelBudget(BaseModel):
    """How much each model may train per fold (recorded in the report): small nets and few
    epochs keep `esml evaluate` to minutes on two cores. One thread each: on a shared
    two-core machine, OpenMP threads that wait on each other (xgboost's and torch's both
    spin) ran several times slower than one thread."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trees: XGBParams = Field(default_factory=_default_trees)
    nets: TrainParams = Field(default_factory=_default_nets)
    deeplob: dict[str, int] = Field(default_factory=lambda: dict(SMALL_DEEPLOB))
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
    profile: Literal["default", "full"] = "default"

    @classmethod
    def full(cls, seed: int = 7) -> ModelBudget:
        """Train to convergence: trees at a small learning rate with up to 3000 rounds and
        patience 200, nets over every training window each epoch for up to 100 epochs with
        patience 4; both stop when their purged validation block stops improving. The caps
        are far above where they stop (30 epochs cut one ES net short while it still
        improved); a fit the cap ends anyway is named in the report."""
        return cls(
            trees=XGBParams(
                n_estimators=3000,
                learning_rate=0.02,
                early_stopping_rounds=200,
                min_child_weight=20.0,
                n_folds=0,
                n_jobs=1,
                random_state=seed,
            ),
            nets=TrainParams(
                epochs=100,
                batch_size=256,
                max_batches_per_epoch=0,
                patience=4,
                n_folds=0,
                threads=1,
                seed=seed,
            ),
            profile="full",
        )


def net_config(kind: str, budget: ModelBudget) -> dict[str, int | float] | None:
    return dict(budget.deeplob) if kind == "deeplob" else None


_CAP = " (cap)"
"""Marks a fit its round or epoch cap ended before early stopping could: not converged."""


def fit_fold_models(
    rows: Rows,
    fold: FoldRows,
    kinds: Sequence[str],
    budget: ModelBudget,
    horizon_ns: int,
    on_model: Callable[[str], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Each model fitted on the fold's `fit` rows (early-stopped on their own purged last
    block) → (its probabilities on the calibration rows followed by the test rows, how
    long it trained: boosting rounds kept, or the best epoch, marked when the cap ended it)."""
    fit = fold.fit
    later = np.concatenate([fold.calibration, fold.test])
    out: dict[str, np.ndarray] = {}
    trained: dict[str, str] = {}
    for name in ("trees", *kinds):
        if on_model is not None:
            on_model(name)
        if name == "trees":
            tree = fit_booster(
                rows.x[fit],
                rows.y[fit],
                rows.ts_ns[fit],
                horizon_ns=horizon_ns,
                params=budget.trees,
            )
            out[name] = tree.booster.predict(xgb.DMatrix(rows.x[later])).astype(np.float64)
            rounds = tree.booster.num_boosted_rounds()
            capped = rounds > budget.trees.n_estimators - budget.trees.early_stopping_rounds
            trained[name] = f"{rounds} round{'' if rounds == 1 else 's'}" + _CAP * capped
        else:
            w = rows.windows[name]
            net = fit_net(
                name,
                w[fit],
                rows.y[fit],
                rows.ts_ns[fit],
                horizon_ns=horizon_ns,
                params=budget.nets,
                net_config=net_config(name, budget),
            )
            out[name] = predict_proba(net.net, w[later]).astype(np.float64)
            capped = (
                net.epochs_run == budget.nets.epochs
                and net.epochs_run - net.best_epoch < budget.nets.patience
            )
            trained[name] = f"epoch {net.best_epoch} of {net.epochs_run}" + _CAP * capped
    return out, trained


def ensemble_predictions(
    rows: Rows,
    fold: FoldRows,
    probas: Mapping[str, np.ndarray],
    cfg: EnsembleConfig,
    tick_size: float,
) -> Prediction:
    """The ensemble over the members it is configured for that this data set has: its
    calibrator fitted on the calibration rows, then its decisions on the test rows (the
    meta-learner starting empty). The predicted class is the agreed vote (flat without
    agreement); the probabilities are the calibrated mixture."""
    names = [n for n in cfg.weights if n in probas]
    cfg = cfg.model_copy(update={"weights": {n: cfg.weights[n] for n in names}})
    n_cal = len(fold.calibration)
    stack = np.stack([probas[n] for n in names], axis=1)  # [rows, members, 3]
    cal, test = fold.calibration, fold.test
    calibrator = fit_ensemble_calibrator(
        cfg, names, rows.ts_ns[cal], rows.mid[cal], stack[:n_cal], tick_size
    )
    batch = ensemble_batch(
        cfg, names, rows.ts_ns[test], rows.mid[test], stack[n_cal:], tick_size, calibrator
    )
    return batch.proba, batch.direction.astype(np.int64)


class ProgressLike(Protocol):
    """What `evaluate_dataset` calls on a progress bar: rich's `Progress`, or the relay of
    a worker process (`esml.evaluation.eval_pool`)."""

    def add_task(self, description: str, total: float | None = ...) -> TaskID: ...
    def update(self, task_id: TaskID, *, description: str | None = ...) -> None: ...
    def advance(self, task_id: TaskID, advance: float = ...) -> None: ...
    def reset(self, task_id: TaskID, *, total: float | None = ...) -> None: ...


@dataclass(frozen=True)
class FoldInfo:
    fit_rows: int
    calibration_rows: int
    test_rows: int
    test_first_ns: int
    test_last_ns: int


@dataclass(frozen=True)
class DatasetResult:
    """Everything the report says about one data set."""

    title: str
    kind: str
    synthetic: bool
    notes: tuple[str, ...]
    sources: tuple[tuple[str, str], ...]  # (name, sha256 of its events)
    rows: int
    folds: tuple[FoldInfo, ...]
    test_class_counts: dict[str, int]
    models: tuple[str, ...]  # judged models, ensemble last
    ensemble_members: tuple[str, ...]
    excluded: dict[str, str]
    training: dict[str, list[str]]  # model → per fold: boosting rounds kept / best epoch
    flat_share: dict[str, float]  # model → share of test rows it calls flat
    scores: dict[str, Scores]
    comparisons: tuple[Comparison, ...]
    block_rows: int
    seconds: float


def evaluate_dataset(
    dataset: EvalDataset,
    feature_cfg: FeatureConfig,
    settings: EvalSettings,
    budget: ModelBudget,
    *,
    nets: Sequence[str] = NET_KINDS,
    progress: ProgressLike | None = None,
) -> DatasetResult:
    """Walk-forward evaluation of the trees, the `nets`, the ensemble and the baselines on
    one data set; out-of-sample predictions of all folds are pooled and scored together."""
    started = time.perf_counter()
    task = (
        None
        if progress is None
        else progress.add_task(f"{dataset.title}: features", total=len(dataset.sources))
    )

    def step(text: str | None = None) -> None:
        if progress is not None and task is not None:
            if text is None:
                progress.advance(task)
            else:
                progress.update(task, description=f"{dataset.title}: {text}")

    rows = build_rows(dataset, feature_cfg, nets, on_source=step)
    kinds = [k for k in nets if k in rows.windows]
    horizon_ns = round(feature_cfg.horizon_s * 1e9)
    folds = walk_forward_folds(rows.ts_ns, horizon_ns, settings)
    check_purged(rows.ts_ns, folds, horizon_ns, round(settings.embargo_s * 1e9))
    if progress is not None and task is not None:
        progress.reset(task, total=len(folds) * (len(kinds) + 2))
    pooled: dict[str, list[Prediction]] = {}
    training: dict[str, list[str]] = {}
    tick = dataset.instrument.tick_size
    for k, fold in enumerate(folds, start=1):

        def on_model(name: str, k: int = k) -> None:
            step(f"fold {k}/{len(folds)} {MODEL_LABELS[name]}")
            step()

        probas, trained = fit_fold_models(rows, fold, kinds, budget, horizon_ns, on_model)
        for name, text in trained.items():
            training.setdefault(name, []).append(text)
        n_cal = len(fold.calibration)
        for name, p in probas.items():
            pooled.setdefault(name, []).append((p[n_cal:], p[n_cal:].argmax(axis=1)))
        on_model(ENSEMBLE)
        pooled.setdefault(ENSEMBLE, []).append(
            ensemble_predictions(rows, fold, probas, budget.ensemble, tick)
        )
        for name, pred in baseline_predictions(rows, fold, settings.seed).items():
            pooled.setdefault(name, []).append(pred)
    test = np.concatenate([f.test for f in folds])
    predictions = {
        name: (np.concatenate([p for p, _ in parts]), np.concatenate([c for _, c in parts]))
        for name, parts in pooled.items()
    }
    block = block_rows(len(test), settings.block_s, feature_cfg.decision_interval_s)
    scores, comparisons = score_models(
        rows.y[test],
        predictions,
        BASELINES,
        block=block,
        n_boot=settings.n_boot,
        seed=settings.seed,
    )
    members = tuple(n for n in budget.ensemble.weights if n in ("trees", *kinds))
    counts = np.bincount(rows.y[test], minlength=N_CLASSES)
    return DatasetResult(
        title=dataset.title,
        kind=dataset.kind,
        synthetic=dataset.synthetic,
        notes=dataset.notes,
        sources=tuple((s.name, s.sha256) for s in dataset.sources),
        rows=len(rows),
        folds=tuple(
            FoldInfo(
                len(f.fit),
                len(f.calibration),
                len(f.test),
                int(rows.ts_ns[f.test[0]]),
                int(rows.ts_ns[f.test[-1]]),
            )
            for f in folds
        ),
        test_class_counts={c: int(n) for c, n in zip(CLASSES, counts, strict=True)},
        models=("trees", *kinds, ENSEMBLE),
        ensemble_members=members,
        excluded=dict(rows.excluded),
        training=training,
        flat_share={m: float(np.mean(predictions[m][1] == 1)) for m in ("trees", *kinds, ENSEMBLE)},
        scores=scores,
        comparisons=tuple(comparisons),
        block_rows=block,
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class ReportContext:
    """What the report states about how it was made."""

    command: str
    generated_at: str
    seconds: float
    feature_cfg: FeatureConfig
    settings: EvalSettings
    budget: ModelBudget
    skipped: tuple[Skipped, ...] = ()


def render_markdown(results: Sequence[DatasetResult], ctx: ReportContext) -> str:
    """docs/model-evaluation.md: the setup, then one section per data set."""
    lines = [
        "# Model evaluation: do the direction models beat naive baselines?",
        "",
        f"Generated by `{ctx.command}` on {ctx.generated_at} in {ctx.seconds / 60:.1f} min "
        "(do not edit by hand: rerun the command). Every number below is out of sample: "
        "walk-forward, purged, embargoed.",
        "",
        "## In short",
        "",
    ]
    lines += [f"- {line}" for r in results for line in _summary(r)]
    if any(r.synthetic for r in results):
        lines.append(
            "- SYNTHETIC data sets come from esml's simulator: they test the "
            "pipeline, not the market, and are no evidence of an edge."
        )
    lines += ["", *_setup(ctx), ""]
    for r in results:
        lines += _dataset_section(r)
    if ctx.skipped:
        lines += ["## Looked for, not evaluated", ""]
        lines += [f"- {s.what}: {s.reason}" for s in ctx.skipped]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _summary(r: DatasetResult) -> list[str]:
    winners = [m for m in r.models if all(c.beats_all for c in r.comparisons if c.model == m)]
    loss = {name: s.metrics["log_loss"].value for name, s in r.scores.items()}
    best = min(r.models, key=loss.__getitem__)
    best_base = min(BASELINES, key=loss.__getitem__)
    head = f"**{r.title}** ({r.scores[best].n:,} test rows):"
    if winners:
        names = _join([MODEL_LABELS[m] for m in winners])
        verb = "beats" if len(winners) == 1 else "beat"
        text = f"{head} {names} {verb} all {len(BASELINES)} baselines on every metric."
    else:
        text = (
            f"{head} no model beats all {len(BASELINES)} baselines on every metric; {_partial(r)}"
        )
    return [
        f"{text} Lowest log loss of a model: {MODEL_LABELS[best]} {loss[best]:.4f}; of a "
        f"baseline: {BASELINE_LABELS[best_base]} {loss[best_base]:.4f}."
    ]


def _partial(r: DatasetResult) -> str:
    wins = {
        b: [c.model for c in r.comparisons if c.baseline == b and c.beats_all] for b in BASELINES
    }
    parts = [
        f"{BASELINE_LABELS[b]} is beaten on every metric by {_join([MODEL_LABELS[m] for m in ms])}"
        for b, ms in wins.items()
        if ms
    ]
    return ("; ".join(parts) + ".") if parts else "none beats even one baseline on every metric."


def _setup(ctx: ReportContext) -> list[str]:
    f, s, b = ctx.feature_cfg, ctx.settings, ctx.budget
    nets, trees = b.nets, b.trees
    w = ", ".join(f"{MODEL_LABELS[k]} {v:g}" for k, v in b.ensemble.weights.items())
    widths = " / ".join(f"{v} {k.replace('_', ' ')}" for k, v in b.deeplob.items())
    return [
        "## How the models were judged",
        "",
        f"- **Task**: the mid-price direction {f.horizon_s:g} s ahead, decided every "
        f"{f.decision_interval_s:g} s: up / flat / down with a dead zone of "
        f"{f.dead_zone_ticks:g} tick (`esml.features.labels.direction_labels`). A row is a "
        "decision time with a valid label and a full input for every model judged on that "
        "data set, so all models and baselines are scored on the very same rows.",
        f"- **Walk-forward**: the first {s.initial_train_fraction:.0%} of rows are the first "
        f"training fold; the rest is cut into {s.n_folds} consecutive test blocks, each "
        "trained on everything before it (expanding window, `esml.alpha.splits`). Purge: a "
        "training row's label window must end before the test block starts; embargo: "
        f"{s.embargo_s:g} s more. The last {s.calibration_fraction:.0%} of each training fold "
        "(purged and embargoed the same way) calibrates the ensemble; the models fit on the "
        "rows before it, each early-stopping on its own purged last block. The baselines fit "
        "on the whole training fold. Test predictions of all folds are pooled and scored "
        "together.",
        f"- **Models** ({_budget_words(b)}): "
        f"trees: XGBoost, class-balanced, up to {trees.n_estimators} trees of depth "
        f"{trees.max_depth} at learning rate {trees.learning_rate:g}, early stopping after "
        f"{trees.early_stopping_rounds} rounds without a better validation loss; nets "
        f"(`esml.alpha.nets`, class-balanced loss): at most {nets.epochs} epochs of "
        f"{nets.max_batches_per_epoch or 'all'} batches of {nets.batch_size} windows, "
        f"patience {nets.patience}; tick LSTM on 7 bars of 20 trades; bar LSTM (2 layers of "
        f"64) on 60 one-minute bars x 11 technicals; DeepLOB on 100 snapshots x 10 levels, at "
        f"reduced widths: {widths} (the paper's: 32 / 64 / 64)."
        + (
            " These are limits of this run, not of the models: more epochs and full-size "
            "nets might score otherwise (`--budget full` trains them to convergence)."
            if b.profile == "default"
            else ""
        ),
        f"- **Ensemble**: weighted vote ({w}) with minimum agreement "
        f"{b.ensemble.min_agreement:g}, the meta-learner re-weighting by recent accuracy, "
        f"{b.ensemble.calibration} calibration fitted on the calibration rows "
        "(`esml.alpha.ensemble`). Its predicted class is the agreed vote (flat without "
        "agreement); its probabilities are the calibrated mixture. DeepLOB is judged alone, "
        "outside the vote; members a data set lacks are left out of its vote. The regime "
        "classifier answers another question (trend / range / none over five minutes) and is "
        "not scored here; its walk-forward folds are in its manifest (`esml train`).",
        "- **Baselines** (fitted on the training fold only): *majority class* (the training "
        "fold's most frequent label; probabilities its class frequencies); *last-move "
        "persistence* (the label of the decision one horizon earlier, i.e. the sign of the "
        "mid move that has just ended; probabilities the training fold's frequencies of the "
        "next label given that one; rows without an earlier decision get the majority "
        "class); *OFI logistic* (multinomial logistic regression on the order-flow imbalance "
        f"features alone: {', '.join(OFI_FEATURES)}); *L1 imbalance / microprice logistic* "
        f"(the same on the top of the book alone: {', '.join(MICROPRICE_FEATURES)}).",
        "- **Class balance**: the trees and nets are trained with class-balanced weights (so "
        "rare flats count as much as ups and downs): by design this helps macro F1 and costs "
        "accuracy; their probabilities are not calibrated, only the ensemble's are.",
        "- **Metrics**: accuracy, macro F1, log loss, multi-class Brier score (sum over the "
        "three classes; the uniform guess scores 0.667). Accuracy and macro F1 score the "
        "predicted class; log loss and Brier the probabilities.",
        f"- **Intervals**: 95% percentile intervals from a circular block bootstrap "
        f"({s.n_boot} replicates) with blocks of {s.block_s:g} s of consecutive rows (fewer "
        "when a data set is small: at least 20 blocks), because rows one decision apart "
        "share most of their label window; a Wilson interval for accuracy would assume "
        "independent rows and be too narrow. The same blocks resample every model, so a "
        "model's difference from a baseline has its own paired interval.",
        "- **Verdict**: a model *beats* a baseline on a metric only when the 95% interval of "
        "its improvement lies wholly above zero; *worse* when wholly below; otherwise there "
        "is no demonstrated difference, which is not a win.",
    ]


def _budget_words(b: ModelBudget) -> str:
    if b.profile == "full":
        return (
            "`--budget full`: fixed seeds, one thread each, every model trained until early "
            "stopping on its purged validation block ends it"
        )
    return (
        "the default budget: fixed seeds, one thread each, limited to keep the run to "
        "minutes on two CPU cores"
    )


def _dataset_section(r: DatasetResult) -> list[str]:
    lines = [f"## {r.title}", ""]
    if r.synthetic:
        lines += [
            "**SYNTHETIC DATA: generated by esml's simulator; not market data, not "
            "evidence of an edge.**",
            "",
        ]
    lines += [f"- {n}" for n in r.notes]
    for name, sha in r.sources:
        lines.append(f"- source `{name}`: sha256 `{sha[:16]}…`")
    counts = ", ".join(f"{c} {n:,}" for c, n in r.test_class_counts.items())
    lines.append(
        f"- {r.rows:,} rows; {len(r.folds)} test folds, "
        f"{sum(f.test_rows for f in r.folds):,} test rows ({counts}); bootstrap "
        f"blocks of {r.block_rows} rows; {r.seconds:.0f} s"
    )
    for k, f in enumerate(r.folds, start=1):
        lines.append(
            f"  - fold {k}: fit {f.fit_rows:,}, calibration {f.calibration_rows:,}, "
            f"test {f.test_rows:,} rows ({_utc(f.test_first_ns)} to "
            f"{_utc(f.test_last_ns)} UTC)"
        )
    for kind, why in r.excluded.items():
        lines.append(f"- **{MODEL_LABELS[kind]} not judged here**: {why}.")
    lines.append(
        f"- ensemble members here: {', '.join(MODEL_LABELS[m] for m in r.ensemble_members)}"
    )
    if r.training:
        kept = "; ".join(f"{MODEL_LABELS[m]} {', '.join(t)}" for m, t in r.training.items())
        lines.append(f"- trained per fold (early stopping on a purged validation block): {kept}")
    lines += _observations(r)
    lines += score_tables(r.models, r.scores, r.comparisons)
    return lines


def score_tables(
    models: Sequence[str], scores: Mapping[str, Scores], comparisons: Sequence[Comparison]
) -> list[str]:
    """The markdown tables of one data set: every baseline's and model's scores with their
    intervals, the tally against each baseline, the verdicts in words, the improvements."""
    lines = [
        "",
        "| model | rows | accuracy | macro F1 | log loss | Brier |",
        "| --- | ---: | --- | --- | --- | --- |",
    ]
    for name in (*BASELINES, *models):
        s = scores[name]
        label = (
            f"baseline: {BASELINE_LABELS[name]}"
            if name in BASELINES
            else f"**{MODEL_LABELS[name]}**"
        )
        cells = " | ".join(_interval(s.metrics[m]) for m in METRICS)
        lines.append(f"| {label} | {s.n:,} | {cells} |")
    lines += [
        "",
        "Against the baselines (metrics where the model is better / all four):",
        "",
        "| model | " + " | ".join(BASELINE_LABELS[b] for b in BASELINES) + " |",
        "| --- |" + " --- |" * len(BASELINES),
    ]
    by = {(c.model, c.baseline): c for c in comparisons}
    for name in models:
        cells = [_tally(by[(name, b)]) for b in BASELINES]
        lines.append(f"| {MODEL_LABELS[name]} | " + " | ".join(cells) + " |")
    lines += ["", "In plain words:", ""]
    for name in models:
        for b in BASELINES:
            lines.append(f"- {by[(name, b)].sentence(MODEL_LABELS[name], BASELINE_LABELS[b])}")
    lines += [
        "",
        "<details><summary>Improvement over each baseline, with paired 95% "
        "intervals (positive = the model is better)</summary>",
        "",
        "| model | baseline | accuracy | macro F1 | log loss | Brier |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in models:
        for b in BASELINES:
            c = by[(name, b)]
            cells = " | ".join(_interval(c.improvement[m], signed=True) for m in METRICS)
            lines.append(f"| {MODEL_LABELS[name]} | {BASELINE_LABELS[b]} | {cells} |")
    lines += ["", "</details>", ""]
    return lines


UNIFORM_LOG_LOSS = math.log(N_CLASSES)


def _observations(r: DatasetResult) -> list[str]:
    """Facts read off the scores that explain them (never a hard-coded claim)."""
    out = []
    capped = {m: sum(t.endswith(_CAP) for t in ts) for m, ts in r.training.items()}
    if any(capped.values()):
        listed = ", ".join(
            f"{MODEL_LABELS[m]} {n} of {len(r.folds)}" for m, n in capped.items() if n
        )
        out.append(
            f"- Fits that the round or epoch cap ended before early stopping did, marked (cap) "
            f"above, so they may not have converged: {listed}."
        )
    flat = r.test_class_counts.get("flat", 0) / max(1, sum(r.test_class_counts.values()))
    near = [
        m
        for m in r.models
        if m != ENSEMBLE and abs(r.scores[m].metrics["log_loss"].value - UNIFORM_LOG_LOSS) < 0.02
    ]
    if near:
        named = [f"{MODEL_LABELS[m]} ({', '.join(r.training.get(m, []))})" for m in near]
        out.append(
            f"- Probabilities close to 1/3 for every class (log loss within 0.02 of ln 3 = "
            f"{UNIFORM_LOG_LOSS:.4f}, the score of that guess), so they carry almost no "
            f"information here: {_join(named)}. In brackets, per fold, how long each trained: "
            "boosting rounds kept by early stopping, or the best epoch within this run's budget."
        )
    often = {m: share for m, share in r.flat_share.items() if share > 2 * flat}
    if often:
        listed = ", ".join(f"{MODEL_LABELS[m]} {share:.0%}" for m, share in often.items())
        out.append(
            f"- flat is {flat:.0%} of the test rows, but it is predicted on {listed} of "
            "them (they are trained class-balanced): that costs accuracy against the "
            "majority class."
        )
    return out


def _tally(c: Comparison) -> str:
    better = [METRIC_LABELS[m] for m in METRICS if c.verdicts[m] == "better"]
    worse = [METRIC_LABELS[m] for m in METRICS if c.verdicts[m] == "worse"]
    text = f"{len(better)}/4" + (f" ({', '.join(better)})" if better and len(better) < 4 else "")
    if len(better) == len(METRICS):
        text = "**beats: 4/4**"
    if worse:
        text += f"; worse on {', '.join(worse)}"
    return text


def _interval(iv: Interval, signed: bool = False) -> str:
    fmt = "{:+.4f}" if signed else "{:.4f}"
    return f"{fmt.format(iv.value)} [{fmt.format(iv.low)}, {fmt.format(iv.high)}]"


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M")
