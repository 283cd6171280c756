"""Score a trained bundle, as shipped, on data of one's own: no model is trained.

The bundle's members are the exported ONNX files the engine serves, loaded as the engine
loads them; the ensemble is the bundle's own (its configuration, calibrator, meta-learner
starting empty at the first row). Its features, horizon, decision interval and dead zone
are the bundle's. The baselines have to learn something, so the rows are cut in time:
the baselines fit on the first `baseline_fraction` of them, and every model and baseline
is scored on the rest (purged: no fitting row's label window reaches into them), with the
same block-bootstrap intervals and verdicts as `esml evaluate`. A source the bundle was
trained on is named in the result: scores on it are in-sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esml.alpha.bundle_manifest import EnsembleManifest, load_json
from esml.alpha.ensemble import ensemble_batch
from esml.alpha.model import OnnxAlphaModel
from esml.alpha.registry import CHAMPION_FILE, champion, load_bundle
from esml.alpha.sequence_model import OnnxSequenceModel
from esml.alpha.splits import holdout_split
from esml.alpha.torch_train import WINDOWS
from esml.config import FeatureConfig
from esml.evaluation.datasets import EvalDataset, Rows, build_rows
from esml.evaluation.model_eval import (
    BASELINES,
    ENSEMBLE,
    NET_KINDS,
    Comparison,
    FoldRows,
    Scores,
    baseline_predictions,
    block_rows,
    score_models,
)

_NS = 1_000_000_000


@dataclass(frozen=True)
class BundleScores:
    bundle: str
    synthetic_training_data: bool
    models: tuple[str, ...]  # scored, ensemble last when it could be
    not_scored: dict[str, str]  # model → why
    in_sample: tuple[str, ...]  # sources the bundle was trained on
    fit_rows: int
    scores: dict[str, Scores]
    comparisons: tuple[Comparison, ...]


def bundle_dir(path: Path) -> Path:
    """A bundle directory, or the champion of a model root."""
    path = Path(path)
    if (path / CHAMPION_FILE).is_file():
        return champion(path)
    load_bundle(path)
    return path


def served_proba(name: str, directory: Path, rows: Rows, idx: np.ndarray) -> np.ndarray:
    """Probabilities of a member's exported ONNX model, loaded as the engine loads it."""
    if name == "trees":
        model = OnnxAlphaModel.load(
            directory, feature_names=rows.feature_names, feature_version=rows.feature_version
        )
        return model.predict_proba(rows.x[idx]).astype(np.float64)
    spec, _ = WINDOWS[name]
    net = OnnxSequenceModel.load(
        directory, window_name=spec.name, window_version=spec.version, step_names=spec.step_names
    )
    p = np.concatenate(
        [net.predict_proba(rows.windows[name][idx[k : k + 1024]]) for k in range(0, len(idx), 1024)]
    )
    return p.astype(np.float64)


def score_bundle(
    path: Path,
    dataset: EvalDataset,
    *,
    baseline_fraction: float = 0.5,
    embargo_s: float = 30.0,
    n_boot: int = 1000,
    seed: int = 7,
) -> BundleScores:
    """Every member the data can feed, and the ensemble when all its members can, against
    the baselines on the later rows of `dataset` (see the module docstring)."""
    if not 0 < baseline_fraction < 1:
        raise ValueError(f"baseline_fraction must lie in (0, 1), got {baseline_fraction}")
    path = bundle_dir(path)
    manifest = load_bundle(path)
    if manifest.instrument != dataset.instrument.root:
        raise ValueError(
            f"the bundle is for {manifest.instrument}, the data for {dataset.instrument.root}"
        )
    features = FeatureConfig(
        decision_interval_s=manifest.decision_interval_s,
        horizon_s=manifest.horizon_s,
        dead_zone_ticks=manifest.dead_zone_ticks,
    )
    members = {m.kind: m for m in manifest.members}
    nets = [k for k in NET_KINDS if k in members]
    rows = build_rows(dataset, features, nets)
    if list(rows.feature_names) != manifest.feature_names:
        raise ValueError("the bundle's features differ from this version of esml's")
    horizon_ns = round(manifest.horizon_s * _NS)
    split = holdout_split(
        rows.ts_ns,
        test_fraction=1 - baseline_fraction,
        horizon_ns=horizon_ns,
        embargo_ns=round(embargo_s * _NS),
    )
    fit, test = split.train, split.test
    not_scored = {k: f"no input here: {why}" for k, why in rows.excluded.items()}
    scored = [k for k in ("trees", *nets) if k in members and k not in rows.excluded]
    probas = {k: served_proba(k, path / members[k].directory, rows, test) for k in scored}
    predictions = {k: (p, p.argmax(axis=1).astype(np.int64)) for k, p in probas.items()}
    if ENSEMBLE in members:
        member = members[ENSEMBLE]
        em = load_json(EnsembleManifest, path / member.directory / member.manifest)
        names = [m.name for m in em.members]
        missing = [n for n in names if n not in probas]
        if missing:
            not_scored[ENSEMBLE] = f"its members {missing} have no input here"
        else:
            stack = np.stack([probas[n] for n in names], axis=1)
            tick = dataset.instrument.tick_size
            b = ensemble_batch(
                em.config, names, rows.ts_ns[test], rows.mid[test], stack, tick, em.calibrator
            )
            predictions[ENSEMBLE] = (b.proba, b.direction.astype(np.int64))
    if not predictions:
        raise ValueError(f"no model of the bundle has input in this data: {not_scored}")
    fold = FoldRows(fit=fit, calibration=np.zeros(0, np.int64), test=test)
    predictions.update(baseline_predictions(rows, fold, seed))
    block = block_rows(len(test), 60.0, manifest.decision_interval_s)
    scores, comparisons = score_models(
        rows.y[test], predictions, BASELINES, block=block, n_boot=n_boot, seed=seed
    )
    trained_on = set(manifest.data_sha256.values())
    return BundleScores(
        bundle=path.name,
        synthetic_training_data=manifest.synthetic_training_data,
        models=tuple(m for m in (*scored, ENSEMBLE) if m in predictions),
        not_scored=not_scored,
        in_sample=tuple(s.name for s in dataset.sources if s.sha256 in trained_on),
        fit_rows=len(fit),
        scores=scores,
        comparisons=tuple(comparisons),
    )
