"""Streaming features: live chunks and the batch executor agree, and nothing looks ahead."""

from __future__ import annotations

import numpy as np
import pytest

from esml.config import load_config
from esml.decision.proposal import AccountState
from esml.engine.engine import Engine
from esml.features.batch import batch_features
from esml.features.labels import DOWN, FLAT, UP, direction_labels
from esml.features.streaming import FEATURE_NAMES, N_FEATURES
from esml.journal.sqlite import SQLiteJournal
from esml.market.instruments import ES
from esml.sim.synthetic import generate_session


class RecordingModel:
    """Never confident, so the engine only observes; it keeps every row it was shown."""

    name = "recorder"
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.tile([0.3, 0.4, 0.3], (len(x), 1))

    def predict_one(self, row: np.ndarray) -> tuple[float, float, float]:
        self.rows.append(row.copy())
        return 0.3, 0.4, 0.3


def _engine_rows(events: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    model = RecordingModel()
    engine = Engine(load_config(), model, SQLiteJournal(":memory:"), AccountState("2023-12-26"))
    for k in range(0, len(events), chunk):
        engine.on_events(events[k:k + chunk])
    ts = np.array([t for t, _ in engine.stats.mids], np.int64)
    return ts, np.array(model.rows, np.float32).reshape(-1, N_FEATURES)


@pytest.mark.parametrize("chunk", [1_000, 7_919])
def test_live_chunks_equal_the_batch_executor_on_real_es(es_events, chunk) -> None:
    frame = batch_features(es_events, ES.tick_fixed, 1.0)
    ts, rows = _engine_rows(es_events, chunk)
    assert len(frame.ts_ns) > 3_000
    np.testing.assert_array_equal(ts, frame.ts_ns)
    np.testing.assert_allclose(rows, frame.X, rtol=0, atol=1e-9)


def test_features_are_informative_not_constant(es_events) -> None:
    x = batch_features(es_events, ES.tick_fixed, 1.0).X
    assert np.all(np.isfinite(x))
    constant = [n for n, s in zip(FEATURE_NAMES, x.std(0), strict=True) if s == 0]
    assert not constant
    assert np.all(np.abs(x[:, FEATURE_NAMES.index("imbalance_l1")]) <= 1)


def test_no_look_ahead_changing_later_events_changes_no_earlier_feature() -> None:
    ev = generate_session(3, duration_s=600)
    base = batch_features(ev, ES.tick_fixed, 1.0)
    t_cut = int(base.ts_ns[len(base.ts_ns) // 2])
    after = np.flatnonzero(ev["ts_recv"] > t_cut)
    altered = ev[: after[0]].copy()  # drop every event after t: the future is gone
    other = batch_features(altered, ES.tick_fixed, 1.0)
    keep = base.ts_ns < t_cut  # at t_cut itself a live engine would still be waiting
    np.testing.assert_array_equal(other.ts_ns[: keep.sum()], base.ts_ns[keep])
    np.testing.assert_array_equal(other.X[: keep.sum()], base.X[keep])


def test_direction_labels_use_the_dead_zone_and_the_horizon() -> None:
    ts = np.arange(0, 60, dtype=np.int64) * 1_000_000_000
    mid = np.full(60, 4800.0)
    mid[25:] = 4800.125  # half a tick up: inside the dead zone
    mid[40:] = 4800.50  # two ticks up
    y, valid = direction_labels(ts, mid, 20.0, 0.5, 0.25)
    assert valid.sum() == 40 and not valid[40:].any()
    assert y[4] == FLAT and y[5] == FLAT  # +0.5 tick is not a move
    assert y[20] == UP and y[19] == FLAT
    mid2 = mid[::-1].copy()
    y2, _ = direction_labels(ts, mid2, 20.0, 0.5, 0.25)
    assert DOWN in set(y2[valid])
