"""Sequence inputs of the neural models: the streaming executors equal the batch ones on the
real ES file, nothing after a decision time reaches its window, and the windows are laid
out and normalised as documented.

The real ES sample has 59 one-minute bars, fewer than one 60-bar window, so full minute-bar
windows are also checked on a SYNTHETIC 75-minute session from `esml.sim.synthetic`.
"""

from __future__ import annotations

import numpy as np
import pytest

from esml.features.bars import BAR_FEATURE_NAMES, minute_bar_features
from esml.features.batch import batch_features
from esml.features.sequences import (
    BAR,
    BAR_WINDOW,
    LOB,
    LOB_LEVELS,
    TICK,
    BarStream,
    LobStream,
    TickBarStream,
    bar_windows,
    lob_windows,
    tick_windows,
)
from esml.market.events import ADD, TRADE
from esml.market.instruments import ES
from esml.sim.synthetic import generate_session

BATCH = {"tick": tick_windows, "lob": lob_windows, "bar": bar_windows}
STREAM = {"tick": TickBarStream, "lob": LobStream, "bar": BarStream}


@pytest.fixture(scope="module")
def es_decisions(es_events) -> np.ndarray:
    return batch_features(es_events, ES.tick_fixed, 1.0).ts_ns


@pytest.fixture(scope="module")
def synthetic_session() -> tuple[np.ndarray, np.ndarray]:
    """SYNTHETIC: 75 minutes from the simulator, long enough for 60-bar windows."""
    ev = generate_session(5, duration_s=4500)
    return ev, batch_features(ev, ES.tick_fixed, 1.0).ts_ns


def _stream(kind: str, events: np.ndarray, decisions: np.ndarray, seed: int):
    """Feed events in random chunks (1 to 2,000 records, cut at decision times as the engine
    cuts them) and read at every decision time: (windows, ready)."""
    rng = np.random.default_rng(seed)
    stream = STREAM[kind](ES.tick_fixed)
    spec = {"tick": TICK, "lob": LOB, "bar": BAR}[kind]
    out = np.zeros((len(decisions), *spec.shape), np.float32)
    ready = np.zeros(len(decisions), bool)
    ts = events["ts_recv"].astype(np.int64)
    i = 0
    for k, d in enumerate(decisions):
        stop = int(np.searchsorted(ts, d, side="right"))
        while i < stop:
            j = min(stop, i + int(rng.integers(1, 2_000)))
            stream.on_events(events[i:j])
            i = j
        w = stream.read_at(int(d)) if kind == "bar" else stream.read()
        if w is not None:
            out[k], ready[k] = w, True
    return out, ready


@pytest.mark.parametrize("kind", ["tick", "lob", "bar"])
def test_streaming_equals_batch_on_real_es(es_events, es_decisions, kind) -> None:
    batch = BATCH[kind](es_events, ES.tick_fixed, es_decisions)
    x, ready = _stream(kind, es_events, es_decisions, seed=1)
    np.testing.assert_array_equal(ready, batch.ready)
    np.testing.assert_allclose(x, batch.x, rtol=0, atol=1e-9)
    if kind == "bar":  # 59 bars: never a full window, but every row the batch saw is kept
        assert not batch.ready.any()
        end, rows = minute_bar_features(es_events, ES.tick_fixed)
        stream = BarStream(ES.tick_fixed)
        stream.on_events(es_events)
        n = int(stream.state.meta[0])
        assert n == len(rows) == 59
        np.testing.assert_array_equal(stream.state.end[:n], end)
        np.testing.assert_array_equal(stream.state.rows[:n], rows)
    else:
        assert batch.ready.sum() > 3_000


def test_minute_bar_windows_stream_equals_batch_on_a_synthetic_session(synthetic_session):
    ev, decisions = synthetic_session  # SYNTHETIC
    batch = bar_windows(ev, ES.tick_fixed, decisions)
    x, ready = _stream("bar", ev, decisions, seed=2)
    assert batch.ready.sum() > 500
    np.testing.assert_array_equal(ready, batch.ready)
    np.testing.assert_allclose(x, batch.x, rtol=0, atol=1e-9)
    end, rows = minute_bar_features(ev, ES.tick_fixed)
    k = int(np.flatnonzero(batch.ready)[-1])
    m = int(np.searchsorted(end, decisions[k], side="right"))
    np.testing.assert_array_equal(batch.x[k], rows[m - BAR_WINDOW : m].astype(np.float32))


