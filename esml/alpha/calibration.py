"""Probability calibration for the 3-class models, and how to measure it.

Class-balanced training (and any ensemble average) bends probabilities away from the
frequencies they claim, so a gate that reads "p_up >= 0.55" would mean something other
than it says. A calibrator maps each class's probability through a monotone curve fitted
one-vs-rest on a calibration fold that the model never trained on, then renormalises the
row to sum to one. Fitting takes only that fold's rows: pass nothing else in.

- vector scaling (the default; Guo et al. 2017, the diagonal case of Kull et al.'s
  Dirichlet calibration): softmax(a * log p + b), one scale a_c and one bias b_c per class,
  fitted jointly by multinomial log loss. Parametric (2k numbers), so a short or one-sided
  fold cannot bend it into a corner, and bounded (A_BOUNDS, B_BOUND) so it can never lock a
  class out: at the simplex corner p_c -> 1 every other log p goes to log(1e-12), and with
  a >= 0.25 and |b| <= 2, z_c - z_o >= 0.25 * 27.6 - 4 > 2.9, so the calibrated p_c there is
  above 0.89 for every class (`reachable_max` measures it; a test holds it).
- isotonic: a monotone piecewise-linear curve (sklearn's pool-adjacent-violators fit, read by
  linear interpolation between its thresholds), extended from its first knot to (0, 0) and
  from its last to (1, 1): the fold's curve was only ever learnt on the inputs it saw, and
  clamping it flat beyond them is what locked a side out of the shipped bundle (its down
  curve topped out at 0.408). Flexible, so it needs `MIN_ROWS["isotonic"]` rows.
- Platt: a sigmoid of the logit, fitted with Platt's smoothed targets (N+ + 1)/(N+ + 2)
  and 1/(N- + 2): two parameters per class, safe on small folds.

`reachable_max` is the highest calibrated probability each class can reach anywhere on the
input simplex (a lattice search); a calibrator for which some class cannot clear a
confidence floor would silence that side of the book, and `fit_calibrator` refuses to
return one.

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

CalibrationMethod = Literal["vector", "isotonic", "platt"]
PROBABILITY_FLOOR = 1e-6
"""Every calibrated probability is at least this before renormalising: an isotonic curve
can reach exactly 0, and a zero probability makes one surprise cost infinite log loss."""

_EPS = 1e-12
A_BOUNDS = (0.25, 4.0)
"""Vector scaling's per-class scale on log p: positive (monotone), and not so flat that
the model's opinion is ignored."""
B_BOUND = 2.0
"""Vector scaling's per-class bias bound: a prior shift of at most e^4 between two classes."""
MIN_ROWS = {"vector": 300, "platt": 200, "isotonic": 2000}
"""Fewest calibration rows a method is fitted on: a curve fitted on a few minutes of one
trend learns that trend, not the model's reliability."""
REACHABLE_FLOOR = 0.6
"""Every class must reach at least this calibrated probability somewhere on the simplex
(above the default 0.55 confidence floor), or `fit_calibrator` refuses the fit."""
_LATTICE_STEPS = 200


class _ClassCurve(BaseModel):
    """One class's curve: isotonic knots (x, y), Platt's (a, b) in sigmoid(a * logit + b),
    or vector scaling's (a, b) in the logit a * log p + b that the softmax reads."""

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
        if not all(math.isfinite(x) and 0.0 <= x <= 1.0 for x in proba):
            raise ValueError("probabilities must be finite and within [0, 1]")
        if self.method == "vector":
            pairs = zip(proba, self.curves, strict=True)
            z = [c.a * math.log(max(x, _EPS)) + c.b for x, c in pairs]
            top = max(z)
            e = [math.exp(v - top) for v in z]
            total = sum(e)
            out = [max(v / total, PROBABILITY_FLOOR) for v in e]
            norm = sum(out)
            return [v / norm for v in out]
        out = []
        for x, curve in zip(proba, self.curves, strict=True):
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
    proba: np.ndarray,
    y: np.ndarray,
    method: CalibrationMethod,
    *,
    min_rows: int | None = None,
    reachable_floor: float = REACHABLE_FLOOR,
    tied: Sequence[Sequence[int]] = (),
) -> MulticlassCalibrator:
    """Fit on the calibration fold's probabilities [n, k] and labels [n]; refuse a fold
    shorter than `min_rows` (default `MIN_ROWS[method]`) and a fit that leaves any class
    unable to reach `reachable_floor`. Vector scaling only: the classes of each group in
    `tied` share one curve (the ensemble ties down and up, so that the trend of the one
    window it is fitted on does not become a lean for every later session)."""
    p = _check_proba(proba, None)
    k = p.shape[1]
    labels = _check_labels(y, len(p), k)
    if method not in MIN_ROWS:
        raise ValueError(f"method must be one of {sorted(MIN_ROWS)}, got {method!r}")
    absent = [c for c in range(k) if not np.any(labels == c)]
    if absent:
        raise ValueError(
            f"the calibration fold has no rows of class {absent}; a curve needs both "
            f"outcomes for every class (use a longer fold)"
        )
    need = MIN_ROWS[method] if min_rows is None else min_rows
    if len(p) < need:
        raise ValueError(
            f"{len(p)} calibration rows are too few for {method} calibration (at least "
            f"{need}); use a longer calibration fold"
        )
    if method == "vector":
        curves = _vector_scaling(p, labels, tied)
    elif tied:
        raise ValueError("only vector scaling can tie classes together")
    else:
        curves = [_one_vs_rest(p[:, c], (labels == c).astype(np.float64), method) for c in range(k)]
    cal = MulticlassCalibrator(method=method, curves=curves, fitted_rows=len(p))
    reach = reachable_max(cal)
    short = {c: round(r, 4) for c, r in enumerate(reach) if r < reachable_floor}
    if short:
        raise ValueError(
            f"the {method} calibrator fitted here caps class(es) {short} below "
            f"{reachable_floor}: that side could never pass a confidence floor"
        )
    return cal


