"""The CME equity calendar: trade dates, holidays and early closes, sessions and segments,
checked against CME's published schedules and real exchange data; scalar and array forms agree."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import databento_dbn as dbn
import numpy as np
import pandas as pd
import pytest
import zstandard

from esml.evaluation.metrics import trading_days
from esml.market.calendar import (
    SEGMENTS,
    Segment,
    is_open,
    is_rth,
    is_trading_date,
    minutes_to_close,
    session_bounds,
    session_intervals,
    session_segment,
    trading_date,
    trading_dates,
    trading_day,
)
from esml.market.calendar_arrays import (
    is_open_array,
    minutes_to_close_array,
    segment_codes,
    trading_dates_of,
    trading_day_index,
)
from esml.market.events import TRADE
from esml.market.holidays import (
    VERIFIED_YEARS,
    DayKind,
    easter_sunday,
    special_day,
    special_days,
)
from tests.conftest import FIXTURES


@pytest.mark.parametrize(
    ("utc", "day"),
    [
        ("2024-03-04T22:59:59", "2024-03-04"),  # 16:59:59 CST, Monday
        ("2024-03-04T23:00:00", "2024-03-05"),  # 17:00 CST opens Tuesday's session
        ("2024-03-08T23:30:00", "2024-03-11"),  # Friday evening belongs to Monday
        ("2024-03-10T22:00:00", "2024-03-11"),  # Sunday 17:00 CDT, the day DST starts
        ("2024-07-01T21:59:00", "2024-07-01"),  # 16:59 CDT
    ],
)
def test_trading_day_boundaries(utc: str, day: str) -> None:
    t = datetime.fromisoformat(utc).replace(tzinfo=UTC)
    assert trading_date(t).isoformat() == day
    assert trading_day(int(t.timestamp()) * 10**9) == day


def test_scalar_and_array_forms_agree_every_15_minutes_for_three_weeks() -> None:
    start = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp()) * 10**9
    ts = start + np.arange(0, 21 * 96) * 900 * 10**9  # spans a DST change and 3 weekends
    array_form = [str(d) for d in trading_days(ts)]
    assert array_form == [trading_day(int(t)) for t in ts]


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        trading_date(datetime(2024, 3, 4, 12, 0))


# --- the full calendar: holidays, early closes, sessions, segments --------------------


def ct(wall: str) -> int:
    """ns of a Chicago wall-clock time, so expectations read as CME publishes them."""
    return int(pd.Timestamp(wall, tz="America/Chicago").value)


def at_utc(wall: str) -> int:
    return int(pd.Timestamp(wall, tz="UTC").value)


def test_good_friday_follows_easter() -> None:
    fridays = {
        2020: date(2020, 4, 10), 2021: date(2021, 4, 2), 2022: date(2022, 4, 15),
        2023: date(2023, 4, 7), 2024: date(2024, 3, 29), 2025: date(2025, 4, 18),
        2026: date(2026, 4, 3), 2027: date(2027, 3, 26),
    }  # fmt: skip
    for year, friday in fridays.items():
        assert easter_sunday(year) == friday + pd.Timedelta(days=2)


def test_the_2024_schedule_is_cmes() -> None:
    """CME equity-index Globex 2024: three closures, nine 12:00 CT halts, three 12:15 CT
    early closes; 252 trade dates, the same days as the NYSE's 252."""
    days = special_days(2024)
    kinds = {d.isoformat(): (s.kind, s.stop) for d, s in days.items()}
    assert kinds == {
        "2024-01-01": (DayKind.CLOSED, None),
        "2024-01-15": (DayKind.HALT, time(12)),
        "2024-02-19": (DayKind.HALT, time(12)),
        "2024-03-29": (DayKind.CLOSED, None),
        "2024-05-27": (DayKind.HALT, time(12)),
        "2024-06-19": (DayKind.HALT, time(12)),
        "2024-07-03": (DayKind.EARLY_CLOSE, time(12, 15)),
        "2024-07-04": (DayKind.HALT, time(12)),
        "2024-09-02": (DayKind.HALT, time(12)),
        "2024-11-28": (DayKind.HALT, time(12)),
        "2024-11-29": (DayKind.EARLY_CLOSE, time(12, 15)),
        "2024-12-24": (DayKind.EARLY_CLOSE, time(12, 15)),
        "2024-12-25": (DayKind.CLOSED, None),
    }
    assert len(trading_dates(date(2024, 1, 1), date(2024, 12, 31))) == 252


