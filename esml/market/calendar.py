"""CME Globex time: the trading day and the regular session, in Chicago time.

The equity-index futures day runs 17:00 CT to 16:00 CT: a session that opens on Sunday
evening belongs to Monday's trading day. Holidays and early closes come with the full
calendar.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

CHICAGO = ZoneInfo("America/Chicago")
DAY_START = time(17, 0)
RTH_OPEN = time(8, 30)
RTH_CLOSE = time(15, 0)


def to_chicago(ts_ns: int) -> datetime:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=CHICAGO)


def trading_date(ts: datetime) -> date:
    """The CME trading day of an instant: the session opening at 17:00 Chicago time belongs
    to the next weekday (Sunday evening trades for Monday). Holidays are not skipped yet."""
    if ts.tzinfo is None:
        raise ValueError("trading_date needs a timezone-aware time")
    local = ts.astimezone(CHICAGO)
    d = local.date() + timedelta(days=1) if local.time() >= DAY_START else local.date()
    while d.weekday() >= 5:  # a Friday-evening or Saturday stamp belongs to Monday
        d += timedelta(days=1)
    return d


def trading_day(ts_ns: int) -> str:
    """ISO date of the CME trading day `ts_ns` belongs to."""
    return trading_date(datetime.fromtimestamp(ts_ns / 1e9, tz=UTC)).isoformat()


def is_rth(ts_ns: int) -> bool:
    t = to_chicago(ts_ns)
    return t.weekday() < 5 and RTH_OPEN <= t.time() < RTH_CLOSE
