"""Time-ordered train/test splits with purge and embargo, so no label ever leaks across.

A row at time t carries a label decided by the price at t + horizon. A training row whose
label window reaches the first test row would tell the model something about the test
period, so it is purged: training rows must satisfy t + horizon + embargo < first test
time. The embargo widens that gap to absorb serial correlation beyond the label horizon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fold:
    """Row indices of one split; every training row ends its label window before `test`."""

    train: np.ndarray
    test: np.ndarray


def _check_times(ts_ns: np.ndarray, horizon_ns: int, embargo_ns: int) -> np.ndarray:
    ts = np.asarray(ts_ns)
    if ts.ndim != 1 or not np.issubdtype(ts.dtype, np.integer):
        raise ValueError(f"ts_ns must be a 1-d integer array, got {ts.dtype} shape {ts.shape}")
    if len(ts) > 1 and np.any(np.diff(ts) < 0):
        raise ValueError("ts_ns must be sorted in time (non-decreasing) for a walk-forward split")
    if horizon_ns <= 0:
        raise ValueError(f"horizon_ns must be positive, got {horizon_ns}")
    if embargo_ns < 0:
        raise ValueError(f"embargo_ns must be >= 0, got {embargo_ns}")
    return ts.astype(np.int64, copy=False)


def _purged_train(ts: np.ndarray, test_start: int, horizon_ns: int, embargo_ns: int) -> np.ndarray:
    """Rows before the test block whose label window and embargo end before it starts."""
    first_test_ts = int(ts[test_start])
    # ts is sorted, so the admissible rows are a prefix: t < first_test_ts - horizon - embargo
    end = int(np.searchsorted(ts[:test_start], first_test_ts - horizon_ns - embargo_ns, "left"))
    return np.arange(end, dtype=np.int64)


def holdout_split(
    ts_ns: np.ndarray, *, test_fraction: float, horizon_ns: int, embargo_ns: int = 0
) -> Fold:
    """The last `test_fraction` of rows (by time) as the test block, the purged rest as train."""
    ts = _check_times(ts_ns, horizon_ns, embargo_ns)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n = len(ts)
    test_start = n - max(1, round(n * test_fraction))
    if test_start < 1:
        raise ValueError(f"{n} rows are too few to hold out {test_fraction:.0%} for testing")
    fold = Fold(_purged_train(ts, test_start, horizon_ns, embargo_ns), np.arange(test_start, n))
    if len(fold.train) == 0:
        raise ValueError(
            f"no training rows remain after purging {horizon_ns + embargo_ns} ns before the "
            f"test block; the data spans too little time"
        )
    return fold


def walk_forward_split(
    ts_ns: np.ndarray,
    *,
    n_folds: int,
    horizon_ns: int,
    embargo_ns: int = 0,
    initial_train_fraction: float = 0.5,
) -> list[Fold]:
    """Expanding-window folds: the rows after the first `initial_train_fraction` are cut into
    `n_folds` consecutive test blocks; each trains on everything purged before its block."""
    ts = _check_times(ts_ns, horizon_ns, embargo_ns)
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if not 0.0 < initial_train_fraction < 1.0:
        raise ValueError(f"initial_train_fraction must be in (0, 1), got {initial_train_fraction}")
    n = len(ts)
    first = round(n * initial_train_fraction)
    bounds = np.linspace(first, n, n_folds + 1).round().astype(np.int64)
    if np.any(np.diff(bounds) < 1) or first < 1:
        raise ValueError(f"{n} rows are too few for {n_folds} walk-forward folds")
    folds = []
    for k in range(n_folds):
        start, stop = int(bounds[k]), int(bounds[k + 1])
        train = _purged_train(ts, start, horizon_ns, embargo_ns)
        if len(train) == 0:
            raise ValueError(
                f"fold {k}: no training rows remain after purging {horizon_ns + embargo_ns} ns "
                f"before its test block; use fewer folds or more data"
            )
        folds.append(Fold(train, np.arange(start, stop, dtype=np.int64)))
    return folds
