"""The CME trading day: one rule, the same answer from the scalar and the array form."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from esml.evaluation.metrics import trading_days
from esml.market.calendar import trading_date, trading_day


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
