"""LOBSTER files (NASDAQ TotalView-ITCH books rebuilt by lobsterdata.com) into esml events.

Why: a LOBSTER day comes with its own answer. The message file lists every order event that
changed the requested top N levels; the orderbook file holds those N levels after each
message. Replaying our events through esml's L3 book (`esml.data.book`) and comparing with
that file after every message, at every level, proves the book against an outside truth.

What the message file cannot tell, and how it is filled in (always counted, never hidden):
- the book resting at 09:30, placed before the file starts: seeded from the orderbook
  file's first row with the first message undone, one aggregate order per level;
- orders placed, cut or cancelled while their price was outside the requested levels
  (LOBSTER leaves those messages out): when such a price comes into view (beyond the
  previous row's deepest level) its size is read off the orderbook file, a *reveal*;
- a message naming an order the file never added acts on the aggregate at its price;
- which order at a level an unseen loss belonged to: guessed (orders the file never names
  again first, then the aggregate), and moved to the right order when a later message
  shows the guess wrong (a *re-attribution*; it uses the message file only).
A difference at a level that was already in view cannot come from hidden depth: it is a
mismatch. It is repaired from the truth (so one fault is counted once, not ever after),
flagged F_MAYBE_BAD_BOOK, and counted.

Events: prices are int64 fixed point (1e-9 USD: LOBSTER's dollars*1e4 times 1e5), tick one
cent; times are UTC ns from LOBSTER's seconds after New York midnight. Per message: a
submission is an ADD; a partial cancel or a deletion a CANCEL of the size removed; a visible
execution a TRADE (aggressor side) + FILL (resting side) + CANCEL; a hidden execution a
TRADE only (it never touched the visible book); a halt marker an action-N record (its kind,
-1 halt / 0 quoting / 1 resume, stays in `LobsterDay.price`). The last record of each
message carries F_LAST and `sequence` is the message's line. Records esml inferred rather
than read (the seed, reveals, re-attributions) carry F_MBP; aggregates have order ids from
AGGREGATE_ID_BASE up, so they never collide with an exchange order id.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from numba import njit

from esml.data.book import M_BASE, M_ERROR, M_TICK, BookState, apply_event, l2_levels
from esml.data.dbn import DataFileError
from esml.market.events import (
    ADD,
    ASK,
    BID,
    CANCEL,
    CLEAR,
    F_LAST,
    F_MAYBE_BAD_BOOK,
    F_MBP,
    F_SNAPSHOT,
    FILL,
    MODIFY,
    NO_SIDE,
    NONE,
    TRADE,
    UNDEF_PRICE,
    empty_events,
)
from esml.market.instruments import PRICE_SCALE

SUBMIT, PARTIAL_CANCEL, DELETE, EXECUTE, EXECUTE_HIDDEN, HALT = 1, 2, 3, 4, 5, 7
_KINDS = (SUBMIT, PARTIAL_CANCEL, DELETE, EXECUTE, EXECUTE_HIDDEN, HALT)
_RECORDS_PER_KIND = np.array([0, 1, 1, 1, 3, 1, 0, 1])  # index: LOBSTER event type

PUBLISHER_XNAS_ITCH = 2  # Databento's publisher id of Nasdaq TotalView-ITCH, LOBSTER's source
LOBSTER_PER_DOLLAR = 10_000
FIXED_PER_LOBSTER = PRICE_SCALE // LOBSTER_PER_DOLLAR
CENT = LOBSTER_PER_DOLLAR // 100  # one tick in LOBSTER price units
TICK_FIXED = CENT * FIXED_PER_LOBSTER
DUMMY_ASK = 9_999_999_999  # LOBSTER's price of an empty ask level
DUMMY_BID = -9_999_999_999
AGGREGATE_ID_BASE = 1 << 62
NEW_YORK = ZoneInfo("America/New_York")

_NAME = re.compile(
    r"(?P<ticker>[A-Z][A-Z0-9.]*)_(?P<day>\d{4}-\d{2}-\d{2})_(?P<start>\d+)_(?P<end>\d+)_"
    r"(?P<what>message|orderbook)_(?P<levels>\d+)\.csv$"
)
_DECIMAL = r"\d+(\.\d+)?"
_INTEGER = re.compile(r"-?\d+")


@dataclass(frozen=True)
class LobsterDay:
    """One LOBSTER message + orderbook file pair, as read (LOBSTER units, one row a line)."""

    source: str
    ticker: str
    day: date
    levels: int
    ts_ns: np.ndarray  # int64, UTC
    kind: np.ndarray  # int8: SUBMIT .. HALT
    order_id: np.ndarray  # int64
    size: np.ndarray  # int64, shares
    price: np.ndarray  # int64, dollars * 10_000 (a halt's kind for HALT)
    direction: np.ndarray  # int8: +1 buy limit order, -1 sell limit order
    book: np.ndarray  # int64 (rows, 4 * levels): ask px, ask sz, bid px, bid sz per level

    def __len__(self) -> int:
        return len(self.kind)

    def truth_l2(self) -> np.ndarray:
        """The orderbook file as esml L2: (rows, levels, 4) of (bid_px, bid_sz, ask_px,
        ask_sz) in fixed point, an empty level all zero, as `esml.data.book.l2_levels`."""
        b = self.book.reshape(len(self.book), self.levels, 4)
        out = np.zeros(b.shape, np.int64)
        bid_ok = b[:, :, 2] != DUMMY_BID
        ask_ok = b[:, :, 0] != DUMMY_ASK
        out[:, :, 0] = np.where(bid_ok, b[:, :, 2] * FIXED_PER_LOBSTER, 0)
        out[:, :, 1] = np.where(bid_ok, b[:, :, 3], 0)
        out[:, :, 2] = np.where(ask_ok, b[:, :, 0] * FIXED_PER_LOBSTER, 0)
        out[:, :, 3] = np.where(ask_ok, b[:, :, 1], 0)
        return out


@dataclass(frozen=True)
class LobsterReplay:
    """esml's events for a LOBSTER day and how exactly they reproduce its orderbook file."""

    source: str
    ticker: str
    levels: int
    messages: int
    seeded_levels: int  # aggregate levels of the opening book (orderbook row 1, message 1 undone)
    rows_exact: int  # rows matched by the message file alone (no truth read at that row)
    rows_revealed: int  # rows where depth coming into view was read off the truth
    levels_revealed: int
    lots_revealed_added: int
    lots_revealed_removed: int
    reattributions: int
    rows_forced: int  # rows where a level already in view disagreed
    rows_matching: int  # rows where a fresh esml book, fed `events`, equals the truth exactly
    first_mismatch_line: int  # 1-based message line; 0 when every row matches
    events: np.ndarray

    @property
    def mismatches(self) -> int:
        return self.messages - self.rows_matching

    @property
    def ok(self) -> bool:
        return self.mismatches == 0


