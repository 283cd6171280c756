"""The local journal: one SQLite file per run, so a crash loses nothing that was recorded.

Every write is its own IMMEDIATE transaction on a WAL database with synchronous=FULL:
once a `record_*` call returns, the record survives a process crash or power loss, and a
crash during a write leaves the previous state, never half a record.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from types import TracebackType

import numpy as np

from esml.decision.proposal import AccountState, TradingState
from esml.execution.orders import Fill, Order, OrderRole, OrderStatus, OrderType, Side
from esml.journal.base import DecisionRecord, JournalConflict, JournalError, SignalRecord

SCHEMA_VERSION = 1

_SIDES = "('Buy', 'Sell')"

_SCHEMA = f"""
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ns INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    source TEXT NOT NULL,
    p_down REAL NOT NULL,
    p_flat REAL NOT NULL,
    p_up REAL NOT NULL,
    confidence REAL NOT NULL,
    model TEXT NOT NULL
);
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ns INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    source TEXT NOT NULL,
    side TEXT NOT NULL,
    qty INTEGER NOT NULL,
    approved INTEGER NOT NULL CHECK (approved IN (0, 1)),
    gate TEXT,
    reason TEXT NOT NULL,
    CHECK (approved = 1 OR gate IS NOT NULL)
);
CREATE TABLE orders (
    order_id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN {_SIDES}),
    qty INTEGER NOT NULL CHECK (qty > 0),
    order_type TEXT NOT NULL,
    role TEXT NOT NULL,
    price REAL,
    status TEXT NOT NULL,
    filled_qty INTEGER NOT NULL CHECK (filled_qty >= 0 AND filled_qty <= qty),
    avg_fill_price REAL NOT NULL,
    parent_id TEXT,
    oco_id TEXT,
    ts_ns INTEGER NOT NULL,
    reject_reason TEXT NOT NULL
);
CREATE INDEX orders_by_client_id ON orders (client_id);
CREATE TABLE fills (
    fill_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN {_SIDES}),
    qty INTEGER NOT NULL CHECK (qty > 0),
    price REAL NOT NULL,
    commission REAL NOT NULL CHECK (commission >= 0),
    ts_ns INTEGER NOT NULL,
    role TEXT NOT NULL
);
CREATE TABLE risk_state (
    account TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    state_json TEXT NOT NULL
);
"""

_ORDER_COLUMNS = tuple(f.name for f in fields(Order))
_FILL_COLUMNS = tuple(f.name for f in fields(Fill))
_SIGNAL_COLUMNS = tuple(f.name for f in fields(SignalRecord))
_DECISION_COLUMNS = tuple(f.name for f in fields(DecisionRecord))
_ACCOUNT_FIELDS = tuple(f.name for f in fields(AccountState))
_ACCOUNT_REQUIRED = ("trading_day", "position", "realized_pnl", "state", "version")

# Fields that name an order; a record with the same id but a different value here is a
# different order, and overwriting it would lose the first one.
_ORDER_IDENTITY = ("client_id", "symbol", "side", "role", "parent_id")


class StaleAccountStateError(JournalError):
    """Someone saved the account state since it was loaded: reload, re-check, retry."""


class SQLiteJournal:
    """`esml.journal.base.Journal` on SQLite, plus the per-account risk state.

    The risk state uses the same optimistic lock as the risk Lambda's DynamoDB item: a
    save succeeds only when the stored version is the one that was loaded.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        except sqlite3.Error as e:
            raise JournalError(f"cannot open journal {self.path}: {e}") from e
        try:
            self._open_schema()
        except sqlite3.DatabaseError as e:
            self._conn.close()
            raise JournalError(
                f"journal {self.path} is corrupt or not an SQLite database: {e}"
            ) from e
        except JournalError:
            self._conn.close()
            raise

    def _open_schema(self) -> None:
        """Checks the file before changing anything in it; a new file gets the schema.
        IMMEDIATE makes a second process opening the same new file wait, not re-create."""
        check = self._conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise JournalError(f"journal {self.path} is corrupt: integrity check says {check}")
        with self._transaction() as c:
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
            if tables:
                self._check_version(tables)
            else:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")

    def _check_version(self, tables: set[str]) -> None:
        if "meta" not in tables:
            raise JournalError(f"{self.path} is an SQLite database but not an esml journal")
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None or row[0] != str(SCHEMA_VERSION):
            found = "none" if row is None else row[0]
            raise JournalError(
                f"journal {self.path} has schema version {found}; this esml reads version "
                f"{SCHEMA_VERSION}. Use a new journal file or the esml version that wrote it."
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write, all or nothing: IMMEDIATE takes the write lock before reading."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SQLiteJournal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- signals and decisions: append-only, they have no natural key ---

    def record_signal(self, s: SignalRecord) -> None:
        _require_finite("signal probabilities", s.p_down, s.p_flat, s.p_up, s.confidence)
        with self._transaction() as c:
            c.execute(_insert_sql("signals", _SIGNAL_COLUMNS), _values(s, _SIGNAL_COLUMNS))

    def record_decision(self, d: DecisionRecord) -> None:
        if not d.approved and not d.gate:
            raise ValueError("a rejected decision must name the gate that rejected it")
        row = dict(zip(_DECISION_COLUMNS, _values(d, _DECISION_COLUMNS), strict=True))
        row["side"] = str(d.side)
        row["approved"] = int(d.approved)
        with self._transaction() as c:
            c.execute(_insert_sql("decisions", _DECISION_COLUMNS), tuple(row.values()))

    def signals(self) -> list[SignalRecord]:
        cols = ", ".join(_SIGNAL_COLUMNS)
        rows = self._conn.execute(f"SELECT {cols} FROM signals ORDER BY id")
        return [SignalRecord(*r) for r in rows]

    def decisions(self) -> list[DecisionRecord]:
        cols = ", ".join(_DECISION_COLUMNS)
        rows = self._conn.execute(f"SELECT {cols} FROM decisions ORDER BY id").fetchall()
        out = []
        for r in rows:
            d = dict(zip(_DECISION_COLUMNS, r, strict=True))
            d["approved"] = bool(d["approved"])
            out.append(DecisionRecord(**d))
        return out

    # --- orders: upserted by order id ---

    def record_order(self, o: Order) -> None:
        """Insert the order, or update its state. Refuses to overwrite a different order
        that happens to carry the same id."""
        row = _order_row(o)
        with self._transaction() as c:
            cols = ", ".join(_ORDER_IDENTITY)
            old = c.execute(f"SELECT {cols} FROM orders WHERE order_id = ?", (o.order_id,))
            stored = old.fetchone()
            if stored is not None:
                new = tuple(row[k] for k in _ORDER_IDENTITY)
                if tuple(stored) != new:
                    was = dict(zip(_ORDER_IDENTITY, stored, strict=True))
                    now = dict(zip(_ORDER_IDENTITY, new, strict=True))
                    raise JournalConflict(
                        f"order {o.order_id} in {self.path} is {was}; "
                        f"refusing to overwrite it with {now}"
                    )
            updates = ", ".join(f"{k} = excluded.{k}" for k in _ORDER_COLUMNS[1:])
            c.execute(
                f"{_insert_sql('orders', _ORDER_COLUMNS)} "
                f"ON CONFLICT (order_id) DO UPDATE SET {updates}",
                tuple(row.values()),
            )

    def orders(self) -> list[Order]:
        return self._select_orders("", ())

    def orders_for_client(self, client_id: str) -> list[Order]:
        """Orders placed for one intent (entry and bracket legs): how a restarted engine
        learns that an intent was already sent before it sends it again."""
        return self._select_orders("WHERE client_id = ?", (client_id,))

    def _select_orders(self, where: str, args: tuple[object, ...]) -> list[Order]:
        cols = ", ".join(_ORDER_COLUMNS)
        rows = self._conn.execute(f"SELECT {cols} FROM orders {where} ORDER BY rowid", args)
        return [_order_from_row(dict(zip(_ORDER_COLUMNS, r, strict=True))) for r in rows]

    # --- fills: inserted once by fill id ---

    def record_fill(self, f: Fill) -> bool:
        """True when new. A repeat of a recorded fill is ignored; a different fill under an
        id already recorded is an error, since one of the two would be lost."""
        row = _fill_row(f)
        with self._transaction() as c:
            cur = c.execute(
                f"{_insert_sql('fills', _FILL_COLUMNS)} ON CONFLICT (fill_id) DO NOTHING",
                tuple(row.values()),
            )
            if cur.rowcount == 1:
                return True
            cols = ", ".join(_FILL_COLUMNS)
            stored = c.execute(f"SELECT {cols} FROM fills WHERE fill_id = ?", (f.fill_id,))
            old = _fill_from_row(dict(zip(_FILL_COLUMNS, stored.fetchone(), strict=True)))
        if old != _fill_from_row(row):
            raise JournalConflict(
                f"fill {f.fill_id} is already in {self.path} as {old}; refusing {f}"
            )
        return False

    def fills(self) -> list[Fill]:
        """In the order they were recorded (the order the broker reported them)."""
        cols = ", ".join(_FILL_COLUMNS)
        rows = self._conn.execute(f"SELECT {cols} FROM fills ORDER BY rowid")
        return [_fill_from_row(dict(zip(_FILL_COLUMNS, r, strict=True))) for r in rows]

    # --- per-account risk state ---

    def load_account_state(self, account: str, trading_day: str) -> AccountState:
        """The stored state rolled to `trading_day` (a new day restores the loss budget;
        the position carries), or a fresh one for an account never saved."""
        row = self._conn.execute(
            "SELECT version, state_json FROM risk_state WHERE account = ?", (account,)
        ).fetchone()
        if row is None:
            return AccountState(trading_day=trading_day)
        state = _account_from_json(row[1], account, self.path)
        state.version = row[0]
        state.roll_to(trading_day)
        return state

    def save_account_state(self, account: str, state: AccountState) -> None:
        """Write `state` if nobody saved since it was loaded, then bump `state.version`.

        Raises StaleAccountStateError otherwise, leaving both copies unchanged.
        """
        if not state.trading_day:
            raise ValueError("account state needs a trading day")
        _require_finite("account realized P&L", state.realized_pnl)
        payload = {k: _plain(getattr(state, k)) for k in _ACCOUNT_FIELDS}
        payload["state"] = TradingState(state.state).value
        payload["version"] = state.version + 1
        with self._transaction() as c:
            row = c.execute(
                "SELECT version FROM risk_state WHERE account = ?", (account,)
            ).fetchone()
            stored = 0 if row is None else row[0]
            if stored != state.version:
                raise StaleAccountStateError(
                    f"account {account!r} in {self.path} is at version {stored}, this state "
                    f"was loaded at version {state.version}: reload it and decide again"
                )
            c.execute(
                "INSERT INTO risk_state (account, version, state_json) VALUES (?, ?, ?) "
                "ON CONFLICT (account) DO UPDATE SET version = excluded.version, "
                "state_json = excluded.state_json",
                (account, payload["version"], json.dumps(payload, sort_keys=True)),
            )
        state.version += 1


def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"


def _values(record: object, columns: tuple[str, ...]) -> tuple[object, ...]:
    return tuple(_plain(getattr(record, c)) for c in columns)


def _plain(v: object) -> object:
    """Numpy scalars (a timestamp from an event array, a float32 probability) as the
    Python numbers sqlite3 and json can store."""
    return v.item() if isinstance(v, np.generic) else v


def _require_finite(what: str, *values: float) -> None:
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} must be finite numbers, got {values}")


