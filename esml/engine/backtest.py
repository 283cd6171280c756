"""The backtester: any event source through the same Engine that trades live.

A source is a Databento MBO file, an event array, or an iterable of arrays (one per day,
say, from `esml.sim.queue_reactive.generate_days`). Each array goes to `Engine.on_events`
whole: the engine cannot tell a replay from the live loop's chunks, so the features,
gates, orders and fills are the live ones. Fills come from the exchange simulator, with
its latency, queue positions and fees (`esml.sim.exchange`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from esml.alpha.model import AlphaModel
from esml.alpha.strategy import Strategy
from esml.config import EsmlConfig
from esml.data.dbn import main_instrument, read_mbo
from esml.decision.proposal import AccountState
from esml.engine.engine import Engine
from esml.engine.session import SessionResult, session_result
from esml.journal.base import Journal
from esml.journal.sqlite import SQLiteJournal
from esml.market.calendar import trading_day
from esml.market.events import CLEAR, F_SNAPSHOT, MBO_DTYPE, NO_SIDE, is_synthetic
from esml.sim.exchange import ExchangeConfig

EventSource = str | Path | np.ndarray | Iterable[np.ndarray]


def run_backtest(
    source: EventSource,
    cfg: EsmlConfig,
    model: Strategy | AlphaModel,
    *,
    journal: Journal | None = None,
    exchange: ExchangeConfig | None = None,
    name: str | None = None,
) -> SessionResult:
    """Trade `source` through a fresh Engine and measure the result (trades, win rate with
    its Wilson interval, profit factor, net P&L after costs, max drawdown, return / max
    drawdown, daily Sharpe, average trade, time in market). Journals to `journal`, or to
    an in-memory SQLite journal."""
    label = name or (Path(source).name if isinstance(source, str | Path) else "backtest")
    journal = journal if journal is not None else SQLiteJournal(":memory:")
    engine: Engine | None = None
    span: list[int] = []
    synthetic = True
    for chunk in _chunks(source):
        first, last = int(chunk["ts_recv"][0]), int(chunk["ts_recv"][-1])
        if span and first < span[-1]:
            raise ValueError(f"{label}: events go back in time at {first} (after {span[-1]})")
        if engine is None:
            engine = Engine(cfg, model, journal, AccountState(trading_day(first)),
                            exchange=exchange)  # fmt: skip
        elif chunk["flags"][0] & F_SNAPSHOT and chunk["action"][0] != CLEAR:
            engine.on_events(_clear_before(chunk))  # a new snapshot: a fresh book
        synthetic = synthetic and is_synthetic(chunk)
        engine.on_events(chunk)
        span += [first, last]
    if engine is None:
        raise ValueError(f"{label}: no events to replay")
    engine.finish(span[-1])
    return session_result(label, engine, synthetic, span)


def _chunks(source: EventSource) -> Iterator[np.ndarray]:
    if isinstance(source, str | Path):
        events = read_mbo(source)
        if len(events):  # a file may hold spreads and other months: trade its main outright
            yield _checked(events[events["instrument_id"] == main_instrument(events)])
        return
    if isinstance(source, np.ndarray):
        if len(source):
            yield _checked(source)
        return
    for k, chunk in enumerate(source):
        if not isinstance(chunk, np.ndarray):
            raise ValueError(f"event source item {k} is a {type(chunk).__name__}, not an array")
        if len(chunk):
            yield _checked(chunk)


def _checked(events: np.ndarray) -> np.ndarray:
    if events.dtype != MBO_DTYPE:
        raise ValueError(f"events must be esml.market.events.MBO_DTYPE records, got {events.dtype}")
    ts = events["ts_recv"]
    if np.any(ts[1:] < ts[:-1]):
        bad = int(np.flatnonzero(ts[1:] < ts[:-1])[0]) + 1
        raise ValueError(f"events must be in ts_recv order; record {bad} goes back in time")
    return events


def _clear_before(chunk: np.ndarray) -> np.ndarray:
    """A book-clear record at the chunk's first time, as a feed sends before a snapshot."""
    clear = chunk[:1].copy()
    clear["action"], clear["side"] = CLEAR, NO_SIDE
    clear["size"], clear["order_id"], clear["price"] = 0, 0, 0
    return clear