# ---------------------------------------------------------------- reading


def read_lobster(path: str | Path) -> LobsterDay:
    """A LOBSTER sample zip, or a message CSV with its orderbook CSV beside it.

    Anything corrupt or truncated raises DataFileError naming the file and the line.
    """
    path = Path(path)
    if path.suffix.lower() == ".zip":
        (msg_name, msg), (ob_name, ob) = _zip_members(path)
        msg_label, ob_label = f"{path}:{msg_name}", f"{path}:{ob_name}"
    else:
        msg_name = path.name
        ob_path = path.with_name(path.name.replace("_message_", "_orderbook_"))
        msg, ob = _read_bytes(path), _read_bytes(ob_path)
        ob_name, msg_label, ob_label = ob_path.name, str(path), str(ob_path)
    fields = _name_fields(msg_name, msg_label, "message")
    if _name_fields(ob_name, ob_label, "orderbook") != fields:
        raise DataFileError(f"{ob_label}: does not belong to {msg_label}")
    ticker, day, levels = fields
    ts, kind, oid, size, price, direction = _parse_messages(msg, msg_label, day)
    book = _parse_orderbook(ob, ob_label, levels)
    if len(book) != len(kind):
        raise DataFileError(
            f"{ob_label}: {len(book)} rows, but {msg_label} has {len(kind)} messages: one "
            "is truncated"
        )
    return LobsterDay(msg_label, ticker, day, levels, ts, kind, oid, size, price, direction, book)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataFileError(f"{path}: cannot read: {e}") from e


def _zip_members(path: Path) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            found = {}
            for what in ("message", "orderbook"):
                hits = [n for n in names if f"_{what}_" in Path(n).name and n.endswith(".csv")]
                if len(hits) != 1:
                    raise DataFileError(f"{path}: expected one {what} CSV, found {hits}")
                found[what] = (Path(hits[0]).name, z.read(hits[0]))
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise DataFileError(f"{path}: corrupt or truncated zip: {e}") from e
    return found["message"], found["orderbook"]


def _name_fields(name: str, label: str, what: str) -> tuple[str, date, int]:
    m = _NAME.search(name)
    if not m or m["what"] != what:
        raise DataFileError(
            f"{label}: not a LOBSTER {what} file name (TICKER_YYYY-MM-DD_START_END_{what}_N.csv)"
        )
    levels = int(m["levels"])
    if levels < 1:
        raise DataFileError(f"{label}: {levels} levels")
    return m["ticker"], date.fromisoformat(m["day"]), levels


