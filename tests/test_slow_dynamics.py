"""The generator's slow dynamics: the fit recovers known parameters from bars drawn with
them, and a day with slow dynamics is deterministic per (seed, date)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from esml.market.calendar import is_trading_date, session_bounds
from esml.sim.qr_params import IntradayParams, QRParamsError, SlowParams
from esml.sim.queue_reactive import generate
from esml.sim.slow_dynamics import (
    activity_curve,
    bar_calibrated_params,
    fit_slow,
    load_slow,
    save_slow,
)

MINUTES = (0.0, 60.0, 500.0, 900.0, 930.0, 1100.0, 1320.0, 1380.0)
FACTOR = (1.0, 1.0, 2.0, 2.0, 9.0, 3.0, 6.0, 1.5)


def _known() -> SlowParams:
    return SlowParams(
        source="known", source_sha256="-", bars=0, first_bar_utc="-", last_bar_utc="-",
        intraday=IntradayParams(minutes=MINUTES, factor=FACTOR), daily_phi=0.85,
        daily_sd=0.8, intraday_tau_s=5400.0, intraday_sd=0.6, max_multiplier=1e6,
        min_multiplier=1e-6,
    )  # fmt: skip


def _bars_from(slow: SlowParams, n_days: int, seed: int) -> pd.DataFrame:
    """5-min closes whose returns have variance proportional to the slow activity."""
    rng = np.random.default_rng(seed)
    ts, r, d = [], [], date(2019, 1, 2)
    while len(ts) < n_days:
        if is_trading_date(d):
            t, act = activity_curve(seed, d, slow)
            open_ns, close_ns = session_bounds(d)
            slots = np.arange(open_ns, close_ns, 300 * 10**9)
            a = np.interp((slots - open_ns) / 1e9 + 150.0, t, act)
            ts.append(slots)
            r.append(1e-4 * np.sqrt(a) * rng.standard_normal(len(a)))
        d += timedelta(days=1)
    close = np.rint(4e12 * np.exp(np.cumsum(np.concatenate(r)))).astype(np.int64)
    return pd.DataFrame({"ts": np.concatenate(ts), "close": close, "volume": 1})


def test_the_fit_recovers_known_slow_dynamics() -> None:
    truth = _known()
    fit = fit_slow(_bars_from(truth, 400, seed=3), source="drawn", sha256="-")
    assert fit.daily_phi == pytest.approx(truth.daily_phi, abs=0.08)
    assert fit.daily_sd == pytest.approx(truth.daily_sd, rel=0.2)
    assert fit.intraday_tau_s == pytest.approx(truth.intraday_tau_s, rel=0.3)
    assert fit.intraday_sd == pytest.approx(truth.intraday_sd, rel=0.25)
    # the intraday curve, mid-segment (the first hour is 1 by construction)
    at = np.array([30.0, 700.0, 1000.0, 1200.0])
    want = np.interp(at, MINUTES, FACTOR)
    got = np.interp(at, fit.intraday.minutes, fit.intraday.factor)
    assert got == pytest.approx(want, rel=0.2)


def test_a_slow_day_is_deterministic_per_seed_and_window(tmp_path) -> None:
    params = bar_calibrated_params()
    day = date(2024, 3, 5)
    a = generate(3, day, params=params, start="08:30", hours=0.1)
    b = generate(3, day, params=params, start="08:30", hours=0.1)
    assert a.events.tobytes() == b.events.tobytes()
    c = generate(4, day, params=params, start="08:30", hours=0.1)
    assert c.events.tobytes() != a.events.tobytes()
    plain = generate(3, day, start="08:30", hours=0.1)
    assert plain.events.tobytes() != a.events.tobytes()  # the slow layer is in force
    t1, m1 = activity_curve(3, day, params.slow)
    assert np.array_equal(m1, activity_curve(3, day, params.slow)[1])
    assert not np.array_equal(m1, activity_curve(3, day + timedelta(days=1), params.slow)[1])
    slow = params.slow
    mult = m1 / np.interp(t1 / 60, slow.intraday.minutes, slow.intraday.factor)
    assert mult.min() >= slow.min_multiplier * 0.999 and mult.max() <= slow.max_multiplier * 1.001
    # a saved fit reads back equal; a broken one is refused naming the file
    save_slow(params.slow, tmp_path / "slow.json")
    assert load_slow(tmp_path / "slow.json") == params.slow
    (tmp_path / "bad.json").write_text('{"daily_phi": 1.5}')
    with pytest.raises(QRParamsError, match=r"bad\.json"):
        load_slow(tmp_path / "bad.json")
