"""The ensemble: a weighted vote of the direction models, re-weighted by their recent record.

Each model votes for its most probable class with its weight; the ensemble's direction is
the class that gathers at least `min_agreement` of the total weight (which must be more
than half, so two classes can never both reach it), and FLAT otherwise. Its probabilities
are the weighted mean of the models' probabilities, passed through a calibrator fitted on
a calibration fold (vector scaling by default: parametric and bounded, so no class can be
locked out; `esml.alpha.calibration`); its confidence is the calibrated probability of the
agreed direction (0 when too few models agree).

The meta-learner multiplies each configured weight by exp(sharpness * (accuracy - 1/3)),
where accuracy is the model's hit rate over the latest `meta_window` resolved decisions,
shrunk towards chance by `meta_prior` pseudo-decisions. A decision at t is resolved only
once the ensemble has seen a mid at or after t + horizon, and its outcome is exactly
`direction_labels`' label for t, so no weight ever uses an outcome the live engine could
not have known. `ensemble_batch` computes the same numbers over a whole fold at once
(for evaluation and for fitting the calibrator); a test holds the two paths equal.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from esml.alpha.calibration import MulticlassCalibrator, fit_calibrator
from esml.features.labels import CLASSES, DOWN, FLAT, UP, direction_labels

N_CLASSES = len(CLASSES)
DEFAULT_WEIGHTS = {"tick_lstm": 1.0, "trees": 2.0, "bar_lstm": 1.0}
_CHANCE = 1.0 / N_CLASSES
_SHARE_TOLERANCE = 1e-12  # a share of exactly min_agreement must not fail on rounding
_SUM_TOLERANCE = 1e-3
_NS = 1_000_000_000


class EnsembleConfig(BaseModel):
    """The ensemble's section of the configuration (strict: unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS), min_length=1)
    min_agreement: float = Field(0.6, gt=0.5, le=1.0)
    horizon_s: float = Field(20.0, gt=0)
    dead_zone_ticks: float = Field(0.5, ge=0.5)
    meta_window: int = Field(300, ge=1)
    meta_prior: float = Field(30.0, ge=0)
    meta_sharpness: float = Field(6.0, ge=0)
    calibration: Literal["vector", "isotonic", "platt", "none"] = "vector"
    direction_neutral: bool = True
    """Vector scaling: down and up share one curve, so the calibrator corrects the models'
    confidence but cannot turn the trend of its calibration window into a lean."""

    @field_validator("weights")
    @classmethod
    def _positive_weights(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {name: w for name, w in v.items() if not (np.isfinite(w) and w > 0)}
        if bad:
            raise ValueError(f"model weights must be finite and positive, got {bad}")
        return v


class ProbabilityModel(Protocol):
    """What the ensemble needs of a model: a name and (p_down, p_flat, p_up) of one input."""

    @property
    def name(self) -> str: ...

    def predict_one(self, row: np.ndarray) -> tuple[float, float, float]: ...


@dataclass(frozen=True)
class EnsembleDecision:
    ts_ns: int
    p_down: float
    p_flat: float
    p_up: float
    direction: str  # "down" / "flat" / "up": the agreed vote, "flat" without agreement
    agreed: bool  # the winning class gathered at least min_agreement of the weight
    confidence: float  # calibrated probability of the agreed direction; 0 without agreement
    agreement: float  # share of the total weight that voted for the winning class
    votes: dict[str, str]  # each model's class
    weights: dict[str, float]  # each model's share of the vote (sums to 1)


@dataclass(frozen=True)
class EnsembleBatch:
    """`ensemble_batch`'s rows: the same numbers as a run of `Ensemble.decide_probas`."""

    proba: np.ndarray  # [n, 3] calibrated
    direction: np.ndarray  # [n] int8 class
    confidence: np.ndarray  # [n]
    agreement: np.ndarray  # [n]
    agreed: np.ndarray  # [n] bool
    votes: np.ndarray  # [n, M] int8 class per model
    weights: np.ndarray  # [n, M] shares


class MetaLearner:
    """Streaming re-weighting by recent accuracy; resolves decisions only after their horizon."""

    def __init__(self, cfg: EnsembleConfig, names: Sequence[str], tick_size: float) -> None:
        if not tick_size > 0:
            raise ValueError(f"tick_size must be positive, got {tick_size}")
        self._cfg = cfg
        self._base = _base_weights(cfg, names).tolist()
        self._tick = float(tick_size)
        self._h = round(cfg.horizon_s * _NS)
        self._pending: deque[tuple[int, float, tuple[int, ...]]] = deque()
        self._outcomes: deque[tuple[bool, ...]] = deque()
        self._correct = [0] * len(self._base)
        self._last: tuple[int, float] | None = None

    @property
    def resolved(self) -> int:
        """Outcomes inside the window now."""
        return len(self._outcomes)

    def weights(self) -> list[float]:
        return _meta_shares(self._cfg, self._base, self._correct, len(self._outcomes))

    def observe(self, ts_ns: int, mid: float) -> None:
        """A new mid: resolve every pending decision whose horizon has now elapsed."""
        if self._last is not None and ts_ns <= self._last[0]:
            raise ValueError(
                f"time must move forward: {ts_ns} after {self._last[0]} (one mid per instant)"
            )
        if not (math.isfinite(mid) and mid > 0):
            raise ValueError(f"mid must be a finite positive price, got {mid}")
        while self._pending and self._pending[0][0] + self._h <= ts_ns:
            t, mid_t, votes = self._pending.popleft()
            end = t + self._h
            # direction_labels' future point: the last mid at or before t + horizon
            last = self._last if self._last is not None else (ts_ns, mid)
            fut_ts, fut_mid = (ts_ns, mid) if ts_ns == end else last
            if fut_ts >= end - self._h // 4:  # not across a gap in the data
                label = _label(fut_mid - mid_t, self._cfg, self._tick)
                self._add_outcome(tuple(v == label for v in votes))
        self._last = (ts_ns, float(mid))

    def record(self, ts_ns: int, mid: float, votes: Sequence[int]) -> None:
        """The votes of a decision made at `ts_ns` (after `observe` of the same instant)."""
        if self._last is None or self._last[0] != ts_ns:
            raise ValueError("observe the decision's own mid before recording its votes")
        self._pending.append((ts_ns, float(mid), tuple(int(v) for v in votes)))

    def _add_outcome(self, correct: tuple[bool, ...]) -> None:
        self._outcomes.append(correct)
        self._correct = [c + k for c, k in zip(self._correct, correct, strict=True)]
        if len(self._outcomes) > self._cfg.meta_window:
            old = self._outcomes.popleft()
            self._correct = [c - k for c, k in zip(self._correct, old, strict=True)]


class Ensemble:
    """The live ensemble over named models; one instance per instrument, not thread-safe."""

    def __init__(
        self,
        cfg: EnsembleConfig,
        models: Sequence[ProbabilityModel],
        *,
        tick_size: float,
        calibrator: MulticlassCalibrator | None = None,
    ) -> None:
        self.names = [m.name for m in models]
        self._models = list(models)
        self.cfg = cfg
        self.meta = MetaLearner(cfg, self.names, tick_size)
        if calibrator is None and cfg.calibration != "none":
            raise ValueError(
                f"the configuration asks for {cfg.calibration!r} calibration: pass the calibrator "
                f"fitted on a calibration fold (fit_ensemble_calibrator)"
            )
        self.calibrator = _check_calibrator(cfg, calibrator)

    def decide(self, ts_ns: int, mid: float, inputs: Mapping[str, np.ndarray]) -> EnsembleDecision:
        """Ask every model (each gets its own input, by name) and combine their answers."""
        _same_names(self.names, inputs, "inputs")
        probas = {m.name: m.predict_one(inputs[m.name]) for m in self._models}
        return self.decide_probas(ts_ns, mid, probas)

    def decide_probas(
        self, ts_ns: int, mid: float, probas: Mapping[str, Sequence[float]]
    ) -> EnsembleDecision:
        """Combine probabilities already computed; `mid` is the mid at `ts_ns`."""
        _same_names(self.names, probas, "probabilities")
        p = [_check_row(name, probas[name]) for name in self.names]
        self.meta.observe(ts_ns, mid)
        w = self.meta.weights()
        r = _combine_row(self.cfg, p, w, self.calibrator)
        self.meta.record(ts_ns, mid, r.votes)
        return EnsembleDecision(
            ts_ns=int(ts_ns),
            p_down=r.proba[DOWN],
            p_flat=r.proba[FLAT],
            p_up=r.proba[UP],
            direction=CLASSES[r.direction],
            agreed=r.agreed,
            confidence=r.confidence,
            agreement=r.agreement,
            votes={n: CLASSES[v] for n, v in zip(self.names, r.votes, strict=True)},
            weights=dict(zip(self.names, w, strict=True)),
        )


def ensemble_batch(
    cfg: EnsembleConfig,
    names: Sequence[str],
    ts_ns: np.ndarray,
    mid: np.ndarray,
    probas: np.ndarray,
    tick_size: float,
    calibrator: MulticlassCalibrator | None = None,
) -> EnsembleBatch:
    """Decisions at every row of a fold: probas [n, M, 3] in `names` order; the meta-learner
    starts empty at the first row, exactly like a fresh `Ensemble`. Without a calibrator the
    probabilities are the raw weighted mixture (what the calibrator is fitted on)."""
    base = _base_weights(cfg, names)
    p = _check_probas(np.asarray(probas, np.float64))
    ts = np.asarray(ts_ns)
    if p.shape[:2] != (len(ts), len(base)):
        raise ValueError(f"probas must be [{len(ts)}, {len(base)}, 3], got {p.shape}")
    if len(ts) > 1 and np.any(np.diff(ts) <= 0):
        raise ValueError("decision times must be strictly increasing")
    votes = p.argmax(axis=2).astype(np.int8)
    weights = _batch_meta_weights(cfg, base, ts, mid, votes, tick_size)
    return _combine(cfg, p, weights, _check_calibrator(cfg, calibrator))


def fit_ensemble_calibrator(
    cfg: EnsembleConfig,
    names: Sequence[str],
    ts_ns: np.ndarray,
    mid: np.ndarray,
    probas: np.ndarray,
    tick_size: float,
) -> MulticlassCalibrator | None:
    """Calibrate the ensemble's mixed probabilities on a calibration fold (and only on it):
    the fold's own direction labels, its rows whose horizon the fold covers."""
    if cfg.calibration == "none":
        return None
    raw = ensemble_batch(cfg, names, ts_ns, mid, probas, tick_size, None)
    y, valid = direction_labels(
        np.asarray(ts_ns), np.asarray(mid), cfg.horizon_s, cfg.dead_zone_ticks, tick_size
    )
    tied = ((DOWN, UP),) if cfg.direction_neutral and cfg.calibration == "vector" else ()
    return fit_calibrator(raw.proba[valid], y[valid].astype(np.int64), cfg.calibration, tied=tied)


# ---------------------------------------------------------------------------- internals


class _Row(NamedTuple):
    proba: list[float]
    direction: int
    confidence: float
    agreement: float
    agreed: bool
    votes: list[int]


def _combine_row(
    cfg: EnsembleConfig,
    p: Sequence[Sequence[float]],
    w: Sequence[float],
    calibrator: MulticlassCalibrator | None,
) -> _Row:
    """One decision from each model's probabilities `p` [M][3] and weight shares `w` [M]:
    the live ensemble's rule, and (row by row) the batch path's. Plain floats: it runs at
    every decision, where numpy's per-call overhead would cost more than the arithmetic."""
    models = range(len(p))
    votes = [max(range(N_CLASSES), key=row.__getitem__) for row in p]  # ties: lower class
    mix = [sum(w[m] * p[m][c] for m in models) for c in range(N_CLASSES)]
    by_class = [sum(w[m] for m in models if votes[m] == c) for c in range(N_CLASSES)]
    winner = max(range(N_CLASSES), key=by_class.__getitem__)
    agreement = by_class[winner]
    agreed = agreement >= cfg.min_agreement - _SHARE_TOLERANCE
    proba = calibrator.transform_one(mix) if calibrator is not None else mix
    direction = winner if agreed else FLAT
    return _Row(proba, direction, proba[direction] if agreed else 0.0, agreement, agreed, votes)


def _combine(
    cfg: EnsembleConfig, p: np.ndarray, weights: np.ndarray, calibrator: MulticlassCalibrator | None
) -> EnsembleBatch:
    rows = [
        _combine_row(cfg, p_i, w_i, calibrator)
        for p_i, w_i in zip(p.tolist(), weights.tolist(), strict=True)
    ]
    m = p.shape[1]
    return EnsembleBatch(
        proba=np.array([r.proba for r in rows], np.float64).reshape(len(rows), N_CLASSES),
        direction=np.array([r.direction for r in rows], np.int8),
        confidence=np.array([r.confidence for r in rows], np.float64),
        agreement=np.array([r.agreement for r in rows], np.float64),
        agreed=np.array([r.agreed for r in rows], np.bool_),
        votes=np.array([r.votes for r in rows], np.int8).reshape(len(rows), m),
        weights=weights,
    )


def _batch_meta_weights(
    cfg: EnsembleConfig,
    base: np.ndarray,
    ts: np.ndarray,
    mid: np.ndarray,
    votes: np.ndarray,
    tick_size: float,
) -> np.ndarray:
    """Row i's shares from the last `meta_window` valid outcomes of rows j with
    t_j + horizon <= t_i: prefix sums and two binary searches, O(n log n)."""
    y, valid = direction_labels(ts, mid, cfg.horizon_s, cfg.dead_zone_ticks, tick_size)
    correct = (votes == y[:, None]) & valid[:, None]
    n_valid = np.concatenate(([0], np.cumsum(valid)))
    n_correct = np.vstack([np.zeros((1, len(base)), np.int64), np.cumsum(correct, axis=0)])
    h = round(cfg.horizon_s * _NS)
    known = np.searchsorted(ts + h, ts, side="right")  # rows < known[i] are resolved at i
    start = np.searchsorted(n_valid, n_valid[known] - cfg.meta_window, side="left")
    count = n_valid[known] - n_valid[start]
    hits = n_correct[known] - n_correct[start]
    b = base.tolist()
    rows = [_meta_shares(cfg, b, h, int(n)) for h, n in zip(hits.tolist(), count, strict=True)]
    return np.array(rows, np.float64).reshape(len(ts), len(b))


def _meta_shares(
    cfg: EnsembleConfig, base: Sequence[float], hits: Sequence[int], n: int
) -> list[float]:
    """Weight shares from each model's hits over `n` resolved outcomes: one formula for the
    streaming and the batch path (row by row), so both give the same floats."""
    denom = n + cfg.meta_prior
    w = []
    for b, h in zip(base, hits, strict=True):
        acc = (h + cfg.meta_prior * _CHANCE) / denom if denom > 0 else _CHANCE
        w.append(b * math.exp(cfg.meta_sharpness * (acc - _CHANCE)))
    total = sum(w)
    return [x / total for x in w]


def _label(move: float, cfg: EnsembleConfig, tick_size: float) -> int:
    ticks = move / tick_size
    return UP if ticks > cfg.dead_zone_ticks else DOWN if ticks < -cfg.dead_zone_ticks else FLAT


def _base_weights(cfg: EnsembleConfig, names: Sequence[str]) -> np.ndarray:
    names = list(names)
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    if set(names) != set(cfg.weights):
        raise ValueError(
            f"the ensemble is configured for {sorted(cfg.weights)} but was given models "
            f"{sorted(names)}"
        )
    return np.array([cfg.weights[name] for name in names], np.float64)


def _same_names(names: list[str], given: Mapping[str, object], what: str) -> None:
    if set(given) != set(names):
        raise ValueError(f"{what} for {sorted(given)}; the ensemble's models are {sorted(names)}")


def _check_row(name: str, row: Sequence[float]) -> tuple[float, ...]:
    """One model's probabilities, checked as `_check_probas` checks a whole array."""
    p = tuple(float(x) for x in row)
    if len(p) != N_CLASSES:
        raise ValueError(f"each model must give {N_CLASSES} probabilities, {name} gave {len(p)}")
    if not all(math.isfinite(x) and 0.0 <= x <= 1.0 for x in p):
        raise ValueError(f"model probabilities must be finite and within [0, 1]: {name} {p}")
    if abs(sum(p) - 1.0) > _SUM_TOLERANCE:
        raise ValueError(f"model probabilities must sum to 1: {name} {p}")
    return p


def _check_probas(p: np.ndarray) -> np.ndarray:
    if p.ndim != 3 or p.shape[2] != N_CLASSES:
        raise ValueError(f"each model must give {N_CLASSES} probabilities, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise ValueError("model probabilities must be finite and within [0, 1]")
    worst = np.max(np.abs(p.sum(axis=2) - 1.0)) if p.size else 0.0
    if worst > _SUM_TOLERANCE:
        raise ValueError(f"model probabilities must sum to 1 (off by up to {worst:.3g})")
    return p


def _check_calibrator(
    cfg: EnsembleConfig, calibrator: MulticlassCalibrator | None
) -> MulticlassCalibrator | None:
    if calibrator is None:
        return None
    if cfg.calibration == "none" or calibrator.method != cfg.calibration:
        raise ValueError(
            f"the configuration asks for {cfg.calibration!r} calibration, the calibrator "
            f"given is {calibrator.method!r}"
        )
    if calibrator.n_classes != N_CLASSES:
        raise ValueError(f"the calibrator has {calibrator.n_classes} classes, not {N_CLASSES}")
    return calibrator
