"""Train the whole model stack into one bundle that the engine can swap in while running.

The aligned decision rows of all sources (`esml.evaluation.datasets.build_rows`) fix a
cutoff: the last `holdout_fraction` of rows are held out. Every component trains on the
events before the cutoff only (a prefix of each stream; features never look ahead, so
there they equal what the full stream gives) with its own walk-forward folds and its own
manifest: the trees (`train_direction_model`), the three nets (`train_sequence_model`)
and the regime classifier. The ensemble's calibrator is then fitted on the first part of
the held-out rows from the exported ONNX members (the very files the engine serves), and
the ensemble is scored on the rest against the baselines. The bundle manifest is written
last; `esml.alpha.registry.publish` moves the bundle into place and points `champion` at it
only when the ensemble beats every baseline on those rows (`StackParams.promotion_metrics`,
`promotion_margin`; `esml.alpha.bundle_manifest.judge_promotion`) or `force` says so, which
bundle.json's `promotion` then records. Any failure removes the staging directory and leaves
the champion as it was.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from rich.progress import Progress

from esml.alpha.bundle_manifest import (
    BUNDLE_FILE,
    ENSEMBLE_FILE,
    BundleManifest,
    BundleMember,
    EnsembleManifest,
    EnsembleMember,
    HeldOutScores,
    MemberKind,
    MetricInterval,
    Promotion,
    RegimeFold,
    RegimeManifest,
    judge_promotion,
    load_json,
    save_json,
)
from esml.alpha.calibration import expected_calibration_error, reachable_max
from esml.alpha.ensemble import EnsembleConfig, ensemble_batch, fit_ensemble_calibrator
from esml.alpha.exit_outcomes import ExitPlan, exit_plan_outcomes
from esml.alpha.manifest import MANIFEST_FILE, MODEL_FILE, file_sha256, write_atomic
from esml.alpha.regime import fit_regime_classifier
from esml.alpha.regime_config import RegimeConfig
from esml.alpha.registry import discard, publish, staging_dir
from esml.alpha.splits import holdout_split, walk_forward_split
from esml.alpha.torch_train import TrainParams, train_sequence_model
from esml.alpha.xgb import XGBParams, train_direction_model
from esml.config import EsmlConfig
from esml.evaluation.bundle_scoring import served_proba
from esml.evaluation.datasets import EvalDataset, Rows, Source, build_rows
from esml.evaluation.model_eval import (
    BASELINE_LABELS,
    BASELINES,
    ENSEMBLE,
    MODEL_LABELS,
    NET_KINDS,
    SMALL_DEEPLOB,
    Interval,
    baseline_predictions,
    block_rows,
    metrics_from_sums,
    row_stats,
    score_models,
)
from esml.evaluation.model_eval import FoldRows as EvalFold
from esml.features.dataset import events_sha256
from esml.features.labels import DOWN, REGIMES, UP
from esml.market.events import is_synthetic

STACK_MODELS: tuple[MemberKind, ...] = (
    "trees",
    "tick_lstm",
    "bar_lstm",
    "deeplob",
    "regime",
    "ensemble",
)
"""Every model of the stack, in training order: the ensemble comes after its members."""
_NS = 1_000_000_000


def _nets() -> TrainParams:
    return TrainParams(epochs=5, max_batches_per_epoch=16, patience=3, n_folds=2, threads=1)


class StackParams(BaseModel):
    """What the stack trains and how hard; `seed` is applied to every model. One thread per
    model by default: on a shared two-core machine, xgboost's and torch's OpenMP threads
    waiting on each other ran several times slower than one thread."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[MemberKind, ...] = STACK_MODELS
    trees: XGBParams = Field(default_factory=lambda: XGBParams(n_folds=2, n_jobs=1))
    nets: TrainParams = Field(default_factory=_nets)
    deeplob: dict[str, int] = Field(default_factory=lambda: dict(SMALL_DEEPLOB))
    regime: RegimeConfig = Field(default_factory=RegimeConfig)
    regime_folds: int = Field(2, ge=0, le=10)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
    holdout_fraction: float = Field(0.3, gt=0, lt=1)
    calibration_share: float = Field(0.6, gt=0, lt=1)
    embargo_s: float = Field(30.0, ge=0)
    n_boot: int = Field(500, ge=100)
    seed: int = 7
    promotion_metrics: tuple[Literal["accuracy", "macro_f1", "log_loss", "brier"], ...] = (
        "log_loss",
        "accuracy",
    )
    promotion_margin: float = Field(0.0, ge=0)
    """The ensemble becomes champion only if, against every baseline and on every
    promotion metric, the lower end of its improvement's 95% interval exceeds this."""

    @field_validator("models")
    @classmethod
    def _known_and_complete(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v) or not v:
            raise ValueError(f"models must be distinct and not empty, got {v}")
        if ENSEMBLE in v and "trees" not in v:
            raise ValueError("the ensemble needs the trees, its heaviest member")
        return v

    def seeded(self) -> StackParams:
        """The same parameters with `seed` in every model's own seed field."""
        return self.model_copy(
            update={
                "trees": self.trees.model_copy(update={"random_state": self.seed}),
                "nets": self.nets.model_copy(update={"seed": self.seed}),
                "regime": self.regime.model_copy(update={"random_state": self.seed}),
            }
        )


