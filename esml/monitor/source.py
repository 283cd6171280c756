"""Where the monitor reads an engine's journal from, read-only: a local SQLite journal or the
DynamoDB tables on AWS. Both give the same `JournalData`, so the page cannot tell them apart.

What the journal does not hold (the market price between fills, the data feed's age, the
broker connection, warming model windows) the engine may add as one JSON object under the
meta key `status` (fields of `esml.engine.status.Snapshot`, plus `broker`, `champion`,
`last_swap`); the monitor shows whichever of them it finds and says "not recorded" for
the rest.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from esml.execution.journaling import SOURCE as EXECUTION_NOTE
from esml.execution.orders import Fill, Order, OrderRole, OrderStatus, OrderType
from esml.execution.ports import DecisionRecord
from esml.journal.base import SignalRecord
from esml.market.side import Side

LATEST = 50  # signals and decisions shown; the funnel counts every decision


@dataclass(frozen=True)
class JournalData:
    orders: list[Order]
    fills: list[Fill]
    signals: list[SignalRecord]  # the latest LATEST, oldest first
    signal_count: int
    decisions: list[DecisionRecord]  # the latest LATEST gate verdicts, oldest first
    verdicts: dict[str, int]  # gate verdicts by outcome: "approved" or the rejecting gate
    account: dict[str, Any] | None  # the saved risk state (position, day P&L, trading state)
    status: dict[str, Any]  # the engine's `status` record; empty when it writes none
    written_s: float | None  # wall time of the journal's last write, where known


class JournalSource(Protocol):
    name: str

    def read(self) -> JournalData: ...


class JournalNotReady(RuntimeError):
    """The journal is not there (yet): the engine has not started writing."""


class SQLiteSource:
    """A local journal opened read-only (`mode=ro`): the monitor never takes a write lock,
    so the engine's writes are never held up."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = str(self.path)

    def read(self) -> JournalData:
        if not self.path.is_file():
            raise JournalNotReady(f"{self.path}: no journal yet")
        conn = sqlite3.connect(f"file:{self.path.resolve()}?mode=ro", uri=True, timeout=5.0)
        conn.row_factory = sqlite3.Row
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "orders" not in tables:
                raise JournalNotReady(f"{self.path}: the journal has no tables yet")
            return self._read(conn)
        except sqlite3.DatabaseError as e:
            raise JournalNotReady(f"{self.path}: {e}") from e
        finally:
            conn.close()

    def _read(self, conn: sqlite3.Connection) -> JournalData:
        orders = [_order(dict(r)) for r in conn.execute("SELECT * FROM orders ORDER BY rowid")]
        fills = [_fill(dict(r)) for r in conn.execute("SELECT * FROM fills ORDER BY rowid")]
        signals = [_record(SignalRecord, r) for r in conn.execute(
            "SELECT * FROM signals ORDER BY id DESC LIMIT ?", (LATEST,))][::-1]  # fmt: skip
        decisions = [_record(DecisionRecord, r) for r in conn.execute(
            "SELECT * FROM decisions WHERE source != ? ORDER BY id DESC LIMIT ?",
            (EXECUTION_NOTE, LATEST))][::-1]  # fmt: skip
        verdicts = dict(conn.execute(
            "SELECT CASE WHEN approved THEN 'approved' ELSE gate END, count(*) FROM decisions "
            "WHERE source != ? GROUP BY 1", (EXECUTION_NOTE,)))  # fmt: skip
        account = conn.execute("SELECT state_json FROM risk_state ORDER BY rowid LIMIT 1")
        row = account.fetchone()
        status = conn.execute("SELECT value FROM meta WHERE key = 'status'").fetchone()
        return JournalData(
            orders, fills, signals, conn.execute("SELECT count(*) FROM signals").fetchone()[0],
            decisions, verdicts, json.loads(row[0]) if row else None,
            json.loads(status[0]) if status else {}, self._written(),
        )  # fmt: skip

    def _written(self) -> float | None:
        """The newest of the database file and its write-ahead log."""
        times = [p.stat().st_mtime for p in (self.path, Path(f"{self.path}-wal")) if p.exists()]
        return max(times) if times else None


class DynamoDBSource:
    """The AWS journal through `esml.journal.dynamodb.DynamoDBJournal`'s read methods (table
    scans): nothing is written. Poll it every few seconds, not every second."""

    def __init__(self, orders_table: Any, fills_table: Any) -> None:
        from esml.journal.dynamodb import DynamoDBJournal

        self.journal = DynamoDBJournal(orders_table, fills_table)
        self.name = f"dynamodb:{orders_table.name},{fills_table.name}"

    def read(self) -> JournalData:
        signals = sorted(self.journal.signals(), key=lambda s: s.ts_ns)
        decisions = sorted((d for d in self.journal.decisions() if d.source != EXECUTION_NOTE),
                           key=lambda d: d.ts_ns)  # fmt: skip
        verdicts: dict[str, int] = {}
        for d in decisions:
            key = "approved" if d.approved else str(d.gate)
            verdicts[key] = verdicts.get(key, 0) + 1
        return JournalData(
            sorted(self.journal.orders(), key=lambda o: o.ts_ns),
            sorted(self.journal.fills(), key=lambda f: f.ts_ns),
            signals[-LATEST:], len(signals), decisions[-LATEST:], verdicts, None, {},
            time.time(),
        )  # fmt: skip


def _order(r: dict[str, Any]) -> Order:
    r.update(side=Side(r["side"]), order_type=OrderType(r["order_type"]),
             role=OrderRole(r["role"]), status=OrderStatus(r["status"]))  # fmt: skip
    return Order(**r)


def _fill(r: dict[str, Any]) -> Fill:
    r.update(side=Side(r["side"]), role=OrderRole(r["role"]))
    return Fill(**r)


def _record(cls: type, row: sqlite3.Row) -> Any:
    names = {f.name for f in fields(cls)}
    values = {k: row[k] for k in row.keys() if k in names}  # noqa: SIM118 (sqlite3.Row)
    if "approved" in values:
        values["approved"] = bool(values["approved"])
    return cls(**values)