@pytest.mark.parametrize(
    ("day", "kind", "stop"),
    [
        (date(2021, 4, 2), DayKind.EARLY_CLOSE, time(8, 15)),  # Good Friday, payrolls
        (date(2023, 4, 7), DayKind.EARLY_CLOSE, time(8, 15)),
        (date(2026, 4, 3), DayKind.EARLY_CLOSE, time(8, 15)),
        (date(2025, 4, 18), DayKind.CLOSED, None),  # Good Friday, no payrolls
        (date(2025, 1, 9), DayKind.EARLY_CLOSE, time(8, 30)),  # mourning for Carter
        (date(2021, 12, 24), DayKind.CLOSED, None),  # Christmas on a Saturday
        (date(2022, 12, 26), DayKind.CLOSED, None),  # Christmas on a Sunday
        (date(2023, 1, 2), DayKind.CLOSED, None),  # New Year on a Sunday
        (date(2022, 6, 20), DayKind.HALT, time(12)),  # first Juneteenth, a Sunday
        (date(2027, 6, 18), DayKind.HALT, time(12)),  # Juneteenth on a Saturday
        (date(2026, 7, 3), DayKind.HALT, time(12)),  # July 4th on a Saturday
        (date(2023, 7, 3), DayKind.EARLY_CLOSE, time(12, 15)),  # July 4th on a Tuesday
    ],
)
def test_special_days_of_other_years(day: date, kind: DayKind, stop: time | None) -> None:
    s = special_day(day)
    assert s is not None and (s.kind, s.stop) == (kind, stop)


@pytest.mark.parametrize(
    "day",
    [
        date(2021, 6, 18),  # Juneteenth before CME observed it
        date(2021, 12, 31),  # New Year's Day 2022 is a Saturday: not observed
        date(2026, 7, 2),  # no eve close when July 4th is observed on Friday
        date(2023, 12, 22),  # the Friday before a Monday Christmas
    ],
)
def test_ordinary_days_stay_ordinary(day: date) -> None:
    assert special_day(day) is None and is_trading_date(day)
    open_ns, close_ns = session_bounds(day)
    assert close_ns - open_ns == 23 * 3600 * 10**9


def test_every_verified_year_has_its_three_closures_and_holiday_halts() -> None:
    for year in VERIFIED_YEARS:
        days = special_days(year).values()
        names = {s.name for s in days if s.kind is DayKind.HALT}
        assert {"Martin Luther King Jr. Day", "Presidents Day", "Memorial Day", "Labor Day",
                "Thanksgiving", "Independence Day"} <= names  # fmt: skip
        assert ("Juneteenth" in names) == (year >= 2022)
        assert all(s.day.weekday() < 5 for s in days)


def test_good_friday_2024_is_closed_from_thursday_close_to_sunday_open() -> None:
    assert not is_trading_date(date(2024, 3, 29))
    assert is_open(ct("2024-03-28 15:59:59"))
    assert not is_open(ct("2024-03-28 16:00"))
    assert not is_open(ct("2024-03-28 17:30"))  # no evening session before a closure
    assert not is_open(ct("2024-03-29 10:00"))
    assert session_bounds(date(2024, 4, 1))[0] == ct("2024-03-31 17:00")
    assert trading_day(ct("2024-03-29 10:00")) == "2024-04-01"
    with pytest.raises(ValueError, match=r"not a CME equity trade date \(Good Friday\)"):
        session_bounds(date(2024, 3, 29))


def test_thanksgiving_2024_halts_at_noon_and_trades_for_friday() -> None:
    assert not is_trading_date(date(2024, 11, 28))
    assert is_open(ct("2024-11-28 11:59:59")) and not is_open(ct("2024-11-28 12:00"))
    assert not is_open(ct("2024-11-28 16:59:59")) and is_open(ct("2024-11-28 17:00"))
    assert trading_day(ct("2024-11-28 09:00")) == "2024-11-29"
    assert minutes_to_close(ct("2024-11-28 11:00")) == 60.0  # the halt, not the day's end
    # Friday's trade date spans both, and ends at the 12:15 early close
    assert session_intervals(date(2024, 11, 29)) == (
        (ct("2024-11-27 17:00"), ct("2024-11-28 12:00")),
        (ct("2024-11-28 17:00"), ct("2024-11-29 12:15")),
    )
    assert minutes_to_close(ct("2024-11-29 11:15")) == 60.0
    assert not is_open(ct("2024-11-29 12:15"))
    assert not is_open(ct("2024-11-29 17:00"))  # Friday: the week is over


def test_the_july_3rd_early_close_reopens_for_the_trade_date_after_the_holiday() -> None:
    assert session_bounds(date(2024, 7, 3)) == (ct("2024-07-02 17:00"), ct("2024-07-03 12:15"))
    assert is_open(ct("2024-07-03 17:00"))
    assert trading_day(ct("2024-07-03 17:00")) == "2024-07-05"