def _csv(data: bytes, label: str, n_fields: int, time_first: bool) -> pd.DataFrame:
    """The fast C parser; on any doubt the slow scan finds and names the bad line."""
    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    dtype = {0: str} if time_first else None
    try:
        df = pd.read_csv(io.BytesIO(data), header=None, dtype=dtype, engine="c")
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        _first_bad_line(data, label, n_fields, time_first)
        raise DataFileError(f"{label}: unreadable: {e}") from e
    ints = df.columns[1:] if time_first else df.columns
    if (
        df.shape != (n_lines, n_fields)
        or any(df[c].dtype != np.int64 for c in ints)
        or (time_first and df[0].isna().any())
    ):
        _first_bad_line(data, label, n_fields, time_first)
        raise DataFileError(f"{label}: expected {n_fields} integer fields on each line")
    return df


def _first_bad_line(data: bytes, label: str, n_fields: int, time_first: bool) -> None:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise DataFileError(f"{label}: empty file")
    for i, raw in enumerate(lines):
        text = raw.decode("ascii", "replace").rstrip("\r")
        fields = text.split(",")
        if len(fields) != n_fields:
            raise DataFileError(
                f"{label}: line {i + 1}: {len(fields)} fields, expected {n_fields}: {text!r}"
            )
        for j, f in enumerate(fields):
            ok = re.fullmatch(_DECIMAL, f) if (time_first and j == 0) else _INTEGER.fullmatch(f)
            if not ok:
                raise DataFileError(f"{label}: line {i + 1}: field {j + 1} is {f!r}: {text!r}")


def _fail(label: str, bad: np.ndarray, what: str) -> None:
    """Raise naming the first line flagged in `bad` (one flag per line)."""
    if bad.any():
        raise DataFileError(f"{label}: line {int(np.argmax(bad)) + 1}: {what}")


def _parse_messages(data: bytes, label: str, day: date) -> tuple[np.ndarray, ...]:
    df = _csv(data, label, 6, time_first=True)
    text = df[0]
    _fail(label, ~text.str.fullmatch(_DECIMAL).to_numpy(bool), "time is not seconds.decimal")
    parts = text.str.partition(".")
    frac = parts[2].str.ljust(10, "0")
    ns = (
        parts[0].astype(np.int64).to_numpy() * 1_000_000_000
        + frac.str[:9].astype(np.int64).to_numpy()
        + (frac.str[9].astype(np.int64).to_numpy() >= 5)  # to the nearest ns
    )
    _fail(label, np.diff(ns, prepend=ns[0]) < 0, "time goes backwards")
    midnight = datetime(day.year, day.month, day.day, tzinfo=NEW_YORK)
    ts = ns + int(midnight.timestamp()) * 1_000_000_000
    kind, oid, size, price, direction = (df[c].to_numpy(np.int64) for c in range(1, 6))
    _fail(label, ~np.isin(kind, _KINDS), f"event type not one of {_KINDS}")
    _fail(label, ~np.isin(direction, (-1, 1)), "direction not -1 or 1")
    halt = kind == HALT
    book_event = np.isin(kind, (SUBMIT, PARTIAL_CANCEL, DELETE, EXECUTE))
    _fail(label, ~halt & (size <= 0), "size not positive")
    _fail(label, book_event & (oid <= 0), "order id not positive")
    _fail(label, ~halt & (price <= 0), "price not positive")
    _fail(label, book_event & (price % CENT != 0), "price off the one-cent grid")
    _fail(
        label,
        halt & ((size != 0) | (oid != 0) | ~np.isin(price, (-1, 0, 1))),
        "halt marker (type 7) fields are not (0, 0, -1|0|1)",
    )
    return ts, kind.astype(np.int8), oid, size, price, direction.astype(np.int8)


def _parse_orderbook(data: bytes, label: str, levels: int) -> np.ndarray:
    book = np.ascontiguousarray(_csv(data, label, 4 * levels, time_first=False).to_numpy(np.int64))
    b = book.reshape(len(book), levels, 4)
    for side, (px, sz, dummy, step) in {
        "ask": (b[:, :, 0], b[:, :, 1], DUMMY_ASK, 1),
        "bid": (b[:, :, 2], b[:, :, 3], DUMMY_BID, -1),
    }.items():
        empty = px == dummy
        _fail(label, (empty & (sz != 0)).any(axis=1), f"empty {side} level with a size")
        _fail(
            label,
            (~empty & ((sz <= 0) | (px <= 0) | (px % CENT != 0))).any(axis=1),
            f"{side} level with a bad price or size",
        )
        _fail(label, (empty[:, :-1] & ~empty[:, 1:]).any(axis=1), f"{side} levels with a gap")
        ordered = (np.diff(px, axis=1) * step > 0) | empty[:, 1:]
        _fail(label, ~ordered.all(axis=1), f"{side} levels out of price order")
    return book


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class _Plan:
    """Everything the replay kernel needs, computed once from the message file."""

    events: np.ndarray  # opening snapshot + message records
    holder: np.ndarray  # per record: who it acts on (known order k, or K + aggregate), -1 none
    rec_kind: np.ndarray  # per record: LOBSTER type of its message (0 in the snapshot)
    known: np.ndarray  # (4, K): side (0 bid, 1 ask), grid index, last line index, order id
    n_grid: int
    tick_lo: int  # cents of grid index 0
    seeded_levels: int


