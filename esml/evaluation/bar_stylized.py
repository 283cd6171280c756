"""Stylized facts of 5-minute bars: the slow dynamics of a market, measured the same way on
nine years of real ES and on generated days aggregated to the same bars.

Why beside the tick-level facts (esml.evaluation.stylized): one hour of real MBO data says
nothing about how volatility clusters over hours and days, how it follows the clock, or how
long calm and turbulent spells last; the Sierra Chart bars say all of it. The statistics
(Cont 2001, "Empirical properties of asset returns"):

- heavy tails: excess kurtosis of 5-min returns and a Hill tail index of |r|;
- aggregational Gaussianity: kurtosis of 30-min and 2-h returns (sums of whole 5-min runs);
- no linear memory, but volatility clustering: autocorrelation of r and of |r| by lag, and
  of |r| once the time-of-day profile is divided out (so the daily U does not pass for
  clustering), and of daily realized volatility from one day to the next;
- leverage: correlation of r with the |r| that follows (negative on equity indices);
- intraday seasonality: the RTH U-shape of volatility and volume (open and close against
  midday) and how quiet the overnight session is;
- regime lengths: mean run length of high-volatility hours and days (above their median),
  and of trending hours (|sum r| / sum |r| above one half);
- order flow: correlation of a bar's return with its signed volume (ask minus bid volume).

Returns are log close-to-close of consecutive bars in one contract (a gap in time or a roll
breaks the chain). Times of day are US Central (the CME clock), so daylight saving is right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from esml.data.continuous import bars_from_trades
from esml.market.calendar import CHICAGO
from esml.market.events import BID, TRADE

BAR_S = 300
SLOTS_PER_DAY = 86_400 // BAR_S
NS = 1_000_000_000
ACF_LAGS = (1, 2, 6, 12, 48, 288)  # bars: 5 min, 10 min, 30 min, 1 h, 4 h, one clock day
AGGREGATE_BARS = (6, 24)  # 30-min and 2-h returns
HILL_SHARE = 0.025  # the largest 2.5% of |r| estimate the tail index
TREND_EFFICIENCY = 0.5  # an hour trends when |sum r| / sum |r| exceeds this
RTH_OPEN_MIN, RTH_CLOSE_MIN = 8 * 60 + 30, 15 * 60  # 08:30-15:00 CT, the cash session
MIDDAY_MIN = (11 * 60, 13 * 60)
EDGE_MIN = 30  # the first / last half hour of RTH against midday
MIN_DAY_BARS = 200  # a trade date needs this many returns to give a daily realized vol


@dataclass(frozen=True)
class BarSeries:
    """5-min log returns on a grid of clock slots: r[i] is the return into slot i (NaN when
    the bar or the one before it is missing), with each slot's signed volume share."""

    slot: np.ndarray  # int64 slots since the epoch (ts // 5 min)
    r: np.ndarray  # float64, NaN where undefined
    volume: np.ndarray  # float64, NaN where no bar
    flow: np.ndarray  # (ask - bid volume) / volume, NaN where unknown
    minute_ct: np.ndarray  # minute of the Chicago day at the bar's start
    trade_date: np.ndarray  # int64 days: the CME trade date (17:00 CT starts the next)


def bar_series(bars: pd.DataFrame) -> BarSeries:
    """The dense slot grid of a bar frame (`ts` ns UTC bar start, `close`, `volume`, and
    optionally `bid_volume`/`ask_volume`, `contract`, `roll`)."""
    ts = bars["ts"].to_numpy(np.int64)
    if len(ts) < 2:
        raise ValueError("need at least two bars")
    step = BAR_S * NS
    if np.any(ts % step):
        raise ValueError("bars must start on 5-minute boundaries")
    if np.any(np.diff(ts) <= 0):
        raise ValueError("bar times must increase")
    close = np.log(bars["close"].to_numpy(np.float64))
    s = ts // step
    slot = np.arange(s[0], s[-1] + 1, dtype=np.int64)
    at = s - s[0]
    logc = np.full(len(slot), np.nan)
    logc[at] = close
    chain = np.ones(len(ts), np.bool_)
    if "contract" in bars:  # a return across a roll is a back-adjustment, not a move
        c = bars["contract"].to_numpy()
        chain[1:] = c[1:] == c[:-1]
    if "roll" in bars:
        chain &= ~bars["roll"].to_numpy(np.bool_)
    broken = np.zeros(len(slot), np.bool_)
    broken[at[~chain]] = True
    r = np.full(len(slot), np.nan)
    r[1:] = np.diff(logc)
    r[broken] = np.nan
    volume = np.full(len(slot), np.nan)
    volume[at] = bars["volume"].to_numpy(np.float64)
    flow = np.full(len(slot), np.nan)
    if "bid_volume" in bars and "ask_volume" in bars:
        v = bars["volume"].to_numpy(np.float64)
        d = bars["ask_volume"].to_numpy(np.float64) - bars["bid_volume"].to_numpy(np.float64)
        flow[at] = np.where(v > 0, d / np.maximum(v, 1.0), np.nan)
    local = pd.DatetimeIndex(slot * step, tz="UTC").tz_convert(CHICAGO)
    minute = (local.hour * 60 + local.minute).to_numpy(np.int64)
    day = (local.normalize().tz_localize(None).to_numpy().astype("datetime64[D]")).astype(np.int64)
    trade_date = day + (minute >= 17 * 60)
    return BarSeries(slot, r, volume, flow, minute, trade_date)


