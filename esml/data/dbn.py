"""Databento DBN files into esml: every GLBX.MDP3 schema, and MBO files out.

Every schema has a fixed record layout (esml.data.schemas), so a file's records are one
numpy view of its decompressed bytes: nothing is parsed per record, and every record's
length and type are checked before anything is returned, so a corrupt or truncated file
fails naming the file and the first bad record, never loads in part. `databento-dbn`
parses and writes the metadata header.

MBO records share esml's event dtype byte for byte. Trades, MBP-1 and TBBO become events
through `to_events`: a trade is a TRADE event; the top of book is held as one resting
pseudo-order per side (order ids L1_BID_ORDER_ID and L1_ASK_ORDER_ID, flagged F_MBP),
modified to the new price and size whenever the touch changes and cancelled when the side
empties. Replaying those events through the L3 book gives back the file's touch after
every record, so L1 data drives the same book, features and exchange simulator as MBO.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import databento_dbn as dbn
import numpy as np
import zstandard

from esml.data.schemas import CURRENT_VERSION, SCHEMAS, SchemaSpec, upgrade
from esml.market.events import (
    ASK,
    BID,
    CANCEL,
    F_LAST,
    F_MBP,
    MBO_DTYPE,
    MODIFY,
    RTYPE_MBO,
    TRADE,
    UNDEF_PRICE,
    empty_events,
)

L1_BID_ORDER_ID = 1  # the pseudo-order holding the best bid level of L1 data
L1_ASK_ORDER_ID = 2
DAY_NS = 86_400 * 1_000_000_000
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class DataFileError(ValueError):
    """A data file is unreadable, corrupt or truncated; the message names file and record."""


@dataclass(frozen=True)
class DbnFile:
    path: Path
    metadata: dbn.Metadata
    body: bytes  # the records, after the metadata header
    version: int = CURRENT_VERSION  # the DBN version the records are stored in


@dataclass(frozen=True)
class DbnRecords:
    """One DBN file's records in their schema's layout, as stored in the file."""

    path: Path
    metadata: dbn.Metadata
    version: int
    spec: SchemaSpec
    records: np.ndarray

    @property
    def schema(self) -> str:
        return self.spec.name

    def upgraded(self) -> np.ndarray:
        """The records in the current (version 3) layout."""
        return upgrade(self.records, self.spec)

    @property
    def index_ts(self) -> np.ndarray:
        return self.records[self.spec.index_ts]


def is_dbn(path: Path) -> bool:
    """Whether a file starts like DBN: a zstd frame or the plain DBN signature."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head == _ZSTD_MAGIC or head[:3] == b"DBN"


class _ZstdDamage(Exception):
    """A zstd stream that stops being readable after `good` bytes of intact output."""

    def __init__(self, what: str, good: bytes) -> None:
        super().__init__(what)
        self.what = what
        self.good = good


