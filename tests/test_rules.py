"""Rule strategies on hand-built ES mid and feature sequences whose entries and exits are
worked out by hand, plus one pass over a real ES trade day checked against a numpy oracle.
ES mids move on a 0.125 grid (the middle of a 0.25 tick)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from esml.alpha.rules import (
    EfficiencyRegime,
    EfficiencyRegimeConfig,
    MeanReversionStrategy,
    MomentumConfig,
    MomentumStrategy,
    Regime,
    RollingMeanStd,
    ZScoreRegimeConfig,
    ZScoreRegimeStrategy,
    make_rule_strategy,
)
from esml.alpha.strategy import Signal, Strategy
from esml.execution.orders import Side
from esml.features.streaming import FEATURE_NAMES

T0 = pd.Timestamp("2024-03-04 09:00", tz="America/Chicago").value
SEC = 1_000_000_000
WINDOW = 16  # a power of two: the hand-worked means and stds below are exact
TREND, RANGE = 0.6, 0.1  # efficiency_60s values on either side of the 0.3 line


def row(**values: float) -> np.ndarray:
    """A feature row in FEATURE_NAMES order: zeros except the named features."""
    x = np.zeros(len(FEATURE_NAMES), np.float32)
    for name, v in values.items():
        x[FEATURE_NAMES.index(name)] = v
    return x


class Feed:
    """Calls a strategy once a second, as the engine would at its decision points."""

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self.k = 0

    def __call__(self, mid: float, position: int = 0, **features: float) -> Signal | None:
        self.k += 1
        return self.strategy.on_decision(T0 + self.k * SEC, row(**features), mid, position)


def warmed(low: float, high: float, **cfg: object) -> Feed:
    """A z strategy whose window holds `low` and `high` alternately, WINDOW values: mean
    (low + high) / 2, population std (high - low) / 2."""
    feed = Feed(ZScoreRegimeStrategy(ZScoreRegimeConfig(window=WINDOW, **cfg)))
    for k in range(WINDOW):
        assert feed(low if k % 2 == 0 else high, efficiency_60s=RANGE) is None  # not warm
    return feed


# --- the z-score regime strategy ----------------------------------------------------------


@pytest.mark.parametrize(
    ("mid", "z"), [(5000.75, 2.0), (5000.875, 2.5), (4999.75, -2.0), (4999.625, -2.5)]
)
def test_range_fades_at_the_band_edges(mid: float, z: float) -> None:
    feed = warmed(5000.00, 5000.50)  # mean 5000.25, std 0.25 = 1 tick
    sig = feed(mid, efficiency_60s=RANGE)
    assert sig is not None and sig.source == "zscore_regime"
    assert sig.side is (Side.SELL if z > 0 else Side.BUY)  # against the stretch
    assert sig.trail_ticks == 4 and sig.stop_ticks is None and not sig.exit_position
    assert f"{z:+.2f}" in sig.reason and "fade" in sig.reason
    assert sig.confidence == 0.6 and sig.p_up + sig.p_down == pytest.approx(1.0)


def test_trend_follows_inside_the_band() -> None:
    feed = warmed(5000.000, 5000.625)  # mean 5000.3125, std 0.3125
    sig = feed(5001.000, efficiency_60s=TREND)  # z = 0.6875 / 0.3125 = +2.2
    assert sig is not None and sig.side is Side.BUY and "trend: follow z +2.20" in sig.reason
    feed = warmed(5000.000, 5000.625)
    sig = feed(4999.625, efficiency_60s=TREND)  # z = -2.2
    assert sig is not None and sig.side is Side.SELL and sig.p_down == 0.6


@pytest.mark.parametrize("mid", [5001.125, 4999.500, 5000.875])  # z = +2.6, -2.6, +1.8
def test_no_entry_outside_the_band(mid: float) -> None:
    for eff in (TREND, RANGE):
        feed = warmed(5000.000, 5000.625)
        assert feed(mid, efficiency_60s=eff) is None


def test_no_entry_while_in_a_position_and_none_in_a_flat_window() -> None:
    feed = warmed(5000.000, 5000.625)
    assert feed(5001.000, position=2, efficiency_60s=RANGE) is None
    flat = warmed(5000.00, 5000.00)  # std 0: z means nothing
    assert flat(5000.50, efficiency_60s=RANGE) is None


def test_efficiency_rule_splits_trend_and_range_and_can_leave_a_gap() -> None:
    two_way = EfficiencyRegime(EfficiencyRegimeConfig())
    assert two_way.classify(row(efficiency_60s=0.3)) is Regime.TREND
    assert two_way.classify(row(efficiency_60s=0.29)) is Regime.RANGE
    gap = EfficiencyRegime(EfficiencyRegimeConfig(range_max=0.1))
    assert gap.classify(row(efficiency_60s=0.2)) is Regime.NONE
    assert gap.classify(row(efficiency_60s=np.nan)) is Regime.NONE
    feed = warmed(5000.000, 5000.625, regime=EfficiencyRegimeConfig(range_max=0.1))
    assert feed(5001.000, efficiency_60s=0.2) is None  # neither regime: no trade


def z_oracle(mids: list[float], window: int) -> float:
    past = np.array(mids[-window - 1 : -1])
    return float((mids[-1] - past.mean()) / past.std())


def test_a_fade_exits_when_z_comes_back_to_0_2() -> None:
    feed = warmed(5000.000, 5000.625)
    mids = [5000.000 if k % 2 == 0 else 5000.625 for k in range(WINDOW)] + [5001.000]
    entry = feed(5001.000, efficiency_60s=RANGE)
    assert entry is not None and entry.side is Side.SELL
    assert feed(5001.000, position=0, efficiency_60s=RANGE) is None  # not filled yet
    mids.append(5001.000)
    seen = []
    for mid in np.arange(5000.875, 5000.0, -0.125):  # price drifts back down, short 1
        mids.append(float(mid))
        z = z_oracle(mids, WINDOW)
        sig = feed(float(mid), position=-1, efficiency_60s=TREND)  # exits ignore regime
        seen.append((z, sig))
    exits = [k for k, (_, sig) in enumerate(seen) if sig is not None]
    first = next(k for k, (z, _) in enumerate(seen) if z <= 0.2)
    assert first >= 3 and exits[0] == first  # exactly when z reached 0.2, not earlier
    assert seen[first - 1][0] > 0.2
    sig = seen[first][1]
    assert sig is not None and sig.exit_position and sig.side is None
    assert all(s is not None and s.exit_position for _, s in seen[first:])  # until flat
    assert feed(5000.0, position=0, efficiency_60s=RANGE) is None  # flat: the fade is over
    assert feed(4999.875, position=-1, efficiency_60s=RANGE) is None  # not its trade now


@pytest.mark.parametrize(
    ("entry_mid", "final_z", "exits"),
    [
        (5001.0, 0.21, False),
        (5001.0, 0.19, True),
        (5001.0, -1.5, True),
        (4999.625, -0.21, False),
        (4999.625, -0.19, True),
        (4999.625, 1.5, True),
    ],
)
def test_the_fade_exit_line_is_0_2(entry_mid: float, final_z: float, exits: bool) -> None:
    """Same history each time (a fade entry, then two steps held); the last mid is placed
    at `final_z` against the window the strategy holds, computed by numpy."""
    feed = warmed(5000.000, 5000.625)
    mids = [5000.000 if k % 2 == 0 else 5000.625 for k in range(WINDOW)]
    side = Side.SELL if entry_mid > 5000.3125 else Side.BUY
    assert feed(entry_mid, efficiency_60s=RANGE).side is side  # type: ignore[union-attr]
    pos = side.sign  # the fade filled: short after selling, long after buying
    held = [entry_mid, 5000.625 if side is Side.SELL else 5000.0]
    for mid in held:
        assert feed(mid, position=pos, efficiency_60s=RANGE) is None
    past = np.array([*mids, entry_mid, *held][-WINDOW:])
    mid = float(past.mean() + final_z * past.std())
    sig = feed(mid, position=pos, efficiency_60s=RANGE)
    assert (sig is not None and sig.exit_position) is exits
    if not exits:
        assert sig is None


def test_trend_trades_never_z_exit() -> None:
    follow = warmed(5000.000, 5000.625)
    assert follow(5001.000, efficiency_60s=TREND).side is Side.BUY  # type: ignore[union-attr]
    for mid in (5000.375, 5000.25, 5000.0):  # z through 0: a trend trade rides its trail
        assert follow(mid, position=1, efficiency_60s=TREND) is None


def test_rolling_window_matches_numpy_on_an_es_random_walk() -> None:
    """Synthetic: a seeded ES mid random walk, only to check the O(1) window."""
    rng = np.random.default_rng(5)
    mids = 4800.0 + 0.125 * np.cumsum(rng.integers(-2, 3, 3_000))
    w = RollingMeanStd(120)
    for k, m in enumerate(mids):
        w.push(float(m))
        past = mids[max(0, k - 119) : k + 1]
        mean, std = w.mean_std()
        assert mean == pytest.approx(past.mean(), abs=1e-9)
        assert std == pytest.approx(past.std(), abs=1e-9)
    assert w.full


def test_bad_input_raises_and_changes_nothing() -> None:
    feed = warmed(5000.000, 5000.625)
    s = feed.strategy
    with pytest.raises(ValueError, match="feature row of"):
        s.on_decision(T0 + 100 * SEC, np.zeros(3), 5001.0, 0)
    with pytest.raises(ValueError, match="positive finite"):
        s.on_decision(T0 + 100 * SEC, row(efficiency_60s=RANGE), float("nan"), 0)
    with pytest.raises(ValueError, match="before the previous"):
        s.on_decision(T0, row(efficiency_60s=RANGE), 5001.0, 0)
    sig = feed(5001.000, efficiency_60s=RANGE)  # as if the bad calls never happened
    assert sig is not None and "z +2.20" in sig.reason


def test_missing_feature_and_bad_config_are_refused() -> None:
    short_layout = [n for n in FEATURE_NAMES if n != "efficiency_60s"]
    with pytest.raises(ValueError, match="'efficiency_60s'"):
        ZScoreRegimeStrategy(feature_names=short_layout)
    with pytest.raises(ValueError, match="'vwap_dist_ticks'"):
        MeanReversionStrategy(feature_names=short_layout[:40])
    with pytest.raises(ValidationError, match="band_min <= band_max"):
        ZScoreRegimeConfig(band_min=2.6, band_max=2.5)
    with pytest.raises(ValidationError, match="extra"):
        MomentumConfig(threshhold_ticks=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="unknown rule strategy"):
        make_rule_strategy("breakout")
    with pytest.raises(ValidationError):
        make_rule_strategy("mean_reversion", {"entry_ticks": 30})  # beyond max_ticks


# --- momentum ---------------------------------------------------------------------------


def test_momentum_threshold_direction_and_confidence_ramp() -> None:
    feed = Feed(MomentumStrategy())  # 4 ticks over 60 s; confidence 0.55 -> 0.75 at 12
    assert feed(5000.0, ret_60s_ticks=3.75) is None
    assert feed(5000.0, ret_60s_ticks=-3.75) is None
    cases = [
        (4.0, Side.BUY, 0.55),
        (8.0, Side.BUY, 0.65),
        (-12.0, Side.SELL, 0.75),
        (20.0, Side.BUY, 0.75),
    ]
    for ret, side, conf in cases:
        sig = feed(5000.0, ret_60s_ticks=ret)
        assert sig is not None and sig.side is side
        assert sig.confidence == pytest.approx(conf)
        assert (sig.p_up if side is Side.BUY else sig.p_down) == pytest.approx(conf)
        assert sig.trail_ticks is None and sig.source == "momentum"


def test_momentum_never_adds_and_turns_against_an_open_position() -> None:
    feed = Feed(
        make_rule_strategy("momentum", {"threshold_ticks": 6, "return_feature": "ret_30s_ticks"})
    )
    assert feed(5000.0, ret_30s_ticks=5.0) is None
    assert feed(5000.0, position=1, ret_30s_ticks=8.0) is None  # already long
    sig = feed(5000.0, position=1, ret_30s_ticks=-8.0)
    assert sig is not None and sig.side is Side.SELL  # the flip exit's cue


# --- mean reversion ---------------------------------------------------------------------


def test_mean_reversion_fades_a_stretch_but_not_a_breakout() -> None:
    feed = Feed(MeanReversionStrategy())  # 8 to 24 ticks from VWAP
    assert feed(5002.0, vwap_dist_ticks=7.5) is None
    assert feed(5008.0, vwap_dist_ticks=25.0) is None  # a breakout, not a stretch
    sig = feed(5002.0, vwap_dist_ticks=8.0)
    assert sig is not None and sig.side is Side.SELL and sig.confidence == pytest.approx(0.55)
    sig = feed(4996.0, vwap_dist_ticks=-24.0)
    assert sig is not None and sig.side is Side.BUY and sig.confidence == pytest.approx(0.7)


def test_mean_reversion_exits_back_at_the_reference() -> None:
    feed = Feed(MeanReversionStrategy())
    assert feed(4997.5, vwap_dist_ticks=-10.0).side is Side.BUY  # type: ignore[union-attr]
    assert feed(4997.75, position=1, vwap_dist_ticks=-9.0) is None
    assert feed(4999.25, position=1, vwap_dist_ticks=-3.0) is None
    sig = feed(4999.75, position=1, vwap_dist_ticks=-1.0)
    assert sig is not None and sig.exit_position and "reverted" in sig.reason
    assert feed(5000.0, position=0, vwap_dist_ticks=0.0) is None
    other = Feed(make_rule_strategy("mean_reversion", {"distance_feature": "momentum_300s_ticks"}))
    sig = other(5003.0, momentum_300s_ticks=12.0)
    assert sig is not None and sig.side is Side.SELL


# --- determinism and no look-ahead on a real ES day -----------------------------------------


def es_day_mids() -> tuple[np.ndarray, np.ndarray]:
    """ESM8 on 2018-05-07 RTH: the last trade price of each second (real data)."""
    root = Path(os.environ.get("ESML_DATA_DIR", Path(__file__).parents[1] / "../shared/data"))
    path = root / "es-trades" / "ESM8_trades_2018-05-07.csv"
    if not path.exists():
        pytest.skip(f"real ES data not found at {path}")
    df = pd.read_csv(path)
    ts = pd.to_datetime(df["ts"], format="ISO8601", utc=True).dt.as_unit("ns").astype("int64")
    last = df.assign(sec=ts // SEC).groupby("sec")["price"].last()
    return last.index.to_numpy(np.int64) * SEC, last.to_numpy(float)


def efficiency(mids: np.ndarray, k: int, n: int = 60) -> float:
    """Kaufman efficiency over the last n seconds, as efficiency_60s measures it."""
    seg = mids[max(0, k - n) : k + 1]
    path = np.abs(np.diff(seg)).sum()
    return float(abs(seg[-1] - seg[0]) / path) if path > 0 else 0.0


def run_z(ts: np.ndarray, mids: np.ndarray) -> list[tuple[int, Signal]]:
    """Entries fill at once; a position not exited by the rule closes after 120 s (a
    stand-in for the trailing stop, enough to let the rule trade all day)."""
    s = ZScoreRegimeStrategy(ZScoreRegimeConfig(window=120))
    out, pos, opened = [], 0, 0
    for k in range(len(mids)):
        if pos and k - opened >= 120:
            pos = 0
        sig = s.on_decision(int(ts[k]), row(efficiency_60s=efficiency(mids, k)), mids[k], pos)
        if sig is not None:
            out.append((k, sig))
            if sig.exit_position:
                pos = 0
            elif pos == 0 and sig.side is not None:
                pos, opened = sig.side.sign, k
    return out


def test_z_strategy_on_a_real_day_is_deterministic_and_sees_only_the_past() -> None:
    ts, mids = es_day_mids()
    n = min(len(mids), 6_000)
    ts, mids = ts[:n], mids[:n]
    first = run_z(ts, mids)
    assert [(k, s) for k, s in first] == run_z(ts, mids)
    entries = [(k, s) for k, s in first if s.side is not None]
    exits = [k for k, s in first if s.exit_position]
    assert len(entries) >= 3 and exits
    assert {s.reason.split(":")[0] for _, s in entries} == {"trend", "range"}
    for k, sig in entries:
        z = (mids[k] - mids[k - 120 : k].mean()) / mids[k - 120 : k].std()
        assert 2.0 <= abs(z) <= 2.5
        trend = efficiency(mids, k) >= 0.3
        assert sig.side is (
            (Side.BUY if z > 0 else Side.SELL) if trend else (Side.SELL if z > 0 else Side.BUY)
        )
    # a prefix of the data gives the same signals up to its end: nothing from later leaks
    cut = entries[len(entries) // 2][0] + 1
    assert run_z(ts[:cut], mids[:cut]) == [(k, s) for k, s in first if k < cut]
