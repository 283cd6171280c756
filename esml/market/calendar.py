"""CME Globex equity-index time: sessions, trade dates and session segments, in Chicago time.

The equity-index day runs 17:00 CT to 16:00 CT, then halts an hour: a session that opens on
Sunday evening belongs to Monday's trade date, and one that opens the evening before a
holiday belongs to the next trade date. Holidays and early closes come from
`esml.market.holidays`. Everything is computed in Chicago wall-clock time, so DST never
moves an open or a close; results are int64 ns since the epoch (UTC), like the events.

Hours are modelled from 2015-09-21, when the 16:00 CT close began; until trade date
2021-06-25 the day also paused 15:15-15:30 CT (removed by CME Globex notice 20210621).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

from esml.market.holidays import DayKind, special_day

CHICAGO = ZoneInfo("America/Chicago")
DAY_START = time(17, 0)  # Globex reopens; the session belongs to the next trade date
DAY_END = time(16, 0)  # daily close; 16:00-17:00 CT is the maintenance halt
RTH_OPEN = time(8, 30)
RTH_CLOSE = time(15, 0)

HOURS_FROM = date(2015, 9, 21)  # first trade date with today's 16:00 CT close
PAUSE = (time(15, 15), time(15, 30))
PAUSE_LAST_TRADE_DATE = date(2021, 6, 25)
TRADING_DAY_EPOCH = date(2020, 1, 2)  # trading_day_index 0

# segment starts in minutes after midnight CT: plain ints, usable from compiled code
EUROPE_START_MIN = 2 * 60
PRE_MARKET_START_MIN = 7 * 60
RTH_START_MIN = 8 * 60 + 30
POST_START_MIN = 15 * 60
CLOSE_MIN = 16 * 60
ASIA_START_MIN = 17 * 60


class Segment(StrEnum):
    """Where in the Globex day an instant falls; risk budgets are kept per segment."""

    ASIA = "asia"  # 17:00-02:00 CT
    EUROPE = "europe"  # 02:00-07:00 CT
    PRE_MARKET = "pre_market"  # 07:00-08:30 CT
    RTH = "rth"  # 08:30-15:00 CT
    POST = "post"  # 15:00-16:00 CT
    CLOSED = "closed"  # no trading: halt, holiday, weekend, after an early close


SEGMENTS: tuple[Segment, ...] = tuple(Segment)
"""`calendar_arrays.segment_codes` values index this tuple (ASIA=0 ... CLOSED=5)."""

_NS = 1_000_000_000
_MINUTE_NS = 60 * _NS


def to_chicago(ts_ns: int) -> datetime:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=CHICAGO)


def chicago_ns(day: date, at: time) -> int:
    """Chicago wall-clock time to ns since the epoch (17:00, 16:00... are never ambiguous)."""
    return int(datetime.combine(day, at, tzinfo=CHICAGO).timestamp()) * _NS


# --- trade dates ---------------------------------------------------------------------


def is_trading_date(d: date) -> bool:
    """A CME trade date: a weekday that is neither a closure nor a holiday halt."""
    if d.weekday() >= 5:
        return False
    s = special_day(d)
    return s is None or s.is_trade_date


def next_trading_date(d: date) -> date:
    d += timedelta(days=1)
    while not is_trading_date(d):
        d += timedelta(days=1)
    return d


def previous_trading_date(d: date) -> date:
    d -= timedelta(days=1)
    while not is_trading_date(d):
        d -= timedelta(days=1)
    return d


def _on_or_after(d: date) -> date:
    return d if is_trading_date(d) else next_trading_date(d)


def trading_dates(start: date, end: date) -> list[date]:
    """Every trade date from `start` to `end`, both included."""
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    out, d = [], _on_or_after(start)
    while d <= end:
        out.append(d)
        d = next_trading_date(d)
    return out


def trading_date(ts: datetime) -> date:
    """The CME trade date of an instant: from 17:00 CT an instant belongs to the next
    trade date (Sunday evening trades for Monday; the evening before a holiday for the day
    after it); before 17:00 to that day, or the next trade date when the day is none."""
    if ts.tzinfo is None:
        raise ValueError("trading_date needs a timezone-aware time")
    local = ts.astimezone(CHICAGO)
    d = local.date() + timedelta(days=1) if local.time() >= DAY_START else local.date()
    return _on_or_after(d)


def trading_day(ts_ns: int) -> str:
    """ISO date of the CME trade date `ts_ns` belongs to."""
    # whole seconds: every boundary is on one, and a float of ns could round across it
    return trading_date(datetime.fromtimestamp(int(ts_ns) // _NS, tz=UTC)).isoformat()


# --- sessions ------------------------------------------------------------------------


def _stop_time(d: date) -> time | None:
    """When Globex stops trading on calendar day `d`; None when it does not trade that day."""
    if d.weekday() >= 5:
        return None
    s = special_day(d)
    if s is None:
        return DAY_END
    return s.stop if s.kind is not DayKind.CLOSED else None


@dataclass(frozen=True)
class _Table:
    """Open intervals [start, end) in ns, sorted, with the trade date each belongs to."""

    starts: list[int]
    ends: list[int]
    days: list[date]


@lru_cache(maxsize=64)
def _year_intervals(year: int) -> tuple[tuple[int, int, date], ...]:
    """Every open interval that ends in `year`: each evening from Sunday to Thursday
    opens at 17:00 unless the next day is a closure, and runs to that day's stop."""
    out: list[tuple[int, int, date]] = []
    day = date(year - 1, 12, 31)
    while day < date(year, 12, 31):
        nxt = day + timedelta(days=1)
        stop = _stop_time(nxt)
        if day.weekday() in (6, 0, 1, 2, 3) and stop is not None:
            start, end, trade_date = (
                chicago_ns(day, DAY_START),
                chicago_ns(nxt, stop),
                _on_or_after(nxt),
            )
            if stop == DAY_END and nxt <= PAUSE_LAST_TRADE_DATE:
                out.append((start, chicago_ns(nxt, PAUSE[0]), trade_date))
                start = chicago_ns(nxt, PAUSE[1])
            out.append((start, end, trade_date))
        day = nxt
    return tuple(out)