def _grid(day: LobsterDay) -> tuple[int, int]:
    on_book = np.isin(day.kind, (SUBMIT, PARTIAL_CANCEL, DELETE, EXECUTE))
    b = day.book.reshape(len(day.book), day.levels, 4)
    px = [
        day.price[on_book],
        b[:, :, 0][b[:, :, 0] != DUMMY_ASK],
        b[:, :, 2][b[:, :, 2] != DUMMY_BID],
    ]
    cents = np.concatenate(px) // CENT
    if not len(cents):
        raise DataFileError(f"{day.source}: no prices at all")
    return int(cents.min()), int(cents.max() - cents.min() + 1)


def _known_orders(day: LobsterDay) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(add line of each known order, known index of each line or -1, last line naming it)."""
    n = len(day)
    adds = np.flatnonzero(day.kind == SUBMIT)
    ids = day.order_id[adds]
    by_id = np.argsort(ids, kind="stable")
    sorted_ids = ids[by_id]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if len(dup):
        line = int(adds[by_id[dup[0] + 1]])
        raise DataFileError(
            f"{day.source}: line {line + 1}: order {sorted_ids[dup[0]]} added twice"
        )
    refs = np.flatnonzero(np.isin(day.kind, (PARTIAL_CANCEL, DELETE, EXECUTE)))
    index = np.full(n, -1, np.int64)
    index[adds] = np.arange(len(adds))
    last = adds.copy()
    if not len(adds) or not len(refs):
        return adds, index, last
    pos = np.minimum(np.searchsorted(sorted_ids, day.order_id[refs]), len(ids) - 1)
    found = sorted_ids[pos] == day.order_id[refs]
    k = by_id[pos]
    _fail(day.source, _mask(n, refs[found & (adds[k] > refs)]), "names an order before its add")
    ref_k, ref_rows = k[found], refs[found]
    moved = (day.price[ref_rows] != day.price[adds[ref_k]]) | (
        day.direction[ref_rows] != day.direction[adds[ref_k]]
    )
    _fail(
        day.source,
        _mask(n, ref_rows[moved]),
        "names an order at another price or side than its add",
    )
    index[ref_rows] = ref_k
    np.maximum.at(last, ref_k, ref_rows)
    return adds, index, last


def _mask(n: int, rows: np.ndarray) -> np.ndarray:
    m = np.zeros(n, np.bool_)
    m[rows] = True
    return m


def _seed(day: LobsterDay) -> dict[tuple[int, int], int]:
    """The book before the first message: orderbook row 1 with message 1 undone.

    Keys (side 0 bid / 1 ask, cents), values shares.
    """
    levels: dict[tuple[int, int], int] = {}
    row = day.book[0].reshape(day.levels, 4)
    for ask_px, ask_sz, bid_px, bid_sz in row:
        if bid_px != DUMMY_BID:
            levels[(0, int(bid_px) // CENT)] = int(bid_sz)
        if ask_px != DUMMY_ASK:
            levels[(1, int(ask_px) // CENT)] = int(ask_sz)
    kind = int(day.kind[0])
    if kind in (SUBMIT, PARTIAL_CANCEL, DELETE, EXECUTE):
        key = (0 if day.direction[0] == 1 else 1, int(day.price[0]) // CENT)
        undo = -int(day.size[0]) if kind == SUBMIT else int(day.size[0])
        levels[key] = levels.get(key, 0) + undo
        if levels[key] < 0:
            raise DataFileError(
                f"{day.source}: line 1 adds {day.size[0]} shares the orderbook file's row 1 "
                "does not show"
            )
    return {k: v for k, v in levels.items() if v > 0}


def aggregate_id(side: int, cents: int) -> int:
    """The order id esml gives the aggregate of unknown orders at one price (side 0 bid)."""
    return AGGREGATE_ID_BASE + (side << 40) + cents


def _plan(day: LobsterDay, instrument_id: int) -> _Plan:
    tick_lo, n_grid = _grid(day)
    adds, index, last = _known_orders(day)
    n_known = len(adds)
    side01 = (day.direction != 1).astype(np.int64)
    cents = day.price // CENT
    agg_holder = n_known + side01 * n_grid + (cents - tick_lo)
    on_book = np.isin(day.kind, (SUBMIT, PARTIAL_CANCEL, DELETE, EXECUTE))
    msg_holder = np.where(index >= 0, index, np.where(on_book, agg_holder, -1))
    msg_id = np.where(index >= 0, day.order_id, AGGREGATE_ID_BASE + (side01 << 40) + cents)

    counts = _RECORDS_PER_KIND[day.kind]
    line = np.repeat(np.arange(len(day)), counts)
    within = np.arange(len(line)) - (np.cumsum(counts) - counts)[line]
    kind = day.kind[line]
    ev = empty_events(len(line))
    ev["ts_event"] = ev["ts_recv"] = day.ts_ns[line]
    ev["sequence"] = line + 1
    side = np.where(day.direction[line] == 1, BID, ASK)
    aggressor = np.where(side == BID, ASK, BID)  # a resting buy order executed: a sell trade
    is_trade = (kind == EXECUTE_HIDDEN) | ((kind == EXECUTE) & (within == 0))
    is_fill = (kind == EXECUTE) & (within == 1)
    action = np.select(
        [kind == SUBMIT, is_trade, is_fill, kind == HALT], [ADD, TRADE, FILL, NONE], CANCEL
    )
    ev["action"] = action
    ev["side"] = np.select([kind == HALT, is_trade], [NO_SIDE, aggressor], side)
    ev["price"] = np.where(kind == HALT, UNDEF_PRICE, day.price[line] * FIXED_PER_LOBSTER)
    ev["size"] = np.where(kind == HALT, 0, day.size[line])
    acts = (action == ADD) | (action == CANCEL) | (action == FILL)
    ev["order_id"] = np.where(acts, msg_id[line], 0)
    ev["flags"] = np.where(np.r_[line[1:] != line[:-1], True], F_LAST, 0)
    holder = np.where((action == ADD) | (action == CANCEL), msg_holder[line], -1)

    seed = _seed(day)
    snap = empty_events(len(seed) + 1)
    snap["ts_event"] = snap["ts_recv"] = day.ts_ns[0]
    snap["action"] = [CLEAR] + [ADD] * len(seed)
    snap["side"] = [NO_SIDE] + [BID if s == 0 else ASK for s, _ in seed]
    snap["price"] = [UNDEF_PRICE] + [c * TICK_FIXED for _, c in seed]
    snap["size"] = [0, *seed.values()]
    snap["order_id"] = [0] + [aggregate_id(s, c) for s, c in seed]
    snap["flags"] = F_SNAPSHOT | F_MBP
    snap["flags"][-1] |= F_LAST
    snap_holder = [-1] + [n_known + s * n_grid + (c - tick_lo) for s, c in seed]

    events = np.concatenate([snap, ev])
    events["publisher_id"] = PUBLISHER_XNAS_ITCH
    events["instrument_id"] = instrument_id
    known = np.stack([side01[adds], cents[adds] - tick_lo, last, day.order_id[adds]])
    return _Plan(
        events=events,
        holder=np.concatenate([np.array(snap_holder, np.int64), holder]),
        rec_kind=np.concatenate([np.zeros(len(snap), np.int8), kind]),
        known=known.astype(np.int64),
        n_grid=n_grid,
        tick_lo=tick_lo,
        seeded_levels=len(seed),
    )


def instrument_id_of(ticker: str) -> int:
    """A stable instrument id per ticker (LOBSTER files carry none)."""
    return zlib.crc32(ticker.encode()) & 0x7FFF_FFFF


# ---------------------------------------------------------------- replay against the truth

# ctx slots of the reconciliation kernel
C_W, C_ERROR, C_ERROR_AT = 0, 1, 2
C_EXACT, C_REVEALED_ROWS, C_REVEALED_LEVELS, C_LOTS_IN, C_LOTS_OUT = 3, 4, 5, 6, 7
C_REATTRIBUTED, C_FORCED_ROWS = 8, 9
C_N_KNOWN, C_N_GRID, C_TICK_LO = 10, 11, 12
N_CTX = 13
E_BOOK, E_CAPACITY, E_STUCK, E_UNCOVERED = 1, 2, 3, 4
# known-order table rows (extends _Plan.known with the per-level FIFO links)
K_SIDE, K_GRID, K_LAST, K_ID, K_NEXT, K_PREV = range(6)


@njit(cache=True)
def _apply(bk, action, side, price, size, oid) -> None:
    """`apply_event` on the book tuple (it is inlined where it is called: call it once here)."""
    apply_event(bk[0], bk[1], bk[2], bk[3], bk[4], bk[5], bk[6], bk[7], bk[8], bk[9], bk[10],
                action, side, price, size, oid)  # fmt: skip


@njit(cache=True)
def _emit(bk, st, where, action, side01, cents, size, oid, flags) -> None:
    """Apply one inferred record to the book and write it, to go right after message record
    `where[0]`. `st` is the kernel state (out, pos, ctx, hsize, known, heads)."""
    out, pos, ctx = st[0], st[1], st[2]
    side = np.uint8(BID if side01 == 0 else ASK)
    price = np.int64(cents * bk[0][M_TICK])
    w = ctx[C_W]
    if w >= len(out):
        ctx[C_ERROR] = E_CAPACITY
        return
    r = out[w]
    r.ts_event = where[1]
    r.ts_recv = where[1]
    r.sequence = where[2]
    r.action = action
    r.side = side
    r.price = price
    r.size = size
    r.order_id = oid
    r.flags = flags
    pos[w] = where[0]
    ctx[C_W] = w + 1
    _apply(bk, action, side, price, np.uint32(size), np.uint64(oid))


@njit(cache=True)
def _set_aggregate(bk, st, where, side01, g, new, flags) -> None:
    ctx, hsize = st[2], st[3]
    h = ctx[C_N_KNOWN] + side01 * ctx[C_N_GRID] + g
    old = hsize[h]
    if new == old:
        return
    cents = ctx[C_TICK_LO] + g
    oid = AGGREGATE_ID_BASE + (side01 << 40) + cents
    # one call site, so the record writer compiles once
    action = np.uint8(ADD if old == 0 else (CANCEL if new < old else MODIFY))
    size = old - new if action == CANCEL else new
    _emit(bk, st, where, action, side01, cents, size, oid, flags)
    hsize[h] = new


@njit(cache=True)
def _cut_known(bk, st, where, k, qty, flags) -> None:
    ctx, hsize, known = st[2], st[3], st[4]
    cents = ctx[C_TICK_LO] + known[K_GRID, k]
    _emit(bk, st, where, np.uint8(CANCEL), known[K_SIDE, k], cents, qty, known[K_ID, k], flags)
    hsize[k] -= qty
    if hsize[k] == 0:
        _unlink(known, st[5], k)


@njit(cache=True)
def _link(known, heads, k, n_grid) -> None:
    """Append a new known order to its level's FIFO list."""
    lvl = known[K_SIDE, k] * n_grid + known[K_GRID, k]
    tail = heads[1, lvl]
    known[K_PREV, k] = tail
    if tail >= 0:
        known[K_NEXT, tail] = k
    else:
        heads[0, lvl] = k
    heads[1, lvl] = k