def reachable_max(calibrator: MulticlassCalibrator, steps: int = _LATTICE_STEPS) -> list[float]:
    """Per class, the highest calibrated probability anywhere on the input simplex: the
    maximum over a lattice of raw rows with coordinates in multiples of 1/`steps` (the
    corners included). A class whose maximum is below the confidence floor can never
    trade, whatever the models say."""
    k = calibrator.n_classes
    if k > 4:
        raise ValueError(f"the lattice search is for up to 4 classes, got {k}")
    steps = steps if k < 4 else min(steps, 40)
    best = [0.0] * k
    for row in _lattice(k, steps):
        for c, v in enumerate(calibrator.transform_one(row)):
            best[c] = max(best[c], v)
    return best


def _lattice(k: int, steps: int) -> list[list[float]]:
    """Every point of the simplex with k coordinates in multiples of 1/steps."""
    return [[i / steps for i in point] for point in _compositions(k, steps)]


def _compositions(k: int, total: int) -> list[list[int]]:
    if k == 1:
        return [[total]]
    return [[i, *rest] for i in range(total + 1) for rest in _compositions(k - 1, total - i)]


def _one_vs_rest(score: np.ndarray, hit: np.ndarray, method: str) -> _ClassCurve:
    """One class's isotonic curve (extended to the corners) or Platt sigmoid."""
    if method == "platt":
        a, b = _platt(_logit(score), hit)
        return _ClassCurve(a=a, b=b)
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, hit)
    xs, ys = iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist()
    if xs[0] > 0.0:
        xs, ys = [0.0, *xs], [0.0, *ys]
    if xs[-1] < 1.0:
        xs, ys = [*xs, 1.0], [*ys, 1.0]
    return _ClassCurve(x=xs, y=ys)


def _vector_scaling(
    p: np.ndarray, labels: np.ndarray, tied: Sequence[Sequence[int]] = ()
) -> list[_ClassCurve]:
    """(a, b) per class minimising the multinomial log loss of softmax(a * log p + b),
    within A_BOUNDS and +-B_BOUND (L-BFGS-B); the classes of each group in `tied` share
    one (a, b)."""
    from scipy.optimize import minimize

    n, k = p.shape
    group = list(range(k))
    for members in tied:
        for c in members:
            group[c] = members[0]
    free = sorted(set(group))
    # [k, g] map from the free parameters to the classes
    share = np.array([[1.0 if group[c] == f else 0.0 for f in free] for c in range(k)])
    g = len(free)
    logp = np.log(np.maximum(p, _EPS))
    onehot = np.eye(k)[labels]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = share @ theta[:g], share @ theta[g:]
        z = logp * a + b
        z -= z.max(axis=1, keepdims=True)
        log_q = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        resid = (np.exp(log_q) - onehot) / n
        grad = np.concatenate([(resid * logp).sum(axis=0) @ share, resid.sum(axis=0) @ share])
        return float(-(onehot * log_q).sum() / n), grad

    bounds = [A_BOUNDS] * g + [(-B_BOUND, B_BOUND)] * g
    fit = minimize(loss, np.r_[np.ones(g), np.zeros(g)], jac=True, method="L-BFGS-B", bounds=bounds)
    if not np.all(np.isfinite(fit.x)):
        raise ValueError("vector scaling did not converge to finite parameters")
    a, b = share @ fit.x[:g], share @ fit.x[g:]
    return [_ClassCurve(a=float(x), b=float(y)) for x, y in zip(a, b, strict=True)]


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