def test_christmas_eve_closes_at_12_15_with_no_evening_session() -> None:
    assert session_bounds(date(2024, 12, 24))[1] == ct("2024-12-24 12:15")
    assert not is_open(ct("2024-12-24 17:30"))
    assert not is_open(ct("2024-12-25 12:00"))
    assert session_bounds(date(2024, 12, 26)) == (ct("2024-12-25 17:00"), ct("2024-12-26 16:00"))


def test_national_day_of_mourning_2025() -> None:
    assert session_bounds(date(2025, 1, 9)) == (ct("2025-01-08 17:00"), ct("2025-01-09 08:30"))
    assert is_open(ct("2025-01-09 08:29")) and not is_open(ct("2025-01-09 08:30"))
    assert trading_day(ct("2025-01-09 17:00")) == "2025-01-10"


def test_good_friday_with_payrolls_trades_until_08_15() -> None:
    assert session_bounds(date(2023, 4, 7)) == (ct("2023-04-06 17:00"), ct("2023-04-07 08:15"))
    assert session_segment(ct("2023-04-07 08:00")) is Segment.PRE_MARKET
    assert session_segment(ct("2023-04-07 08:30")) is Segment.CLOSED


def test_a_halt_holiday_on_friday_carries_its_morning_to_monday() -> None:
    """Juneteenth 2027 is observed Friday June 18: Thursday evening to Friday noon trades
    for Monday's trade date, as CME shows for Juneteenth 2026 (trade date 2026-06-22)."""
    assert trading_day(ct("2027-06-17 18:00")) == "2027-06-21"
    assert session_intervals(date(2027, 6, 21)) == (
        (ct("2027-06-17 17:00"), ct("2027-06-18 12:00")),
        (ct("2027-06-20 17:00"), ct("2027-06-21 16:00")),
    )
    assert session_bounds(date(2026, 6, 22))[0] == ct("2026-06-18 17:00")


def test_the_15_15_pause_until_june_2021_matches_the_exchange_status_feed() -> None:
    """Databento's GLBX status fixture (ESH1, 2020-12-28): trading from Sunday 17:00 CT,
    pre-open at 15:15 CT, reopening at 15:30 CT; CME removed the pause from 2021-06-28."""
    raw = (FIXTURES / "test_data.status.dbn.zst").read_bytes()
    dec = dbn.DBNDecoder()
    dec.write(zstandard.ZstdDecompressor().decompressobj().decompress(raw))
    status = dec.decode()[1:]
    trading = [s.ts_event for s in status if s.is_trading is True]
    halted = [s.ts_event for s in status if s.is_trading is False]
    assert trading[0] == ct("2020-12-27 17:00") == session_bounds(date(2020, 12, 28))[0]
    assert min(halted) == ct("2020-12-28 15:15")
    assert not any(is_open(t) for t in halted)
    assert not is_open(ct("2020-12-28 15:20")) and is_open(ct("2020-12-28 15:30"))
    assert len(session_intervals(date(2021, 6, 25))) == 2
    assert session_intervals(date(2021, 6, 28)) == (
        (ct("2021-06-27 17:00"), ct("2021-06-28 16:00")),
    )


def test_dst_moves_utc_but_not_chicago() -> None:
    # Sunday 2024-03-10, the day DST starts: 17:00 CDT is 22:00 UTC (the Friday before: 23:00)
    assert session_bounds(date(2024, 3, 11))[0] == at_utc("2024-03-10 22:00")
    assert session_bounds(date(2024, 3, 8))[0] == at_utc("2024-03-07 23:00")
    # Sunday 2024-11-03, DST ends: back to 23:00 UTC
    assert session_bounds(date(2024, 11, 4))[0] == at_utc("2024-11-03 23:00")
    assert is_rth(at_utc("2024-03-11 13:30")) and not is_rth(at_utc("2024-03-08 13:30"))
    assert is_rth(at_utc("2024-03-08 14:30"))
    for day in (date(2024, 3, 11), date(2024, 11, 4)):
        open_ns, close_ns = session_bounds(day)
        assert close_ns - open_ns == 23 * 3600 * 10**9  # 17:00 to 16:00, whatever the offset


