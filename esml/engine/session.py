"""One trading session through the engine: build it, run it through the live loop,
collect what a person wants to see."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from esml.alpha.model import AlphaModel
from esml.alpha.strategy import Strategy
from esml.config import EsmlConfig
from esml.decision.proposal import AccountState
from esml.engine.engine import Engine, EngineStats
from esml.engine.live import paced, run_live
from esml.evaluation.metrics import Metrics, compute_metrics
from esml.evaluation.report import TradeLevels, levels_from_orders
from esml.evaluation.trades import RoundTrip, round_trips
from esml.journal.base import Journal
from esml.market.calendar import trading_day
from esml.market.events import is_synthetic


@dataclass(frozen=True)
class SessionResult:
    name: str
    synthetic: bool
    stats: EngineStats
    round_trips: list[RoundTrip]
    metrics: Metrics
    prices: tuple[np.ndarray, np.ndarray]  # decision-time mids
    gate_rejections: dict[str, int]
    funnel: list[tuple[str, int]]  # proposals, then how many are left after each gate
    levels: list[TradeLevels]  # each entry's stop and target, for the report


def run_session(
    name: str,
    events: np.ndarray,
    cfg: EsmlConfig,
    strategy: Strategy | AlphaModel,
    journal: Journal,
    *,
    speed: float | None = None,
    progress: Progress | None = None,
) -> SessionResult:
    """Replay `events` through the live loop (chunks of event time, paced at `speed`)."""
    if len(events) == 0:
        raise ValueError(f"{name}: no events to replay")
    account = AccountState(trading_day(int(events["ts_recv"][0])))
    engine = Engine(cfg, strategy, journal, account)
    task = progress.add_task(name, total=len(events)) if progress else None

    def advance_bar(n: int) -> None:
        if progress is not None and task is not None:
            progress.advance(task, n)

    asyncio.run(run_live(engine, paced(events, speed=speed), advance_bar))
    first, last = int(events["ts_recv"][0]), int(events["ts_recv"][-1])
    # a position still open when the data ends is closed at the last book, as a person would
    engine.finish(last)
    return session_result(name, engine, is_synthetic(events), [first, last])


def session_result(name: str, engine: Engine, synthetic: bool,
                   span_ns: Sequence[int]) -> SessionResult:  # fmt: skip
    """What a finished engine traded, measured. `span_ns`: the times the data covers (its
    first and last event, of each day when there are several), so the daily Sharpe counts
    flat days and time in market is a share of the whole period."""
    rts = round_trips(engine.broker.fills(), engine.cfg.instrument_spec)
    mids = engine.stats.mids
    prices = (
        np.array([m[0] for m in mids], np.int64),
        np.array([m[1] for m in mids], np.float64),
    )
    return SessionResult(
        name=name,
        synthetic=synthetic,
        stats=engine.stats,
        round_trips=rts,
        metrics=compute_metrics(rts, _closed_equity(rts, span_ns)),
        prices=prices,
        gate_rejections=dict(engine.gates.rejections),
        funnel=engine.gates.funnel(),
        levels=levels_from_orders(engine.journal.orders(), engine.journal.fills()),
    )


def _closed_equity(rts: Sequence[RoundTrip], span_ns: Sequence[int]) -> tuple[np.ndarray, ...]:
    """Net closed-trade equity at each exit and at each point of the span, in time order."""
    ts = np.array([*span_ns, *(rt.exit_ts_ns for rt in rts)], np.int64)
    step = np.array([0.0] * len(span_ns) + [rt.net_pnl for rt in rts])
    order = np.argsort(ts, kind="stable")
    return ts[order], np.cumsum(step[order])


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
    )


def report_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name.lower().replace(' ', '-')}.html"
