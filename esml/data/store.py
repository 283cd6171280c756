"""A Parquet store of market data, partitioned by schema, instrument and CME trading day.

    <store>/_manifest.json
    <store>/schema=<schema>/instrument=<symbol>/date=<trading day>/<source sha256>.parquet

Each schema keeps its DBN fields (version-3 layout: older files are upgraded on the way
in), prices as exact int64 fixed point, timestamps as uint64 ns. CSV ticks are stored as
the trades schema. The trading day is `esml.market.calendar.trading_day` of the record's
index time (ts_recv; ts_event for bars), so a Sunday-evening session lands on Monday.

The manifest is the commit record: an ingest reads and checks every file first, writes
its Parquet parts in a staging folder, moves them into place and then replaces the
manifest in one atomic rename. Readers see only parts the manifest lists, so a failed
ingest changes nothing (its moved parts are removed again; a crash leaves unlisted parts
that the next ingest sweeps away). A source is known by the sha256 of its content (DBN:
the decompressed records; CSV: the file), so ingesting the same data again, under any
name or compression, adds nothing.

An MBO partition holds the records of that trading day only: a book replay of one day
must start from that day's snapshot, or read the days before it too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from esml.data.csv_ticks import is_csv_ticks, read_csv_ticks
from esml.data.dbn import (
    DataFileError,
    is_dbn,
    l1_events,
    read_dbn,
    record_symbols,
    trade_events,
)
from esml.data.schemas import RTYPE_TRADES, SCHEMAS, TRADES_DTYPE, SchemaSpec
from esml.market.calendar import trading_day
from esml.market.events import PUBLISHER_SYNTHETIC

MANIFEST = "_manifest.json"
LOCK = "_lock"
STAGING_PREFIX = ".staging-"
STORE_FORMAT = 1
MINUTE_NS = 60_000_000_000


class UnsupportedFormatError(DataFileError):
    """A file that is neither DBN nor a known tick CSV."""


@dataclass(frozen=True)
class Part:
    file: str  # relative to the store
    schema: str
    instrument: str
    date: str
    rows: int
    ts_min: int
    ts_max: int


@dataclass(frozen=True)
class SourceEntry:
    sha256: str
    path: str
    format: str  # "dbn" or "csv-ticks"
    schema: str
    synthetic: bool
    ingested_utc: str
    details: dict[str, object]
    parts: list[Part] = field(default_factory=list)


@dataclass(frozen=True)
class Loaded:
    """A source read and checked in full, ready to be split into partitions."""

    path: Path
    sha256: str
    format: str
    spec: SchemaSpec
    records: np.ndarray  # the schema's current layout
    symbols: np.ndarray  # raw symbol of each record
    synthetic: bool
    details: dict[str, object]


@dataclass(frozen=True)
class IngestResult:
    path: Path
    schema: str
    status: str  # "ingested", "already in the store", "same data as another file given"
    rows: int
    instruments: tuple[str, ...]
    dates: tuple[str, ...]


@dataclass(frozen=True)
class InfoRow:
    instrument: str
    schema: str
    dates: tuple[str, ...]
    rows: int
    ts_min: int
    ts_max: int
    synthetic: str  # "yes", "no" or "mixed"
    sources: int


@dataclass(frozen=True)
class StoreInfo:
    rows: list[InfoRow]
    sources: int
    problems: list[str]


def load_source(path: str | Path, *, symbol: str | None = None) -> Loaded:
    """Read any supported file in full: DBN of any schema, or a tick CSV (`symbol` names
    its contract when the file name does not)."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    if is_dbn(path):
        f = read_dbn(path)
        digest = hashlib.sha256(f"dbn:{f.schema}:{f.version}:".encode() + f.records.tobytes())
        return Loaded(
            path, digest.hexdigest(), "dbn", f.spec, f.upgraded(), record_symbols(f),
            synthetic=bool(len(f.records)) and bool(
                np.all(f.records["publisher_id"] == PUBLISHER_SYNTHETIC)),
            details={"dataset": f.metadata.dataset, "dbn_version": f.version},
        )  # fmt: skip
    if is_csv_ticks(path):
        ticks = read_csv_ticks(path, symbol=symbol)
        digest = hashlib.sha256(b"csv-ticks:" + path.read_bytes())
        symbols = np.full(len(ticks.events), ticks.symbol, dtype=object)
        details = {"time_zone": ticks.time_zone, "zone_evidence": ticks.zone_evidence,
                   "size_known": ticks.size_known}  # fmt: skip
        return Loaded(path, digest.hexdigest(), "csv-ticks", SCHEMAS["trades"],
                      _trades_from_events(ticks.events), symbols, False, details)  # fmt: skip
    raise UnsupportedFormatError(
        f"{path}: unsupported format: neither a Databento DBN file (.dbn, .dbn.zst) nor a "
        "tick CSV with a known header"
    )


