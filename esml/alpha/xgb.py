"""Gradient-boosted trees for the 3-class direction label, trained walk-forward.

Class weights are balanced because "flat" dominates a 20 s horizon and an unweighted model
learns to say "flat". Early stopping watches a validation block that lies after the
training rows with a purge gap of at least the label horizon, and every reported score
sits beside the naive baselines computed on the very same rows.

LightGBM is an optional second backend (`fit_lightgbm`), used only where the `lightgbm`
package imports: the same split, weights and scores, and its own exporter to the same
ONNX signature (`export_lightgbm_onnx`), checked against LightGBM's own probabilities.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import xgboost as xgb
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import Progress
from sklearn.metrics import f1_score, log_loss

from esml.alpha.manifest import (
    CLASSES,
    MANIFEST_FILE,
    MODEL_FILE,
    ClassificationMetrics,
    ModelManifest,
    file_sha256,
    write_atomic,
)
from esml.alpha.onnx_export import (
    BRANCH_LEQ,
    OnnxExportError,
    TreeArrays,
    checked_bytes,
    export_onnx,
    tree_ensemble_model,
)
from esml.alpha.params import XGBParams
from esml.alpha.splits import Fold, holdout_split, walk_forward_split
from esml.config import EsmlConfig
from esml.features.dataset import Dataset, build_dataset
from esml.market.events import is_synthetic

N_CLASSES = len(CLASSES)
_LABELS = list(range(N_CLASSES))
_NS = 1_000_000_000


@dataclass(frozen=True)
class FitResult:
    booster: xgb.Booster  # cut to the best iteration: exactly the model that was scored
    split: Fold  # train/validation row indices into the arrays passed to `fit_booster`
    validation: ClassificationMetrics


def class_weights(y: np.ndarray) -> np.ndarray:
    """Weight n / (k · count(class)) per class, so every present class weighs the same in total;
    a row's weight is `class_weights(y_train)[y]`."""
    counts = np.bincount(y, minlength=N_CLASSES).astype(np.float64)
    present = counts > 0
    per_class = np.zeros(N_CLASSES, dtype=np.float32)
    per_class[present] = len(y) / (present.sum() * counts[present])
    return per_class


def score(
    proba: np.ndarray, y: np.ndarray, y_train: np.ndarray, ts_ns: np.ndarray
) -> ClassificationMetrics:
    """Metrics of `proba` on rows labelled `y`, with baselines from the training labels."""
    counts_train = np.bincount(y_train, minlength=N_CLASSES)
    majority = int(np.argmax(counts_train))
    prior = np.clip(counts_train / counts_train.sum(), 1e-6, None)
    prior_proba = np.tile(prior / prior.sum(), (len(y), 1))
    counts = np.bincount(y, minlength=N_CLASSES)
    return ClassificationMetrics(
        rows=len(y),
        first_ts_ns=int(ts_ns[0]),
        last_ts_ns=int(ts_ns[-1]),
        accuracy=float(np.mean(np.argmax(proba, axis=1) == y)),
        macro_f1=float(
            f1_score(y, np.argmax(proba, axis=1), labels=_LABELS, average="macro", zero_division=0)
        ),
        log_loss=float(log_loss(y, proba, labels=_LABELS)),
        class_counts={c: int(n) for c, n in zip(CLASSES, counts, strict=True)},
        majority_class=CLASSES[majority],
        majority_baseline_accuracy=float(np.mean(y == majority)),
        prior_log_loss=float(log_loss(y, prior_proba, labels=_LABELS)),
        train_rows=len(y_train),
    )


