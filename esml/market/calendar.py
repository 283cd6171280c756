"""CME Globex time: the trading day and the regular session, in Chicago time.

The equity-index futures day runs 17:00 CT to 16:00 CT: a session that opens on Sunday
evening belongs to Monday's trading day. Holidays and early closes come with the full
calendar.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

CHICAGO = ZoneInfo("America/Chicago")
DAY_START = time(17, 0)
RTH_OPEN = time(8, 30)
RTH_CLOSE = time(15, 0)


def to_chicago(ts_ns: int) -> datetime:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=CHICAGO)


def trading_day(ts_ns: int) -> str:
    """ISO date of the CME trading day `ts_ns` belongs to."""
    t = to_chicago(ts_ns)
    d = t.date() + timedelta(days=1) if t.time() >= DAY_START else t.date()
    while d.weekday() >= 5:  # a Friday-evening or Saturday stamp belongs to Monday
        d += timedelta(days=1)
    return d.isoformat()


def is_rth(ts_ns: int) -> bool:
    t = to_chicago(ts_ns)
    return t.weekday() < 5 and RTH_OPEN <= t.time() < RTH_CLOSE
