"""Bar-level stylized facts: each building block on series with known answers, then the
whole set on the shipped real ES 5-minute bars, where the well-known facts must show."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from esml.data.continuous import chain_bars
from esml.data.sierra import SHIPPED_BARS, read_shipped_bars
from esml.evaluation.bar_stylized import (
    BAR_S,
    bar_facts,
    bar_scalars,
    bar_series,
    bars_with_flow,
    hill_tail_index,
    lagged_corr,
    mean_run_length,
    profile_corr,
    u_shape,
)
from esml.evaluation.market_validation import bar_departures
from esml.market.events import BID, TRADE
from esml.sim.queue_reactive import generate_day

ROOT = Path(__file__).resolve().parents[1]
STEP = BAR_S * 1_000_000_000
T0 = 1_546_300_800 * 1_000_000_000  # 2019-01-01 00:00 UTC, on a 5-minute boundary


def test_returns_chain_only_consecutive_bars_of_one_contract() -> None:
    ts = T0 + STEP * np.array([0, 1, 2, 4, 5, 6])  # slot 3 missing
    bars = pd.DataFrame(
        {
            "ts": ts,
            "close": [100, 101, 102, 104, 105, 106],
            "volume": [1, 2, 3, 4, 5, 6],
            "contract": ["ESH9"] * 5 + ["ESM9"],
        }
    )
    s = bar_series(bars)
    assert len(s.r) == 7  # the dense grid includes the missing slot
    finite = np.flatnonzero(np.isfinite(s.r)).tolist()
    assert finite == [1, 2, 5]  # not into the gap, not out of it, not across the roll
    assert s.r[1] == pytest.approx(np.log(101 / 100))
    assert np.isnan(s.volume[3])
    with pytest.raises(ValueError, match="5-minute"):
        bar_series(bars.assign(ts=ts + 1))


def test_building_blocks_give_known_answers() -> None:
    rng = np.random.default_rng(0)
    x = np.zeros(20_000)
    for i in range(1, len(x)):  # AR(1), phi 0.7
        x[i] = 0.7 * x[i - 1] + rng.standard_normal()
    assert lagged_corr(x, x, 1) == pytest.approx(0.7, abs=0.03)
    assert lagged_corr(x, x, 2) == pytest.approx(0.49, abs=0.04)
    y = x.copy()
    y[::3] = np.nan  # gaps drop pairs, never shift them
    assert lagged_corr(y, y, 1) == pytest.approx(0.7, abs=0.04)
    pareto = rng.pareto(3.0, 200_000) + 1.0  # tail index 3
    assert hill_tail_index(pareto * rng.choice([-1, 1], len(pareto))) == pytest.approx(3, rel=0.1)
    state = np.array([1, 1, 0, 1, 1, 1, np.nan, 1, 0, 0], np.float64)
    assert mean_run_length(state) == pytest.approx(6 / 3)  # runs 2, 3, 1 (the NaN splits)
    profile = np.ones(288)
    profile[8 * 12 + 6 : 9 * 12] = 3.0  # 08:30-09:00 CT
    profile[14 * 12 + 6 : 15 * 12] = 2.0  # 14:30-15:00 CT
    assert u_shape(profile) == (3.0, 2.0)


def test_generated_bars_carry_aggressor_volume() -> None:
    ev = generate_day(1, "2024-03-05", start="08:30", hours=0.25)
    bars = bars_with_flow(ev)
    trades = ev[ev["action"] == TRADE]
    assert len(bars) == 3  # 08:30, 08:35, 08:40
    assert (bars["bid_volume"] + bars["ask_volume"] == bars["volume"]).all()
    assert bars["ask_volume"].sum() == trades["size"][trades["side"] == BID].sum()
    assert bars["volume"].sum() == trades["size"].sum()


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    """Two years of the shipped real ES bars (2018-2019), chained across rolls."""
    bars = read_shipped_bars(ROOT / SHIPPED_BARS)
    return chain_bars({c: b for c, b in bars.items() if c.year in (2018, 2019)})


def test_real_es_bars_show_the_stylized_facts(real: pd.DataFrame) -> None:
    f = bar_facts(real, "real ES 2018-2019")
    assert f.trade_dates > 450 and f.bars > 0.9 * len(real)
    # heavy tails that thin out as returns aggregate
    assert f.kurtosis_5min > 5 and 2 < f.hill_alpha < 5
    assert f.kurtosis_5min > f.kurtosis_2h
    # no linear memory, but clustered volatility, decaying with the lag, and not only the
    # time-of-day profile: it stays once the profile is divided out, and day to day
    assert abs(f.acf_r_1) < 0.1
    assert f.abs_acf[0] > 0.2 and f.abs_acf[0] > f.abs_acf[4] > 0
    assert f.deseasonalised_abs_acf[0] > 0.2
    assert f.daily_vol_acf_1 > 0.4
    assert f.leverage < 0  # falls lead to more volatility
    # the RTH U-shape: open and close busier than midday, the night much quieter
    assert f.vol_open_midday > 1.2 and f.vol_close_midday > 1.1
    assert f.volume_open_midday > 1.5 and f.volume_close_midday > 1.5
    assert f.vol_overnight_rth < 1 and f.volume_overnight_rth < 0.3
    # calm and turbulent spells last; trends are rarer than ranges
    assert f.high_vol_hours_run > 1.5 and f.high_vol_days_run > 1.5
    assert 0.02 < f.trend_hours_share < 0.5
    assert f.flow_return_corr > 0.1  # buyers lift prices
    names = bar_scalars(f)
    assert len(names) == 30 and all(np.isfinite(v) for v in names.values())
    # make validate's departures: the real bars against themselves are close everywhere
    gaps = bar_departures(f, f)
    assert [g.statistic for g in gaps] == list(names)
    assert not any(g.departs for g in gaps if g.real_es)
    assert profile_corr(f, f) == pytest.approx(1.0)