def _decompressed(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataFileError(f"{path}: cannot read: {e}") from e
    if raw[:4] != _ZSTD_MAGIC:  # not zstd: a plain .dbn
        return raw
    # frame by frame, so a stream cut short or followed by junk is an error, not a short read
    out, rest, frame = [], raw, 0
    while rest:
        obj = zstandard.ZstdDecompressor().decompressobj()
        try:
            chunk = obj.decompress(rest)
        except zstandard.ZstdError as e:  # a checksum or structure error: the frame is suspect
            raise _ZstdDamage(f"corrupt zstd frame {frame}: {e}", b"".join(out)) from e
        out.append(chunk)
        if not obj.eof:  # what came before the cut decoded; the rest is gone
            raise _ZstdDamage(f"truncated: zstd frame {frame} is cut short", b"".join(out))
        rest = obj.unused_data
        frame += 1
    return b"".join(out)


def _first_lost_record(good: bytes) -> str:
    """Which record a damaged stream loses first, counted from the intact output."""
    if len(good) < 8 or good[:3] != b"DBN":
        return "in the metadata header"
    start = 8 + int.from_bytes(good[4:8], "little")
    if len(good) <= start:
        return "in the metadata header"
    size = good[start] * 4  # every record of a single-schema file has the first one's length
    return f"from record {(len(good) - start) // size} on" if size else "at record 0"


def open_dbn(path: str | Path) -> DbnFile:
    path = Path(path)
    try:
        data = _decompressed(path)
    except _ZstdDamage as e:
        raise DataFileError(f"{path}: {e.what}; unreadable {_first_lost_record(e.good)}") from e
    if len(data) < 8 or data[:3] != b"DBN":
        raise DataFileError(f"{path}: not a DBN file (no DBN header)")
    version = data[3]
    if not 1 <= version <= CURRENT_VERSION:
        raise DataFileError(f"{path}: DBN version {version} is not one this reader knows")
    meta_len = int.from_bytes(data[4:8], "little")
    start = 8 + meta_len
    if start > len(data):
        raise DataFileError(f"{path}: truncated in the metadata header")
    dec = dbn.DBNDecoder()
    dec.write(data[:start])
    try:
        metadata = dec.decode()[0]
    except Exception as e:  # the Rust decoder raises plain ValueError/RuntimeError
        raise DataFileError(f"{path}: unreadable DBN metadata: {e}") from e
    return DbnFile(path, metadata, data[start:], version)


def _cut_short(f: DbnFile, dtype: np.dtype, what: str) -> None:
    size = dtype.itemsize
    if len(f.body) % size:
        raise DataFileError(
            f"{f.path}: truncated: {len(f.body)} bytes of records is not a whole number of "
            f"{size}-byte {what} records (record {len(f.body) // size} is cut short)"
        )


def _first_bad(records: np.ndarray, rtype: int) -> int:
    """Index of the first record whose type or length is not the layout's, else -1."""
    bad = (records["rtype"] != rtype) | (records["length"] != records.dtype.itemsize // 4)
    idx = np.flatnonzero(bad)
    return int(idx[0]) if len(idx) else -1


def read_mbo(path: str | Path, instrument_id: int | None = None) -> np.ndarray:
    """All MBO records of a file as an `MBO_DTYPE` array (a copy, safe to keep).

    With `instrument_id`, only that instrument's records. Every record is checked for
    its length and rtype, so a corrupt or truncated file fails naming the first bad record.
    """
    f = open_dbn(path)
    _cut_short(f, MBO_DTYPE, "MBO")
    ev = np.frombuffer(f.body, dtype=MBO_DTYPE)
    i = _first_bad(ev, RTYPE_MBO)
    if i >= 0:
        raise DataFileError(
            f"{f.path}: record {i} is not an MBO record (rtype={ev['rtype'][i]:#x}, "
            f"length={int(ev['length'][i]) * 4}); is this an MBO file? schema={f.metadata.schema}"
        )
    if instrument_id is not None:
        ev = ev[ev["instrument_id"] == instrument_id]
    return ev.copy()


def read_dbn(path: str | Path) -> DbnRecords:
    """Every record of a single-schema DBN file, in the layout of its DBN version (a copy).

    Fails with DataFileError naming the file and the first record that is cut short or
    whose type or length does not belong to the schema the header declares.
    """
    f = open_dbn(path)
    schema = f.metadata.schema
    if schema is None:
        raise DataFileError(f"{f.path}: a mixed-schema DBN stream is not supported")
    spec = SCHEMAS.get(str(schema))
    if spec is None:
        raise DataFileError(
            f"{f.path}: DBN schema {schema} is not supported; supported: {sorted(SCHEMAS)}"
        )
    if f.metadata.ts_out:
        raise DataFileError(f"{f.path}: live DBN with ts_out appended is not supported")
    dtype = spec.dtype(f.version)
    _cut_short(f, dtype, schema)
    records = np.frombuffer(f.body, dtype=dtype)
    i = _first_bad(records, spec.rtype)
    if i >= 0:
        raise DataFileError(
            f"{f.path}: record {i} does not fit schema {schema} (rtype="
            f"{records['rtype'][i]:#x}, length={int(records['length'][i]) * 4}, expected rtype="
            f"{spec.rtype:#x}, length={dtype.itemsize})"
        )
    return DbnRecords(f.path, f.metadata, f.version, spec, records.copy())


def main_instrument(events: np.ndarray) -> int:
    """The instrument id with the most records: the outright a single-contract file is about."""
    ids, counts = np.unique(events["instrument_id"], return_counts=True)
    if not len(ids):
        raise DataFileError("no records")
    return int(ids[np.argmax(counts)])


def record_symbols(f: DbnRecords) -> np.ndarray:
    """The raw symbol (e.g. "ESH4") of every record, from the file's symbology mappings
    for the UTC date of the record; definition records name their own. An instrument the
    mappings do not name reads as "id<instrument_id>"."""
    ids = f.records["instrument_id"]
    out = np.empty(len(ids), dtype=object)
    if f.schema == "definition":
        out[:] = np.char.decode(f.records["raw_symbol"], "ascii")
        return out
    days = (f.index_ts // np.uint64(DAY_NS)).astype(np.int64)
    intervals = _id_intervals(f.metadata)
    for iid in np.unique(ids):
        mine = ids == iid
        out[mine] = f"id{iid}"
        for start, end, raw in intervals.get(int(iid), []):
            out[mine & (days >= start) & (days < end)] = raw
    return out


def _id_intervals(metadata: dbn.Metadata) -> dict[int, list[tuple[int, int, str]]]:
    """instrument id -> [(first UTC day number, end day number exclusive, raw symbol)]."""
    epoch = date(1970, 1, 1)
    out: dict[int, list[tuple[int, int, str]]] = {}
    for raw, intervals in metadata.mappings.items():
        for iv in intervals:
            sym = str(iv["symbol"])
            if sym.isdigit():
                span = ((iv["start_date"] - epoch).days, (iv["end_date"] - epoch).days, raw)
                out.setdefault(int(sym), []).append(span)
    return out


def to_events(f: DbnRecords) -> np.ndarray:
    """The file as esml events (`MBO_DTYPE`): MBO as is; trades, TBBO and MBP-1 converted
    as the module docstring says. Other schemas are bars, summaries or depth snapshots
    with no event form."""
    if f.schema == "mbo":
        return f.records.copy()
    if f.schema == "trades":
        return trade_events(f.records, closes_packet=True)
    if f.schema in ("mbp-1", "tbbo"):
        return l1_events(f.records, trades_close_packet=f.schema == "tbbo").events
    raise ValueError(f"{f.path}: schema {f.schema} has no event form (mbo, trades, mbp-1, tbbo)")


def trade_events(records: np.ndarray, *, closes_packet: bool) -> np.ndarray:
    """Trade records (trades schema, or the trades among MBP-1/TBBO) as TRADE events; side
    is the aggressor's. With `closes_packet`, each trade carries F_LAST: a trades-only
    stream has no book records to close the exchange packet."""
    ev = empty_events(len(records))
    for name in ("publisher_id", "instrument_id", "ts_event", "price", "size", "side",
                 "flags", "ts_recv", "ts_in_delta", "sequence"):  # fmt: skip
        ev[name] = records[name]
    ev["action"] = TRADE
    if closes_packet:
        ev["flags"] |= F_LAST
    return ev


class L1Events(NamedTuple):
    events: np.ndarray  # MBO_DTYPE
    source: np.ndarray  # index of the record each event came from


def l1_events(records: np.ndarray, *, trades_close_packet: bool = False) -> L1Events:
    """MBP-1 or TBBO records as events: per record, the bid and ask pseudo-order updates
    that bring the book to the record's touch, then its trade, if any (a TBBO record's
    touch is the one just before its trade). F_LAST stays on the last event of a record
    that had it; with `trades_close_packet` (TBBO: no book records follow a trade) each
    trade carries it."""
    if not len(records):
        return L1Events(empty_events(0), np.zeros(0, np.int64))
    parts, keys = [], []
    for iid in np.unique(records["instrument_id"]):
        rows = np.flatnonzero(records["instrument_id"] == iid)
        ev, slot = _l1_one_instrument(records[rows], trades_close_packet)
        parts.append(ev)
        keys.append(rows[slot // 3] * 3 + slot % 3)
    key = np.concatenate(keys)
    order = np.argsort(key, kind="stable")
    return L1Events(np.concatenate(parts)[order], key[order] // 3)


def _l1_one_instrument(rec: np.ndarray, trades_close_packet: bool) -> tuple[np.ndarray, np.ndarray]:
    n = len(rec)
    out = np.zeros((n, 3), MBO_DTYPE)  # per record: bid level, ask level, trade
    keep = np.zeros((n, 3), bool)
    for slot, side, oid in ((0, BID, L1_BID_ORDER_ID), (1, ASK, L1_ASK_ORDER_ID)):
        name = "bid" if side == BID else "ask"
        px = rec[f"{name}_px_00"].astype(np.int64)
        sz = rec[f"{name}_sz_00"].astype(np.int64)
        empty = (px == UNDEF_PRICE) | (sz == 0)
        px[empty], sz[empty] = UNDEF_PRICE, 0
        prev_px = np.concatenate(([UNDEF_PRICE], px[:-1]))
        prev_sz = np.concatenate(([0], sz[:-1]))
        e = out[:, slot]
        e["action"] = np.where(empty, CANCEL, MODIFY)
        e["price"] = np.where(empty, prev_px, px)
        e["size"] = np.where(empty, prev_sz, sz)
        e["side"] = side
        e["order_id"] = oid
        e["flags"] = (rec["flags"] & (0xFF ^ F_LAST)) | F_MBP
        keep[:, slot] = (px != prev_px) | (sz != prev_sz)
    trades = rec["action"] == TRADE
    out[:, 2] = trade_events(rec, closes_packet=False)
    keep[:, 2] = trades
    for name in ("publisher_id", "instrument_id", "ts_event", "ts_recv", "ts_in_delta",
                 "sequence"):  # fmt: skip
        out[name] = rec[name][:, None]
    out["length"] = MBO_DTYPE.itemsize // 4
    out["rtype"] = RTYPE_MBO
    closes = (rec["flags"] & F_LAST) != 0
    if trades_close_packet:
        closes |= trades
    last_slot = np.where(keep[:, 2], 2, np.where(keep[:, 1], 1, 0))
    has_any = keep.any(axis=1) & closes
    out["flags"][np.flatnonzero(has_any), last_slot[has_any]] |= F_LAST
    flat = np.flatnonzero(keep.ravel())
    return out.ravel()[flat], flat


@dataclass(frozen=True)
class _Interval:
    start_date: date
    end_date: date
    symbol: str


@dataclass(frozen=True)
class _SymbolMapping:
    raw_symbol: str
    intervals: list[_Interval]


def write_mbo_dbn(
    path: str | Path,
    events: np.ndarray,
    *,
    dataset: str = "GLBX.MDP3",
    symbols: Mapping[str, int],
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> Path:
    """Write MBO events as a zstd-compressed DBN (version 3) file that `read_mbo` reads
    back byte for byte.

    `symbols` maps each raw symbol to its instrument id and must name every instrument in
    `events`; the query window [start_ns, end_ns) defaults to the events' own ts_recv
    span. The file is written under a temporary name and renamed, so a reader never sees
    half a file. Synthetic events keep their publisher id (PUBLISHER_SYNTHETIC), which is
    how a reader knows them.
    """
    path = Path(path)
    if events.dtype != MBO_DTYPE:
        raise ValueError(f"events must be MBO_DTYPE, not {events.dtype}")
    i = _first_bad(events, RTYPE_MBO) if len(events) else -1
    if i >= 0:
        raise ValueError(f"event {i} has a wrong rtype or length for an MBO record")
    if not symbols:
        raise ValueError("symbols must map at least one raw symbol to its instrument id")
    unmapped = set(np.unique(events["instrument_id"]).tolist()) - set(symbols.values())
    if unmapped:
        raise ValueError(f"instrument ids {sorted(unmapped)} are not in symbols {dict(symbols)}")
    ts = events["ts_recv"]
    start = int(ts.min()) if start_ns is None and len(ts) else start_ns
    end = int(ts.max()) + 1 if end_ns is None and len(ts) else end_ns
    if start is None or end is None:
        raise ValueError("start_ns and end_ns are needed when there are no events")
    if start >= end or (len(ts) and (int(ts.min()) < start or int(ts.max()) >= end)):
        raise ValueError(f"events' ts_recv must lie in [start_ns, end_ns) = [{start}, {end})")
    first = datetime.fromtimestamp(start // 1_000_000_000, UTC).date()
    last = datetime.fromtimestamp((end - 1) // 1_000_000_000, UTC).date()
    mappings = [
        _SymbolMapping(raw, [_Interval(first, last + timedelta(days=1), str(iid))])
        for raw, iid in symbols.items()
    ]
    metadata = dbn.Metadata(
        dataset=dataset, start=start, end=end, stype_in=dbn.SType.RAW_SYMBOL,
        stype_out=dbn.SType.INSTRUMENT_ID, schema=dbn.Schema.MBO, symbols=list(symbols),
        mappings=mappings,
    )  # fmt: skip
    data = metadata.encode() + np.ascontiguousarray(events).tobytes()
    blob = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
