"""The calendar over arrays of ns timestamps: numpy and pandas forms of `esml.market.calendar`.

Kept apart so the scalar calendar stays pure Python: the risk Lambda imports it and must
not pay for the numerical stack at cold start.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from esml.market.calendar import (
    ASIA_START_MIN,
    CHICAGO,
    CLOSE_MIN,
    DAY_START,
    EUROPE_START_MIN,
    POST_START_MIN,
    PRE_MARKET_START_MIN,
    RTH_START_MIN,
    SEGMENTS,
    TRADING_DAY_EPOCH,
    Segment,
    about_year,
    check_modelled,
    session_table,
)
from esml.market.holidays import special_days

_MINUTE_NS = 60 * 1_000_000_000
_CLOSED_CODE = SEGMENTS.index(Segment.CLOSED)


def _non_trading_weekdays(first_year: int, last_year: int) -> np.ndarray:
    days = [
        d
        for y in range(first_year, last_year + 1)
        for d, s in special_days(y).items()
        if d.weekday() < 5 and not s.is_trade_date
    ]
    return np.array(sorted(days), dtype="datetime64[D]")


def _local_wall(ts_ns: np.ndarray) -> pd.DatetimeIndex:
    utc = pd.to_datetime(np.asarray(ts_ns, dtype=np.int64), unit="ns", utc=True)
    return utc.tz_convert(CHICAGO).tz_localize(None)


def _years(days: np.ndarray) -> tuple[int, int]:
    years = days.astype("datetime64[Y]").astype(np.int64) + 1970
    return int(years.min()), int(years.max())


def trading_dates_of(ts_ns: np.ndarray) -> np.ndarray:
    """`trading_date` over an array of ns timestamps, as datetime64[D]."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    if ts.size == 0:
        return np.empty(0, dtype="datetime64[D]")
    shifted = _local_wall(ts) + pd.Timedelta(hours=24 - DAY_START.hour)
    days = shifted.normalize().to_numpy().astype("datetime64[D]")
    lo, hi = _years(days)
    return np.busday_offset(days, 0, "forward", holidays=_non_trading_weekdays(lo, hi + 1))


def trading_day_index(ts_ns: np.ndarray) -> np.ndarray:
    """Trade dates as consecutive integers (int64): 0 is `TRADING_DAY_EPOCH`, the next
    trade date 1, the one before -1, so day changes and day counts are integer arithmetic."""
    days = trading_dates_of(ts_ns)
    if days.size == 0:
        return np.empty(0, dtype=np.int64)
    epoch = np.datetime64(TRADING_DAY_EPOCH, "D")
    lo, hi = _years(np.concatenate([days, [epoch]]))
    holidays = _non_trading_weekdays(lo, hi)
    return np.busday_count(epoch, days, holidays=holidays).astype(np.int64)


def _locate_array(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(interval ends, interval index, inside an interval) for each timestamp."""
    check_modelled(int(ts.min()), "timestamps")
    lo, hi = about_year(int(ts.min())), about_year(int(ts.max()))
    t = session_table(lo - 1, hi + 1)
    starts, ends = np.asarray(t.starts, np.int64), np.asarray(t.ends, np.int64)
    idx = np.searchsorted(starts, ts, side="right") - 1
    safe = np.maximum(idx, 0)
    inside = (idx >= 0) & (ts < ends[safe])
    return ends, safe, inside


def is_open_array(ts_ns: np.ndarray) -> np.ndarray:
    """`is_open` over an array of ns timestamps (bool)."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    if ts.size == 0:
        return np.zeros(0, dtype=bool)
    return _locate_array(ts)[2]


def minutes_to_close_array(ts_ns: np.ndarray) -> np.ndarray:
    """`minutes_to_close` over an array (float64; 0.0 where closed)."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    if ts.size == 0:
        return np.zeros(0, dtype=np.float64)
    ends, idx, inside = _locate_array(ts)
    return np.where(inside, (ends[idx] - ts) / _MINUTE_NS, 0.0)


def segment_codes(ts_ns: np.ndarray) -> np.ndarray:
    """`session_segment` over an array, as uint8 codes indexing `SEGMENTS`."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    if ts.size == 0:
        return np.zeros(0, dtype=np.uint8)
    wall = _local_wall(ts)
    minute = np.asarray(wall.hour * 60 + wall.minute)
    codes = np.select(
        [
            (minute >= ASIA_START_MIN) | (minute < EUROPE_START_MIN),
            minute < PRE_MARKET_START_MIN,
            minute < RTH_START_MIN,
            minute < POST_START_MIN,
            minute < CLOSE_MIN,
        ],
        list(range(_CLOSED_CODE)),  # ASIA, EUROPE, PRE_MARKET, RTH, POST
        default=_CLOSED_CODE,
    ).astype(np.uint8)
    codes[~is_open_array(ts)] = _CLOSED_CODE
    return codes