@dataclass(frozen=True)
class StackResult:
    path: Path  # the published bundle
    manifest: BundleManifest
    ensemble: EnsembleManifest | None

    @property
    def promotion(self) -> Promotion:
        assert self.manifest.promotion is not None  # train_stack always judges
        return self.manifest.promotion

    @property
    def champion(self) -> bool:
        """Whether the bundle was made the champion (earned or forced)."""
        return self.promotion.beats_baselines or self.promotion.forced


def train_stack(
    sources: Mapping[str, np.ndarray],
    cfg: EsmlConfig,
    root: Path,
    *,
    synthetic: bool,
    params: StackParams | None = None,
    keep: int = 2,
    force: bool = False,
    progress: Progress | None = None,
) -> StackResult:
    """Train, verify and publish one bundle under `root`; it becomes the champion if it
    beats the baselines on its held-out rows, or if `force`."""
    started = time.perf_counter()
    params = (params or StackParams()).seeded()
    if not sources:
        raise ValueError("no training data: sources is empty")
    undeclared = [n for n, ev in sources.items() if is_synthetic(ev)]
    if undeclared and not synthetic:
        raise ValueError(f"sources {undeclared} are synthetic; pass synthetic=True")
    inst = cfg.instrument_spec
    dataset = EvalDataset(
        name="training",
        kind="synthetic" if synthetic else "cme-es",
        instrument=inst,
        sources=tuple(Source(n, ev, events_sha256(ev)) for n, ev in sources.items()),
        synthetic=synthetic,
    )
    nets = [k for k in NET_KINDS if k in params.models]
    overall = _task(progress, "stack: aligned rows", len(params.models) + 1)
    rows = build_rows(dataset, cfg.features, nets, regime_kwargs=params.regime.label_kwargs())
    left_out = {k: f"not trained: {why}" for k, why in rows.excluded.items()}
    models = [m for m in STACK_MODELS if m in params.models and m not in rows.excluded]
    embargo_ns = round(params.embargo_s * _NS)
    cutoff_ns = int(rows.ts_ns[int(len(rows) * (1 - params.holdout_fraction))])
    held = np.flatnonzero(rows.ts_ns >= cutoff_ns + embargo_ns)
    train_events = {n: ev[ev["ts_recv"] < cutoff_ns] for n, ev in sources.items()}
    train_events = {n: ev for n, ev in train_events.items() if len(ev)}
    names, events = list(train_events), list(train_events.values())
    _advance(progress, overall)

    created = datetime.now(UTC)
    staged = staging_dir(Path(root), f"{cfg.instrument.lower()}-stack")
    try:
        members: list[BundleMember] = []
        served: dict[str, tuple[Path, str, str]] = {}  # model → (dir, version, onnx sha)
        held_out: HeldOutScores | None = None
        for kind in models:
            _describe(progress, overall, f"stack: {MODEL_LABELS.get(kind, kind)}")
            out = staged / kind
            if kind == "trees":
                m = train_direction_model(
                    events,
                    cfg,
                    out,
                    synthetic=synthetic,
                    source_names=names,
                    params=params.trees,
                    progress=progress,
                )
                served[kind] = (out, m.version, m.onnx_sha256)
            elif kind in NET_KINDS:
                seq = train_sequence_model(
                    kind,
                    events,
                    cfg,
                    out,
                    synthetic=synthetic,
                    source_names=names,
                    params=params.nets,
                    progress=progress,
                    net_config=dict(params.deeplob) if kind == "deeplob" else None,
                )
                served[kind] = (out, seq.version, seq.onnx_sha256)
            elif kind == "regime":
                r = _train_regime(rows, cutoff_ns, held, out, cfg, params, train_events, synthetic)
                served[kind] = (out, r.version, r.onnx_sha256)
            else:
                e = _train_ensemble(
                    rows, cutoff_ns, held, out, cfg, params, served, sources, synthetic
                )
                members.append(_member(kind, out, ENSEMBLE_FILE, e.version))
                held_out = e.held_out
            if kind != ENSEMBLE:
                members.append(_member(kind, out, MANIFEST_FILE, served[kind][1]))
            _advance(progress, overall)
        digest = hashlib.sha256("".join(m.manifest_sha256 for m in members).encode())
        name = _free_name(
            Path(root),
            f"{cfg.instrument.lower()}-stack-{created:%Y%m%dT%H%M%SZ}-{digest.hexdigest()[:8]}",
        )
        bundle = BundleManifest(
            name=f"{cfg.instrument.lower()}_stack_{cfg.features.horizon_s:g}s",
            version=name,
            created_at=created,
            training_time_s=round(time.perf_counter() - started, 3),
            synthetic_training_data=synthetic,
            data_sha256={src.name: src.sha256 for src in dataset.sources},
            instrument=cfg.instrument,
            feature_names=list(rows.feature_names),
            feature_version=rows.feature_version,
            horizon_s=cfg.features.horizon_s,
            decision_interval_s=cfg.features.decision_interval_s,
            dead_zone_ticks=cfg.features.dead_zone_ticks,
            cutoff_ns=cutoff_ns,
            seed=params.seed,
            members=members,
            left_out=left_out,
            parameters=params.model_dump(mode="json"),
            promotion=judge_promotion(
                held_out, params.promotion_metrics, params.promotion_margin, forced=force
            ),
        )
        save_json(bundle, staged / BUNDLE_FILE)
        p = bundle.promotion
        path = publish(staged, Path(root), name, keep=keep, champion=p.beats_baselines or force)
    except BaseException:
        discard(staged)
        raise
    return StackResult(path, bundle, _ensemble_of(path, members))


