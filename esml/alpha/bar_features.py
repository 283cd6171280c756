"""Features and labels of 5-minute bars: what the bar-level models see, and what they predict.

A decision is made at a bar's close (its start + 5 minutes) and reads that bar and earlier
ones only: every column below is a trailing window (pandas rolling / ewm over past rows,
or cumulative within the trade date), so nothing after the decision enters a feature.

- the 11 technicals of `esml.features.technicals` (`BAR_FEATURE_NAMES`), same definitions,
  on 5-minute bars: returns over 1, 5 and 15 bars, RSI 14 and ATR 14 (Wilder), MACD 12/26
  and its 9 signal, Bollinger %b over 20 (population sd), the volume z-score against the 20
  bars before, the bar's range and where it closed in it. These are the bar LSTM's and the
  Transformer's 60 x 11 window.
- order flow from the volume at the bid and at the ask: delta = ask - bid volume, as a
  fraction of the bar's volume, summed over 6 and 12 bars, and its z-score over 20 bars.
- session and time-of-day context in US Central time: minute of the day (and its sine and
  cosine), minutes since the 08:30 open, weekday, inside regular hours or not, the
  overnight gap at the open, the return since the open, the distance from the trade
  date's VWAP (typical price), Kaufman efficiency and realised volatility over 6 and 12 bars.

Labels (they look ahead by design and feed no feature):
- direction over the next 30 minutes (6 bars): close 30 minutes later against the close
  now, with a dead zone of 4 ticks (one point): down / flat / up;
- regime over the next hour (12 bars): `esml.features.labels.regime_labels` (trend when
  most of the path went one way, range when price kept returning inside a band tighter than
  a random walk's) with a 16-tick minimum path.
A label is valid only when the bar at the horizon exists 30 (60) minutes later without a
gap and no contract roll falls inside the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from esml.features.labels import direction_labels, regime_labels
from esml.features.technicals import (
    BAR_FEATURE_NAMES,
    BOLLINGER_N,
    VOLUME_Z_N,
    WILDER_N,
)
from esml.market.calendar import CHICAGO, RTH_START_MIN
from esml.market.calendar_arrays import trading_day_index
from esml.market.instruments import ES, Instrument

BAR_NS = 5 * 60 * 1_000_000_000
DIRECTION_HORIZON_BARS = 6  # 30 minutes
REGIME_HORIZON_BARS = 12  # one hour
DEAD_ZONE_TICKS = 4.0
REGIME_MIN_PATH_TICKS = 16.0
FIRST_DECISION_MIN = RTH_START_MIN + 5  # the close of the 08:30 bar
LAST_DECISION_MIN = 14 * 60 + 30  # a 30-minute trade still ends by the 15:00 close
FLOW_FEATURES = ("flow_delta_frac", "flow_delta_6", "flow_delta_12", "flow_delta_z_20")
CONTEXT_FEATURES = (
    "minute_ct",
    "tod_sin",
    "tod_cos",
    "min_since_open",
    "weekday",
    "is_rth",
    "open_gap_ticks",
    "ret_since_open_ticks",
    "vwap_dist_ticks",
    "ret_6_ticks",
    "ret_12_ticks",
    "efficiency_6",
    "efficiency_12",
    "rvol_6_ticks",
    "rvol_12_ticks",
)
FEATURE_NAMES = (*BAR_FEATURE_NAMES, *FLOW_FEATURES, *CONTEXT_FEATURES)


@dataclass(frozen=True)
class BarFrame:
    """Features and labels of every bar of a chained series, plus what trading needs."""

    ts_end: np.ndarray  # int64 ns: the bar's close, the decision time
    x: np.ndarray  # float32 [n, len(FEATURE_NAMES)]
    y_dir: np.ndarray  # int64 0 down, 1 flat, 2 up
    dir_valid: np.ndarray  # bool
    y_regime: np.ndarray  # int64 0 none, 1 trend, 2 range
    regime_valid: np.ndarray  # bool
    decision: np.ndarray  # bool: an RTH bar whose close may open a 30-minute trade
    prices: pd.DataFrame  # open high low close in points (back-adjusted), ts, contract
    year: np.ndarray  # int: the trade date's year
    day: np.ndarray  # int: trade-date index (consecutive integers)

    @property
    def names(self) -> tuple[str, ...]:
        return FEATURE_NAMES

    def column(self, name: str) -> np.ndarray:
        return self.x[:, FEATURE_NAMES.index(name)]


def _wilder(x: pd.Series) -> pd.Series:
    return x.ewm(alpha=1.0 / WILDER_N, adjust=False).mean()


def _technicals(o: pd.Series, h: pd.Series, lo: pd.Series, c: pd.Series, v: pd.Series) -> list:
    """The 11 `BAR_FEATURE_NAMES` columns, prices in ticks."""
    prev = c.shift(1)
    change = c.diff().fillna(0.0)
    gain, loss = _wilder(change.clip(lower=0)), _wilder((-change).clip(lower=0))
    rsi = np.where(
        loss > 0,
        100 - 100 / (1 + gain / loss.where(loss > 0, 1.0)),
        np.where(gain > 0, 100.0, 50.0),
    )
    ema12 = c.ewm(span=12, adjust=False).mean()
    ema26 = c.ewm(span=26, adjust=False).mean()
    macd = ema12 - ema26
    mean = c.rolling(BOLLINGER_N, min_periods=1).mean()
    sd = c.rolling(BOLLINGER_N, min_periods=1).std(ddof=0)
    pctb = ((c - mean + 2 * sd) / (4 * sd)).where(sd > 0, 0.5)
    tr = pd.concat([h - lo, (h - prev).abs(), (lo - prev).abs()], axis=1).max(axis=1)
    vm = v.shift(1).rolling(VOLUME_Z_N, min_periods=2).mean()
    vs = v.shift(1).rolling(VOLUME_Z_N, min_periods=2).std(ddof=0)
    vz = ((v - vm) / vs).where(vs > 0, 0.0).fillna(0.0)
    rng = h - lo
    loc = (2 * (c - lo) / rng.where(rng > 0, 1.0) - 1).where(rng > 0, 0.0)
    return [
        (c - c.shift(1)).fillna(0.0),
        (c - c.shift(5)).fillna(0.0),
        (c - c.shift(15)).fillna(0.0),
        pd.Series(rsi, index=c.index),
        macd,
        macd.ewm(span=9, adjust=False).mean(),
        pctb,
        _wilder(tr.fillna(rng)),
        vz,
        rng,
        loc,
    ]


def _efficiency(c: pd.Series, n: int) -> pd.Series:
    path = c.diff().abs().rolling(n, min_periods=n).sum()
    net = (c - c.shift(n)).abs()
    return (net / path.where(path > 0, 1.0)).where(path > 0, 0.0).fillna(0.0)


def bar_features(chained: pd.DataFrame, instrument: Instrument = ES) -> BarFrame:
    """Features and labels of a chained bar series (`esml.data.continuous.chain_bars`,
    difference-adjusted, with bid/ask volume)."""
    need = ("ts", "open", "high", "low", "close", "volume", "bid_volume", "ask_volume", "roll")
    missing = [c for c in need if c not in chained]
    if missing:
        raise ValueError(f"the bar series lacks columns {missing}")
    tick = float(instrument.tick_fixed)
    o, h, lo, c = (chained[k].astype(np.float64) / tick for k in ("open", "high", "low", "close"))
    v = chained["volume"].astype(np.float64)
    ts = chained["ts"].to_numpy(np.int64)
    ts_end = ts + BAR_NS
    tech = _technicals(o, h, lo, c, v)

    delta = chained["ask_volume"].astype(np.float64) - chained["bid_volume"].astype(np.float64)
    frac = (delta / v.where(v > 0, 1.0)).where(v > 0, 0.0)

    def flow_sum(n: int) -> pd.Series:
        vol = v.rolling(n, min_periods=1).sum()
        return (delta.rolling(n, min_periods=1).sum() / vol.where(vol > 0, 1.0)).fillna(0.0)

    dm = delta.shift(1).rolling(20, min_periods=2).mean()
    ds = delta.shift(1).rolling(20, min_periods=2).std(ddof=0)
    dz = ((delta - dm) / ds).where(ds > 0, 0.0).fillna(0.0)

    # the decision instant (bar close) in Chicago wall time
    local = pd.to_datetime(ts_end, unit="ns", utc=True).tz_convert(CHICAGO)
    minute = np.asarray(local.hour * 60 + local.minute, dtype=np.float64)
    day = trading_day_index(ts)
    is_rth = (minute > RTH_START_MIN) & (minute <= 15 * 60)
    frame = pd.DataFrame(
        {"day": day, "c": c, "o": o, "rth": is_rth, "typ": (h + lo + c) / 3.0, "v": v}
    )
    g = frame.groupby("day", sort=False)
    vwap = (frame["typ"] * frame["v"]).groupby(frame["day"]).cumsum() / g["v"].cumsum().where(
        g["v"].cumsum() > 0, 1.0
    )
    # the open: the first RTH bar's open on the trade date; the gap: from the last RTH close
    # of the trade date before (unknown for the first day: 0)
    first_rth = frame["rth"] & ~frame.groupby("day")["rth"].shift(1, fill_value=False)
    open_px = frame["o"].where(first_rth).groupby(frame["day"]).ffill()
    day_close = frame.loc[frame["rth"]].groupby("day")["c"].last()
    prev_close = frame["day"].map(day_close.shift(1))
    since_open = (c - open_px).where(frame["rth"], 0.0).fillna(0.0)
    gap = (open_px - prev_close).where(frame["rth"], 0.0).fillna(0.0)
    step = c.diff().fillna(0.0)
    context = [
        minute,
        np.sin(2 * np.pi * minute / 1440),
        np.cos(2 * np.pi * minute / 1440),
        minute - RTH_START_MIN,
        np.asarray(local.day_of_week, np.float64),
        is_rth.astype(np.float64),
        gap,
        since_open,
        (c - vwap).fillna(0.0),
        (c - c.shift(6)).fillna(0.0),
        (c - c.shift(12)).fillna(0.0),
        _efficiency(c, 6),
        _efficiency(c, 12),
        np.sqrt((step**2).rolling(6, min_periods=1).sum()),
        np.sqrt((step**2).rolling(12, min_periods=1).sum()),
    ]
    cols = [*tech, frac, flow_sum(6), flow_sum(12), dz, *context]
    x = np.column_stack([np.asarray(col, np.float64) for col in cols]).astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError("non-finite feature values: check the bars for zero or missing prices")

    close_pts = c.to_numpy() * instrument.tick_size
    y_dir, dir_valid = direction_labels(
        ts_end, close_pts, DIRECTION_HORIZON_BARS * 300.0, DEAD_ZONE_TICKS, instrument.tick_size
    )
    y_reg, reg_valid = regime_labels(
        ts_end,
        close_pts,
        instrument.tick_size,
        horizon_s=REGIME_HORIZON_BARS * 300.0,
        min_path_ticks=REGIME_MIN_PATH_TICKS,
    )
    roll_at = np.flatnonzero(chained["roll"].to_numpy())
    dir_valid &= ~_spans(roll_at, len(ts), DIRECTION_HORIZON_BARS)
    reg_valid &= ~_spans(roll_at, len(ts), REGIME_HORIZON_BARS)
    decision = (minute >= FIRST_DECISION_MIN) & (minute <= LAST_DECISION_MIN)
    prices = pd.DataFrame(
        {
            "ts": ts,
            "open": o.to_numpy() * instrument.tick_size,
            "high": h.to_numpy() * instrument.tick_size,
            "low": lo.to_numpy() * instrument.tick_size,
            "close": close_pts,
            "contract": chained["contract"].to_numpy(),
        }
    )
    years = np.asarray(pd.to_datetime(ts_end, unit="ns").year)
    return BarFrame(
        ts_end,
        x,
        y_dir.astype(np.int64),
        dir_valid,
        y_reg.astype(np.int64),
        reg_valid,
        decision,
        prices,
        years,
        day,
    )


def _spans(roll_at: np.ndarray, n: int, horizon: int) -> np.ndarray:
    """Rows whose next `horizon` bars include the first bar of a new contract."""
    out = np.zeros(n, bool)
    for r in roll_at:
        out[max(0, r - horizon) : r] = True
    return out


def windows(x: np.ndarray, rows: np.ndarray, steps: int = 60) -> np.ndarray:
    """The `steps` rows of the 11 technicals ending at each of `rows` (inclusive):
    float32 [len(rows), steps, 11]. Rows with fewer than `steps` bars before them are refused."""
    rows = np.asarray(rows, np.int64)
    if rows.size and rows.min() < steps - 1:
        raise ValueError(
            f"a window needs {steps - 1} bars before its row; row {rows.min()} has not"
        )
    tech = np.ascontiguousarray(x[:, : len(BAR_FEATURE_NAMES)])
    idx = rows[:, None] + np.arange(-steps + 1, 1)[None, :]
    return tech[idx]
