"""One-minute bar technicals: the textbook values on hand-built trades, the same numbers
as the streaming features' bar columns, and quiet minutes leave no bar."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from esml.features.bars import BAR_FEATURE_NAMES, minute_bar_features
from esml.features.batch import batch_features
from esml.features.streaming import FEATURE_NAMES
from esml.market.events import ASK, BID, TRADE, empty_events
from esml.market.instruments import ES
from esml.sim.synthetic import DEFAULT_START_NS, generate_session

NS = 1_000_000_000
MIN = 60 * NS
CENT = 10_000_000  # a 0.01 tick in fixed point, so the classic RSI series reads as printed

# Wilder's RSI example series (closes), as reprinted in most RSI tutorials
CLOSES = [
    44.34, 44.09, 44.15, 43.61, 44.33, 44.83, 45.10, 45.42, 45.84, 46.08, 45.89, 46.03,
    45.61, 46.28, 46.28, 46.00, 46.03, 46.41, 46.22, 45.64, 46.21, 46.25, 45.71, 46.45,
    45.78, 45.35, 44.03, 44.18, 44.22, 44.57, 43.42, 42.66, 43.13,
]  # fmt: skip


def _bars_from_trades(closes: list[float], seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Four trades a minute (open, high, low, close), then one trade to close the last bar;
    returns the events and the bars' OHLCV in cents."""
    rng = np.random.default_rng(seed)
    rows = []
    prev = closes[0]
    for m, c in enumerate(closes):
        hi = max(prev, c) + 0.01 * rng.integers(0, 4)
        lo = min(prev, c) - 0.01 * rng.integers(0, 4)
        for sec, px in ((5, prev), (20, hi), (35, lo), (50, c)):
            rows.append((m * MIN + sec * NS, px, int(rng.integers(1, 30))))
        prev = c
    rows.append((len(closes) * MIN + NS, closes[-1], 1))
    ev = empty_events(len(rows))
    for k, (t, px, size) in enumerate(rows):
        ev[k]["ts_recv"] = DEFAULT_START_NS + t
        ev[k]["action"] = TRADE
        ev[k]["side"] = BID if k % 3 else ASK
        ev[k]["price"] = round(px * 100) * CENT
        ev[k]["size"] = size
    frame = pd.DataFrame(rows[:-1], columns=["t", "px", "size"])
    frame["px"] = (frame["px"] * 100).round()
    frame["minute"] = frame["t"] // MIN
    g = frame.groupby("minute")
    bars = pd.DataFrame(
        {
            "open": g["px"].first(),
            "high": g["px"].max(),
            "low": g["px"].min(),
            "close": g["px"].last(),
            "volume": g["size"].sum(),
        }
    )
    return ev, bars


def _wilder(x: pd.Series, n: int = 14) -> pd.Series:
    """Wilder's average: the plain mean of the first n values, then (13 avg + x) / 14."""
    out, avg = [], 0.0
    for k, v in enumerate(x, start=1):
        avg = avg + (v - avg) / k if k <= n else (avg * (n - 1) + v) / n
        out.append(avg)
    return pd.Series(out, index=x.index)


def _reference(bars: pd.DataFrame) -> pd.DataFrame:
    """The 11 technicals by their textbook definitions, with pandas."""
    c, h, lo, v = bars["close"], bars["high"], bars["low"], bars["volume"]
    change = c.diff().iloc[1:]
    gain, loss = _wilder(change.clip(lower=0)), _wilder((-change).clip(lower=0))
    rsi = pd.concat([pd.Series([50.0]), 100 - 100 / (1 + gain / loss)]).set_axis(c.index)
    macd = c.ewm(span=12, adjust=False).mean() - c.ewm(span=26, adjust=False).mean()
    mean20 = c.rolling(20, min_periods=1).mean()
    sd20 = c.rolling(20, min_periods=1).std(ddof=0)
    tr = pd.concat([h - lo, (h - c.shift()).abs(), (lo - c.shift()).abs()], axis=1).max(axis=1)
    prior = v.shift()  # the volume z-score sees only the 20 bars before
    vz = (v - prior.rolling(20, min_periods=2).mean()) / prior.rolling(20, min_periods=2).std(
        ddof=0
    )
    first = c.iloc[0]
    return pd.DataFrame(
        {
            "bar_ret_1_ticks": c - c.shift(1).fillna(first),
            "bar_ret_5_ticks": c - c.shift(5).fillna(first),
            "bar_ret_15_ticks": c - c.shift(15).fillna(first),
            "bar_rsi_14": rsi,
            "bar_macd_ticks": macd,
            "bar_macd_signal_ticks": macd.ewm(span=9, adjust=False).mean(),
            "bar_bollinger_pctb_20": ((c - mean20 + 2 * sd20) / (4 * sd20)).fillna(0.5),
            "bar_atr_14_ticks": _wilder(tr),
            "bar_volume_z_20": vz.replace([np.inf, -np.inf], np.nan).fillna(0.0),  # sd 0: 0
            "bar_range_ticks": h - lo,
            "bar_close_location": (2 * (c - lo) / (h - lo) - 1).fillna(0.0),
        }
    )


