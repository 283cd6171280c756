"""One trading session through the engine: build it, run it through the live loop,
collect what a person wants to see."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from esml.alpha.model import AlphaModel
from esml.config import EsmlConfig
from esml.decision.proposal import AccountState
from esml.engine.engine import Engine, EngineStats
from esml.engine.live import paced, run_live
from esml.evaluation.metrics import Metrics, compute_metrics
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


def run_session(
    name: str,
    events: np.ndarray,
    cfg: EsmlConfig,
    model: AlphaModel,
    journal: Journal,
    *,
    speed: float | None = None,
    progress: Progress | None = None,
) -> SessionResult:
    if len(events) == 0:
        raise ValueError(f"{name}: no events to replay")
    account = AccountState(trading_day(int(events["ts_recv"][0])))
    engine = Engine(cfg, model, journal, account)
    task = progress.add_task(name, total=len(events)) if progress else None

    def advance_bar(n: int) -> None:
        if progress is not None and task is not None:
            progress.advance(task, n)

    asyncio.run(run_live(engine, paced(events, speed=speed), advance_bar))
    # a position still open when the data ends is closed at the last book, as a person would
    last_ts = int(events["ts_recv"][-1])
    if engine.broker.position(engine.symbol) != 0:
        engine.flatten(last_ts, "end of data")
    rts = round_trips(engine.broker.fills(), cfg.instrument_spec)
    mids = engine.stats.mids
    prices = (
        np.array([m[0] for m in mids], np.int64),
        np.array([m[1] for m in mids], np.float64),
    )
    return SessionResult(
        name=name,
        synthetic=is_synthetic(events),
        stats=engine.stats,
        round_trips=rts,
        metrics=compute_metrics(rts),
        prices=prices,
        gate_rejections=dict(engine.gates.rejections),
    )


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