@njit(cache=True)
def _unlink(known, heads, k) -> None:
    lvl = known[K_SIDE, k] * (heads.shape[1] // 2) + known[K_GRID, k]
    p, n = known[K_PREV, k], known[K_NEXT, k]
    if p >= 0:
        known[K_NEXT, p] = n
    else:
        heads[0, lvl] = n
    if n >= 0:
        known[K_PREV, n] = p
    else:
        heads[1, lvl] = p
    known[K_NEXT, k] = -1
    known[K_PREV, k] = -1


@njit(cache=True)
def _take(bk, st, where, row, side01, g, qty, skip, flags) -> int:
    """Remove `qty` shares resting at one level from whoever most likely lost them unseen:
    orders the message file never names again (oldest first), then the aggregate of unknown
    orders, then the others (newest first). Returns what could not be found."""
    ctx, hsize, known, heads = st[2], st[3], st[4], st[5]
    lvl = side01 * ctx[C_N_GRID] + g
    k = heads[0, lvl]
    while k >= 0 and qty > 0:
        nxt = known[K_NEXT, k]
        if k != skip and known[K_LAST, k] <= row:
            cut = min(qty, hsize[k])
            _cut_known(bk, st, where, k, cut, flags)
            qty -= cut
        k = nxt
    h = ctx[C_N_KNOWN] + lvl
    if qty > 0 and hsize[h] > 0:
        cut = min(qty, hsize[h])
        _set_aggregate(bk, st, where, side01, g, hsize[h] - cut, flags)
        qty -= cut
    k = heads[1, lvl]
    while k >= 0 and qty > 0:
        prv = known[K_PREV, k]
        if k != skip:
            cut = min(qty, hsize[k])
            _cut_known(bk, st, where, k, cut, flags)
            qty -= cut
        k = prv
    return qty


@njit(cache=True)
def _reconcile(ev, holder, rec_kind, truth, bk, st) -> None:
    """Replay the plan through the book; after each message compare its levels with the
    truth and fill in hidden depth (see the module docstring). Writes inferred records."""
    meta, bid_qty, ask_qty = bk[0], bk[1], bk[2]
    out, pos, ctx, hsize, known, heads = st
    n_known, n_grid, tick_lo = ctx[C_N_KNOWN], ctx[C_N_GRID], ctx[C_TICK_LO]
    mine = np.zeros((truth.shape[1], 4), np.int64)
    inferred = np.uint8(F_MBP)
    for j in range(len(ev)):
        e = ev[j]
        where = (np.int64(j), e.ts_event, e.sequence)
        row = np.int64(e.sequence) - 1
        _apply(bk, e.action, e.side, e.price, e.size, e.order_id)
        h = holder[j]
        if h >= 0 and e.action == ADD:
            hsize[h] += e.size
            if h < n_known:
                _link(known, heads, h, n_grid)
        elif h >= 0 and e.action == CANCEL:
            side01 = 0 if e.side == BID else 1
            g = e.price // meta[M_TICK] - tick_lo
            short = e.size - hsize[h]
            if short > 0:
                # an unseen loss was pinned on this order: the shares are elsewhere at its level
                if h < n_known and hsize[h] > 0:
                    _unlink(known, heads, h)
                hsize[h] = 0
                if _take(bk, st, where, row, side01, g, short, h, inferred) > 0:
                    ctx[C_ERROR] = E_UNCOVERED
                ctx[C_REATTRIBUTED] += 1
            else:
                hsize[h] -= e.size
                if h < n_known and hsize[h] == 0:
                    _unlink(known, heads, h)
            if rec_kind[j] == DELETE and h < n_known and hsize[h] > 0:
                # deleted whole with fewer shares than we held: the rest is someone else's
                rest = hsize[h]
                _cut_known(bk, st, where, h, rest, inferred)
                h_agg = n_known + side01 * n_grid + g
                _set_aggregate(bk, st, where, side01, g, hsize[h_agg] + rest, inferred)
                ctx[C_REATTRIBUTED] += 1
        if meta[M_ERROR] != 0 or ctx[C_ERROR] != 0:
            if ctx[C_ERROR] == 0:
                ctx[C_ERROR] = E_BOOK
            ctx[C_ERROR_AT] = j
            return
        if (e.flags & F_LAST) == 0 or (e.flags & F_SNAPSHOT) != 0:
            continue
        l2_levels(meta, bid_qty, ask_qty, mine)
        if np.array_equal(mine, truth[row]):
            ctx[C_EXACT] += 1
        elif not _reveal(bk, st, where, truth, row, mine):
            return
        if ctx[C_W] > 0 and pos[ctx[C_W] - 1] == j:
            out[ctx[C_W] - 1].flags |= F_LAST  # the packet now ends with its last inferred record


@njit(cache=True)
def _reveal(bk, st, where, truth, row, mine) -> bool:
    """Bring each side's levels in line with the truth row, a level at a time: a reveal when
    the level lay beyond the previous row's deepest level, else a forced repair."""
    meta, bid_qty, ask_qty = bk[0], bk[1], bk[2]
    ctx, hsize = st[2], st[3]
    n_levels = truth.shape[1]
    prev = truth[row - 1] if row > 0 else truth[row]
    revealed = False
    forced = False
    for side01 in range(2):
        pc = 2 * side01
        deepest = prev[n_levels - 1, pc]  # 0 when the side showed fewer than all levels
        qty = bid_qty if side01 == 0 else ask_qty
        done = False
        for _ in range(64 * n_levels + 1024):
            l2_levels(meta, bid_qty, ask_qty, mine)
            k = 0
            while k < n_levels and mine[k, pc] == truth[row, k, pc]:
                if mine[k, pc + 1] != truth[row, k, pc + 1]:
                    break
                k += 1
            if k == n_levels:
                done = True
                break
            mp, tp = mine[k, pc], truth[row, k, pc]
            better_mine = mp != 0 and (tp == 0 or (mp > tp if side01 == 0 else mp < tp))
            px = mp if better_mine else tp
            want = 0 if better_mine else truth[row, k, pc + 1]
            have = qty[(px - meta[M_BASE]) // meta[M_TICK]]
            newly = deepest != 0 and (px < deepest if side01 == 0 else px > deepest)
            flags = np.uint8(F_MBP if newly else F_MBP | F_MAYBE_BAD_BOOK)
            g = px // meta[M_TICK] - ctx[C_TICK_LO]
            if want > have:
                h_agg = ctx[C_N_KNOWN] + side01 * ctx[C_N_GRID] + g
                _set_aggregate(bk, st, where, side01, g, hsize[h_agg] + want - have, flags)
            elif _take(bk, st, where, row, side01, g, have - want, np.int64(-1), flags) > 0:
                ctx[C_ERROR] = E_UNCOVERED
            if ctx[C_ERROR] != 0 or meta[M_ERROR] != 0:
                ctx[C_ERROR] = ctx[C_ERROR] if ctx[C_ERROR] != 0 else E_BOOK
                ctx[C_ERROR_AT] = where[0]
                return False
            if newly:
                revealed = True
                ctx[C_REVEALED_LEVELS] += 1
                ctx[C_LOTS_IN] += max(want - have, 0)
                ctx[C_LOTS_OUT] += max(have - want, 0)
            else:
                forced = True
        if not done:
            ctx[C_ERROR] = E_STUCK
            ctx[C_ERROR_AT] = where[0]
            return False
    if revealed:
        ctx[C_REVEALED_ROWS] += 1
    if forced:
        ctx[C_FORCED_ROWS] += 1
    return True


@njit(cache=True)
def _verify(ev, truth, bk, row_ok) -> int:
    """A plain replay: does the book equal the truth after every message's packet?"""
    meta, bid_qty, ask_qty = bk[0], bk[1], bk[2]
    mine = np.zeros((truth.shape[1], 4), np.int64)
    repaired = False
    for j in range(len(ev)):
        e = ev[j]
        _apply(bk, e.action, e.side, e.price, e.size, e.order_id)
        if meta[M_ERROR] != 0:
            return j
        repaired |= (e.flags & F_MAYBE_BAD_BOOK) != 0
        if (e.flags & F_LAST) != 0 and (e.flags & F_SNAPSHOT) == 0:
            row = np.int64(e.sequence) - 1
            l2_levels(meta, bid_qty, ask_qty, mine)
            row_ok[row] = not repaired and np.array_equal(mine, truth[row])
            repaired = False
    return len(ev)


def _book_for(plan: _Plan) -> BookState:
    """Room for every price of the day either side of the first, and for every order."""
    n_levels = 1 << max(12, int(2 * plan.n_grid + 8).bit_length())
    orders = plan.known.shape[1] + 2 * plan.n_grid + 16
    return BookState.new(TICK_FIXED, n_levels=n_levels, max_orders=1 << orders.bit_length())


_ERRORS = {
    E_CAPACITY: "out of room for inferred records",
    E_STUCK: "could not bring the levels in line with the orderbook file",
    E_UNCOVERED: "a message removes more shares than rest at its price",
}


def reconstruct(day: LobsterDay, instrument_id: int | None = None) -> LobsterReplay:
    """esml's event stream for the day, proved by replay against its orderbook file."""
    iid = instrument_id_of(day.ticker) if instrument_id is None else instrument_id
    plan = _plan(day, iid)
    truth = day.truth_l2()
    capacity = len(day) // 4 + 1024
    while True:
        book = _book_for(plan)
        n_known = plan.known.shape[1]
        known = np.vstack([plan.known, np.full((2, n_known), -1, np.int64)])
        hsize = np.zeros(n_known + 2 * plan.n_grid, np.int64)
        heads = np.full((2, 2 * plan.n_grid), -1, np.int64)
        out = empty_events(capacity)
        pos = np.zeros(capacity, np.int64)
        ctx = np.zeros(N_CTX, np.int64)
        ctx[C_N_KNOWN], ctx[C_N_GRID], ctx[C_TICK_LO] = n_known, plan.n_grid, plan.tick_lo
        state = (out, pos, ctx, hsize, known, heads)
        _reconcile(plan.events, plan.holder, plan.rec_kind, truth, book.arrays, state)
        if ctx[C_ERROR] != E_CAPACITY:
            break
        capacity *= 2
    if ctx[C_ERROR]:
        at = int(plan.events["sequence"][ctx[C_ERROR_AT]])
        what = _ERRORS.get(int(ctx[C_ERROR]))
        if what is None:
            _book_error(book, day, at)
        raise DataFileError(f"{day.source}: line {at}: {what}")
    events = _merge(plan.events, out[: ctx[C_W]], pos[: ctx[C_W]])
    row_ok = np.zeros(len(day), np.bool_)
    check = _book_for(plan)
    stop = _verify(events, truth, check.arrays, row_ok)
    if stop < len(events):
        _book_error(check, day, int(events["sequence"][stop]))
    bad = np.flatnonzero(~row_ok)
    return LobsterReplay(
        source=day.source,
        ticker=day.ticker,
        levels=day.levels,
        messages=len(day),
        seeded_levels=plan.seeded_levels,
        rows_exact=int(ctx[C_EXACT]),
        rows_revealed=int(ctx[C_REVEALED_ROWS]),
        levels_revealed=int(ctx[C_REVEALED_LEVELS]),
        lots_revealed_added=int(ctx[C_LOTS_IN]),
        lots_revealed_removed=int(ctx[C_LOTS_OUT]),
        reattributions=int(ctx[C_REATTRIBUTED]),
        rows_forced=int(ctx[C_FORCED_ROWS]),
        rows_matching=int(row_ok.sum()),
        first_mismatch_line=int(bad[0]) + 1 if len(bad) else 0,
        events=events,
    )


def _book_error(book: BookState, day: LobsterDay, line: int) -> None:
    try:
        book.check(f" at message line {line}")
    except ValueError as e:
        raise DataFileError(f"{day.source}: {e}") from e


def _merge(events: np.ndarray, inferred: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Inferred records go right after the message record they follow; the packet's F_LAST
    moves to the last of them."""
    inferred["length"] = events["length"][0]
    inferred["rtype"] = events["rtype"][0]
    inferred["publisher_id"] = events["publisher_id"][0]
    inferred["instrument_id"] = events["instrument_id"][0]
    events = events.copy()
    events["flags"][np.unique(after)] &= 0xFF ^ F_LAST
    return np.insert(events, after + 1, inferred)


def lobster_events(path: str | Path) -> np.ndarray:
    """The day's complete esml event stream (seed, messages, inferred depth)."""
    return reconstruct(read_lobster(path)).events
