"""Market-data capture: what the live engine receives, kept as one esml store per clock
hour so retraining has fresh real data.

Each hour of event time becomes a store (`esml.data.store`: Parquet partitioned by
schema, instrument and trading day, with its `_manifest.json`) in
`<folder>/<symbol>/<YYYYMMDD-HH>/`, written when the hour is over (or the run ends) in a
background thread, so the event loop never waits on it, and then handed to `upload`. The
container uploads each store under the model bucket's data prefix:

    s3://<bucket>/<prefix>live/<symbol>/<YYYYMMDD-HH>/_manifest.json
    s3://<bucket>/<prefix>live/<symbol>/<YYYYMMDD-HH>/schema=mbo/instrument=<symbol>/
        date=<trading day>/<sha256>.parquet

Retraining's data channel is that prefix; `training/retrain_data.py` takes every folder
holding a `_manifest.json` as a store, so each hour is a source as it stands, and
`esml data info --store <hour folder>` reads one.

An hour stands alone: it starts with a snapshot of the book at the top of the hour
(a CLEAR and one ADD per resting order, flagged F_SNAPSHOT, as Databento's MBO files
start), kept by a book the capture runs over what passes through. Queue order inside a
level is not kept by the snapshot (orders are listed by side, price and id); for
Tradovate's data, one pseudo-order per level, nothing is lost.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numba import njit

from esml.data import store
from esml.data.book import M_BASE, M_ERROR, M_TICK, BookState, apply_event
from esml.data.dbn import write_mbo_dbn
from esml.market.events import (
    ADD,
    CLEAR,
    F_LAST,
    F_SNAPSHOT,
    NO_SIDE,
    UNDEF_PRICE,
    empty_events,
)
from esml.market.instruments import instrument_for

log = logging.getLogger(__name__)
HOUR_NS = 3600 * 1_000_000_000
LIVE_PREFIX = "live/"  # under the bucket's data prefix


@njit(cache=True)
def _apply_all(ev, meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side,
               free) -> int:  # fmt: skip
    """Every event into the book; the index of a record the book refused, else -1."""
    for k in range(len(ev)):
        e = ev[k]
        apply_event(meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size,
                    o_side, free, e.action, e.side, e.price, e.size, e.order_id)  # fmt: skip
        if meta[M_ERROR] != 0:
            return k
    return -1


def book_snapshot(book: BookState, ts_ns: int, instrument_id: int, publisher_id: int
                  ) -> np.ndarray:  # fmt: skip
    """The book's resting orders as snapshot events at `ts_ns` (CLEAR, then the ADDs)."""
    at = np.flatnonzero(book.keys != 0)
    slots = book.vals[at]
    ids, sides, sizes = book.keys[at], book.o_side[slots], book.o_size[slots]
    prices = book.meta[M_BASE] + book.o_idx[slots] * book.meta[M_TICK]
    order = np.lexsort((ids, prices, sides))
    ev = empty_events(len(at) + 1)
    ev["ts_recv"] = ev["ts_event"] = ts_ns
    ev["instrument_id"], ev["publisher_id"] = instrument_id, publisher_id
    ev["flags"] = F_SNAPSHOT
    ev[0]["action"], ev[0]["side"], ev[0]["price"] = CLEAR, NO_SIDE, UNDEF_PRICE
    rest = ev[1:]
    rest["action"] = ADD
    rest["side"], rest["price"] = sides[order], prices[order]
    rest["size"], rest["order_id"] = sizes[order], ids[order]
    ev[-1]["flags"] = F_SNAPSHOT | F_LAST
    return ev