def fit_booster(
    x: np.ndarray, y: np.ndarray, ts_ns: np.ndarray, *, horizon_ns: int, params: XGBParams
) -> FitResult:
    """Train on the earlier rows, early-stop and score on the purged later block.

    Both blocks are views of `x` (no copy of a 1M-row array), each binned once: the
    validation block on the training block's quantile cuts, as XGBoost's own estimator does.
    """
    split = _purged_holdout(x, y, ts_ns, horizon_ns, params.validation_fraction, params.embargo_s)
    tr, va = _rows(split.train), _rows(split.test)
    y_tr, y_va = y[tr], y[va]
    weights = class_weights(y_tr)  # the validation loss is weighted alike for early stopping
    train = xgb.QuantileDMatrix(
        x[tr], y_tr, weight=weights[y_tr], nthread=params.n_jobs, max_bin=params.max_bin
    )
    valid = xgb.QuantileDMatrix(
        x[va], y_va, weight=weights[y_va], ref=train, nthread=params.n_jobs, max_bin=params.max_bin
    )
    trained = xgb.train(
        _booster_params(params),
        train,
        num_boost_round=params.n_estimators,
        evals=[(valid, "validation")],
        early_stopping_rounds=params.early_stopping_rounds,
        verbose_eval=False,
    )
    booster = trained[: trained.best_iteration + 1]
    proba = booster.inplace_predict(x[va])
    return FitResult(booster, split, score(proba, y_va, y_tr, ts_ns[va]))


def _booster_params(params: XGBParams) -> dict[str, Any]:
    """The learner's parameters, exactly those `xgb.XGBClassifier` would pass for 3 classes."""
    return {
        "objective": "multi:softprob",
        "num_class": N_CLASSES,
        "tree_method": "hist",
        "max_bin": params.max_bin,
        "max_depth": params.max_depth,
        "learning_rate": params.learning_rate,
        "subsample": params.subsample,
        "colsample_bytree": params.colsample_bytree,
        "min_child_weight": params.min_child_weight,
        "reg_lambda": params.reg_lambda,
        "eval_metric": "mlogloss",
        "n_jobs": params.n_jobs,
        "random_state": params.random_state,
    }


def _rows(index: np.ndarray) -> slice | np.ndarray:
    """Consecutive row indices as a slice, so `a[_rows(i)]` is a view rather than a copy."""
    if len(index) and index[-1] - index[0] == len(index) - 1 and np.all(np.diff(index) == 1):
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def walk_forward_scores(
    x: np.ndarray, y: np.ndarray, ts_ns: np.ndarray, *, horizon_ns: int, params: XGBParams
) -> Iterator[ClassificationMetrics]:
    """Out-of-sample scores of each walk-forward test block, one fold at a time; each model
    is trained (and early-stopped on its own purged holdout) on rows purged before its block."""
    folds = walk_forward_split(
        ts_ns,
        n_folds=params.n_folds,
        horizon_ns=horizon_ns,
        embargo_ns=round(params.embargo_s * _NS),
    )
    for fold in folds:
        tr, te = fold.train, fold.test
        fit = fit_booster(x[tr], y[tr], ts_ns[tr], horizon_ns=horizon_ns, params=params)
        yield score(fit.booster.predict(xgb.DMatrix(x[te])), y[te], y[tr], ts_ns[te])


