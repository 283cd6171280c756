"""The trees' training time on 1M rows x 60 features, a `make bench` row.

The training rows are SYNTHETIC: real features of the real ES file resampled with noise to
1M rows, so the trees meet the real features' distributions at the size the goal names.
"""

from __future__ import annotations

import time

import numpy as np

from esml.alpha.xgb import XGBParams, fit_booster
from esml.features.batch import batch_features
from esml.market.instruments import ES

TRAIN_ROWS = 1_000_000
TRAIN_FEATURES = 60


def tree_training_seconds(events: np.ndarray) -> tuple[float, float]:
    """(wall, CPU) seconds to fit the trees on 1M rows x 60 features (SYNTHETIC resample)."""
    frame = batch_features(events, ES.tick_fixed, 1.0)
    x_real = np.nan_to_num(frame.X[:, :TRAIN_FEATURES].astype(np.float32))
    rng = np.random.default_rng(7)
    pick = rng.integers(0, len(x_real), TRAIN_ROWS)
    x = x_real[pick] + rng.normal(0, 0.05, (TRAIN_ROWS, TRAIN_FEATURES)).astype(np.float32)
    y = rng.integers(0, 3, TRAIN_ROWS)
    ts = np.arange(TRAIN_ROWS, dtype=np.int64) * 1_000_000_000
    params = XGBParams(n_estimators=200, early_stopping_rounds=200)
    w0, c0 = time.perf_counter(), time.process_time()
    fit_booster(x, y, ts, horizon_ns=20_000_000_000, params=params)
    return time.perf_counter() - w0, time.process_time() - c0