def test_the_11_technicals_match_their_textbook_definitions() -> None:
    ev, bars = _bars_from_trades(CLOSES, seed=1)
    end, x = minute_bar_features(ev, CENT)
    assert x.shape == (len(CLOSES), 11) and list(BAR_FEATURE_NAMES) == list(_reference(bars))
    np.testing.assert_array_equal(end, DEFAULT_START_NS + (np.arange(len(CLOSES)) + 1) * MIN)
    ref = _reference(bars).to_numpy()
    np.testing.assert_allclose(x, ref, rtol=0, atol=1e-9)


def test_rsi_on_wilders_series_is_the_known_value() -> None:
    """First RSI on 14 changes: gains 3.34, losses 1.40, so RS = 2.386 and RSI = 70.46."""
    ev, _ = _bars_from_trades(CLOSES, seed=2)
    _, x = minute_bar_features(ev, CENT)
    rsi = x[:, BAR_FEATURE_NAMES.index("bar_rsi_14")]
    assert rsi[14] == pytest.approx(100 - 100 / (1 + 3.34 / 1.40), abs=1e-9)
    assert rsi[14] == pytest.approx(70.46, abs=0.005)
    assert rsi[15] == pytest.approx(66.25, abs=0.005)  # then Wilder's smoothing


def test_rsi_limits_and_bollinger_on_simple_series() -> None:
    up, _ = _bars_from_trades([100.0 + k for k in range(30)], seed=3)
    zigzag, _ = _bars_from_trades([100.0 + (k % 2) for k in range(30)], seed=3)
    rsi = BAR_FEATURE_NAMES.index("bar_rsi_14")
    assert minute_bar_features(up, CENT)[1][-1, rsi] == 100.0
    # alternating +1 / -1: Wilder's smoothing swings it a few points either side of 50
    swings = minute_bar_features(zigzag, CENT)[1][-10:, rsi]
    assert np.all(np.abs(swings - 50) < 5)
    flat, _ = _bars_from_trades([100.0] * 25, seed=4)
    pctb = minute_bar_features(flat, CENT)[1][:, BAR_FEATURE_NAMES.index("bar_bollinger_pctb_20")]
    assert np.all(pctb == 0.5)  # no spread, no band: the middle


def test_a_quiet_minute_leaves_no_bar_and_the_open_bar_is_not_reported() -> None:
    ev, _ = _bars_from_trades([100.0, 101.0, 102.0], seed=5)
    t = ev["ts_recv"]
    quiet = (t >= DEFAULT_START_NS + MIN) & (t < DEFAULT_START_NS + 2 * MIN)
    end, _ = minute_bar_features(ev[~quiet], CENT)
    np.testing.assert_array_equal(end, DEFAULT_START_NS + np.array([1, 3]) * MIN)
    end, _ = minute_bar_features(ev[:-1], CENT)  # nothing shows the last minute is over
    assert len(end) == 2


def test_bars_are_the_streaming_features_bar_columns(es_events) -> None:
    """What the bar LSTM trains on is what the engine's feature vector carries."""
    for events in (es_events, generate_session(9, duration_s=1800)):  # real, synthetic
        end, bars = minute_bar_features(events, ES.tick_fixed)
        frame = batch_features(events, ES.tick_fixed, 1.0)
        assert len(end) > 25
        cols = [FEATURE_NAMES.index(n) for n in BAR_FEATURE_NAMES]
        k = np.searchsorted(end, frame.ts_ns, side="right") - 1  # last bar ended by then
        has = k >= 0
        assert has.sum() > 1_000
        np.testing.assert_allclose(
            frame.X[has][:, cols], bars[k[has]].astype(np.float32), rtol=0, atol=1e-9
        )


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="MBO_DTYPE"):
        minute_bar_features(np.zeros(4, np.int64), CENT)
    ev, _ = _bars_from_trades([100.0, 101.0], seed=6)
    with pytest.raises(ValueError, match="tick_fixed"):
        minute_bar_features(ev, -1)
    with pytest.raises(ValueError, match="ts_recv order"):
        minute_bar_features(ev[::-1].copy(), CENT)