class LightGBMParams(BaseModel):
    """LightGBM's hyper-parameters, named like `XGBParams` where the two agree."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_estimators: int = Field(400, ge=1)
    num_leaves: int = Field(15, ge=2, le=4096)
    learning_rate: float = Field(0.05, gt=0, le=1)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    min_child_samples: int = Field(20, ge=1)
    reg_lambda: float = Field(1.0, ge=0)
    early_stopping_rounds: int = Field(30, ge=1)
    n_jobs: int = Field(1, ge=1, le=2)
    random_state: int = 7
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    embargo_s: float = Field(0.0, ge=0)


@dataclass(frozen=True)
class LightGBMFitResult:
    booster: Any  # lightgbm.Booster holding exactly the trees up to the best iteration
    split: Fold
    validation: ClassificationMetrics


def lightgbm_available() -> bool:
    """Whether the optional LightGBM backend can be used here."""
    try:
        _lightgbm()
    except ImportError:
        return False
    return True


def fit_lightgbm(
    x: np.ndarray, y: np.ndarray, ts_ns: np.ndarray, *, horizon_ns: int, params: LightGBMParams
) -> LightGBMFitResult:
    """`fit_booster` with LightGBM: same purged holdout, class weights and scores."""
    lgb = _lightgbm()
    split = _purged_holdout(x, y, ts_ns, horizon_ns, params.validation_fraction, params.embargo_s)
    tr, va = split.train, split.test
    weights = class_weights(y[tr])
    train = lgb.Dataset(x[tr], y[tr], weight=weights[y[tr]])
    valid = lgb.Dataset(x[va], y[va], weight=weights[y[va]], reference=train)
    config = {
        "objective": "multiclass",
        "num_class": N_CLASSES,
        "metric": "multi_logloss",
        "num_leaves": params.num_leaves,
        "learning_rate": params.learning_rate,
        "bagging_fraction": params.subsample,
        "bagging_freq": 1 if params.subsample < 1 else 0,
        "feature_fraction": params.colsample_bytree,
        "min_data_in_leaf": params.min_child_samples,
        "lambda_l2": params.reg_lambda,
        "num_threads": params.n_jobs,
        "seed": params.random_state,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    stop = lgb.early_stopping(params.early_stopping_rounds, verbose=False)
    trained = lgb.train(
        config, train, num_boost_round=params.n_estimators, valid_sets=[valid], callbacks=[stop]
    )
    best = trained.best_iteration or trained.current_iteration()
    booster = lgb.Booster(model_str=trained.model_to_string(num_iteration=best))
    proba = booster.predict(x[va])
    return LightGBMFitResult(booster, split, score(proba, y[va], y[tr], ts_ns[va]))


def lightgbm_to_onnx(booster: Any, n_features: int) -> onnx.ModelProto:
    """A LightGBM multiclass (softmax) booster as the served signature: float32 "features"
    [N, n_features] → "probabilities" [N, n_classes]: TreeEnsemble (x <= threshold) + Softmax.

    LightGBM compares a float32 feature, widened to double, with a double threshold; the
    graph compares in float32, so each threshold is rounded down to the largest float32
    at or below it, which gives the same branch for every float32 input. A missing value
    goes where LightGBM sends it: the default side for missing_type NaN, and for missing
    type None the side 0.0 takes (LightGBM reads NaN as 0 there).
    """
    dump = booster.dump_model()
    objective = str(dump.get("objective", ""))
    if objective.split(" ")[0] != "multiclass":
        raise OnnxExportError(f"objective {objective!r} is not supported; train multiclass")
    n_classes = int(dump["num_class"])
    if int(dump["max_feature_idx"]) + 1 != n_features:
        raise OnnxExportError(
            f"the booster was trained on {int(dump['max_feature_idx']) + 1} features, "
            f"not {n_features}"
        )
    nodes = _LeqNodes()
    for k, info in enumerate(dump["tree_info"]):
        nodes.add_tree(info["tree_structure"], k % n_classes)
    if not nodes.roots:
        raise OnnxExportError("the booster has no trees")
    return tree_ensemble_model(
        nodes,
        n_features,
        n_classes,
        mode=BRANCH_LEQ,
        graph_name="lightgbm_direction",
        producer="esml.alpha.xgb",
    )


def export_lightgbm_onnx(booster: Any, n_features: int, check_rows: np.ndarray) -> bytes:
    """Serialised ONNX of a LightGBM booster, verified on `check_rows` against its predict."""
    model = lightgbm_to_onnx(booster, n_features)
    return checked_bytes(model, n_features, check_rows, booster.predict, "LightGBM")


def train_direction_model(
    events_list: Sequence[np.ndarray],
    cfg: EsmlConfig,
    out_dir: str | Path,
    *,
    synthetic: bool,
    source_names: Sequence[str] | None = None,
    params: XGBParams | None = None,
    progress: Progress | None = None,
) -> ModelManifest:
    """Events → features → walk-forward scores → final model → `model.onnx` + `manifest.json`.

    `source_names` label each events array in the manifest (file names, synthetic seeds).
    Synthetic events (the simulator's publisher id) must be declared `synthetic=True`.
    """
    started = time.perf_counter()
    params = params or XGBParams()
    names = _source_names(events_list, source_names)
    undeclared = [n for n, ev in zip(names, events_list, strict=True) if is_synthetic(ev)]
    if undeclared and not synthetic:
        raise ValueError(f"sources {undeclared} are synthetic; pass synthetic=True")
    horizon_ns = round(cfg.features.horizon_s * _NS)

    task = _task(progress, "features", len(events_list))
    datasets = []
    for ev in events_list:
        datasets.append(build_dataset(ev, cfg.instrument_spec, cfg.features))
        _advance(progress, task)
    x, y, ts = _stack(datasets, names)

    task = _task(progress, "walk-forward folds", params.n_folds)
    folds = []
    if params.n_folds:
        for metrics in walk_forward_scores(x, y, ts, horizon_ns=horizon_ns, params=params):
            folds.append(metrics)
            _advance(progress, task)

    task = _task(progress, "final model", 2)
    fit = fit_booster(x, y, ts, horizon_ns=horizon_ns, params=params)
    _advance(progress, task)
    onnx_bytes = export_onnx(fit.booster, x.shape[1], check_rows=x[fit.split.test])
    manifest = _write_model(
        Path(out_dir),
        onnx_bytes,
        fit,
        cfg,
        params,
        dict(zip(names, datasets, strict=True)),
        folds,
        synthetic=synthetic,
        started=started,
    )
    _advance(progress, task)
    return manifest


def _write_model(
    out: Path,
    onnx_bytes: bytes,
    fit: FitResult,
    cfg: EsmlConfig,
    params: XGBParams,
    datasets: dict[str, Dataset],
    folds: list[ClassificationMetrics],
    *,
    synthetic: bool,
    started: float,
) -> ModelManifest:
    """The old manifest goes first, the new one last: a half-written directory never loads."""
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    write_atomic(out / MODEL_FILE, onnx_bytes)
    created = datetime.now(UTC)
    onnx_sha = file_sha256(out / MODEL_FILE)
    first = next(iter(datasets.values()))
    manifest = ModelManifest(
        name=f"{cfg.instrument.lower()}_direction_{cfg.features.horizon_s:g}s",
        version=f"{created:%Y%m%dT%H%M%SZ}-{onnx_sha[:8]}",
        created_at=created,
        instrument=cfg.instrument,
        feature_names=list(first.feature_names),
        feature_version=first.feature_version,
        decision_interval_s=cfg.features.decision_interval_s,
        horizon_s=cfg.features.horizon_s,
        dead_zone_ticks=cfg.features.dead_zone_ticks,
        data_sha256={name: d.data_sha256 for name, d in datasets.items()},
        training_rows=len(fit.split.train),
        n_trees=fit.booster.num_boosted_rounds(),
        hyperparameters=params.model_dump(),
        validation=fit.validation,
        folds=folds,
        training_time_s=round(time.perf_counter() - started, 3),
        onnx_sha256=onnx_sha,
        synthetic_training_data=synthetic,
    )
    manifest.save(out)
    return manifest


def _stack(datasets: list[Dataset], names: list[str]) -> tuple[np.ndarray, ...]:
    """All sessions' rows in time order; their feature lists must be identical."""
    first = datasets[0]
    for name, d in zip(names, datasets, strict=True):
        if list(d.feature_names) != list(first.feature_names):
            raise ValueError(f"{name}: feature names differ from {names[0]}'s")
        if d.feature_version != first.feature_version:
            raise ValueError(
                f"{name}: feature version {d.feature_version!r} differs from "
                f"{first.feature_version!r}"
            )
    x = np.concatenate([d.X for d in datasets]).astype(np.float32, copy=False)
    y = np.concatenate([d.y for d in datasets]).astype(np.int64)
    ts = np.concatenate([d.ts_ns for d in datasets]).astype(np.int64)
    if len(y) == 0:
        raise ValueError(f"no labelled rows in {names}; sessions shorter than the horizon?")
    order = np.argsort(ts, kind="stable")
    return x[order], y[order], ts[order]


def _purged_holdout(
    x: np.ndarray,
    y: np.ndarray,
    ts_ns: np.ndarray,
    horizon_ns: int,
    validation_fraction: float,
    embargo_s: float,
) -> Fold:
    """The last block for validation, the purged rest for training, all classes present."""
    _check_arrays(x, y, ts_ns)
    split = holdout_split(
        ts_ns,
        test_fraction=validation_fraction,
        horizon_ns=horizon_ns,
        embargo_ns=round(embargo_s * _NS),
    )
    missing = [CLASSES[c] for c in range(N_CLASSES) if not np.any(y[split.train] == c)]
    if missing:
        raise ValueError(
            f"the {len(split.train)} training rows have no {missing} labels; a direction model "
            f"needs all three classes (more data, or a smaller dead zone)"
        )
    return split


def _check_arrays(x: np.ndarray, y: np.ndarray, ts_ns: np.ndarray) -> None:
    if x.ndim != 2 or len(x) != len(y) or len(y) != len(ts_ns):
        raise ValueError(
            f"x [n, f], y [n] and ts_ns [n] must agree: got {x.shape}, {y.shape}, {ts_ns.shape}"
        )
    if len(y) and (y.min() < 0 or y.max() >= N_CLASSES):
        raise ValueError(f"labels must be 0 (down), 1 (flat) or 2 (up); got {np.unique(y)}")


def _source_names(events_list: Sequence[np.ndarray], names: Sequence[str] | None) -> list[str]:
    if not events_list:
        raise ValueError("no training data: events_list is empty")
    out = list(names) if names is not None else [f"session-{i}" for i in range(len(events_list))]
    if len(out) != len(events_list) or len(set(out)) != len(out):
        raise ValueError(f"source_names must be {len(events_list)} unique names, got {out}")
    return out


def _task(progress: Progress | None, description: str, total: int) -> int | None:
    return None if progress is None else progress.add_task(description, total=total)


def _advance(progress: Progress | None, task: int | None, steps: int = 1) -> None:
    if progress is not None and task is not None:
        progress.advance(task, steps)


def _lightgbm() -> ModuleType:
    """The optional backend, imported only when asked for."""
    return importlib.import_module("lightgbm")


class _LeqNodes(TreeArrays):
    """LightGBM's dumped trees as TreeEnsemble arrays (branch true when x <= threshold)."""

    def add_tree(self, tree: dict, target: int) -> None:
        if "leaf_value" in tree:  # a single leaf: one node whose both branches reach it
            leaf = self.leaf(target, float(tree["leaf_value"]))
            self.roots.append(self.interior(0, 0.0, 1, (leaf, 1), (leaf, 1)))
            return
        self.roots.append(self._subtree(tree, target))

    def _subtree(self, node: dict, target: int) -> int:
        if node.get("decision_type") != "<=":
            raise OnnxExportError(
                f"decision type {node.get('decision_type')!r} (categorical) is not supported"
            )
        missing = node.get("missing_type", "None")
        threshold = float(node["threshold"])
        if missing == "NaN":
            missing_left = int(bool(node["default_left"]))
        elif missing == "None":
            missing_left = int(threshold >= 0.0)  # LightGBM reads NaN as 0.0 here
        else:
            raise OnnxExportError(f"missing_type {missing!r} (zero_as_missing) is not supported")
        branches = []
        for child in (node["left_child"], node["right_child"]):
            if "leaf_value" in child:
                branches.append((self.leaf(target, float(child["leaf_value"])), 1))
            else:
                branches.append((self._subtree(child, target), 0))
        return self.interior(
            int(node["split_feature"]),
            float(_float32_at_or_below(threshold)),  # exact: the graph stores float32
            missing_left,
            branches[0],
            branches[1],
        )


def _float32_at_or_below(value: float) -> np.float32:
    """The largest float32 <= value: for float32 x, x <= value iff x <= this."""
    with np.errstate(over="ignore"):
        f = np.float32(value)
    if float(f) > value:
        f = np.nextafter(f, np.float32(-np.inf))
    return f
