"""The generator's slow dynamics, fitted on nine years of real ES 5-minute bars.

Why: the queue-reactive tables come from one thin holiday hour, which cannot say how busy
the market is at 08:30 against 03:00, how volatility clusters from hour to hour and day to
day, or how long calm spells last. The bars can. The generator's price variance per second
grows about linearly with its activity (every rate is scaled by it), so a bar's volatility
squared is the activity it needs. The fit (moments, no optimiser):

- intraday: the mean |5-min return| by slot of the Chicago day, squared, relative to the
  first hour of the evening session (the calibration window of the tables);
- daily: log of each trade date's deseasonalised realized volatility, twice (variance), as
  an AR(1) over business days;
- within the day: log of each clock hour's realized volatility as an OU process in hours
  on top of its trade date's level.

Measurement noise in a realized volatility is white, so it inflates only the variance of
those series: the AR coefficient is taken from lags 2 over 1 of the autocovariance, and
the persistent variance from lag 1 over that coefficient, both free of it.

The path of a day depends only on (seed, date): the daily level is a seeded AR(1) walk over
business days from a fixed anchor (as the opening price is), the within-day path is drawn
from its own seed, and neither touches the kernel's random stream, so the tables' part of a
day is unchanged. The multiplier is clipped to [0.05, 5] so that no day grows past memory.
SYNTHETIC: what comes out is generated data.
"""

from __future__ import annotations

import math
from datetime import date
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from esml.evaluation.bar_stylized import (
    BarSeries,
    bar_series,
    daily_realized_vol,
    deseasonalised_abs,
    vol_profile,
)
from esml.sim.qr_params import (
    DAY_MINUTES,
    IntradayParams,
    QRParams,
    QRParamsError,
    SlowParams,
    default_params,
)

SLOW_PARAMS_FILE = Path(__file__).with_name("es_slow_params.json")
SLOW_ANCHOR = date(2000, 1, 3)  # the daily log-activity walk starts here
EVENING_OPEN_MIN = 17 * 60  # minute of the Chicago day the CME day opens
REFERENCE_MINUTES = 60  # activity 1: the first hour of the evening session
MAX_PHI = 0.995
HOUR_S = 3600.0


# ---------------------------------------------------------------- the fit


def _acov(x: np.ndarray, lag: int, groups: np.ndarray | None = None) -> float:
    """Autocovariance at `lag` over pairs both finite (and, with groups, in one group)."""
    d = x - np.nanmean(x)
    a, b = d[:-lag], d[lag:]
    ok = np.isfinite(a) & np.isfinite(b)
    if groups is not None:
        ok &= groups[:-lag] == groups[lag:]
    return float(np.mean(a[ok] * b[ok])) if ok.sum() > 10 else math.nan


def ar1_moments(x: np.ndarray) -> tuple[float, float]:
    """(phi, stationary sd) of the persistent AR(1) part of x, noise-robust (lags 1, 2)."""
    c1, c2 = _acov(x, 1), _acov(x, 2)
    if not (c1 > 0 and c2 > 0):
        return 0.0, 0.0
    phi = min(c2 / c1, MAX_PHI)
    return phi, math.sqrt(min(c1 / phi, float(np.nanvar(x))))