def _member(kind: str, directory: Path, manifest: str, version: str) -> BundleMember:
    return BundleMember(
        kind=kind,
        directory=directory.name,
        manifest=manifest,
        manifest_sha256=file_sha256(directory / manifest),
        version=version,
    )


def _ensemble_of(path: Path, members: list[BundleMember]) -> EnsembleManifest | None:
    for m in members:
        if m.kind == ENSEMBLE:
            return load_json(EnsembleManifest, path / m.directory / m.manifest)
    return None


def _free_name(root: Path, name: str) -> str:
    """`name`, or `name-2`, `name-3`... if a bundle of that name exists already."""
    candidate, k = name, 1
    while (root / candidate).exists():
        k += 1
        candidate = f"{name}-{k}"
    return candidate


# ---------------------------------------------------------------------------- regime


def _train_regime(
    rows: Rows,
    cutoff_ns: int,
    held: np.ndarray,
    out: Path,
    cfg: EsmlConfig,
    params: StackParams,
    train_events: Mapping[str, np.ndarray],
    synthetic: bool,
) -> RegimeManifest:
    """The regime classifier on rows before the cutoff whose 5-minute label window ends
    before it, walk-forward scored; exported to ONNX and checked on the held-out rows."""
    started = time.perf_counter()
    rc = params.regime
    horizon_ns = round(rc.horizon_s * _NS)
    train = np.flatnonzero((rows.regime >= 0) & (rows.ts_ns + horizon_ns < cutoff_ns))
    if len(train) == 0:
        raise ValueError("no regime-labelled rows before the cutoff; more data is needed")
    x, y, ts = rows.x[train], rows.regime[train], rows.ts_ns[train]
    names = list(rows.feature_names)
    folds = []
    if params.regime_folds:
        for f in walk_forward_split(
            ts,
            n_folds=params.regime_folds,
            horizon_ns=horizon_ns,
            embargo_ns=round(params.embargo_s * _NS),
        ):
            clf = fit_regime_classifier(x[f.train], y[f.train], names, rc)
            folds.append(
                _regime_fold(clf.predict(x[f.test]).proba, y[f.test], y[f.train], ts[f.test])
            )
    final = fit_regime_classifier(x, y, names, rc)
    check = rows.x[held] if len(held) else x[-1000:]
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / MODEL_FILE, final.export_onnx(check[:2000]))
    sha = file_sha256(out / MODEL_FILE)
    manifest = RegimeManifest(
        **_provenance(
            "regime",
            rc.horizon_s,
            sha,
            cfg=cfg,
            started=started,
            synthetic=synthetic,
            events=train_events,
        ),
        feature_names=names,
        feature_version=rows.feature_version,
        classes=list(REGIMES),
        config=rc,
        members=final.members,
        training_rows=len(train),
        folds=folds,
        onnx_sha256=sha,
    )
    save_json(manifest, out / MANIFEST_FILE)
    return manifest


