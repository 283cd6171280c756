"""Probability calibration for the 3-class models, and how to measure it.

Class-balanced training (and any ensemble average) bends probabilities away from the
frequencies they claim, so a gate that reads "p_up >= 0.55" would mean something other
than it says. A calibrator maps each class's probability through a monotone curve fitted
one-vs-rest on a calibration fold that the model never trained on, then renormalises the
row to sum to one. Fitting takes only that fold's rows: pass nothing else in.

- isotonic: a monotone piecewise-linear curve (sklearn's pool-adjacent-violators fit, read by
  linear interpolation between its thresholds): flexible, needs a few hundred rows.
- Platt: a sigmoid of the logit, fitted with Platt's smoothed targets (N+ + 1)/(N+ + 2)
  and 1/(N- + 2): two parameters per class, safe on small folds.

Fitting needs scipy and scikit-learn (the `ml` extra) and imports them when it runs;
applying a fitted calibrator needs numpy only, so the tick engine's image serves without them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

CalibrationMethod = Literal["isotonic", "platt"]
PROBABILITY_FLOOR = 1e-6
"""Every calibrated probability is at least this before renormalising: an isotonic curve
can reach exactly 0, and a zero probability makes one surprise cost infinite log loss."""

_EPS = 1e-12


class _ClassCurve(BaseModel):
    """One class's curve: isotonic knots (x, y) or Platt's (a, b) in sigmoid(a * logit + b)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x: list[float] = Field(default_factory=list)
    y: list[float] = Field(default_factory=list)
    a: float = 1.0
    b: float = 0.0


class MulticlassCalibrator(BaseModel):
    """A fitted calibrator; JSON-serialisable (`model_dump_json`) to ship beside a model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: CalibrationMethod
    curves: list[_ClassCurve] = Field(min_length=2)
    fitted_rows: int = Field(ge=1)

    @property
    def n_classes(self) -> int:
        return len(self.curves)

    def transform(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated probabilities [n, k] of raw probabilities [n, k]; rows sum to one."""
        p = _check_proba(proba, self.n_classes)
        return np.array([self.transform_one(row) for row in p.tolist()], np.float64).reshape(
            p.shape
        )

    def transform_one(self, proba: Sequence[float]) -> list[float]:
        """One row, in plain floats: the live ensemble calls it at every decision, where
        numpy's per-call overhead would cost more than the arithmetic."""
        if len(proba) != self.n_classes:
            raise ValueError(f"probabilities must have {self.n_classes} classes, got {len(proba)}")
        out = []
        for x, curve in zip(proba, self.curves, strict=True):
            if not (math.isfinite(x) and 0.0 <= x <= 1.0):
                raise ValueError("probabilities must be finite and within [0, 1]")
            if self.method == "isotonic":
                v = _interp_one(x, curve.x, curve.y)
            else:
                q = min(max(x, _EPS), 1 - _EPS)
                z = curve.a * (math.log(q) - math.log1p(-q)) + curve.b
                v = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
            out.append(max(v, PROBABILITY_FLOOR))
        total = sum(out)
        return [v / total for v in out]


def fit_calibrator(
    proba: np.ndarray, y: np.ndarray, method: CalibrationMethod
) -> MulticlassCalibrator:
    """Fit one-vs-rest curves on the calibration fold's probabilities [n, k] and labels [n]."""
    from sklearn.isotonic import IsotonicRegression

    p = _check_proba(proba, None)
    k = p.shape[1]
    labels = _check_labels(y, len(p), k)
    absent = [c for c in range(k) if not np.any(labels == c)]
    if absent:
        raise ValueError(
            f"the calibration fold has no rows of class {absent}; a one-vs-rest curve needs "
            f"both outcomes for every class (use a longer fold)"
        )
    curves = []
    for c in range(k):
        hit = (labels == c).astype(np.float64)
        if method == "isotonic":
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            iso.fit(p[:, c], hit)
            curves.append(_ClassCurve(x=iso.X_thresholds_.tolist(), y=iso.y_thresholds_.tolist()))
        elif method == "platt":
            a, b = _platt(_logit(p[:, c]), hit)
            curves.append(_ClassCurve(a=a, b=b))
        else:
            raise ValueError(f"method must be 'isotonic' or 'platt', got {method!r}")
    return MulticlassCalibrator(method=method, curves=curves, fitted_rows=len(p))


