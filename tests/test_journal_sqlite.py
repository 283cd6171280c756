"""The SQLite journal: what is written reads back the same, nothing is doubled, a bad or
corrupt file is refused by name, and a killed writer loses nothing it acknowledged."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from esml.decision.proposal import AccountState, TradingState
from esml.execution.orders import Fill, Order, OrderRole, OrderStatus, OrderType, Side
from esml.journal.base import DecisionRecord, Journal, SignalRecord
from esml.journal.sqlite import (
    SCHEMA_VERSION,
    JournalError,
    SQLiteJournal,
    StaleAccountStateError,
)

T0 = 1_709_566_200_000_000_000  # 2024-03-04 09:30:00 CT, in UTC ns


def bracket_orders() -> list[Order]:
    """An ES long entry with its exchange-held stop (8 ticks) and target (12 ticks)."""
    entry = Order(
        order_id="9001",
        client_id="esml-3f1c",
        symbol="ESH4",
        side=Side.BUY,
        qty=2,
        order_type=OrderType.MARKET,
        role=OrderRole.ENTRY,
        ts_ns=T0,
    )
    stop = Order(
        order_id="9002",
        client_id="esml-3f1c",
        symbol="ESH4",
        side=Side.SELL,
        qty=2,
        order_type=OrderType.STOP,
        role=OrderRole.STOP,
        price=4798.00,
        status=OrderStatus.WORKING,
        parent_id="9001",
        oco_id="9003",
        ts_ns=T0 + 1_000_000,
    )
    target = Order(
        order_id="9003",
        client_id="esml-3f1c",
        symbol="ESH4",
        side=Side.SELL,
        qty=2,
        order_type=OrderType.LIMIT,
        role=OrderRole.TARGET,
        price=4803.00,
        status=OrderStatus.WORKING,
        parent_id="9001",
        oco_id="9002",
        ts_ns=T0 + 1_000_000,
    )
    return [entry, stop, target]


def es_fill(fill_id: str, qty: int = 1, price: float = 4800.25, ts_ns: int = T0) -> Fill:
    return Fill(
        fill_id=fill_id,
        order_id="9001",
        client_id="esml-3f1c",
        symbol="ESH4",
        side=Side.BUY,
        qty=qty,
        price=price,
        commission=2.25 * qty,
        ts_ns=ts_ns,
    )


@pytest.fixture
def journal(tmp_path: Path) -> SQLiteJournal:
    j = SQLiteJournal(tmp_path / "runs" / "journal.sqlite")
    yield j
    j.close()


def test_in_memory_journal_for_tests() -> None:
    j: Journal = SQLiteJournal(":memory:")
    f = es_fill("f1")
    assert j.record_fill(f) and not j.record_fill(f)
    assert j.fills() == [f]


def test_everything_written_reads_back_the_same_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    signal_rec = SignalRecord(T0, "ESH4", "model", 0.21, 0.17, 0.62, 0.62, "gbt-20s@v3")
    approved = DecisionRecord(T0, "ESH4", "model", "Buy", 2, True, None, "")
    rejected = DecisionRecord(
        T0 + 5,
        "ESH4",
        "tradingview",
        "Sell",
        1,
        False,
        "daily_loss",
        "daily loss $1,512.50 reached the limit $1,500.00",
    )
    orders = bracket_orders()
    fills = [es_fill("f1", 1, 4800.25), es_fill("f2", 1, 4800.50, T0 + 2_000_000)]
    with SQLiteJournal(path) as j:
        j.record_signal(signal_rec)
        j.record_decision(approved)
        j.record_decision(rejected)
        for o in orders:
            j.record_order(o)
        assert [j.record_fill(f) for f in fills] == [True, True]
    with SQLiteJournal(path) as j:
        assert j.signals() == [signal_rec]
        assert j.decisions() == [approved, rejected]
        assert j.orders() == orders
        assert j.fills() == fills
        assert isinstance(j.orders()[1].status, OrderStatus)
        assert j.orders()[0].price is None and j.orders()[1].oco_id == "9003"
        assert j.orders_for_client("esml-3f1c") == orders
        assert j.orders_for_client("esml-other") == []


def test_numpy_numbers_from_event_arrays_are_stored_as_python_numbers(
    journal: SQLiteJournal,
) -> None:
    ts = np.array([T0], dtype=np.int64)[0]
    p = np.array([0.2, 0.1, 0.7], dtype=np.float32)
    journal.record_signal(SignalRecord(ts, "ESH4", "model", *p, p[2], "gbt-20s@v3"))
    journal.record_fill(es_fill("np1", qty=np.int64(2), price=np.float64(4800.5), ts_ns=ts))
    acct = AccountState("2024-03-04", position=np.int64(2), realized_pnl=np.float32(-25.0))
    journal.save_account_state("demo-1", acct)
    [s] = journal.signals()
    assert (s.ts_ns, s.p_up) == (T0, float(np.float32(0.7))) and type(s.ts_ns) is int
    assert journal.fills()[0].qty == 2
    assert journal.load_account_state("demo-1", "2024-03-04").position == 2


def test_file_is_in_wal_mode(journal: SQLiteJournal) -> None:
    with sqlite3.connect(journal.path) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert meta == (str(SCHEMA_VERSION),)


def test_order_updates_replace_the_state_and_keep_one_record(journal: SQLiteJournal) -> None:
    entry = bracket_orders()[0]
    journal.record_order(entry)
    entry.status = OrderStatus.FILLED
    entry.filled_qty = 2
    entry.avg_fill_price = 4800.375
    journal.record_order(entry)
    [stored] = journal.orders()
    assert stored.status is OrderStatus.FILLED
    assert (stored.filled_qty, stored.avg_fill_price) == (2, 4800.375)


def test_rejected_order_keeps_its_reason(journal: SQLiteJournal) -> None:
    entry = bracket_orders()[0]
    entry.status = OrderStatus.REJECTED
    entry.reject_reason = "Insufficient margin: requires $12,650.00"
    journal.record_order(entry)
    assert journal.orders()[0].reject_reason == "Insufficient margin: requires $12,650.00"


def test_a_different_order_under_a_known_id_is_refused(journal: SQLiteJournal) -> None:
    entry, stop, _ = bracket_orders()
    journal.record_order(entry)
    impostor = Order(**{**stop.__dict__, "order_id": entry.order_id})
    with pytest.raises(JournalError, match="refusing to overwrite"):
        journal.record_order(impostor)
    assert journal.orders() == [entry]


def test_a_duplicate_fill_is_recorded_once(journal: SQLiteJournal) -> None:
    f = es_fill("tv-881234")
    assert journal.record_fill(f) is True
    assert journal.record_fill(f) is False
    assert journal.record_fill(es_fill("tv-881234")) is False
    assert journal.fills() == [f]


def test_a_different_fill_under_a_known_id_is_refused(journal: SQLiteJournal) -> None:
    journal.record_fill(es_fill("tv-881234", price=4800.25))
    with pytest.raises(JournalError, match="tv-881234"):
        journal.record_fill(es_fill("tv-881234", price=4801.00))
    assert [f.price for f in journal.fills()] == [4800.25]


@pytest.mark.parametrize(
    "bad",
    [
        es_fill("z", qty=0),
        Fill("n", "9001", "c", "ESH4", Side.BUY, 1, float("nan"), 2.25, T0),
        Fill("c", "9001", "c", "ESH4", Side.BUY, 1, 4800.0, -2.25, T0),
        Fill("s", "9001", "c", "ESH4", "Long", 1, 4800.0, 2.25, T0),  # type: ignore[arg-type]
    ],
)
def test_a_bad_fill_is_refused_and_writes_nothing(journal: SQLiteJournal, bad: Fill) -> None:
    with pytest.raises(ValueError):
        journal.record_fill(bad)
    assert journal.fills() == []


def test_a_rejection_must_name_its_gate(journal: SQLiteJournal) -> None:
    with pytest.raises(ValueError, match="gate"):
        journal.record_decision(DecisionRecord(T0, "ESH4", "model", "Buy", 1, False, None, "no"))
    assert journal.decisions() == []


def test_account_state_round_trips_and_rolls_to_a_new_day(journal: SQLiteJournal) -> None:
    fresh = journal.load_account_state("demo-1", "2024-03-04")
    assert fresh == AccountState(trading_day="2024-03-04")
    fresh.position = 2
    fresh.realized_pnl = -412.50
    fresh.state = TradingState.REDUCING
    journal.save_account_state("demo-1", fresh)
    assert fresh.version == 1
    same_day = journal.load_account_state("demo-1", "2024-03-04")
    assert same_day == AccountState("2024-03-04", 2, -412.50, TradingState.REDUCING, 1)
    next_day = journal.load_account_state("demo-1", "2024-03-05")
    assert next_day == AccountState("2024-03-05", 2, 0.0, TradingState.REDUCING, 1)
    assert journal.load_account_state("demo-2", "2024-03-05").version == 0


def test_a_stale_account_state_is_not_saved(journal: SQLiteJournal) -> None:
    a = journal.load_account_state("demo-1", "2024-03-04")
    b = journal.load_account_state("demo-1", "2024-03-04")
    a.realized_pnl = -1_512.50
    a.state = TradingState.HALTED
    journal.save_account_state("demo-1", a)
    b.position = 1
    with pytest.raises(StaleAccountStateError, match="version 1"):
        journal.save_account_state("demo-1", b)
    assert b.version == 0
    stored = journal.load_account_state("demo-1", "2024-03-04")
    assert (stored.position, stored.realized_pnl, stored.state) == (0, -1_512.50, "HALTED")


def test_garbage_file_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    path.write_bytes(b"this is a CSV,not a journal\n" * 200)
    with pytest.raises(JournalError, match=r"journal\.sqlite.*corrupt or not an SQLite"):
        SQLiteJournal(path)
    assert path.read_bytes() == b"this is a CSV,not a journal\n" * 200


def test_damaged_pages_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with SQLiteJournal(path) as j:
        for i in range(20):
            j.record_fill(es_fill(f"f{i}", ts_ns=T0 + i))
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 6 * page
    data[3 * page : 5 * page] = bytes(range(256)) * (2 * page // 256)
    path.write_bytes(bytes(data))
    with pytest.raises(JournalError, match=str(path)):
        SQLiteJournal(path)


def test_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    SQLiteJournal(path).close()
    with sqlite3.connect(path) as c:
        c.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(JournalError, match=r"schema version 99.*reads version 1"):
        SQLiteJournal(path)


def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    c = sqlite3.connect(path)
    with c:
        c.execute("CREATE TABLE prices (ts INTEGER, px REAL)")
        c.execute("INSERT INTO prices VALUES (1525700000, 2670.5)")
    c.close()
    before = path.read_bytes()
    with pytest.raises(JournalError, match="not an esml journal"):
        SQLiteJournal(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


_WRITER = textwrap.dedent(
    """
    import sys
    from esml.execution.orders import Fill, Side
    from esml.journal.sqlite import SQLiteJournal

    j = SQLiteJournal(sys.argv[1])
    for i in range(100_000):
        f = Fill(f"f{i}", "9001", "esml-3f1c", "ESH4", Side.BUY, 1 + i % 3,
                 4800.0 + 0.25 * (i % 40), 2.25 * (1 + i % 3), 1_709_566_200_000_000_000 + i)
        j.record_fill(f)
        print(f.fill_id, flush=True)
    """
)


def test_a_killed_writer_loses_no_acknowledged_fill_and_leaves_no_partial_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    acked = [proc.stdout.readline().strip() for _ in range(60)]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with SQLiteJournal(path) as j:
        fills = j.fills()
    ids = [f.fill_id for f in fills]
    assert ids[: len(acked)] == acked
    for n, f in enumerate(fills):
        assert f == Fill(
            f"f{n}",
            "9001",
            "esml-3f1c",
            "ESH4",
            Side.BUY,
            1 + n % 3,
            4800.0 + 0.25 * (n % 40),
            2.25 * (1 + n % 3),
            T0 + n,
        )
