"""Contract months, symbols, expiries and rolls, against CME's published dates and
Databento's real ESH1 instrument definition."""

from __future__ import annotations

from datetime import date
from itertools import pairwise

import databento_dbn as dbn
import pandas as pd
import pytest
import zstandard

from esml.market.calendar import is_trading_date, next_trading_date
from esml.market.contracts import (
    Contract,
    FrontPeriod,
    contract_schedule,
    front_contract,
    parse_contract,
    third_friday,
)
from tests.conftest import FIXTURES


@pytest.mark.parametrize(
    ("symbol", "as_of", "expected"),
    [
        ("ESH4", date(2023, 12, 25), Contract("ES", 2024, 3)),
        ("ESH24", None, Contract("ES", 2024, 3)),
        ("ESH2024", None, Contract("ES", 2024, 3)),
        ("MESZ5", date(2025, 6, 1), Contract("MES", 2025, 12)),
        ("mesz5", date(2025, 6, 1), Contract("MES", 2025, 12)),
        ("ESZ3", date(2024, 1, 2), Contract("ES", 2023, 12)),  # just expired: the past decade
        ("ESZ9", date(2024, 1, 2), Contract("ES", 2029, 12)),  # far out: the coming one
        ("NQM6", date(2026, 1, 5), Contract("NQ", 2026, 6)),
    ],
)
def test_parse(symbol: str, as_of: date | None, expected: Contract) -> None:
    assert parse_contract(symbol, as_of) == expected


def test_format_round_trips() -> None:
    c = Contract("MES", 2025, 12)
    assert (c.symbol, c.format(2), c.format(4), str(c)) == ("MESZ5", "MESZ25", "MESZ2025", "MESZ5")
    for digits in (2, 4):
        assert parse_contract(c.format(digits)) == c
    assert parse_contract(c.symbol, as_of=date(2025, 3, 1)) == c


@pytest.mark.parametrize(
    ("symbol", "message"),
    [
        ("ESH4", "one-digit year"),  # no as_of
        ("ESX4", "quarterly"),  # November exists as a code, not as an ES contract
        ("ESH", "not a contract symbol"),
        ("YMH4", "not a contract symbol"),  # not a root esml trades
        ("ESH204", "not a contract symbol"),
    ],
)
def test_bad_symbols_are_refused(symbol: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_contract(symbol, None if message == "one-digit year" else date(2024, 1, 1))


def test_month_arithmetic_wraps_the_year() -> None:
    assert Contract("ES", 2024, 12).next() == Contract("ES", 2025, 3)
    assert Contract("ES", 2025, 3).previous() == Contract("ES", 2024, 12)
    assert Contract("ES", 2024, 3) < Contract("ES", 2024, 6) < Contract("ES", 2025, 3)


@pytest.mark.parametrize(
    ("contract", "expiry", "roll"),
    [
        # CME "Equity Index Roll Dates" table (expiration, roll)
        (Contract("ES", 2014, 9), date(2014, 9, 19), date(2014, 9, 11)),
        (Contract("ES", 2014, 12), date(2014, 12, 19), date(2014, 12, 11)),
        (Contract("ES", 2019, 3), date(2019, 3, 15), date(2019, 3, 7)),
        (Contract("ES", 2019, 6), date(2019, 6, 21), date(2019, 6, 13)),
        (Contract("ES", 2024, 3), date(2024, 3, 15), date(2024, 3, 7)),
        (Contract("MES", 2024, 6), date(2024, 6, 21), date(2024, 6, 13)),
        # third Friday is Juneteenth (2026) / Juneteenth observed (2027): the SOQ and the
        # last trade move to the Thursday (CME last trade date 2027-06-17); the roll stays
        (Contract("ES", 2026, 6), date(2026, 6, 18), date(2026, 6, 11)),
        (Contract("ES", 2027, 6), date(2027, 6, 17), date(2027, 6, 10)),
    ],
)
def test_expiry_and_roll(contract: Contract, expiry: date, roll: date) -> None:
    assert contract.expiry == expiry
    assert contract.roll_date == roll
    assert roll.weekday() == 3  # a Thursday
    assert (third_friday(contract.year, contract.month) - roll).days == 8  # calendar days


def test_expiry_time_is_the_09_30_et_soq_and_matches_databentos_definition() -> None:
    """Databento's ESH1 definition record (GLBX.MDP3): expiration 2021-03-19 13:30 UTC,
    08:30 CDT on the third Friday; ESH4 expired 2024-03-15 at 13:30 UTC too (DST began
    2024-03-10), and a winter expiry is an hour later in UTC."""
    raw = (FIXTURES / "test_data.definition.dbn.zst").read_bytes()
    dec = dbn.DBNDecoder()
    dec.write(zstandard.ZstdDecompressor().decompressobj().decompress(raw))
    definition = dec.decode()[1]
    esh1 = parse_contract(definition.raw_symbol, as_of=date(2020, 12, 28))
    assert esh1 == Contract("ES", 2021, 3)
    assert esh1.expiry_ns == definition.expiration
    assert Contract("ES", 2024, 3).expiry_ns == pd.Timestamp("2024-03-15 13:30", tz="UTC").value
    assert Contract("ES", 2023, 12).expiry_ns == pd.Timestamp("2023-12-15 14:30", tz="UTC").value


def test_front_contract_around_the_march_2024_roll() -> None:
    assert front_contract("ES", date(2024, 3, 6)).symbol == "ESH4"
    assert front_contract("ES", date(2024, 3, 7)).symbol == "ESM4"
    assert front_contract("ES", date(2024, 3, 15)).symbol == "ESM4"  # expiry day
    assert front_contract("MES", date(2024, 12, 12)).symbol == "MESH5"


def test_front_contract_names_the_contracts_in_the_real_files() -> None:
    """The shipped files are ESH4 on 2023-12-26 (trade date), ESM4 on 2024-05-08 and
    ESU4 on 2024-07-02: each was the lead month then."""
    assert front_contract("ES", date(2023, 12, 26)).symbol == "ESH4"
    assert front_contract("ES", date(2024, 5, 8)).symbol == "ESM4"
    assert front_contract("ES", date(2024, 7, 2)).symbol == "ESU4"


def test_contract_schedule_2024() -> None:
    periods = contract_schedule("ES", date(2024, 1, 1), date(2024, 12, 31))
    assert [(p.contract.symbol, p.first, p.last) for p in periods] == [
        ("ESH4", date(2024, 1, 2), date(2024, 3, 6)),
        ("ESM4", date(2024, 3, 7), date(2024, 6, 12)),
        ("ESU4", date(2024, 6, 13), date(2024, 9, 11)),
        ("ESZ4", date(2024, 9, 12), date(2024, 12, 11)),
        ("ESH5", date(2024, 12, 12), date(2024, 12, 31)),
    ]
    for a, b in pairwise(periods):
        assert b.first == next_trading_date(a.last) == a.contract.roll_date
    assert all(is_trading_date(p.first) and is_trading_date(p.last) for p in periods)


def test_contract_schedule_edges() -> None:
    assert contract_schedule("ES", date(2024, 3, 29), date(2024, 3, 31)) == []  # no trade date
    assert contract_schedule("ES", date(2024, 3, 7), date(2024, 3, 7)) == [
        FrontPeriod(Contract("ES", 2024, 6), date(2024, 3, 7), date(2024, 3, 7))
    ]
    with pytest.raises(ValueError, match="after end"):
        contract_schedule("ES", date(2024, 3, 8), date(2024, 3, 7))