def bars_with_flow(events: np.ndarray) -> pd.DataFrame:
    """5-min bars of an MBO event array with Sierra's `bid_volume` / `ask_volume` (volume
    traded at the bid: sell aggressors; at the ask: buy aggressors)."""
    bars = bars_from_trades(events, f"{BAR_S}s")
    t = events[events["action"] == TRADE]
    slot = t["ts_event"].astype(np.int64) // (BAR_S * NS) * (BAR_S * NS)
    at = np.searchsorted(bars["ts"].to_numpy(), slot)
    size = t["size"].astype(np.float64)
    buy = t["side"] == BID
    bars["ask_volume"] = np.bincount(at, weights=size * buy, minlength=len(bars)).astype(np.int64)
    bars["bid_volume"] = np.bincount(at, weights=size * ~buy, minlength=len(bars)).astype(np.int64)
    return bars


# ---------------------------------------------------------------- building blocks


def excess_kurtosis(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    if len(x) < 4:
        return math.nan
    d = x - x.mean()
    m2 = float(np.mean(d * d))
    return float(np.mean(d**4) / m2**2 - 3.0) if m2 > 0 else math.nan


def lagged_corr(x: np.ndarray, y: np.ndarray, lag: int) -> float:
    """corr(x[t], y[t + lag]) over the pairs where both exist, each standardised by its
    own mean and sd over all its finite values (the usual sample autocorrelation when x is
    y; gaps in the grid never pair values that are not `lag` slots apart)."""
    mx, sx = np.nanmean(x), np.nanstd(x)
    my, sy = np.nanmean(y), np.nanstd(y)
    if not (sx > 0 and sy > 0) or lag >= len(x):
        return math.nan
    a, b = (x[: len(x) - lag] - mx) / sx, (y[lag:] - my) / sy
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.mean(a[ok] * b[ok])) if ok.sum() > 10 else math.nan


def hill_tail_index(x: np.ndarray, share: float = HILL_SHARE) -> float:
    """Hill's estimator of the tail index alpha of |x| from its largest `share`."""
    a = np.sort(np.abs(x[np.isfinite(x)]))[::-1]
    k = int(len(a) * share)
    if k < 10 or a[k] <= 0:
        return math.nan
    return float(1.0 / np.mean(np.log(a[:k] / a[k])))


def aggregate_returns(s: BarSeries, n: int) -> np.ndarray:
    """Sums of n consecutive 5-min returns in aligned blocks with none missing."""
    m = len(s.r) // n * n
    blocks = s.r[:m].reshape(-1, n).sum(axis=1)  # a NaN anywhere leaves the block NaN
    return blocks[np.isfinite(blocks)]


def seasonal_profile(s: BarSeries, values: np.ndarray) -> np.ndarray:
    """Mean of `values` in each 5-min slot of the Chicago day (288 slots; NaN if none)."""
    ok = np.isfinite(values)
    idx = s.minute_ct[ok] // 5
    tot = np.bincount(idx, weights=values[ok], minlength=SLOTS_PER_DAY)
    cnt = np.bincount(idx, minlength=SLOTS_PER_DAY)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)


def vol_profile(s: BarSeries) -> np.ndarray:
    """Mean |5-min return| by slot of the Chicago day: the volatility clock (a mean of
    absolute values, so one crash day does not make the profile)."""
    return seasonal_profile(s, np.abs(s.r))


