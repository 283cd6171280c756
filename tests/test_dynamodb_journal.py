"""DynamoDBJournal on moto tables with the CDK's key schemas."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from esml.execution.orders import Fill, Order, OrderRole, OrderStatus, OrderType, Side
from esml.journal.base import DecisionRecord, Journal, SignalRecord
from esml.journal.dynamodb import DynamoDBJournal, JournalConflict
from tests.aws_fixtures import FILLS_TABLE, ORDERS_TABLE, all_items, create_tables

TS = 1_741_361_405_000_000_000  # 2025-03-07 15:30:05 UTC


@pytest.fixture
def tables(aws: None) -> dict[str, Any]:
    return create_tables(ORDERS_TABLE, FILLS_TABLE)


@pytest.fixture
def journal(tables: dict[str, Any]) -> DynamoDBJournal:
    return DynamoDBJournal(tables[ORDERS_TABLE], tables[FILLS_TABLE])


def entry(**changes: Any) -> Order:
    o = Order(
        order_id="371092551",
        client_id="esml-5b1f0c9e2d7a4c3b8e6f1a20",
        symbol="ESH5",
        side=Side.BUY,
        qty=1,
        order_type=OrderType.MARKET,
        role=OrderRole.ENTRY,
        status=OrderStatus.WORKING,
        ts_ns=TS,
    )
    return dataclasses.replace(o, **changes)


def fill(**changes: Any) -> Fill:
    f = Fill(
        fill_id="9182736455",
        order_id="371092551",
        client_id="esml-5b1f0c9e2d7a4c3b8e6f1a20",
        symbol="ESH5",
        side=Side.BUY,
        qty=1,
        price=5772.25,
        commission=2.25,
        ts_ns=TS + 180_000_000,
    )
    return dataclasses.replace(f, **changes)


def test_it_is_a_journal(journal: DynamoDBJournal) -> None:
    def accepts(j: Journal) -> Journal:
        return j

    assert accepts(journal) is journal


def test_a_fill_is_never_doubled(journal: DynamoDBJournal, tables: dict[str, Any]) -> None:
    assert journal.record_fill(fill()) is True
    assert journal.record_fill(fill()) is False
    assert journal.fills() == [fill()]
    assert len(all_items(tables[FILLS_TABLE])) == 1


def test_a_different_fill_under_a_recorded_id_is_refused(journal: DynamoDBJournal) -> None:
    journal.record_fill(fill())
    with pytest.raises(JournalConflict, match="9182736455"):
        journal.record_fill(fill(price=5772.50))
    assert journal.fills() == [fill()]


def test_fills_come_back_oldest_first(journal: DynamoDBJournal) -> None:
    later = fill(fill_id="9182736470", ts_ns=TS + 9_000_000_000, side=Side.SELL, price=5775.25)
    journal.record_fill(later)
    journal.record_fill(fill())
    assert [f.fill_id for f in journal.fills()] == ["9182736455", "9182736470"]


def test_bad_fill_writes_nothing(journal: DynamoDBJournal) -> None:
    with pytest.raises(ValueError, match="finite"):
        journal.record_fill(fill(price=float("nan")))
    with pytest.raises(ValueError, match="positive"):
        journal.record_fill(fill(qty=0))
    assert journal.fills() == []


def test_order_insert_then_status_update(journal: DynamoDBJournal) -> None:
    journal.record_order(entry())
    journal.record_order(entry(status=OrderStatus.FILLED, filled_qty=1, avg_fill_price=5772.25))
    assert journal.orders() == [
        entry(status=OrderStatus.FILLED, filled_qty=1, avg_fill_price=5772.25)
    ]


def test_a_late_working_status_cannot_resurrect_a_filled_order(journal: DynamoDBJournal) -> None:
    journal.record_order(entry(status=OrderStatus.FILLED, filled_qty=1, avg_fill_price=5772.25))
    journal.record_order(entry(status=OrderStatus.WORKING))
    (stored,) = journal.orders()
    assert stored.status is OrderStatus.FILLED and stored.avg_fill_price == 5772.25


def test_a_different_order_under_the_same_client_id_is_refused(journal: DynamoDBJournal) -> None:
    journal.record_order(entry())
    with pytest.raises(JournalConflict):
        journal.record_order(entry(side=Side.SELL))
    with pytest.raises(JournalConflict):
        journal.record_order(entry(order_id="371099999"))
    assert journal.orders() == [entry()]


def test_claim_makes_one_item_per_client_id(
    journal: DynamoDBJournal, tables: dict[str, Any]
) -> None:
    pending = entry(order_id="", status=OrderStatus.PENDING)
    assert journal.claim(pending, account="primary", reason="alert") is None
    assert journal.claim(pending, account="primary", reason="alert again") == pending
    (item,) = all_items(tables[ORDERS_TABLE])
    assert item["reason"] == "alert"

    journal.record_order(entry())  # the broker's id arrives: same item, context kept
    (item,) = all_items(tables[ORDERS_TABLE])
    assert item["order_id"] == "371092551" and item["account"] == "primary"


def test_decisions_and_signals_share_the_orders_table(
    journal: DynamoDBJournal, tables: dict[str, Any]
) -> None:
    approved = DecisionRecord(TS, "ESH5", "tradingview", "Buy", 1, True, None, "")
    rejected = DecisionRecord(
        TS, "ESH5", "tradingview", "Buy", 1, False, "max_position", "position would be +2"
    )
    signal = SignalRecord(TS, "ESH5", "model", 0.21, 0.17, 0.62, 0.62, "es_direction_20s")
    for record in (approved, rejected, approved):
        journal.record_decision(record)
    journal.record_signal(signal)
    journal.record_signal(signal)
    journal.record_order(entry())

    decisions = journal.decisions()
    assert len(decisions) == 2 and set(decisions) == {approved, rejected}  # repeat is one
    assert journal.signals() == [signal]
    assert journal.orders() == [entry()]
    keys = sorted(i["client_id"] for i in all_items(tables[ORDERS_TABLE]))
    assert keys[0].startswith("decision#") and keys[2].startswith("esml-")
    assert keys[3].startswith("signal#") and len(keys) == 4


def test_a_rejected_decision_must_name_its_gate(journal: DynamoDBJournal) -> None:
    with pytest.raises(ValueError, match="gate"):
        journal.record_decision(DecisionRecord(TS, "ESH5", "model", "Buy", 1, False, None, "x"))
    assert journal.decisions() == []