def intraday_curve(s: BarSeries) -> IntradayParams:
    """Activity by minute after 17:00 CT: the volatility clock squared, 1 in the first hour."""
    prof = vol_profile(s)
    order = (np.arange(DAY_MINUTES // 5) * 5 + EVENING_OPEN_MIN) % (24 * 60) // 5
    day = prof[order]  # 17:00, 17:05, ... 15:55 CT
    ok = np.isfinite(day) & (day > 0)
    if ok.sum() < len(day) // 2:
        raise ValueError("too few 5-minute slots with returns to fit the intraday curve")
    x = np.arange(len(day), dtype=np.float64)
    day = np.interp(x, x[ok], day[ok])
    ref = day[: REFERENCE_MINUTES // 5].mean()
    factor = (day / ref) ** 2
    minutes = np.r_[0.0, x * 5 + 2.5, float(DAY_MINUTES)]
    factor = np.r_[factor[0], factor, factor[-1]]
    return IntradayParams(minutes=tuple(minutes.tolist()), factor=tuple(factor.tolist()))


def hourly_log_vol(s: BarSeries) -> tuple[np.ndarray, np.ndarray]:
    """(log realized vol of each clock hour, its trade date); NaN where an hour lacks a
    return or has none but zeros."""
    z = deseasonalised_abs(s)
    first = int(-s.slot[0] % 12)
    n = (len(z) - first) // 12
    block = z[first : first + n * 12].reshape(n, 12)
    rv = np.sqrt(np.mean(block * block, axis=1))  # NaN unless all twelve are there
    with np.errstate(divide="ignore", invalid="ignore"):
        lv = np.where(rv > 0, np.log(rv), np.nan)
    return lv, s.trade_date[first : first + n * 12 : 12]


def within_day_moments(lv: np.ndarray, day: np.ndarray) -> tuple[float, float]:
    """(phi per hour, stationary sd) of the OU part of hourly log vol. Hours of one trade
    date share its level, a constant D in every same-day autocovariance: c_k = D + V phi^k
    for k >= 1, so differences of lags 1-3 give phi and V free of D (and of noise)."""
    c1, c2, c3 = (_acov(lv, k, day) for k in (1, 2, 3))
    if not (c1 - c2 > 0 and c2 - c3 > 0):
        return 0.0, 0.0
    phi = min((c2 - c3) / (c1 - c2), MAX_PHI)
    return phi, math.sqrt(min((c1 - c2) / (phi * (1.0 - phi)), float(np.nanvar(lv))))


def fit_slow(bars: pd.DataFrame, *, source: str, sha256: str) -> SlowParams:
    """Fit the slow dynamics on a chained 5-minute bar frame (`esml.data.continuous`)."""
    s = bar_series(bars)
    with np.errstate(divide="ignore"):
        daily = np.log(daily_realized_vol(s))
    daily = daily[np.isfinite(daily)]  # consecutive trade dates
    if len(daily) < 30:
        raise ValueError(f"{len(daily)} full trade dates: need 30 or more to fit a daily AR")
    d_phi, d_sd = ar1_moments(daily)
    h_phi, h_sd = within_day_moments(*hourly_log_vol(s))
    ts = bars["ts"].to_numpy(np.int64)
    return SlowParams(
        source=source,
        source_sha256=sha256,
        bars=len(bars),
        first_bar_utc=pd.Timestamp(int(ts[0]), tz="UTC").isoformat(),
        last_bar_utc=pd.Timestamp(int(ts[-1]), tz="UTC").isoformat(),
        intraday=intraday_curve(s),
        daily_phi=d_phi,
        daily_sd=2.0 * d_sd,  # vol to variance: activity
        intraday_tau_s=HOUR_S / -math.log(h_phi) if 0 < h_phi < 1 else HOUR_S,
        intraday_sd=2.0 * h_sd,
    )


# ---------------------------------------------------------------- a day's path


def daily_log_activity(seed: int, day: date, slow: SlowParams) -> float:
    """The day's log-activity level: a seeded AR(1) over business days, stationary sd
    `daily_sd`, depending only on (seed, date)."""
    steps = int(np.busday_count(SLOW_ANCHOR, day)) if day > SLOW_ANCHOR else 0
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 0x5D07])))
    shocks = rng.standard_normal(steps + 1)
    phi = slow.daily_phi
    weights = phi ** np.arange(steps, -1, -1, dtype=np.float64)
    weights[0] /= math.sqrt(1.0 - phi * phi)  # the first draw from the stationary law
    return slow.daily_sd * math.sqrt(1.0 - phi * phi) * float(weights @ shocks)


def activity_curve(seed: int, day: date, slow: SlowParams) -> tuple[np.ndarray, np.ndarray]:
    """(knots in seconds after 17:00 CT, activity factor): the fitted intraday curve times
    the day's level times the within-day OU path. The curve was fitted to mean |returns|,
    so the multiplier's square root (volatility) has mean one before clipping."""
    n = math.ceil(DAY_MINUTES * 60 / slow.step_s) + 1
    t = np.arange(n, dtype=np.float64) * slow.step_s
    rng = np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([int(seed), day.toordinal(), 0x510E]))
    )
    a = math.exp(-slow.step_s / slow.intraday_tau_s)
    eps = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = slow.intraday_sd * eps[0]
    innov = slow.intraday_sd * math.sqrt(1.0 - a * a)
    for i in range(1, n):
        x[i] = a * x[i - 1] + innov * eps[i]
    var = slow.daily_sd**2 + slow.intraday_sd**2
    log_m = daily_log_activity(seed, day, slow) + x - var / 4.0
    m = np.clip(np.exp(log_m), slow.min_multiplier, slow.max_multiplier)
    return t, np.interp(t / 60.0, slow.intraday.minutes, slow.intraday.factor) * m


# ---------------------------------------------------------------- the shipped fit


def load_slow(path: str | Path = SLOW_PARAMS_FILE) -> SlowParams:
    path = Path(path)
    try:
        return SlowParams.model_validate_json(path.read_text())
    except OSError as e:
        raise QRParamsError(f"{path}: cannot read the slow-dynamics fit: {e}") from e
    except ValueError as e:
        raise QRParamsError(f"{path}: invalid slow-dynamics fit: {e}") from e


def with_slow(params: QRParams, slow: SlowParams) -> QRParams:
    """The tables with the fitted slow dynamics; the assumed regime activity levels give
    way to the fitted clustering (the regimes keep their price pressure)."""
    regimes = params.regimes.model_copy(update={"activity": (1.0, 1.0, 1.0)})
    return params.model_copy(update={"slow": slow, "regimes": regimes})


@lru_cache(maxsize=1)
def bar_calibrated_params() -> QRParams:
    """The shipped tables with the shipped slow-dynamics fit (`es_slow_params.json`)."""
    return with_slow(default_params(), load_slow())


def save_slow(slow: SlowParams, path: str | Path = SLOW_PARAMS_FILE) -> None:
    """Written under a temporary name and renamed: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(slow.model_dump_json(indent=1) + "\n")
    tmp.replace(path)