def deseasonalised_abs(s: BarSeries) -> np.ndarray:
    prof = vol_profile(s)
    scale = prof[s.minute_ct // 5]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale > 0, np.abs(s.r) / scale, np.nan)


def _window_mean(profile: np.ndarray, lo_min: int, hi_min: int) -> float:
    v = profile[lo_min // 5 : hi_min // 5]
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else math.nan


def u_shape(profile: np.ndarray) -> tuple[float, float]:
    """(first half hour of RTH / midday, last half hour / midday) of a slot profile."""
    mid = _window_mean(profile, *MIDDAY_MIN)
    first = _window_mean(profile, RTH_OPEN_MIN, RTH_OPEN_MIN + EDGE_MIN)
    last = _window_mean(profile, RTH_CLOSE_MIN - EDGE_MIN, RTH_CLOSE_MIN)
    return first / mid, last / mid


def overnight_ratio(profile: np.ndarray) -> float:
    """Mean of the profile over 18:00-07:00 CT against RTH (08:30-15:00)."""
    night = np.r_[profile[18 * 12 :], profile[: 7 * 12]]
    night = night[np.isfinite(night)]
    rth = _window_mean(profile, RTH_OPEN_MIN, RTH_CLOSE_MIN)
    return float(night.mean() / rth) if len(night) else math.nan


def hourly_blocks(s: BarSeries) -> tuple[np.ndarray, np.ndarray]:
    """(deseasonalised realized vol, efficiency |sum r| / sum |r|) of each clock hour with
    all twelve returns present; NaN for the others, so runs break at gaps."""
    first = int(-s.slot[0] % 12)  # the first slot that starts a clock hour
    n = (len(s.r) - first) // 12
    r = s.r[first : first + n * 12].reshape(n, 12)
    z = deseasonalised_abs(s)[first : first + n * 12].reshape(n, 12)
    rv = np.sqrt(np.mean(z * z, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        eff = np.abs(r.sum(axis=1)) / np.abs(r).sum(axis=1)
    return rv, eff


def daily_realized_vol(s: BarSeries) -> np.ndarray:
    """Deseasonalised realized vol of each trade date with enough returns, in date order
    (weekends, holidays and thin dates left out, so a lag of one is the next trade date)."""
    z = deseasonalised_abs(s)
    ok = np.isfinite(z)
    d = s.trade_date[ok] - s.trade_date[0]
    ss = np.bincount(d, weights=z[ok] ** 2)
    cnt = np.bincount(d)
    full = cnt >= MIN_DAY_BARS
    return np.sqrt(ss[full] / cnt[full])


def mean_run_length(state: np.ndarray) -> float:
    """Mean length of runs of True in a float array of 1.0 / 0.0 / NaN (NaN breaks runs)."""
    on = state == 1.0
    starts = on & ~np.r_[False, on[:-1]]
    n = int(starts.sum())
    return float(on.sum() / n) if n else math.nan


def above_median(x: np.ndarray) -> np.ndarray:
    out = np.full(len(x), np.nan)
    ok = np.isfinite(x)
    out[ok] = (x[ok] > np.median(x[ok])).astype(np.float64)
    return out


# ---------------------------------------------------------------- the facts


@dataclass(frozen=True)
class BarFacts:
    label: str
    synthetic: bool
    bars: int
    trade_dates: int
    kurtosis_5min: float
    kurtosis_30min: float
    kurtosis_2h: float
    hill_alpha: float
    acf_r_1: float
    abs_acf: tuple[float, ...]  # at ACF_LAGS
    deseasonalised_abs_acf: tuple[float, ...]  # at ACF_LAGS
    daily_vol_acf_1: float
    leverage: float  # mean corr(r_t, |r_t+k|), k = 1..12
    vol_open_midday: float
    vol_close_midday: float
    volume_open_midday: float
    volume_close_midday: float
    vol_overnight_rth: float
    volume_overnight_rth: float
    high_vol_hours_run: float
    high_vol_days_run: float
    trend_hours_share: float
    trend_hours_run: float
    flow_return_corr: float
    vol_profile: tuple[float, ...]  # mean |5-min return| per slot of the CT day (288)
    volume_profile: tuple[float, ...]


def bar_facts(bars: pd.DataFrame, label: str, *, synthetic: bool = False) -> BarFacts:
    s = bar_series(bars)
    absr = np.abs(s.r)
    z = deseasonalised_abs(s)
    vol = vol_profile(s)
    volume = seasonal_profile(s, s.volume)
    hour_rv, hour_eff = hourly_blocks(s)
    day_rv = daily_realized_vol(s)
    trend = np.where(np.isfinite(hour_eff), (hour_eff > TREND_EFFICIENCY) * 1.0, np.nan)
    v_open, v_close = u_shape(vol)
    q_open, q_close = u_shape(volume)
    ok = np.isfinite(s.r) & np.isfinite(s.flow)
    flow_corr = float(np.corrcoef(s.r[ok], s.flow[ok])[0, 1]) if ok.sum() > 10 else math.nan
    return BarFacts(
        label=label,
        synthetic=synthetic,
        bars=int(np.isfinite(s.volume).sum()),
        trade_dates=len(day_rv),
        kurtosis_5min=excess_kurtosis(s.r),
        kurtosis_30min=excess_kurtosis(aggregate_returns(s, AGGREGATE_BARS[0])),
        kurtosis_2h=excess_kurtosis(aggregate_returns(s, AGGREGATE_BARS[1])),
        hill_alpha=hill_tail_index(s.r),
        acf_r_1=lagged_corr(s.r, s.r, 1),
        abs_acf=tuple(lagged_corr(absr, absr, k) for k in ACF_LAGS),
        deseasonalised_abs_acf=tuple(lagged_corr(z, z, k) for k in ACF_LAGS),
        daily_vol_acf_1=lagged_corr(day_rv, day_rv, 1),
        leverage=float(np.nanmean([lagged_corr(s.r, absr, k) for k in range(1, 13)])),
        vol_open_midday=v_open,
        vol_close_midday=v_close,
        volume_open_midday=q_open,
        volume_close_midday=q_close,
        vol_overnight_rth=overnight_ratio(vol),
        volume_overnight_rth=overnight_ratio(volume),
        high_vol_hours_run=mean_run_length(above_median(hour_rv)),
        high_vol_days_run=mean_run_length(above_median(day_rv)),
        trend_hours_share=float(np.nanmean(trend)),
        trend_hours_run=mean_run_length(trend),
        flow_return_corr=flow_corr,
        vol_profile=tuple(vol.tolist()),
        volume_profile=tuple(volume.tolist()),
    )


def bar_scalars(f: BarFacts) -> dict[str, float]:
    """The statistics compared between real and generated bars, by name."""
    out = {
        "excess kurtosis of 5-min returns": f.kurtosis_5min,
        "excess kurtosis of 30-min returns": f.kurtosis_30min,
        "excess kurtosis of 2-h returns": f.kurtosis_2h,
        "Hill tail index of |5-min returns| (top 2.5%)": f.hill_alpha,
        "autocorrelation of 5-min returns, lag 1": f.acf_r_1,
    }
    for lag, v in zip(ACF_LAGS, f.abs_acf, strict=True):
        out[f"autocorrelation of |5-min returns|, lag {_lag(lag)}"] = v
    for lag, v in zip(ACF_LAGS, f.deseasonalised_abs_acf, strict=True):
        out[f"... with the time-of-day profile divided out, lag {_lag(lag)}"] = v
    out |= {
        "autocorrelation of daily realized vol, lag 1 day": f.daily_vol_acf_1,
        "leverage: corr(r, later |r|), mean of lags 1-12": f.leverage,
        "RTH volatility U: first half hour / midday": f.vol_open_midday,
        "RTH volatility U: last half hour / midday": f.vol_close_midday,
        "RTH volume U: first half hour / midday": f.volume_open_midday,
        "RTH volume U: last half hour / midday": f.volume_close_midday,
        "overnight / RTH volatility": f.vol_overnight_rth,
        "overnight / RTH volume": f.volume_overnight_rth,
        "mean run of high-volatility hours (h)": f.high_vol_hours_run,
        "mean run of high-volatility days (trade dates)": f.high_vol_days_run,
        "share of trending hours (efficiency > 0.5)": f.trend_hours_share,
        "mean run of trending hours (h)": f.trend_hours_run,
        "corr of 5-min return with signed volume share": f.flow_return_corr,
    }
    return out


def profile_corr(a: BarFacts, b: BarFacts, field: str = "vol_profile") -> float:
    """Correlation of two time-of-day profiles over the slots both have."""
    x, y = np.asarray(getattr(a, field)), np.asarray(getattr(b, field))
    ok = np.isfinite(x) & np.isfinite(y)
    return float(np.corrcoef(x[ok], y[ok])[0, 1]) if ok.sum() > 10 else math.nan


def _lag(bars: int) -> str:
    minutes = bars * BAR_S // 60
    if minutes % (24 * 60) == 0:
        return f"{minutes // (24 * 60)} day"
    return f"{minutes // 60} h" if minutes % 60 == 0 else f"{minutes} min"