@pytest.mark.parametrize(
    ("wall", "segment"),
    [
        ("2024-03-05 17:00", Segment.ASIA),
        ("2024-03-06 01:59", Segment.ASIA),
        ("2024-03-06 02:00", Segment.EUROPE),
        ("2024-03-06 06:59", Segment.EUROPE),
        ("2024-03-06 07:00", Segment.PRE_MARKET),
        ("2024-03-06 08:30", Segment.RTH),
        ("2024-03-06 14:59", Segment.RTH),
        ("2024-03-06 15:00", Segment.POST),
        ("2024-03-06 15:59", Segment.POST),
        ("2024-03-06 16:00", Segment.CLOSED),
        ("2024-03-09 12:00", Segment.CLOSED),  # Saturday
        ("2024-01-15 13:00", Segment.CLOSED),  # MLK halt
    ],
)
def test_session_segments(wall: str, segment: Segment) -> None:
    assert session_segment(ct(wall)) is segment


def test_minutes_to_close() -> None:
    assert minutes_to_close(ct("2024-03-06 15:30")) == 30.0
    assert minutes_to_close(ct("2024-03-05 17:00")) == 23 * 60.0
    assert minutes_to_close(ct("2024-03-06 16:30")) == 0.0


def test_array_forms_agree_with_the_scalars_across_the_2024_holidays() -> None:
    start, end = ct("2024-11-20 00:00"), ct("2025-01-06 00:00")
    ts = np.arange(start, end, 7 * 60 * 10**9 + 13 * 10**9, dtype=np.int64)  # odd step
    assert [str(d) for d in trading_dates_of(ts)] == [trading_day(int(t)) for t in ts]
    assert is_open_array(ts).tolist() == [is_open(int(t)) for t in ts]
    assert minutes_to_close_array(ts).tolist() == [minutes_to_close(int(t)) for t in ts]
    assert [SEGMENTS[c] for c in segment_codes(ts)] == [session_segment(int(t)) for t in ts]


def test_trading_day_index_counts_trade_dates() -> None:
    idx = trading_day_index(np.array([ct("2020-01-02 10:00"), ct("2019-12-31 10:00"),
                                      ct("2024-03-28 10:00"), ct("2024-04-01 10:00")]))  # fmt: skip
    assert idx[0] == 0 and idx[1] == -1
    assert idx[3] - idx[2] == 1  # Good Friday is no trade date
    days = trading_dates(date(2020, 1, 2), date(2024, 3, 28))
    assert idx[2] == len(days) - 1


def test_session_hours_before_the_modelled_range_are_refused() -> None:
    with pytest.raises(ValueError, match="modelled from"):
        is_open(at_utc("2011-07-29 15:00"))
    with pytest.raises(ValueError, match="modelled from"):
        session_bounds(date(2014, 3, 3))
    assert trading_day(at_utc("2011-07-29 15:00")) == "2011-07-29"  # trade dates still known


def test_the_real_christmas_2023_reopen(es_events: np.ndarray) -> None:
    """ESH4, 2023-12-25 22:00-24:00 UTC: Christmas Monday was closed; the book filled in
    pre-open from 16:00 CT and trading reopened at 17:00 CT for trade date 2023-12-26."""
    recv = es_events["ts_recv"].astype(np.int64)
    trades = es_events[es_events["action"] == TRADE]
    t_ns = trades["ts_event"].astype(np.int64)
    assert not is_trading_date(date(2023, 12, 25))
    assert session_bounds(date(2023, 12, 26))[0] == ct("2023-12-25 17:00") == int(t_ns.min())
    assert is_open_array(t_ns).all()
    assert (segment_codes(t_ns) == SEGMENTS.index(Segment.ASIA)).all()
    pre_open = recv[(recv >= ct("2023-12-25 16:00")) & (recv < ct("2023-12-25 17:00"))]
    assert pre_open.size > 0 and not is_open_array(pre_open).any()
    assert set(trading_dates_of(recv).astype(str)) == {"2023-12-26"}
    assert trading_day(ct("2023-12-24 18:00")) == "2023-12-26"  # Sunday evening: no session
    assert not is_open(ct("2023-12-24 18:00"))


def test_new_year_closure_across_the_year_boundary() -> None:
    assert is_open(ct("2024-12-31 15:59")) and not is_open(ct("2024-12-31 17:30"))
    assert not is_open(ct("2025-01-01 12:00"))
    assert session_bounds(date(2025, 1, 2)) == (ct("2025-01-01 17:00"), ct("2025-01-02 16:00"))
    assert trading_day(ct("2024-12-31 17:30")) == "2025-01-02"


def test_the_last_nanosecond_before_a_boundary_stays_before_it() -> None:
    t = ct("2024-03-06 17:00") - 1
    assert trading_day(t) == "2024-03-06" == str(trading_dates_of(np.array([t]))[0])
    rth = ct("2024-03-06 08:30")
    assert session_segment(rth - 1) is Segment.PRE_MARKET
    assert SEGMENTS[segment_codes(np.array([rth - 1]))[0]] is Segment.PRE_MARKET
    assert session_segment(rth) is Segment.RTH
