"""Rows for training: batch features at decision times with their direction labels."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from esml.config import FeatureConfig
from esml.features.batch import batch_features
from esml.features.labels import direction_labels
from esml.features.streaming import FEATURE_NAMES, FEATURE_VERSION
from esml.market.instruments import Instrument


@dataclass(frozen=True)
class Dataset:
    X: np.ndarray  # float32 [n, f]
    y: np.ndarray  # int8: 0 down, 1 flat, 2 up
    ts_ns: np.ndarray  # int64 decision times
    feature_names: list[str]
    feature_version: str
    data_sha256: str


def events_sha256(events: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(events).tobytes()).hexdigest()


def build_dataset(events: np.ndarray, instrument: Instrument, cfg: FeatureConfig) -> Dataset:
    frame = batch_features(events, instrument.tick_fixed, cfg.decision_interval_s)
    if len(frame.ts_ns) == 0:
        y, valid = np.zeros(0, np.int8), np.zeros(0, bool)
    else:
        y, valid = direction_labels(
            frame.ts_ns, frame.mid, cfg.horizon_s, cfg.dead_zone_ticks, instrument.tick_size
        )
    return Dataset(
        X=frame.X[valid],
        y=y[valid],
        ts_ns=frame.ts_ns[valid],
        feature_names=list(FEATURE_NAMES),
        feature_version=FEATURE_VERSION,
        data_sha256=events_sha256(events),
    )