@lru_cache(maxsize=32)
def session_table(first_year: int, last_year: int) -> _Table:
    rows = [r for y in range(first_year, last_year + 1) for r in _year_intervals(y)]
    return _Table([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


_HOURS_FROM_NS = chicago_ns(HOURS_FROM - timedelta(days=1), DAY_START)


def check_modelled(ts_min: int, what: str) -> None:
    if ts_min < _HOURS_FROM_NS:
        raise ValueError(
            f"{what}: CME equity session hours are modelled from trade date {HOURS_FROM} "
            "(the 16:00 CT close); earlier hours differed"
        )


def about_year(ts_ns: int) -> int:
    """The UTC year give or take a day at New Year: callers look a year either side."""
    return 1970 + ts_ns // 31_556_952_000_000_000  # the mean Gregorian year in ns


def _locate(ts_ns: int) -> tuple[_Table, int] | None:
    """The open interval holding `ts_ns`, or None when the market is closed then."""
    ts_ns = int(ts_ns)  # event fields are uint64
    check_modelled(ts_ns, f"ts {ts_ns}")
    y = about_year(ts_ns)
    table = session_table(y - 1, y + 1)
    i = bisect_right(table.starts, ts_ns) - 1
    return (table, i) if i >= 0 and ts_ns < table.ends[i] else None


def is_open(ts_ns: int) -> bool:
    """Whether Globex trades ES at this instant (start inclusive, close exclusive)."""
    return _locate(ts_ns) is not None


def minutes_to_close(ts_ns: int) -> float:
    """Minutes until trading next stops (the daily close, an early close or a holiday
    halt): what a position held now must be out by. 0.0 while the market is closed."""
    found = _locate(ts_ns)
    if found is None:
        return 0.0
    table, i = found
    return (table.ends[i] - int(ts_ns)) / _MINUTE_NS


def _segment_of_minute(minute: int) -> Segment:
    if minute >= ASIA_START_MIN or minute < EUROPE_START_MIN:
        return Segment.ASIA
    if minute < PRE_MARKET_START_MIN:
        return Segment.EUROPE
    if minute < RTH_START_MIN:
        return Segment.PRE_MARKET
    if minute < POST_START_MIN:
        return Segment.RTH
    if minute < CLOSE_MIN:
        return Segment.POST
    return Segment.CLOSED


def session_segment(ts_ns: int) -> Segment:
    """The segment by Chicago clock time while the market is open, CLOSED otherwise."""
    if not is_open(ts_ns):
        return Segment.CLOSED
    t = datetime.fromtimestamp(int(ts_ns) // _NS, tz=CHICAGO)
    return _segment_of_minute(t.hour * 60 + t.minute)


def is_rth(ts_ns: int) -> bool:
    """Inside regular trading hours (08:30-15:00 CT) while the market is open."""
    return session_segment(ts_ns) is Segment.RTH


def _why_not_trading(d: date) -> str:
    s = special_day(d)
    return s.name if s is not None else "a weekend"


def session_intervals(d: date) -> tuple[tuple[int, int], ...]:
    """The open intervals [start_ns, end_ns) of trade date `d`: one on a normal day; more
    when a holiday halt (or, until 2021-06-25, the 15:15 pause) falls inside it."""
    if not is_trading_date(d):
        raise ValueError(f"{d} is not a CME equity trade date ({_why_not_trading(d)})")
    if d < HOURS_FROM:
        raise ValueError(f"trade date {d}: CME equity session hours are modelled from {HOURS_FROM}")
    table = session_table(d.year - 1, d.year)
    return tuple(
        (start, end)
        for start, end, day in zip(table.starts, table.ends, table.days, strict=True)
        if day == d
    )


def session_bounds(d: date) -> tuple[int, int]:
    """(open_ns, close_ns) of trade date `d`, early closes included."""
    intervals = session_intervals(d)
    return intervals[0][0], intervals[-1][1]
