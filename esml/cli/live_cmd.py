"""`esml live`: the live loop from the command line, with a status line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from esml.engine.status import Snapshot

console = Console(soft_wrap=True)


def live(
    source: str = typer.Option("replay", help="market data: replay, sim or tradovate"),
    broker: str = typer.Option("paper", help="where orders go: paper or tradovate"),
    data: Path | None = typer.Option(None, "--data", help="--source replay: a recorded file"),
    speed: float | None = typer.Option(None, help="replay: times real time (default: fastest)"),
    strategy: str = typer.Option("model", help="'model' (the champion) or a rule strategy"),
    symbol: str | None = typer.Option(None, help="the contract, e.g. ESH5 (Tradovate sources)"),
    model: Path | None = typer.Option(None, help="model root or bundle (default: config's)"),
    config: Path | None = typer.Option(None, help="esml TOML config"),
    journal: Path = typer.Option(Path("runs/live/journal.sqlite"), help="SQLite journal"),
    for_: str | None = typer.Option(None, "--for", help="stop after 90s / 15m / 2h, flat"),
    lockout: float = typer.Option(10.0, help="seconds with no entry after the start-up check"),
    warm: float = typer.Option(0.0, help="replay: seconds of the file that only warm models"),
    warm_from: list[Path] = typer.Option([], help="recorded files before the data: warm-up"),
    warm_history: bool = typer.Option(True, help="tradovate: warm up from chart history"),
    tradovate_rest: str | None = typer.Option(None, help="REST base (default: demo)"),
    tradovate_ws: str | None = typer.Option(None, help="user WebSocket (default: demo)"),
    tradovate_md: str | None = typer.Option(None, help="market-data WebSocket (default: demo)"),
    capture: Path | None = typer.Option(None, help="keep what is received: a store an hour"),
    quiet: bool = typer.Option(False, help="no status line, only the summary"),
) -> None:
    """Run the live loop: a market source, a broker, the engine, a journal. Tradovate
    credentials come from the JSON file named by ESML_TRADOVATE_CREDENTIALS, never from
    the command line."""
    # the engine, its models and the journal load when the command runs, not for --help
    import asyncio

    from esml.config import ConfigError, load_config
    from esml.engine.capture import Capture
    from esml.engine.live_run import (
        Endpoints,
        LiveSettings,
        LiveSetupError,
        credentials_from_file,
        make_strategy,
        parse_duration,
        run,
        tradovate_client,
    )
    from esml.engine.serving import serve
    from esml.journal.sqlite import SQLiteJournal

    try:
        cfg = load_config(config)
        settings = LiveSettings(
            source=source, broker=broker, data=data, speed=speed, strategy=strategy,  # type: ignore[arg-type]
            for_s=parse_duration(for_) if for_ else None, lockout_s=lockout, warm_s=warm,
            symbol=symbol, warm_from=tuple(warm_from), warm_history=warm_history,
            endpoints=Endpoints(tradovate_rest, tradovate_ws, tradovate_md),
        )  # fmt: skip
        client = None
        if "tradovate" in (settings.broker, settings.source):
            client = tradovate_client(credentials_from_file(), settings.endpoints,
                                      cfg.execution.commission_per_side,
                                      orders=settings.broker == "tradovate")  # fmt: skip
        remote = client if settings.broker == "tradovate" else None
        served = None
        if settings.strategy == "model":
            served = serve(model or cfg.model.path, cfg)
        strat = make_strategy(settings.strategy, cfg, lambda: served.strategy)  # type: ignore[union-attr]
    except (ConfigError, LiveSetupError, ValueError) as e:
        console.print(f"[red]{e}")
        raise typer.Exit(2) from e
    journal.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"esml live: {settings.source} -> {settings.broker} ({settings.mode} mode), "
                  f"strategy {strat.name}, journal {journal}")  # fmt: skip
    show = None if quiet else _printer()
    said = logging.getLogger("esml.engine.warm_start")  # its one line: what the warm-up filled
    if not said.handlers:
        said.setLevel(logging.INFO)
        said.addHandler(logging.StreamHandler())
    try:
        with SQLiteJournal(journal) as j:
            kept = Capture(capture, settings.symbol or cfg.instrument) if capture else None
            engine = asyncio.run(run(settings, cfg, strat, j, broker=remote, on_status=show,
                                     market=client, capture=kept))  # fmt: skip
    except LiveSetupError as e:
        console.print(f"[red]{e}")
        raise typer.Exit(2) from e
    finally:
        if served is not None:
            served.close()
        if client is not None:
            client.close()
    st = engine.stats
    pos = engine.broker.position(engine.symbol)
    console.print(f"done: {st.events:,} events, {st.decisions:,} decisions, {st.signals:,} "
                  f"signals, {st.orders} orders, {st.fills} fills; position {pos:+d}; day "
                  f"${engine.account.realized_pnl:,.2f}")  # fmt: skip
    if engine.recovery is not None and (engine.recovery.found or engine.recovery.orphans):
        r = engine.recovery
        console.print(f"start-up: adopted {len(r.found)}, cancelled {len(r.orphans)} orphans")


def _printer():
    def show(s: Snapshot) -> None:
        console.print(s.line(), highlight=False)

    return show
