"""CME Globex equity-index (ES, MES, NQ, MNQ) holidays: full closures, holiday halts and
early closes, so a backtest never trades a session that did not exist.

Three kinds of special day, as CME publishes them (times Chicago):

- CLOSED: no trading that day, and no session the evening before (New Year's Day, Good
  Friday, Christmas).
- HALT: a US holiday on which Globex trades until 12:00, halts, and reopens at 17:00. The
  day is not a trade date: everything traded from the previous evening belongs to the next
  trade date (MLK, Presidents, Memorial, Juneteenth from 2022, Independence, Labor Day,
  Thanksgiving). CME's trading-hours page shows e.g. Juneteenth 2026 trading for trade date
  Monday 2026-06-22.
- EARLY_CLOSE: a trade date that ends before 16:00: 12:15 on the day after Thanksgiving, on
  Christmas Eve and on July 3 when July 4 falls Tuesday-Friday; one-off exceptions below.

Sources: the CME Group holiday calendar and trading-hours pages
(cmegroup.com/tools-information/holiday-calendar.html, cmegroup.com/trading-hours.html)
as cross-checked by pandas_market_calendars' CME Globex equity calendar and QuantConnect
Lean's market-hours database, and press reports of each year's schedule. The rules below
reproduce the published 2020-2027 schedules; `EXCEPTIONS` lists the one-off days of those
years. Other years get the standing rules only (no one-off closures).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time, timedelta
from enum import StrEnum
from functools import lru_cache

VERIFIED_YEARS = range(2020, 2028)
"""Years whose schedule was checked against CME's published calendar, one-offs included."""

HOLIDAY_HALT = time(12, 0)
EARLY_CLOSE = time(12, 15)
JUNETEENTH_FIRST_YEAR = 2022  # first year CME observed it


class DayKind(StrEnum):
    CLOSED = "closed"
    HALT = "halt"
    EARLY_CLOSE = "early_close"


@dataclass(frozen=True)
class SpecialDay:
    day: date
    kind: DayKind
    name: str
    stop: time | None  # when Globex stops trading that day (CT); None when closed all day

    def __post_init__(self) -> None:
        if (self.stop is None) != (self.kind is DayKind.CLOSED):
            raise ValueError(f"{self.day} {self.name}: only a closed day has no stop time")

    @property
    def is_trade_date(self) -> bool:
        return self.kind is DayKind.EARLY_CLOSE


EXCEPTIONS: tuple[SpecialDay, ...] = (
    # Good Friday with the US employment report: equity index trades until 08:15 CT and
    # the day is a trade date (CME trading-hours page for 2021-04-02, 2023-04-07 and
    # 2026-04-03; press: "U.S. equity futures will close at 9:15 a.m. Eastern").
    SpecialDay(
        date(2021, 4, 2), DayKind.EARLY_CLOSE, "Good Friday (employment report)", time(8, 15)
    ),
    SpecialDay(
        date(2023, 4, 7), DayKind.EARLY_CLOSE, "Good Friday (employment report)", time(8, 15)
    ),
    SpecialDay(
        date(2026, 4, 3), DayKind.EARLY_CLOSE, "Good Friday (employment report)", time(8, 15)
    ),
    # National Day of Mourning for President Carter: CME press release of 2024-12-30,
    # "U.S. equity markets will be open until 8:30 a.m. CT on January 9", reopening at
    # 17:00 CT for trade date January 10 (interest rates traded to 12:15 on trade date 9).
    SpecialDay(
        date(2025, 1, 9), DayKind.EARLY_CLOSE, "National Day of Mourning (Carter)", time(8, 30)
    ),
)


def easter_sunday(year: int) -> date:
    """Gregorian Easter (the anonymous Gregorian algorithm), for Good Friday."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return date(year, month, day + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th `weekday` (Mon=0) of a month; n=-1 for the last."""
    if n > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    nxt = date(year + month // 12, month % 12 + 1, 1)
    last = nxt - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _observed(d: date) -> date:
    """A fixed-date holiday on a weekend is observed on the nearest weekday."""
    return d + timedelta(days={5: -1, 6: 1}.get(d.weekday(), 0))


def _rule_days(year: int) -> list[SpecialDay]:
    closed = DayKind.CLOSED
    halt, early = DayKind.HALT, DayKind.EARLY_CLOSE
    days = [
        SpecialDay(easter_sunday(year) - timedelta(days=2), closed, "Good Friday", None),
        SpecialDay(_observed(date(year, 12, 25)), closed, "Christmas", None),
        SpecialDay(_nth_weekday(year, 1, 0, 3), halt, "Martin Luther King Jr. Day", HOLIDAY_HALT),
        SpecialDay(_nth_weekday(year, 2, 0, 3), halt, "Presidents Day", HOLIDAY_HALT),
        SpecialDay(_nth_weekday(year, 5, 0, -1), halt, "Memorial Day", HOLIDAY_HALT),
        SpecialDay(_observed(date(year, 7, 4)), halt, "Independence Day", HOLIDAY_HALT),
        SpecialDay(_nth_weekday(year, 9, 0, 1), halt, "Labor Day", HOLIDAY_HALT),
        SpecialDay(_nth_weekday(year, 11, 3, 4), halt, "Thanksgiving", HOLIDAY_HALT),
        SpecialDay(
            _nth_weekday(year, 11, 3, 4) + timedelta(days=1),
            early,
            "Day after Thanksgiving",
            EARLY_CLOSE,
        ),
    ]
    new_year = date(year, 1, 1)
    if new_year.weekday() != 5:  # on a Saturday it is not observed: the Friday before trades
        days.append(SpecialDay(_observed(new_year), closed, "New Year's Day", None))
    if year >= JUNETEENTH_FIRST_YEAR:
        days.append(SpecialDay(_observed(date(year, 6, 19)), halt, "Juneteenth", HOLIDAY_HALT))
    if date(year, 7, 4).weekday() in (1, 2, 3, 4):
        days.append(SpecialDay(date(year, 7, 3), early, "Independence Day eve", EARLY_CLOSE))
    if date(year, 12, 24).weekday() <= 3:  # Friday the 24th is Christmas observed
        days.append(SpecialDay(date(year, 12, 24), early, "Christmas Eve", EARLY_CLOSE))
    return days


@lru_cache(maxsize=128)
def special_days(year: int) -> dict[date, SpecialDay]:
    """Every special day of `year` by date; one-off exceptions replace the rule's entry."""
    days = {s.day: s for s in _rule_days(year)}
    days.update({s.day: s for s in EXCEPTIONS if s.day.year == year})
    return days


def special_day(d: date) -> SpecialDay | None:
    return special_days(d.year).get(d)