class Capture:
    def __init__(self, folder: Path, symbol: str,
                 upload: Callable[[Path], None] | None = None) -> None:  # fmt: skip
        self.folder = Path(folder)
        self.symbol = symbol
        self.upload = upload
        self.written: list[Path] = []  # the hour stores, in order
        self.not_uploaded: list[Path] = []  # tried again after the next hour and at close
        self._tick = instrument_for(symbol).tick_fixed
        self._books: dict[int, BookState] = {}
        self._publisher: dict[int, int] = {}
        self._hour: int | None = None
        self._parts: list[np.ndarray] = []
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture")

    def add(self, events: np.ndarray) -> None:
        if not len(events):
            return
        hours = events["ts_recv"].astype(np.int64) // HOUR_NS
        start = 0
        for cut in [*(np.flatnonzero(np.diff(hours)) + 1).tolist(), len(events)]:
            self._take(events[start:cut], int(hours[start]))
            start = cut

    def close(self) -> None:
        """Write what is held (the hour in progress) and wait for every write and upload."""
        if self._parts and self._hour is not None:
            self._submit(self._hour)
        self._writer.shutdown(wait=True)
        self._retry_uploads()

    async def wrap(self, source: AsyncIterator[np.ndarray]) -> AsyncIterator[np.ndarray]:
        try:
            async for chunk in source:
                self.add(chunk)
                yield chunk
        finally:
            self.close()

    def _take(self, events: np.ndarray, hour: int) -> None:
        if hour != self._hour:
            if self._parts and self._hour is not None:
                self._submit(self._hour)
            self._hour = hour
            self._parts = [self._snapshot(hour * HOUR_NS)]
        self._parts.append(events.copy())
        for iid in np.unique(events["instrument_id"]).tolist():
            of = events[events["instrument_id"] == iid]
            self._publisher[iid] = int(of["publisher_id"][-1])
            book = self._books.get(iid)
            if book is None:
                book = self._books[iid] = BookState.new(self._tick)
            bad = _apply_all(of, *book.arrays)
            if bad >= 0:
                book.check(f" (capture, instrument {iid}, record {bad} of the chunk)")

    def _snapshot(self, ts_ns: int) -> np.ndarray:
        """Every book's resting orders at the top of the hour (none at the run's start)."""
        parts = [book_snapshot(b, ts_ns, iid, self._publisher[iid])
                 for iid, b in self._books.items() if (b.keys != 0).any()]  # fmt: skip
        return np.concatenate(parts) if parts else empty_events(0)

    def _submit(self, hour: int) -> None:
        events = np.concatenate(self._parts)
        self._parts = []
        self._writer.submit(self._write, hour, events)

    def _write(self, hour: int, events: np.ndarray) -> None:
        """In the writer thread: a failure is logged, never raised into the trading loop."""
        stamp = datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y%m%d-%H")
        try:
            self._store(stamp, events)
        except Exception:
            log.exception("capture: the hour %s could not be written", stamp)
            return
        self._retry_uploads()

    def _store(self, stamp: str, events: np.ndarray) -> None:
        folder = self.folder / self.symbol / stamp
        folder.mkdir(parents=True, exist_ok=True)
        ids = np.unique(events["instrument_id"]).tolist()
        symbols = {self.symbol if len(ids) == 1 else f"{self.symbol}-{i}": int(i) for i in ids}
        dbn = write_mbo_dbn(folder.parent / f"{stamp}.mbo.dbn.zst", events, symbols=symbols)
        try:
            store.ingest(folder, [dbn])
        finally:
            dbn.unlink(missing_ok=True)  # the store holds it now
        self.written.append(folder)
        self.not_uploaded.append(folder)

    def _retry_uploads(self) -> None:
        if self.upload is None:
            return
        for folder in list(self.not_uploaded):
            try:
                self.upload(folder)
            except Exception:  # S3 away: the hour is kept and tried again
                log.exception("capture: upload of %s failed; trying again later", folder)
                return
            self.not_uploaded.remove(folder)


def s3_uploader(s3: object, bucket: str, prefix: str) -> Callable[[Path], None]:
    """Upload an hour's store under `s3://bucket/<prefix>live/<symbol>/<stamp>/`: its
    Parquet parts first, the manifest last, so a reader never sees a listed part missing."""

    def upload(folder: Path) -> None:
        base = f"{prefix}{LIVE_PREFIX}{folder.parent.name}/{folder.name}/"
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != store.LOCK)
        for path in sorted(files, key=lambda p: p.name == store.MANIFEST):
            key = base + path.relative_to(folder).as_posix()
            s3.upload_file(str(path), bucket, key)  # type: ignore[attr-defined]

    return upload
