"""Warm start: fill the engine's features and its models' windows from history before the
first live event, so the ensemble can vote within minutes of a (re)start, not after an hour.

Two kinds of history, oldest first:

- recorded market data: the capture's hourly stores (`esml.engine.capture`) or any file
  esml reads, e.g. the last hours downloaded from the model bucket's `data/live/` prefix
  (`download_recorded`). It is what the engine received, so every window fills as live:
  features, tick bars, minute bars and book snapshots.
- Tradovate chart history (`md/getChart`, `MarketData.history`), for the time after the
  recording: minute bars (OHLCV) for the older part and every trade, with the touch it met,
  for the last `TICK_MINUTES`. From that, exactly: the minute bars and their indicators
  (only OHLCV enters them: each bar becomes four trades at its open, high, low and close
  carrying its volume), the tick bars (real trades only: the bar trades are dropped from the
  tick window before the ticks come), and the L1 features over the tick part (the touch
  each trade met). What chart history cannot give: depth beyond the touch, per-order (L3)
  features and the book snapshots of DeepLOB. Those come from the live DOM only: the
  snapshot window is emptied after a chart warm-up and fills in the first live seconds
  (100 changed books); until it is full the status says `deeplob` is warming.

The touch rebuilt from chart history is taken off the book at its end (the L1
pseudo-orders are cancelled), so the live DOM's levels are not counted twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from esml.broker.base import BrokerError
from esml.data import store
from esml.data.dbn import L1_ASK_ORDER_ID, L1_BID_ORDER_ID, main_instrument, read_mbo
from esml.data.schemas import OHLCV_DTYPE
from esml.data.tradovate_frames import PUBLISHER_TRADOVATE, TradovateFrames
from esml.engine.capture import HOUR_NS, LIVE_PREFIX
from esml.engine.engine import Engine
from esml.features.sequences import LobState, TickBarState
from esml.market.events import (
    ASK,
    BID,
    CANCEL,
    F_LAST,
    F_MBP,
    MODIFY,
    NO_SIDE,
    TRADE,
    empty_events,
)
from esml.market.instruments import PRICE_SCALE

log = logging.getLogger(__name__)
MINUTE_NS = 60_000_000_000
BAR_HISTORY = 120  # minute bars: the bar window's 60, and 60 before for its indicators
TICK_MINUTES = 10  # every trade over the last minutes: the features' 300 s lookbacks
TICK_DTYPE = np.dtype([("ts", "<i8"), ("price", "<i8"), ("size", "<i8"), ("bid", "<i8"),
                       ("ask", "<i8"), ("bid_size", "<i8"), ("ask_size", "<i8"),
                       ("id", "<i8")])  # fmt: skip


@dataclass(frozen=True)
class WarmReport:
    """What a warm start replayed, and what is still filling after it."""

    recorded_events: int
    bars: int  # chart minute bars
    trades: int  # chart ticks
    first_ns: int | None
    last_ns: int | None
    warming: tuple[str, ...]

    def line(self) -> str:
        span = "nothing"
        if self.first_ns is not None and self.last_ns is not None:
            span = f"{_hm(self.first_ns)}-{_hm(self.last_ns)} UTC"
        left = ", ".join(self.warming) if self.warming else "nothing: every window is full"
        return (f"warm start: {self.recorded_events} recorded events, {self.bars} chart minute "
                f"bars, {self.trades} chart trades ({span}); still warming: {left}")  # fmt: skip


def _hm(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).strftime("%m-%d %H:%M")


# -- recorded market data ------------------------------------------------------------------


def recorded_events(paths: Sequence[Path]) -> np.ndarray:
    """The MBO events of recorded files or hour stores, in the order given (oldest first),
    each the main instrument's."""
    parts = []
    for p in paths:
        p = Path(p)
        if (p / store.MANIFEST).is_file():
            for row in store.info(p).rows:
                if row.schema == "mbo":
                    parts.append(store.read_events(p, "mbo", row.instrument))
        else:
            parts.append(read_mbo(p))
    parts = [e[e["instrument_id"] == main_instrument(e)] for e in parts if len(e)]
    return np.concatenate(parts) if parts else empty_events(0)


