"""CME equity-index futures contracts: month codes, symbols, expiry, roll and the front month.

ES, MES, NQ and MNQ list quarterly contracts (H M U Z). Trading terminates at 08:30 CT
(09:30 ET) on the day of the final settlement, the Special Opening Quotation of the index on
the third Friday of the contract month, or the trade date before it when that Friday is no
trade date (CME Rulebook ch. 358; June 2026 and June 2027 fall on Juneteenth).

The roll date follows CME's published convention, "eight calendar days before the contract
expires": the Thursday before expiry week. Calendar days, not business days, because that
is how CME defines it, and it puts the roll on the same weekday every quarter; eight
business days would land on a Tuesday (or Wednesday after a holiday) and drift. From the
roll date on, the next contract is the lead month.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, time, timedelta

from esml.market.calendar import (
    chicago_ns,
    is_trading_date,
    next_trading_date,
    previous_trading_date,
    trading_dates,
)
from esml.market.instruments import INSTRUMENTS

MONTH_CODES: dict[int, str] = dict(enumerate("FGHJKMNQUVXZ", start=1))
MONTH_OF_CODE: dict[str, int] = {code: month for month, code in MONTH_CODES.items()}
QUARTERLY_MONTHS = (3, 6, 9, 12)
ROLL_DAYS_BEFORE_EXPIRY = 8  # calendar days before the third Friday
LAST_TRADE_TIME = time(8, 30)  # CT, the 09:30 ET SOQ

_ROOTS = "|".join(sorted(INSTRUMENTS, key=len, reverse=True))  # MES before ES
_SYMBOL = re.compile(rf"^({_ROOTS})([FGHJKMNQUVXZ])(\d{{1,2}}|\d{{4}})$")


def third_friday(year: int, month: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(4 - first.weekday()) % 7 + 14)


@dataclass(frozen=True, order=True)
class Contract:
    """One quarterly contract, e.g. ES March 2024 (`ESH4`)."""

    root: str
    year: int
    month: int

    def __post_init__(self) -> None:
        if self.root not in INSTRUMENTS:
            raise ValueError(f"unknown root {self.root!r}; known: {sorted(INSTRUMENTS)}")
        if self.month not in QUARTERLY_MONTHS:
            raise ValueError(
                f"{self.root} lists quarterly contracts (H M U Z); month {self.month} "
                f"({MONTH_CODES.get(self.month, '?')}) does not exist"
            )
        if not 1950 <= self.year <= 2200:
            raise ValueError(f"contract year {self.year} is out of range")

    @property
    def code(self) -> str:
        return MONTH_CODES[self.month]

    @property
    def symbol(self) -> str:
        """CME Globex spelling, one-digit year ("ESH4"), as in Databento and Tradovate."""
        return self.format(1)

    def format(self, year_digits: int = 1) -> str:
        if year_digits not in (1, 2, 4):
            raise ValueError(f"year_digits must be 1, 2 or 4, got {year_digits}")
        return f"{self.root}{self.code}{self.year % 10**year_digits:0{year_digits}d}"

    @property
    def expiry(self) -> date:
        """Last trade date: the third Friday, or the trade date before it when it is none."""
        friday = third_friday(self.year, self.month)
        return friday if is_trading_date(friday) else previous_trading_date(friday)

    @property
    def expiry_ns(self) -> int:
        """When trading terminates: 08:30 CT on the expiry date."""
        return chicago_ns(self.expiry, LAST_TRADE_TIME)

    @property
    def roll_date(self) -> date:
        """First trade date on which the next contract leads: eight calendar days before the
        third Friday (the following trade date, should that Thursday ever be none)."""
        thursday = third_friday(self.year, self.month) - timedelta(days=ROLL_DAYS_BEFORE_EXPIRY)
        return thursday if is_trading_date(thursday) else next_trading_date(thursday)

    def next(self) -> Contract:
        i = QUARTERLY_MONTHS.index(self.month)
        if i == len(QUARTERLY_MONTHS) - 1:
            return Contract(self.root, self.year + 1, QUARTERLY_MONTHS[0])
        return Contract(self.root, self.year, QUARTERLY_MONTHS[i + 1])

    def previous(self) -> Contract:
        i = QUARTERLY_MONTHS.index(self.month)
        if i == 0:
            return Contract(self.root, self.year - 1, QUARTERLY_MONTHS[-1])
        return Contract(self.root, self.year, QUARTERLY_MONTHS[i - 1])

    def __str__(self) -> str:
        return self.symbol


def parse_contract(symbol: str, as_of: date | None = None) -> Contract:
    """ "ESH4", "ESH24", "ESH2024", "MESZ5" into a `Contract`.

    A one-digit year is ambiguous across decades, so it needs `as_of` (e.g. the date of
    the data it came with) and resolves to the year ending in that digit within
    [as_of.year - 2, as_of.year + 7]: listed contracts run a few years ahead, and recent
    history a year or two back."""
    m = _SYMBOL.match(symbol.strip().upper())
    if m is None:
        raise ValueError(
            f"not a contract symbol: {symbol!r} (root {_ROOTS.replace('|', '/')}, a month "
            "code, then a 1, 2 or 4 digit year, e.g. ESH4, ESH24, MESZ2025)"
        )
    root, code, digits = m.groups()
    if len(digits) == 4:
        year = int(digits)
    elif len(digits) == 2:
        year = 2000 + int(digits)
    elif as_of is None:
        raise ValueError(
            f"{symbol!r} has a one-digit year, ambiguous across decades: pass as_of, "
            "or use a two-digit year (ESH24)"
        )
    else:
        year = as_of.year - 2 + (int(digits) - (as_of.year - 2)) % 10
    return Contract(root, year, MONTH_OF_CODE[code])


def front_contract(root: str, d: date) -> Contract:
    """The contract that leads on date `d`: the nearest quarterly one whose roll date is
    still ahead (on its roll date the next one leads)."""
    contract = Contract(root, d.year, next(m for m in QUARTERLY_MONTHS if m >= d.month))
    while d >= contract.roll_date:
        contract = contract.next()
    return contract


@dataclass(frozen=True)
class FrontPeriod:
    """The trade dates, first and last included, on which `contract` leads."""

    contract: Contract
    first: date
    last: date


def contract_schedule(root: str, start: date, end: date) -> list[FrontPeriod]:
    """Which contract leads on each trade date from `start` to `end`, as periods."""
    periods: list[FrontPeriod] = []
    for d in trading_dates(start, end):
        c = front_contract(root, d)
        if periods and periods[-1].contract == c:
            periods[-1] = FrontPeriod(c, periods[-1].first, d)
        else:
            periods.append(FrontPeriod(c, d, d))
    return periods