@dataclass(frozen=True)
class ReliabilityCurve:
    """Binned predicted probability against observed frequency (empty bins: count 0, NaN)."""

    bin_edges: np.ndarray  # [n_bins + 1] on [0, 1]
    mean_predicted: np.ndarray  # [n_bins]
    observed_frequency: np.ndarray  # [n_bins]
    count: np.ndarray  # [n_bins] int

    @property
    def ece(self) -> float:
        """Expected calibration error: sum over bins of |observed - predicted| * bin share."""
        used = self.count > 0
        share = self.count[used] / self.count.sum()
        gap = np.abs(self.observed_frequency[used] - self.mean_predicted[used])
        return float(np.sum(share * gap))


def reliability_curve(
    proba: np.ndarray, y: np.ndarray, n_bins: int = 10, cls: int | None = None
) -> ReliabilityCurve:
    """Equal-width bins. `cls=None`: top-label (confidence = max p, outcome = argmax right);
    `cls=c`: one-vs-rest for class c (p[:, c] against y == c)."""
    p = _check_proba(proba, None)
    labels = _check_labels(y, len(p), p.shape[1])
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if cls is None:
        score, outcome = p.max(axis=1), (p.argmax(axis=1) == labels).astype(np.float64)
    elif 0 <= cls < p.shape[1]:
        score, outcome = p[:, cls], (labels == cls).astype(np.float64)
    else:
        raise ValueError(f"cls must be None or a class index below {p.shape[1]}, got {cls}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.searchsorted(edges, score, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(b, weights=score, minlength=n_bins) / count
        freq = np.bincount(b, weights=outcome, minlength=n_bins) / count
    return ReliabilityCurve(edges, mean_p, freq, count)


def expected_calibration_error(
    proba: np.ndarray, y: np.ndarray, n_bins: int = 15, cls: int | None = None
) -> float:
    """Top-label ECE (Guo et al. 2017) with `n_bins` equal-width bins; one class with `cls`."""
    return reliability_curve(proba, y, n_bins, cls).ece


def _platt(score: np.ndarray, hit: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising the log loss of sigmoid(a * score + b) against smoothed targets."""
    from scipy.optimize import minimize

    n_pos = hit.sum()
    n_neg = len(hit) - n_pos
    target = np.where(hit > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        z = ab[0] * score + ab[1]
        # log(1 + e^z) - t z, written to stay finite for large |z|
        value = np.sum(np.logaddexp(0.0, z) - target * z)
        residual = _sigmoid(z) - target
        return float(value), np.array([np.dot(residual, score), residual.sum()])

    fit = minimize(loss, np.array([1.0, 0.0]), jac=True, method="BFGS")
    if not np.all(np.isfinite(fit.x)):
        raise ValueError("Platt scaling did not converge to finite parameters")
    return float(fit.x[0]), float(fit.x[1])


def _interp_one(x: float, xs: list[float], ys: list[float]) -> float:
    """np.interp of one point: clamped at the ends, linear between the knots."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    j = bisect.bisect_right(xs, x) - 1
    slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
    return slope * (x - xs[j]) + ys[j]


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1 - _EPS)
    return np.log(q) - np.log1p(-q)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _check_proba(proba: np.ndarray, n_classes: int | None) -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2 or (n_classes is not None and p.shape[1] != n_classes):
        want = f"[n, {n_classes}]" if n_classes is not None else "[n, k >= 2]"
        raise ValueError(f"probabilities must have shape {want}, got {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise ValueError("probabilities must be finite and within [0, 1]")
    return p


def _check_labels(y: np.ndarray, n: int, k: int) -> np.ndarray:
    labels = np.asarray(y)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {n} integers, got {labels.dtype} {labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}, got {np.unique(labels)}")
    return labels.astype(np.int64)