def download_recorded(s3: Any, bucket: str, prefix: str, symbol: str, *, hours: float,
                      now_ns: int, folder: Path) -> list[Path]:  # fmt: skip
    """The capture's hour stores of `symbol` from the last `hours` before `now_ns`, from
    `s3://bucket/<prefix>live/<symbol>/<YYYYMMDD-HH>/`, downloaded under `folder`; oldest
    first."""
    base = f"{prefix}{LIVE_PREFIX}{symbol}/"
    first_hour = (now_ns - round(hours * 3600e9)) // HOUR_NS
    keys: dict[str, list[str]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
        for obj in page.get("Contents", []):
            stamp, _, rest = obj["Key"][len(base) :].partition("/")
            if rest:
                keys.setdefault(stamp, []).append(obj["Key"])
    out = []
    for stamp in sorted(keys):
        try:
            hour = int(datetime.strptime(stamp, "%Y%m%d-%H").replace(tzinfo=UTC).timestamp())
        except ValueError:
            continue  # not a capture's hour
        if not first_hour <= hour // 3600 < now_ns // HOUR_NS + 1:
            continue
        local = Path(folder) / symbol / stamp
        for key in keys[stamp]:
            target = local / key[len(base) + len(stamp) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(target))
        if (local / store.MANIFEST).is_file():
            out.append(local)
    return out


# -- Tradovate chart history --------------------------------------------------------------


def tick_rows(packets: Sequence[dict[str, Any]], tick_size: float) -> np.ndarray:
    """Tick-chart packets (`bp`, `bt`, `ts`, `tks`) as rows, prices in fixed point, each
    trade once (by tick id), in time order."""
    rows: dict[object, tuple[int, ...]] = {}
    for p in packets:
        bp, bt = int(p["bp"]), int(p["bt"])
        tick = round(float(p.get("ts") or tick_size) * PRICE_SCALE)
        for t in p.get("tks") or []:
            key = int(t["id"]) if "id" in t else ("no id", len(rows))
            bid = (bp + int(t["b"])) * tick if "b" in t else 0
            ask = (bp + int(t["a"])) * tick if "a" in t else 0
            rows[key] = ((bt + int(t["t"])) * 1_000_000, (bp + int(t["p"])) * tick, int(t["s"]),
                         bid, ask, int(t.get("bs", 0)) if bid else 0,
                         int(t.get("as", 0)) if ask else 0, int(t.get("id", -1)))  # fmt: skip
    out = np.array(list(rows.values()), TICK_DTYPE) if rows else np.zeros(0, TICK_DTYPE)
    return out[np.lexsort((out["id"], out["ts"]))]


def bar_trades(bars: np.ndarray, instrument_id: int) -> np.ndarray:
    """Minute bars (OHLCV records) as four trades each, at 0, 15, 30 and 45 s into the
    minute: open, high, low, close, the volume on the open's trade beyond three quarters."""
    n = len(bars)
    ev = empty_events(4 * n)
    if not n:
        return ev
    start = np.repeat(bars["ts_event"].astype(np.int64), 4) + np.tile(
        np.arange(4, dtype=np.int64) * 15_000_000_000, n
    )
    prices = np.stack([bars["open"], bars["high"], bars["low"], bars["close"]], 1).ravel()
    vol = bars["volume"].astype(np.int64)
    quarter = vol // 4
    sizes = np.stack([vol - 3 * quarter, quarter, quarter, quarter], 1).ravel()
    _stamp(ev, start, instrument_id)
    ev["action"], ev["side"], ev["price"], ev["size"] = TRADE, NO_SIDE, prices, sizes
    ev["flags"] = F_MBP | F_LAST
    return ev


def tick_events(rows: np.ndarray, instrument_id: int) -> np.ndarray:
    """Chart trades with the touch each met: per trade, the bid and the offer as L1
    pseudo-orders (modified when they change), then the trade, its aggressor inferred as
    Tradovate's frames do; at the end the touch is cancelled, leaving the book empty."""
    n = len(rows)
    if not n:
        return empty_events(0)
    two_sided = (rows["bid_size"] > 0) & (rows["ask_size"] > 0) & (rows["bid"] < rows["ask"])
    cols = []
    for side, px, size, oid in ((BID, "bid", "bid_size", L1_BID_ORDER_ID),
                                (ASK, "ask", "ask_size", L1_ASK_ORDER_ID)):  # fmt: skip
        level = _carry(np.where(two_sided, rows[px], 0)), _carry(np.where(two_sided, rows[size], 0))
        changed = two_sided & _moved(level[0]) | two_sided & _moved(level[1])
        cols.append((changed, MODIFY, side, rows[px], rows[size], oid))
    bought, sold = rows["price"] >= rows["ask"], rows["price"] <= rows["bid"]
    aggressor = np.where(two_sided & bought, BID, np.where(two_sided & sold, ASK, NO_SIDE))
    cols.append((np.ones(n, bool), TRADE, aggressor, rows["price"], rows["size"], 0))
    ev = empty_events(3 * n).reshape(n, 3)
    keep = np.zeros((n, 3), bool)
    for j, (mask, action, side, px, size, oid) in enumerate(cols):
        ev[:, j]["action"], ev[:, j]["side"], ev[:, j]["price"] = action, side, px
        ev[:, j]["size"], ev[:, j]["order_id"] = size, oid
        keep[:, j] = mask
    _stamp(ev, np.repeat(rows["ts"], 3).reshape(n, 3), instrument_id)
    ev["flags"] = F_MBP
    ev[:, 2]["flags"] = F_MBP | F_LAST
    out = ev[keep]
    resting = [
        r for r in (_last(out, oid) for oid in (L1_BID_ORDER_ID, L1_ASK_ORDER_ID)) if r is not None
    ]
    if not resting:
        return out
    off = np.array(resting, out.dtype)
    off["action"], off["ts_recv"], off["ts_event"] = CANCEL, rows["ts"][-1], rows["ts"][-1]
    off["flags"] = F_MBP
    off[-1]["flags"] = F_MBP | F_LAST
    return np.concatenate([out, off])


def _moved(values: np.ndarray) -> np.ndarray:
    """True where a value differs from the one before it (always at the first row)."""
    return np.r_[True, values[1:] != values[:-1]]


def _carry(values: np.ndarray) -> np.ndarray:
    """Each row's value, or the last one before it where this row has none (0)."""
    have = values > 0
    idx = np.where(have, np.arange(len(values)), 0)
    np.maximum.accumulate(idx, out=idx)
    return np.where(have | have[idx], values[idx], values)


def _last(ev: np.ndarray, order_id: int) -> np.void | None:
    at = np.flatnonzero(ev["order_id"] == order_id)
    return ev[at[-1]].copy() if len(at) else None


def _stamp(ev: np.ndarray, ts: np.ndarray, instrument_id: int) -> None:
    ev["ts_recv"] = ev["ts_event"] = ts
    ev["publisher_id"], ev["instrument_id"] = PUBLISHER_TRADOVATE, instrument_id


def chart_history(md: Any, symbol: str, instrument_id: int, tick_size: float, *,
                  after_ns: int | None = None, timeout_s: float = 30.0
                  ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(minute bars, trades) from the md socket: the last BAR_HISTORY bars and every trade
    of the last TICK_MINUTES, both after `after_ns` (the end of the recorded history). The
    newest bar tells the market's time, so this works on a replay's clock too."""
    frames = TradovateFrames(instrument_id, tick_size)
    for packet in md.history(symbol, "MinuteBar", as_much_as=BAR_HISTORY, timeout_s=timeout_s):
        frames.minute_bars(packet)
    bars = frames.bars()
    if not len(bars):
        return bars, np.zeros(0, TICK_DTYPE)
    tick_from = int(bars["ts_event"][-1]) - TICK_MINUTES * MINUTE_NS
    if after_ns is not None:
        tick_from = max(tick_from, after_ns + 1)
        bars = bars[bars["ts_event"].astype(np.int64) > after_ns]
    bars = bars[bars["ts_event"].astype(np.int64) + MINUTE_NS <= tick_from]
    packets = md.history(symbol, "Tick", as_far_as_ns=tick_from, timeout_s=timeout_s)
    ticks = tick_rows(packets, tick_size)
    return bars, ticks[ticks["ts"] >= tick_from]


# -- the warm-up --------------------------------------------------------------------------


async def warm_live(engine: Engine, *, recorded: Sequence[Path] = (), md: Any = None,
                    symbol: str | None = None, timeout_s: float = 30.0) -> WarmReport:  # fmt: skip
    """Warm `engine` from recorded files or stores (oldest first), then from the md socket's
    chart history after them. The socket is waited on in a worker thread; the engine is fed
    on the caller's (its journal and broker belong to that thread)."""
    history = recorded_events(recorded)
    bars, ticks, iid = np.zeros(0, OHLCV_DTYPE), np.zeros(0, TICK_DTYPE), 0
    if md is not None:
        sym = symbol or engine.symbol
        iid = md.contract_id(sym)
        after = int(history["ts_recv"][-1]) if len(history) else None
        try:
            bars, ticks = await asyncio.to_thread(
                chart_history, md, sym, iid, engine.instrument.tick_size, after_ns=after,
                timeout_s=timeout_s,
            )  # fmt: skip
        except BrokerError as e:  # no history: the windows fill from live data, as said
            log.warning("warm start: no chart history for %s (%s)", sym, e)
    return warm_start(engine, history, bars, ticks, iid)


def warm_start(engine: Engine, history: np.ndarray, bars: np.ndarray | None = None,
               ticks: np.ndarray | None = None, instrument_id: int = 0) -> WarmReport:  # fmt: skip
    """Feed the history to `engine` without trading: recorded events, then the chart's
    minute bars (as trades) and ticks (`chart_history`). The tick window keeps real trades
    only and the book-snapshot window live books only. The start-up reconciliation and its
    lockout come at the first live quote."""
    bars = np.zeros(0, OHLCV_DTYPE) if bars is None else bars
    ticks = np.zeros(0, TICK_DTYPE) if ticks is None else ticks
    if len(history):
        engine.warm(history)
    inputs = engine.inputs
    if len(bars):
        engine.warm(bar_trades(bars, instrument_id))
        if inputs is not None:  # bar trades are not trades: the tick window takes real ones
            inputs.ticks = TickBarState(engine.instrument.tick_fixed)
    if len(ticks):
        engine.warm(tick_events(ticks, instrument_id))
    if inputs is not None and inputs.lob is not None and (len(bars) or len(ticks)):
        inputs.lob = LobState(engine.instrument.tick_fixed)  # L1 only: DeepLOB waits for DOM
    firsts = [int(rows[key][0]) for rows, key in
              ((history, "ts_recv"), (bars, "ts_event"), (ticks, "ts")) if len(rows)]  # fmt: skip
    report = WarmReport(len(history), len(bars), len(ticks), min(firsts, default=None),
                        engine.last_event_ns if firsts else None,
                        tuple(engine.warming()))  # fmt: skip
    log.info("%s", report.line())
    return report