def _regime_fold(
    proba: np.ndarray, y: np.ndarray, y_train: np.ndarray, ts: np.ndarray
) -> RegimeFold:
    p = np.asarray(proba, np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    m = metrics_from_sums(row_stats(y, p, p.argmax(axis=1)).sum(axis=0))
    counts = np.bincount(y, minlength=len(REGIMES))
    majority = int(np.argmax(np.bincount(y_train, minlength=len(REGIMES))))
    return RegimeFold(
        rows=len(y),
        train_rows=len(y_train),
        first_ts_ns=int(ts[0]),
        last_ts_ns=int(ts[-1]),
        accuracy=float(m["accuracy"]),
        macro_f1=float(m["macro_f1"]),
        log_loss=float(m["log_loss"]),
        brier=float(m["brier"]),
        class_counts={c: int(n) for c, n in zip(REGIMES, counts, strict=True)},
        majority_baseline_accuracy=float(np.mean(y == majority)),
    )


# ---------------------------------------------------------------------------- ensemble


def _train_ensemble(
    rows: Rows,
    cutoff_ns: int,
    held: np.ndarray,
    out: Path,
    cfg: EsmlConfig,
    params: StackParams,
    served: Mapping[str, tuple[Path, str, str]],
    sources: Mapping[str, np.ndarray],
    synthetic: bool,
) -> EnsembleManifest:
    """Calibrate the vote of the served members on the first held-out rows; score it, and
    the baselines fitted before the cutoff, on the rest."""
    started = time.perf_counter()
    names = [n for n in params.ensemble.weights if n in served]
    ecfg = params.ensemble.model_copy(
        update={
            "weights": {n: params.ensemble.weights[n] for n in names},
            "horizon_s": cfg.features.horizon_s,
            "dead_zone_ticks": cfg.features.dead_zone_ticks,
        }
    )
    horizon_ns = round(cfg.features.horizon_s * _NS)
    embargo_ns = round(params.embargo_s * _NS)
    if len(held) < 100:
        raise ValueError(
            f"{len(held)} held-out rows are too few to calibrate and score the "
            f"ensemble; use more data or a larger holdout_fraction"
        )
    split = holdout_split(
        rows.ts_ns[held],
        test_fraction=1 - params.calibration_share,
        horizon_ns=horizon_ns,
        embargo_ns=embargo_ns,
    )
    probas = np.stack([served_proba(n, served[n][0], rows, held) for n in names], axis=1)
    cal, test = held[split.train], held[split.test]
    tick = cfg.instrument_spec.tick_size
    calibrator = fit_ensemble_calibrator(
        ecfg, names, rows.ts_ns[cal], rows.mid[cal], probas[split.train], tick
    )
    batch = ensemble_batch(
        ecfg, names, rows.ts_ns[test], rows.mid[test], probas[split.test], tick, calibrator
    )
    pre = np.flatnonzero(rows.ts_ns + horizon_ns < cutoff_ns)
    fold = EvalFold(fit=pre, calibration=np.zeros(0, np.int64), test=test)
    predictions = {
        ENSEMBLE: (batch.proba, batch.direction.astype(np.int64)),
        **baseline_predictions(rows, fold, params.seed),
    }
    block = block_rows(len(test), 60.0, cfg.features.decision_interval_s)
    scores, comparisons = score_models(
        rows.y[test], predictions, BASELINES, block=block, n_boot=params.n_boot, seed=params.seed
    )
    raw = ensemble_batch(
        ecfg, names, rows.ts_ns[test], rows.mid[test], probas[split.test], tick, None
    )
    held_out = HeldOutScores(
        rows=len(test),
        first_ts_ns=int(rows.ts_ns[test[0]]),
        last_ts_ns=int(rows.ts_ns[test[-1]]),
        metrics=_intervals(scores[ENSEMBLE].metrics),
        baselines={b: _intervals(scores[b].metrics) for b in BASELINES},
        verdicts=[c.sentence("the ensemble", BASELINE_LABELS[c.baseline]) for c in comparisons],
        improvements={c.baseline: _intervals(c.improvement) for c in comparisons},
        ece=expected_calibration_error(batch.proba, rows.y[test]),
        ece_uncalibrated=expected_calibration_error(raw.proba, rows.y[test]),
        reachable_max=reachable_max(calibrator) if calibrator is not None else None,
    )
    body = calibrator.model_dump_json() if calibrator is not None else ""
    manifest = EnsembleManifest(
        **_provenance(
            "ensemble",
            cfg.features.horizon_s,
            hashlib.sha256(body.encode()).hexdigest(),
            cfg=cfg,
            started=started,
            synthetic=synthetic,
            events=sources,
        ),
        config=ecfg,
        calibrator=calibrator,
        members=[
            EnsembleMember(
                name=n, directory=served[n][0].name, version=served[n][1], onnx_sha256=served[n][2]
            )
            for n in names
        ],
        calibration_rows=len(cal),
        calibration_first_ts_ns=int(rows.ts_ns[cal[0]]),
        calibration_last_ts_ns=int(rows.ts_ns[cal[-1]]),
        held_out=held_out,
        exit_outcomes=[
            exit_plan_outcomes(
                rows.ts_ns[test],
                rows.mid[test],
                batch.proba[:, UP],
                batch.proba[:, DOWN],
                tick,
                plan,
            )
            for plan in exit_plans(cfg)
        ],
    )
    out.mkdir(parents=True, exist_ok=True)
    save_json(manifest, out / ENSEMBLE_FILE)
    return manifest


def exit_plans(cfg: EsmlConfig) -> list[ExitPlan]:
    """The distinct exit plans the engine runs: each session budget's bracket with the
    time exit at the prediction horizon (none when the time exit is off: a plan without
    one is not what the held-out walk values, so no outcomes are recorded)."""
    if not cfg.execution.exits.time_exit:
        return []
    brackets = sorted({(b.stop_ticks, b.target_ticks) for b in cfg.risk.budgets.values()})
    return [
        ExitPlan(stop_ticks=s, target_ticks=t, time_exit_s=cfg.features.horizon_s)
        for s, t in brackets
    ]


def _provenance(
    kind: str,
    horizon_s: float,
    digest: str,
    *,
    cfg: EsmlConfig,
    started: float,
    synthetic: bool,
    events: Mapping[str, np.ndarray],
) -> dict[str, object]:
    """The fields a component's manifest opens with: what it is, which version (its time
    and the digest of what it learnt), how long it took, and what data it saw."""
    created = datetime.now(UTC)
    return {
        "name": f"{cfg.instrument.lower()}_{kind}_{horizon_s:g}s",
        "version": f"{created:%Y%m%dT%H%M%SZ}-{digest[:8]}",
        "created_at": created,
        "training_time_s": round(time.perf_counter() - started, 3),
        "synthetic_training_data": synthetic,
        "data_sha256": {n: events_sha256(ev) for n, ev in events.items()},
        "instrument": cfg.instrument,
    }


def _intervals(metrics: Mapping[str, Interval]) -> dict[str, MetricInterval]:
    return {
        m: MetricInterval(value=iv.value, low=iv.low, high=iv.high) for m, iv in metrics.items()
    }


def _task(progress: Progress | None, text: str, total: int) -> int | None:
    return None if progress is None else progress.add_task(text, total=total)


def _advance(progress: Progress | None, task: int | None) -> None:
    if progress is not None and task is not None:
        progress.advance(task)


def _describe(progress: Progress | None, task: int | None, text: str) -> None:
    if progress is not None and task is not None:
        progress.update(task, description=text)
