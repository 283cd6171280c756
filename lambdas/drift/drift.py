"""Model drift: the champion's calibrated probabilities against what the market then did.

Each journaled signal (`esml.journal.SignalRecord`: p_down, p_flat, p_up at ts_ns) is
paired with its realised outcome: the direction label `esml.features.labels` gives the
decision row at or before the signal, from the mid the recorded market data shows (the
batch feature executor's mid, as in training). Over the rolling window:

- hit rate: the share of signals whose most likely class happened;
- log loss: the mean of -log p(realised class), probabilities floored as sklearn does;
- calibration error: the expected calibration error of the top class (10 equal-width
  confidence bins, weighted by their share of signals);
- log loss excess: the log loss minus the champion's own held-out log loss (from its
  bundle's ensemble manifest): above zero, the champion does worse live than it did when
  it was judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from esml.features.batch import batch_features
from esml.features.labels import direction_labels
from esml.journal.base import SignalRecord
from esml.market.instruments import Instrument

PROBABILITY_FLOOR = 1e-15
CALIBRATION_BINS = 10


@dataclass(frozen=True)
class Outcomes:
    proba: np.ndarray  # [n, 3] the signals' probabilities (down, flat, up)
    realised: np.ndarray  # [n] the class that happened


@dataclass(frozen=True)
class DriftMetrics:
    signals: int
    hit_rate: float
    log_loss: float
    calibration_error: float
    log_loss_excess: float


def realised_outcomes(
    signals: Sequence[SignalRecord],
    event_days: Sequence[np.ndarray],
    instrument: Instrument,
    *,
    decision_interval_s: float,
    horizon_s: float,
    dead_zone_ticks: float,
) -> Outcomes:
    """The signals whose outcome the market data shows (others are left out)."""
    grid_ts, grid_y = [], []
    for events in event_days:
        if len(events) == 0:
            continue
        frame = batch_features(events, instrument.tick_fixed, decision_interval_s)
        y, valid = direction_labels(
            frame.ts_ns, frame.mid, horizon_s, dead_zone_ticks, instrument.tick_size
        )
        grid_ts.append(frame.ts_ns[valid])
        grid_y.append(y[valid].astype(np.int64))
    if not grid_ts or not signals:
        return Outcomes(np.zeros((0, 3)), np.zeros(0, np.int64))
    ts = np.concatenate(grid_ts)
    y = np.concatenate(grid_y)
    order = np.argsort(ts, kind="stable")
    ts, y = ts[order], y[order]
    sig_ts = np.array([s.ts_ns for s in signals], np.int64)
    proba = np.array([[s.p_down, s.p_flat, s.p_up] for s in signals], np.float64)
    row = np.searchsorted(ts, sig_ts, side="right") - 1
    interval_ns = round(decision_interval_s * 1e9)
    matched = (row >= 0) & (sig_ts - ts[np.maximum(row, 0)] < interval_ns)
    return Outcomes(proba[matched], y[row[matched]])


def drift_metrics(outcomes: Outcomes, champion_log_loss: float) -> DriftMetrics:
    n = len(outcomes.realised)
    if n == 0:
        raise ValueError("no signal has a realised outcome in the window")
    p = np.clip(outcomes.proba, PROBABILITY_FLOOR, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    log_loss = float(-np.mean(np.log(p[rows, outcomes.realised])))
    top = p.argmax(axis=1)
    confidence = p[rows, top]
    hit = top == outcomes.realised
    bins = np.minimum((confidence * CALIBRATION_BINS).astype(np.int64), CALIBRATION_BINS - 1)
    ece = 0.0
    for b in range(CALIBRATION_BINS):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(hit[in_bin].mean() - confidence[in_bin].mean())
    return DriftMetrics(
        signals=n,
        hit_rate=float(hit.mean()),
        log_loss=log_loss,
        calibration_error=float(ece),
        log_loss_excess=log_loss - champion_log_loss,
    )
