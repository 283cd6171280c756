"""Training labels. They look ahead by design, so nothing here may feed a feature."""

from __future__ import annotations

import numpy as np

DOWN, FLAT, UP = 0, 1, 2
CLASSES = ("down", "flat", "up")


def direction_labels(
    ts_ns: np.ndarray,
    mid: np.ndarray,
    horizon_s: float,
    dead_zone_ticks: float,
    tick_size: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Mid-price direction `horizon_s` ahead of each decision time: (labels, valid mask).

    `ts_ns`/`mid` are the decision times and the mid at each. The future mid is the mid
    at the last decision time at or before t + horizon; rows whose horizon runs past the
    data, or across a gap with no decision time near t + horizon, are not valid.
    """
    h = round(horizon_s * 1e9)
    j = np.searchsorted(ts_ns, ts_ns + h, side="right") - 1
    # the future point must be close to t + h, not the last row before a long gap
    valid = (ts_ns + h <= ts_ns[-1]) & (ts_ns[j] >= ts_ns + h - h // 4) if len(ts_ns) else j > 0
    move = (mid[j] - mid) / tick_size
    y = np.full(len(ts_ns), FLAT, np.int8)
    y[move > dead_zone_ticks] = UP
    y[move < -dead_zone_ticks] = DOWN
    return y, valid