def _order_row(o: Order) -> dict[str, object]:
    """Validates and normalises an order; a bad one raises before anything is written."""
    if o.qty <= 0 or not 0 <= o.filled_qty <= o.qty:
        raise ValueError(f"order {o.order_id}: qty {o.qty}, filled {o.filled_qty} is impossible")
    if o.price is not None:
        _require_finite(f"order {o.order_id} price", o.price)
    _require_finite(f"order {o.order_id} average fill price", o.avg_fill_price)
    row = dict(zip(_ORDER_COLUMNS, _values(o, _ORDER_COLUMNS), strict=True))
    row["side"] = Side(o.side).value
    row["order_type"] = OrderType(o.order_type).value
    row["role"] = OrderRole(o.role).value
    row["status"] = OrderStatus(o.status).value
    return row


def _order_from_row(r: dict[str, object]) -> Order:
    r["side"] = Side(r["side"])
    r["order_type"] = OrderType(r["order_type"])
    r["role"] = OrderRole(r["role"])
    r["status"] = OrderStatus(r["status"])
    return Order(**r)  # type: ignore[arg-type]


def _fill_row(f: Fill) -> dict[str, object]:
    if f.qty <= 0:
        raise ValueError(f"fill {f.fill_id}: quantity must be positive, got {f.qty}")
    _require_finite(f"fill {f.fill_id} price and commission", f.price, f.commission)
    if f.commission < 0:
        raise ValueError(f"fill {f.fill_id}: commission cannot be negative ({f.commission})")
    row = dict(zip(_FILL_COLUMNS, _values(f, _FILL_COLUMNS), strict=True))
    row["side"] = Side(f.side).value
    row["role"] = OrderRole(f.role).value
    return row


def _fill_from_row(r: dict[str, object]) -> Fill:
    r = {**r, "side": Side(r["side"]), "role": OrderRole(r["role"])}
    return Fill(**r)  # type: ignore[arg-type]


def _account_from_json(text: str, account: str, path: str) -> AccountState:
    try:
        data = json.loads(text)
        missing = [k for k in _ACCOUNT_REQUIRED if k not in data]
        if missing:
            raise KeyError(", ".join(missing))
        values = {k: data[k] for k in _ACCOUNT_FIELDS if k in data}  # newer fields default
        values["state"] = TradingState(values["state"])
    except (ValueError, KeyError, TypeError) as e:
        raise JournalError(f"risk state of account {account!r} in {path} is unreadable: {e}") from e
    return AccountState(**values)
