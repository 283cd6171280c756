"""The monitor reads the AWS journal (DynamoDB, through moto) exactly as it reads a local
SQLite one: the same records give the same page. An open long position shows its working
stop and target and its open P&L."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

from esml.execution.orders import Fill, Order, OrderRole, OrderStatus, OrderType, Side
from esml.journal.base import DecisionRecord, SignalRecord
from esml.journal.dynamodb import DynamoDBJournal
from esml.journal.sqlite import SQLiteJournal
from esml.monitor.source import DynamoDBSource, SQLiteSource
from esml.monitor.state import monitor_state
from tests.aws_fixtures import FILLS_TABLE, ORDERS_TABLE, create_tables

TS = 1_703_545_200_000_000_000  # 2023-12-25 23:00 UTC, the real file's hour
SEC = 1_000_000_000


def _records() -> tuple[list[Order], list[Fill], list[SignalRecord], list[DecisionRecord]]:
    """One long round trip closed at its target, then a second entry still open."""
    def order(oid: str, role: OrderRole, side: Side, kind: OrderType, status: OrderStatus,
              price: float | None, t: int, parent: str | None = None) -> Order:  # fmt: skip
        filled = 1 if status is OrderStatus.FILLED else 0
        return Order(oid, f"c-{oid}", "ESH4", side, 1, kind, role, price, status, filled,
                     0.0, parent, None, TS + t * SEC)  # fmt: skip

    entry, stop, target = OrderRole.ENTRY, OrderRole.STOP, OrderRole.TARGET
    buy, sell, market, limit = Side.BUY, Side.SELL, OrderType.MARKET, OrderType.LIMIT
    filled, working = OrderStatus.FILLED, OrderStatus.WORKING
    orders = [
        order("1", entry, buy, market, filled, None, 10),
        order("2", stop, sell, OrderType.STOP, OrderStatus.CANCELLED, 4806.0, 10, "1"),
        order("3", target, sell, limit, filled, 4808.0, 10, "1"),
        order("4", entry, buy, market, filled, None, 200),
        order("5", stop, sell, OrderType.STOP, working, 4805.5, 200, "4"),
        order("6", target, sell, limit, working, 4809.0, 200, "4"),
    ]  # fmt: skip
    fills = [
        Fill("f1", "1", "c-1", "ESH4", Side.BUY, 1, 4807.0, 2.25, TS + 10 * SEC, OrderRole.ENTRY),
        Fill("f2", "3", "c-3", "ESH4", Side.SELL, 1, 4808.0, 2.25, TS + 90 * SEC, OrderRole.TARGET),
        Fill("f3", "4", "c-4", "ESH4", Side.BUY, 1, 4807.5, 2.25, TS + 200 * SEC, OrderRole.ENTRY),
    ]  # fmt: skip
    signals = [SignalRecord(TS + t * SEC, "ESH4", "trees", 0.2, 0.1, 0.7, 0.7, "trees-v3")
               for t in (10, 150, 200)]  # fmt: skip
    decisions = [
        DecisionRecord(TS + 10 * SEC, "ESH4", "trees", "Buy", 1, True, None, "approved"),
        DecisionRecord(TS + 150 * SEC, "ESH4", "trees", "Buy", 1, False, "cooldown", "too soon"),
        DecisionRecord(TS + 200 * SEC, "ESH4", "trees", "Buy", 1, True, None, "approved"),
        DecisionRecord(TS + 200 * SEC, "ESH4", "execution", "Buy", 1, True, None, "plan {}"),
    ]  # fmt: skip
    return orders, fills, signals, decisions


def _write(journal: Any) -> None:
    orders, fills, signals, decisions = _records()
    for o in orders:
        journal.record_order(o)
    for f in fills:
        journal.record_fill(f)
    for s in signals:
        journal.record_signal(s)
    for d in decisions:
        journal.record_decision(d)


def _page(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in ("source", "health", "account")}


def test_dynamodb_and_sqlite_give_the_same_page(aws, tmp_path) -> None:
    tables = create_tables(ORDERS_TABLE, FILLS_TABLE)
    _write(DynamoDBJournal(tables[ORDERS_TABLE], tables[FILLS_TABLE]))
    with SQLiteJournal(tmp_path / "j.sqlite") as j:
        _write(j)
    aws_state = monitor_state(DynamoDBSource(tables[ORDERS_TABLE], tables[FILLS_TABLE]).read(), "a")
    local = monitor_state(SQLiteSource(tmp_path / "j.sqlite").read(), "l")
    assert _page(aws_state) == _page(local)
    s = local
    trades = [(t["entry"], t["exit"], t["exit_by"]) for t in s["trades"]]
    assert trades == [(4807.0, 4808.0, "target")]
    assert s["trades"][0]["net_pnl"] == pytest.approx(50.0 - 4.5)
    working = sorted((w["role"], w["price"]) for w in s["working"])
    assert working == [("stop", 4805.5), ("target", 4809.0)]
    pos = s["position"]
    assert (pos["qty"], pos["mark"], pos["marked_at"]) == (1, 4807.5, "the last fill")
    assert pos["open_pnl"] == pytest.approx(-2.25)  # marked at its own entry: the commission
    funnel = {f["stage"]: f["count"] for f in s["funnel"]}
    assert funnel == {"signals": 3, "approved": 2, "rejected by cooldown": 1}  # notes left out
    assert s["model"]["champion"] == "trees-v3" and s["signals"][0]["p_up"] == 0.7


def test_the_engine_status_record_fills_in_what_the_journal_lacks(tmp_path) -> None:
    """The engine's `status` meta record (esml.engine.status.Snapshot's fields plus broker,
    champion and last swap) gives the mark, the warming windows, data age and the broker."""
    path = tmp_path / "j.sqlite"
    with SQLiteJournal(path) as j:
        _write(j)
    status = {"mode": "live", "market_ns": TS + 230 * SEC, "last_price": 4808.25,
              "warming": ["bar_lstm"], "data_age_s": 0.4, "broker": "tradovate: connected",
              "champion": "bundle-20240315", "last_swap": "2024-03-15 14:02 UTC"}  # fmt: skip
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES ('status', ?)", (json.dumps(status),))
    s = monitor_state(SQLiteSource(path).read(), "l")
    pos = s["position"]
    assert (pos["mark"], pos["marked_at"]) == (4808.25, "the engine's last price")
    assert pos["open_pnl"] == pytest.approx((4808.25 - 4807.5) * 50 - 2.25)
    assert s["model"] == {"champion": "bundle-20240315", "champion_from": "status",
                          "warming": "bar_lstm", "last_swap": "2024-03-15 14:02 UTC"}  # fmt: skip
    h = s["health"]
    assert (h["mode"], h["data_age_s"], h["broker"]) == ("live", 0.4, "tradovate: connected")
    assert s["health"]["last_event_ns"] == TS + 230 * SEC