@pytest.mark.parametrize("kind", ["tick", "lob", "bar"])
def test_no_look_ahead_later_events_change_no_earlier_window(
    es_events, es_decisions, synthetic_session, kind
) -> None:
    ev, decisions = synthetic_session if kind == "bar" else (es_events, es_decisions)
    base = BATCH[kind](ev, ES.tick_fixed, decisions)
    ready_at = np.flatnonzero(base.ready)
    t_cut = int(decisions[ready_at[len(ready_at) // 2]])
    later = ev["ts_recv"].astype(np.int64) > t_cut
    # the future removed, and the future rewritten: every later trade twice its size, every
    # later order one lot larger
    altered = ev.copy()
    altered["size"][later & (ev["action"] == TRADE)] *= 2
    altered["size"][later & (ev["action"] == ADD)] += 1
    for future in (ev[~later], altered):
        other = BATCH[kind](future, ES.tick_fixed, decisions)
        upto = decisions <= t_cut
        np.testing.assert_array_equal(other.ready[upto], base.ready[upto])
        np.testing.assert_array_equal(other.x[upto], base.x[upto])
    changed = BATCH[kind](altered, ES.tick_fixed, decisions)
    assert not np.array_equal(changed.x[decisions > t_cut], base.x[decisions > t_cut])


def test_tick_windows_are_relative_to_the_last_close_and_recent_volume(
    es_events, es_decisions
) -> None:
    w = tick_windows(es_events, ES.tick_fixed, es_decisions)
    x = w.x[w.ready]
    assert w.x.shape == (len(es_decisions), 7, 5)
    assert TICK.step_names == ("open", "high", "low", "close", "volume")
    np.testing.assert_array_equal(x[:, -1, 3], 0.0)  # the last close is the reference
    assert np.all(x[:, :, 1] >= x[:, :, 0]) and np.all(x[:, :, 2] <= x[:, :, 3])
    assert np.all(x[:, :, 4] > 0) and 0.5 < x[:, :, 4].mean() < 2.0
    assert np.abs(x[:, :, :4]).max() < 50  # ticks, not raw prices
    assert not w.x[~w.ready].any()  # rows before 7 bars stay empty
    # bars are 20 trades: 2,973 trades make 148 bars, the first full window after the 7th
    trades = np.flatnonzero(es_events["action"] == TRADE)
    seventh = int(es_events["ts_recv"][trades[7 * 20 - 1]])
    np.testing.assert_array_equal(w.ready, es_decisions >= seventh)


def test_lob_windows_follow_deeplob_layout(es_events, es_decisions) -> None:
    w = lob_windows(es_events, ES.tick_fixed, es_decisions)
    x = w.x[w.ready]
    assert w.x.shape == (len(es_decisions), 100, 40) and LOB.step_names[:4] == (
        "ask_px_1",
        "ask_sz_1",
        "bid_px_1",
        "bid_sz_1",
    )
    ask_px, bid_px = x[:, :, 0::4], x[:, :, 2::4]
    ask_sz, bid_sz = x[:, :, 1::4], x[:, :, 3::4]
    last = x[:, -1]
    assert np.all(last[:, 0] > 0) and np.all(last[:, 2] < 0)  # around the latest mid
    np.testing.assert_array_equal(last[:, 0] + last[:, 2], 0.0)
    assert np.all(np.diff(ask_px, axis=2) >= 1) and np.all(np.diff(bid_px, axis=2) <= -1)
    assert np.all(ask_sz >= 0) and np.all(bid_sz >= 0) and np.all(ask_sz[:, :, 0] > 0)
    assert 0.3 < np.concatenate([ask_sz, bid_sz]).mean() < 3.0  # sizes over a recent mean
    assert LOB_LEVELS == 10 and np.all(np.isfinite(x))
    # consecutive snapshots differ: one is kept per packet that changed the 10 levels
    assert np.all(np.any(x[:, 1:] != x[:, :-1], axis=2))


def test_bar_window_spec_is_h6s_feature_list() -> None:
    assert BAR.shape == (60, 11) and BAR.step_names == BAR_FEATURE_NAMES


def test_bad_input_is_refused_and_changes_nothing(es_events, es_decisions) -> None:
    with pytest.raises(ValueError, match="sorted"):
        tick_windows(es_events, ES.tick_fixed, es_decisions[::-1].copy())
    with pytest.raises(ValueError, match="MBO_DTYPE"):
        lob_windows(es_events["price"], ES.tick_fixed, es_decisions)
    with pytest.raises(ValueError, match="tick_fixed"):
        TickBarStream(0)
    stream = LobStream(ES.tick_fixed)
    half = len(es_events) // 2
    stream.on_events(es_events[:half])
    before = stream.read()
    with pytest.raises(ValueError, match="back in time"):
        stream.on_events(es_events[:10])
    np.testing.assert_array_equal(stream.read(), before)
    with pytest.raises(ValueError, match="float32"):
        stream.read(np.zeros((100, 40), np.float64))
