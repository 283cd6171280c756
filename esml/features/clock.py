"""Chicago time and the Globex session inside compiled code, and the time features.

Why: features run in numba, where zoneinfo and the calendar's Python objects are out of
reach. So the calendar is tabulated here once, at import: Chicago's UTC offsets (every
DST change) and `esml.market.calendar.session_table`'s open intervals with their trade
dates (holidays and early closes included). Inside the modelled years the features agree
with `calendar.is_open`, `minutes_to_close`, `is_rth` and `trading_date`; outside them
(older or far-future data) the plain weekly schedule stands in: 17:00-16:00 CT Sunday to
Friday with the daily halt.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
from numba import njit

from esml.market.calendar import (
    CHICAGO,
    DAY_END,
    DAY_START,
    HOURS_FROM,
    RTH_CLOSE,
    RTH_OPEN,
    chicago_ns,
    session_table,
)

TIME_FEATURE_NAMES: tuple[str, ...] = (
    "tod_sin",
    "tod_cos",
    "is_rth",
    "is_eth",
    "minutes_to_close",
    "minutes_into_session",
    "day_of_week",
    "release_0830et_min",
    "cash_open_min",
    "cash_close_min",
)

DAY_S = 86_400
RELEASE_CT = time(7, 30)  # scheduled US releases at 08:30 ET; ET runs an hour ahead of CT
PROXIMITY_CLIP_MIN = 120.0  # signed minutes to a scheduled moment are clipped to +- this
OFFSET_YEARS = (2000, 2060)
SESSION_YEARS = (HOURS_FROM.year, 2035)
_NS = 1_000_000_000


def _sod(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


OPEN_S = _sod(DAY_START)  # 17:00 CT: the session (and trade date) starts
CLOSE_S = _sod(DAY_END)
RTH_OPEN_S = _sod(RTH_OPEN)
RTH_CLOSE_S = _sod(RTH_CLOSE)
RELEASE_S = _sod(RELEASE_CT)
SESSION_SHIFT_S = DAY_S - OPEN_S  # local time + this: the session's day starts at 00:00
SESSION_LEN_S = DAY_S - (OPEN_S - CLOSE_S)


def _offset_table() -> tuple[np.ndarray, np.ndarray]:
    """UTC seconds from which Chicago's offset holds, and that offset (seconds)."""

    def offset(t: int) -> int:
        return int(datetime.fromtimestamp(t, CHICAGO).utcoffset().total_seconds())

    t = int(datetime(OFFSET_YEARS[0], 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(OFFSET_YEARS[1] + 1, 1, 1, tzinfo=UTC).timestamp())
    starts, offsets = [-(1 << 62)], [offset(t)]
    week = 7 * DAY_S
    while t < end:  # US rules never change the offset twice in a week
        if offset(t + week) != offsets[-1]:
            lo, hi = t, t + week  # offset(lo) is the old one, offset(hi) the new one
            while hi - lo > 1:
                m = (lo + hi) // 2
                lo, hi = (m, hi) if offset(m) == offsets[-1] else (lo, m)
            starts.append(hi)
            offsets.append(offset(hi))
        t += week
    return np.array(starts, np.int64), np.array(offsets, np.int64)


def _session_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The calendar's open intervals [start, end) in ns and their trade dates' weekdays."""
    table = session_table(*SESSION_YEARS)
    first = chicago_ns(HOURS_FROM - timedelta(days=1), DAY_START)  # hours modelled from here
    keep = [k for k, s in enumerate(table.starts) if s >= first]
    return (
        np.array([table.starts[k] for k in keep], np.int64),
        np.array([table.ends[k] for k in keep], np.int64),
        np.array([date.weekday(table.days[k]) for k in keep], np.int64),
    )


OFFSET_FROM_S, OFFSET_S = _offset_table()
OPEN_FROM_NS, OPEN_UNTIL_NS, OPEN_WEEKDAY = _session_arrays()


@njit(cache=True)
def utc_offset_s(sec):
    """Chicago's UTC offset (seconds) at UTC second `sec`."""
    return OFFSET_S[np.searchsorted(OFFSET_FROM_S, sec, side="right") - 1]


@njit(cache=True)
def _weekly_session(sod, wd):
    """(open, seconds to the close, seconds since the open, trade date's weekday) by the
    plain schedule, for instants outside the calendar's table."""
    if wd <= 3:  # Monday to Thursday: open but for the daily halt
        is_open = not (CLOSE_S <= sod < OPEN_S)
    elif wd == 4:
        is_open = sod < CLOSE_S
    else:  # Saturday closed; Sunday opens Monday's session at 17:00
        is_open = wd == 6 and sod >= OPEN_S
    trade_wd = (wd + 1) % 7 if sod >= OPEN_S else wd
    if trade_wd >= 5:  # a weekend stamp belongs to Monday
        trade_wd = 0
    if not is_open:
        return False, 0.0, 0.0, trade_wd
    into = sod - OPEN_S if sod >= OPEN_S else sod + SESSION_SHIFT_S
    return True, SESSION_LEN_S - into, into, trade_wd


@njit(cache=True)
def time_features(ts_ns, out, k0):
    """Write TIME_FEATURE_NAMES for the instant `ts_ns` into out[k0:]."""
    local = ts_ns / 1e9 + utc_offset_s(ts_ns // _NS)
    day = math.floor(local / DAY_S)
    sod = local - day * DAY_S
    wd = (int(day) + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    if OPEN_FROM_NS[0] <= ts_ns < OPEN_UNTIL_NS[-1]:
        i = np.searchsorted(OPEN_FROM_NS, ts_ns, side="right") - 1
        is_open = i >= 0 and ts_ns < OPEN_UNTIL_NS[i]
        if is_open:
            to_close = (OPEN_UNTIL_NS[i] - ts_ns) / 1e9
            into = (ts_ns - OPEN_FROM_NS[i]) / 1e9
            trade_wd = OPEN_WEEKDAY[i]
        else:
            to_close, into = 0.0, 0.0
            trade_wd = _weekly_session(sod, wd)[3]
    else:
        is_open, to_close, into, trade_wd = _weekly_session(sod, wd)
    rth = is_open and wd < 5 and RTH_OPEN_S <= sod < RTH_CLOSE_S
    angle = 2.0 * math.pi * sod / DAY_S
    out[k0] = math.sin(angle)
    out[k0 + 1] = math.cos(angle)
    out[k0 + 2] = 1.0 if rth else 0.0
    out[k0 + 3] = 1.0 if is_open and not rth else 0.0
    out[k0 + 4] = to_close / 60.0
    out[k0 + 5] = into / 60.0
    out[k0 + 6] = trade_wd
    for j, at in enumerate((RELEASE_S, RTH_OPEN_S, RTH_CLOSE_S)):
        out[k0 + 7 + j] = min(max((sod - at) / 60.0, -PROXIMITY_CLIP_MIN), PROXIMITY_CLIP_MIN)