def _trades_from_events(ev: np.ndarray) -> np.ndarray:
    out = np.zeros(len(ev), TRADES_DTYPE)
    out["length"] = TRADES_DTYPE.itemsize // 4
    out["rtype"] = RTYPE_TRADES
    for name in TRADES_DTYPE.names:
        if name not in ("length", "rtype", "depth"):
            out[name] = ev[name]
    return out


def trading_days(ts_ns: np.ndarray) -> np.ndarray:
    """The CME trading day of each timestamp; the calendar is asked once per distinct
    minute, since trading days change only on whole minutes."""
    minutes, inverse = np.unique(ts_ns.astype(np.int64) // MINUTE_NS, return_inverse=True)
    days = np.array([trading_day(int(m) * MINUTE_NS) for m in minutes], dtype=object)
    return days[inverse]


def ingest(
    store: str | Path, paths: Sequence[str | Path], *, symbol: str | None = None
) -> list[IngestResult]:
    """Add files to the store, all or nothing: every file is read and checked before
    anything is written, and one that fails leaves the store as it was."""
    store = Path(store)
    created = not store.exists()
    _prepare(store)
    try:
        return _ingest_locked(store, paths, symbol)
    except BaseException:
        if created and not (store / MANIFEST).exists():
            shutil.rmtree(store, ignore_errors=True)  # a new store that got nothing
        raise


def _ingest_locked(
    store: Path, paths: Sequence[str | Path], symbol: str | None
) -> list[IngestResult]:
    with _locked(store):
        manifest = _read_manifest(store)
        _sweep(store, manifest)
        plan, todo = [], {}
        for p in paths:
            src = load_source(p, symbol=symbol)
            if src.sha256 in manifest:
                plan.append((src, "already in the store"))
            elif src.sha256 in todo:
                plan.append((src, "same data as another file given"))
            else:
                todo[src.sha256] = src
                plan.append((src, "ingested"))
        entries = {**manifest, **_write(store, manifest, list(todo.values()))}
    return [_result(src, status, entries[src.sha256]) for src, status in plan]


def _result(src: Loaded, status: str, entry: SourceEntry) -> IngestResult:
    parts = entry.parts
    return IngestResult(
        src.path, src.spec.name, status, len(src.records),
        tuple(sorted({p.instrument for p in parts})), tuple(sorted({p.date for p in parts})),
    )  # fmt: skip


def _write(
    store: Path, manifest: dict[str, SourceEntry], todo: list[Loaded]
) -> dict[str, SourceEntry]:
    if not todo:
        return {}
    staging = store / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    moved: list[Path] = []
    entries: dict[str, SourceEntry] = {}
    try:
        staged = []
        for src in todo:
            parts = []
            for rel, part, rows in _partitions(src):
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(_to_table(rows, src), target)
                _fsync(target)
                staged.append((target, store / rel))
                parts.append(part)
            entries[src.sha256] = SourceEntry(
                src.sha256, str(src.path), src.format, src.spec.name, src.synthetic,
                datetime.now(UTC).isoformat(timespec="seconds"), src.details, parts,
            )  # fmt: skip
        for tmp, final in staged:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            moved.append(final)
        _write_manifest(store, {**manifest, **entries})
    except BaseException:
        for f in moved:
            f.unlink(missing_ok=True)
        _remove_empty_dirs(store)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entries


def _partitions(src: Loaded) -> Iterator[tuple[str, Part, np.ndarray]]:
    ts = src.records[src.spec.index_ts]
    days = trading_days(ts)
    for sym in sorted(set(src.symbols.tolist())):
        of_sym = src.symbols == sym
        for day in sorted(set(days[of_sym].tolist())):
            rows = src.records[of_sym & (days == day)]
            rel = (f"schema={src.spec.name}/instrument={quote(sym, safe='')}/date={day}/"
                   f"{src.sha256}.parquet")  # fmt: skip
            t = rows[src.spec.index_ts]
            yield rel, Part(rel, src.spec.name, sym, day, len(rows), int(t.min()),
                            int(t.max())), rows  # fmt: skip


def _to_table(rows: np.ndarray, src: Loaded) -> pa.Table:
    cols = {}
    for name in src.spec.data_fields:
        col = np.ascontiguousarray(rows[name])
        cols[name] = pa.array(np.char.decode(col, "ascii") if col.dtype.kind == "S" else col)
    meta = {"esml.schema": src.spec.name, "esml.source": str(src.path),
            "esml.sha256": src.sha256, "esml.synthetic": str(src.synthetic).lower()}  # fmt: skip
    return pa.table(cols).replace_schema_metadata(meta)


def read(
    store: str | Path, schema: str, instrument: str, dates: Sequence[str] | None = None
) -> np.ndarray:
    """One instrument's records of a schema, in the schema's current layout, ordered by
    index time (ties keep each source's own order); `dates` limits the trading days."""
    store = Path(store)
    dates = [dates] if isinstance(dates, str) else dates
    spec = SCHEMAS.get(schema)
    if spec is None:
        raise ValueError(f"unknown schema {schema!r}; known: {sorted(SCHEMAS)}")
    parts = sorted(
        (p for e in _read_manifest(store).values() for p in e.parts
         if p.schema == schema and p.instrument == instrument
         and (dates is None or p.date in dates)),
        key=lambda p: (p.date, p.ts_min, p.file),
    )  # fmt: skip
    arrays = [_from_table(pq.read_table(store / p.file), spec, store / p.file) for p in parts]
    if not arrays:
        return np.zeros(0, spec.current)
    out = np.concatenate(arrays)
    return out[np.argsort(out[spec.index_ts], kind="stable")]


def read_events(
    store: str | Path, schema: str, instrument: str, dates: Sequence[str] | None = None
) -> np.ndarray:
    """Stored MBO, trades, MBP-1 or TBBO records as esml events (see esml.data.dbn)."""
    records = read(store, schema, instrument, dates)
    if schema == "mbo":
        return records
    if schema == "trades":
        return trade_events(records, closes_packet=True)
    if schema in ("mbp-1", "tbbo"):
        return l1_events(records, trades_close_packet=schema == "tbbo").events
    raise ValueError(f"schema {schema} has no event form (mbo, trades, mbp-1, tbbo)")


def _from_table(table: pa.Table, spec: SchemaSpec, path: Path) -> np.ndarray:
    dtype = spec.current
    out = np.zeros(table.num_rows, dtype)
    out["length"] = dtype.itemsize // 4
    for name in spec.data_fields:
        if name not in table.column_names:
            raise DataFileError(f"{path}: column {name} of schema {spec.name} is missing")
        values = table.column(name).to_numpy(zero_copy_only=False)
        out[name] = np.char.encode(values.astype(str), "ascii") if dtype[name].kind == "S" \
            else values  # fmt: skip
    return out


def info(store: str | Path) -> StoreInfo:
    """What the store holds per instrument and schema, and any part that is missing or
    whose row count disagrees with the manifest."""
    store = Path(store)
    if not (store / MANIFEST).is_file():
        raise DataFileError(f"{store}: not an esml data store (no {MANIFEST})")
    manifest = _read_manifest(store)
    groups: dict[tuple[str, str], list[tuple[SourceEntry, Part]]] = {}
    problems = []
    for entry in manifest.values():
        for p in entry.parts:
            groups.setdefault((p.instrument, p.schema), []).append((entry, p))
            f = store / p.file
            if not f.is_file():
                problems.append(f"{p.file}: missing")
            elif (n := pq.ParquetFile(f).metadata.num_rows) != p.rows:
                problems.append(f"{p.file}: {n} rows, the manifest says {p.rows}")
    rows = []
    for (inst, schema), items in sorted(groups.items()):
        synth = {e.synthetic for e, _ in items}
        rows.append(InfoRow(
            inst, schema, tuple(sorted({p.date for _, p in items})),
            sum(p.rows for _, p in items), min(p.ts_min for _, p in items),
            max(p.ts_max for _, p in items),
            "mixed" if len(synth) > 1 else ("yes" if synth.pop() else "no"),
            len({e.sha256 for e, _ in items}),
        ))  # fmt: skip
    return StoreInfo(rows, len(manifest), problems)


def _prepare(store: Path) -> None:
    if store.exists() and not store.is_dir():
        raise DataFileError(f"{store}: not a directory")
    store.mkdir(parents=True, exist_ok=True)
    if not (store / MANIFEST).exists():
        foreign = [p.name for p in store.iterdir() if p.name != LOCK
                   and not p.name.startswith(STAGING_PREFIX)
                   and not p.name.startswith("schema=")]  # fmt: skip
        if foreign:
            raise DataFileError(
                f"{store}: not an esml data store and not empty (has {sorted(foreign)[:3]})"
            )


@contextmanager
def _locked(store: Path) -> Iterator[None]:
    """One ingest at a time per store."""
    with (store / LOCK).open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_manifest(store: Path) -> dict[str, SourceEntry]:
    path = store / MANIFEST
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != STORE_FORMAT:
            raise ValueError(f"store format {doc.get('format')}, expected {STORE_FORMAT}")
        return {
            sha: SourceEntry(**{**e, "parts": [Part(**p) for p in e["parts"]]})
            for sha, e in doc["sources"].items()
        }
    except (ValueError, KeyError, TypeError) as e:
        raise DataFileError(f"{path}: unreadable store manifest: {e}") from e


def _write_manifest(store: Path, entries: dict[str, SourceEntry]) -> None:
    doc = {"format": STORE_FORMAT, "sources": {k: asdict(v) for k, v in entries.items()}}
    tmp = store / f"{MANIFEST}.{uuid.uuid4().hex}.tmp"
    try:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        _fsync(tmp)
        os.replace(tmp, store / MANIFEST)
    finally:
        tmp.unlink(missing_ok=True)


def _sweep(store: Path, manifest: dict[str, SourceEntry]) -> None:
    """Remove what an interrupted ingest left: staging folders, parts no manifest lists."""
    for d in store.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(d, ignore_errors=True)
    for t in store.glob(f"{MANIFEST}.*.tmp"):
        t.unlink(missing_ok=True)
    listed = {p.file for e in manifest.values() for p in e.parts}
    for f in store.glob("schema=*/instrument=*/date=*/*.parquet"):
        if f.relative_to(store).as_posix() not in listed:
            f.unlink()
    _remove_empty_dirs(store)


def _remove_empty_dirs(store: Path) -> None:
    for pattern in ("schema=*/instrument=*/date=*", "schema=*/instrument=*", "schema=*"):
        for d in store.glob(pattern):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()


def _fsync(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())
