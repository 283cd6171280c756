"""`esml sim`: write days of SYNTHETIC ES order flow, and calibrate the generator."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from esml.market.calendar import is_trading_date
from esml.market.instruments import PRICE_SCALE, instrument_for

if TYPE_CHECKING:  # numpy, numba and pydantic load when a command runs, not for --help
    import numpy as np

    from esml.sim.qr_params import QRParams

SHIPPED_PARAMS = "the shipped es_qr_params.json"
SHIPPED_SLOW = "the shipped es_slow_params.json"

app = typer.Typer(
    help="The market simulator: SYNTHETIC ES MBO days from the queue-reactive generator "
    "calibrated on real CME data, and its calibration.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(soft_wrap=True)


def day_file(out: Path, day: date, seed: int) -> Path:
    """Where a generated day goes: the name says synthetic, the date and the seed."""
    return out / f"ES-SYNTHETIC-qr-{day.isoformat()}-seed{seed}.mbo.dbn.zst"


def write_day(path: Path, events: np.ndarray, instrument: str) -> Path:
    from esml.data.dbn import write_mbo_dbn
    from esml.sim.synthetic import SYNTHETIC_INSTRUMENT_ID

    return write_mbo_dbn(path, events, symbols={f"{instrument}-SYNTHETIC": SYNTHETIC_INSTRUMENT_ID})


def _params(path: Path | None) -> QRParams:
    from esml.sim.qr_params import QRParams, QRParamsError, default_params

    try:
        return QRParams.load(path) if path else default_params()
    except QRParamsError as e:
        console.print(f"[red]{e}")
        raise typer.Exit(2) from e


def _start(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as e:
        console.print(f"[red]--start-date must be YYYY-MM-DD, got {text!r}")
        raise typer.Exit(2) from e


@app.command()
def generate(
    days: int = typer.Option(1, "--days", min=1, help="trade dates to write"),
    seed: int = typer.Option(0, "--seed", min=0, help="same seed and dates, same bytes"),
    start_date: str = typer.Option(
        ..., "--start-date", help="first trade date, YYYY-MM-DD (weekends, holidays skipped)"
    ),
    out: Path = typer.Option(..., "--out", help="folder for one DBN file per day"),
    params: Path | None = typer.Option(
        None, "--params", help=f"generator parameters, used as they are (default: "
        f"{SHIPPED_PARAMS} with {SHIPPED_SLOW})"
    ),
    slow: bool = typer.Option(
        True, "--slow/--no-slow", help="with the shipped parameters: add the slow dynamics "
        "fitted on the real ES bars (volatility clustering, intraday curve)"
    ),
) -> None:  # fmt: skip
    """Write `days` SYNTHETIC CME trade dates of ES MBO events, one DBN file each."""
    from esml.sim.queue_reactive import generate_days

    qr = _params(params)
    if params is None and slow:
        from esml.sim.slow_dynamics import bar_calibrated_params

        qr = bar_calibrated_params()
    first = _start(start_date)
    if not is_trading_date(first):
        console.print(f"[yellow]{first} is no CME trade date: starting at the next one")
    out.mkdir(parents=True, exist_ok=True)
    table = Table(title=f"SYNTHETIC ES days (queue-reactive, seed {seed})")
    for col in ("trade date", "events", "trades", "first mid", "last trade", "file"):
        table.add_column(col, justify="left" if col in ("trade date", "file") else "right")
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("days"), TimeElapsedColumn(),
                        console=console)  # fmt: skip
    with progress:
        task = progress.add_task("generating SYNTHETIC ES days", total=days)
        for day, events in generate_days(seed, days, first, params=qr):
            progress.update(task, description=f"generating {day} (SYNTHETIC)")
            path = write_day(day_file(out, day, seed), events, qr.instrument)
            table.add_row(day.isoformat(), f"{len(events):,}", *_glance(events),
                          path.name)  # fmt: skip
            progress.advance(task)
    console.print(table)
    console.print("[bold]SYNTHETIC data[/bold]: generated, labelled with the synthetic "
                  "publisher id; no evidence of any edge.")  # fmt: skip


def _glance(events: np.ndarray) -> tuple[str, str, str]:
    """Trades, the opening mid (from the snapshot) and the last trade price of a day."""
    from esml.market.events import ASK, BID, F_SNAPSHOT, TRADE

    trades = events["price"][events["action"] == TRADE]
    snap = events[(events["flags"] & F_SNAPSHOT) != 0]
    bids, asks = snap["price"][snap["side"] == BID], snap["price"][snap["side"] == ASK]
    mid = f"{(bids.max() + asks.min()) / 2 / PRICE_SCALE:.3f}" if len(bids) and len(asks) else "-"
    last = f"{trades[-1] / PRICE_SCALE:.2f}" if len(trades) else "-"
    return f"{len(trades):,}", mid, last


@app.command("calibrate")
def calibrate_cmd(
    file: Path | None = typer.Argument(
        None, help="a real Databento MBO file (.dbn or .dbn.zst): the queue-reactive tables"
    ),
    bars: Path | None = typer.Option(
        None, "--bars", help="real 5-minute bars instead: the shipped Parquet "
        "(data/samples/es-bars/es-5m-sierra.parquet) or a folder of Sierra Chart exports; "
        "fits the slow dynamics"
    ),
    out: Path | None = typer.Option(
        None, "--out", help=f"file to write (default: {SHIPPED_PARAMS}, with --bars "
        f"{SHIPPED_SLOW})"
    ),
    instrument: str = typer.Option("ES", "--instrument", help="root or contract, e.g. ESH4"),
) -> None:  # fmt: skip
    """Calibrate the generator from real data and write its parameters: the queue-reactive
    tables from an MBO file, or (--bars) the slow dynamics from 5-minute bars."""
    if (file is None) == (bars is None):
        console.print("[red]give an MBO file or --bars, one of the two")
        raise typer.Exit(2)
    if bars is not None:
        _calibrate_bars(bars, out)
        return
    from esml.data.dbn import DataFileError, read_mbo
    from esml.sim.qr_calibration import CalibrationError, calibrate
    from esml.sim.qr_params import DEFAULT_PARAMS_FILE

    out = out or DEFAULT_PARAMS_FILE
    try:
        tick = instrument_for(instrument).tick_fixed
        params = calibrate(read_mbo(file), tick, source=file.name, instrument=instrument)
    except (DataFileError, CalibrationError, ValueError) as e:
        console.print(f"[red]{e}")
        raise typer.Exit(2) from e
    params.save(out)
    s = params.calibration
    rows = [
        ("window (continuous trading)", f"{s.window_s:,.0f} s"),
        ("order-flow events modelled / beyond the modelled queues",
         f"{s.flow_events:,} / {s.outside_events:,}"),
        ("queues per side, average event size at the touch",
         f"{params.k_levels}, {params.aes[0]:.2f} lots"),
        ("theta (p_ref follows a depleted touch)", f"{params.theta:.3f}"),
        ("theta_reinit (book re-centres after a move)", f"{params.theta_reinit:.2f}"),
        ("order-flow pressure sd (fitted to 1-min mid changes)",
         f"{params.flow_pressure_sd:.2f}"),
        ("share of time at a one-tick spread", f"{s.one_tick_spread_share:.1%}"),
        ("sd of 1-s / 1-min mid changes",
         f"{s.mid_change_sd_1s:.3f} / {s.mid_change_sd_1min:.3f} pts"),
    ]  # fmt: skip
    _show_fit(f"queue-reactive calibration of {file.name}", rows, out)


def _show_fit(title: str, rows: list[tuple[str, str]], out: Path) -> None:
    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    console.print(f"written: {out}")


def _calibrate_bars(bars: Path, out: Path | None) -> None:
    """Fit the slow dynamics on real bars, write them with their provenance, show them."""
    from esml.data.continuous import chain_bars
    from esml.data.dbn import DataFileError
    from esml.data.sierra import read_shipped_bars, read_sierra_dir, sha256_of
    from esml.sim.slow_dynamics import SLOW_PARAMS_FILE, fit_slow, save_slow

    out = out or SLOW_PARAMS_FILE
    try:
        if bars.is_dir():
            exports = read_sierra_dir(bars)
            chained = chain_bars({e.contract: e.bars for e in exports})
            digest = sha256_of(bars / "SOURCE.txt")
        else:
            chained = chain_bars(read_shipped_bars(bars))
            digest = sha256_of(bars)
        slow = fit_slow(chained, source=bars.name, sha256=digest)
    except (DataFileError, ValueError, OSError) as e:
        console.print(f"[red]{e}", highlight=False)
        raise typer.Exit(2) from e
    save_slow(slow, out)
    f = dict(zip(slow.intraday.minutes, slow.intraday.factor, strict=True))
    rows = [
        ("bars (first, last)", f"{slow.bars:,} ({slow.first_bar_utc[:10]}, "
         f"{slow.last_bar_utc[:10]})"),
        ("daily log-activity: AR(1) phi, stationary sd",
         f"{slow.daily_phi:.3f}, {slow.daily_sd:.3f}"),
        ("within-day log-activity: OU memory, stationary sd",
         f"{slow.intraday_tau_s / 3600:.2f} h, {slow.intraday_sd:.3f}"),
        ("activity at 03:00 / 08:30 / 12:00 CT (17:00-18:00 = 1)",
         f"{f[602.5]:.2f} / {f[932.5]:.2f} / {f[1142.5]:.2f}"),
    ]  # fmt: skip
    _show_fit(f"slow dynamics fitted on {bars.name}", rows, out)


@app.command("tradovate")
def tradovate(
    data: str = typer.Option(
        ..., "--data", help="a DBN file (mbo, mbp-1, tbbo or trades), or 'synthetic'"
    ),
    speed: str = typer.Option(
        "1", "--speed", help="replay speed: 1 real time, 10, 'inf' (or 0) fastest, 'step'"
    ),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="REST port (0: any free)"),
    ws_port: int = typer.Option(0, "--ws-port", min=0, max=65535, help="user socket port"),
    md_port: int = typer.Option(0, "--md-port", min=0, max=65535, help="md socket port"),
    user: str = typer.Option("esml", "--user", help="the login the simulator accepts"),
    password: str = typer.Option("esml", "--password"),
    cid: int = typer.Option(0, "--cid"),
    sec: str = typer.Option("esml", "--sec"),
    account: str = typer.Option("DEMO0001", "--account", help="the user's account name"),
    seed: int = typer.Option(0, "--seed", min=0, help="with --data synthetic"),
    synthetic_date: str = typer.Option("2025-03-07", "--synthetic-date",
                                       help="with --data synthetic: the trade date"),
    hours: float = typer.Option(1.0, "--hours", min=0.01, max=23.0,
                                help="with --data synthetic: hours from the 17:00 CT open"),
) -> None:  # fmt: skip
    """Serve a Tradovate API (REST, user and md WebSockets) on loopback, backed by a
    replayed market, until interrupted. The first stdout line is JSON: {"rest", "ws", "md"}.
    Faults: POST {rest without /v1}/sim/fault (docs/tradovate-simulator.md)."""
    import json
    import signal
    import threading

    from esml.data.dbn import DataFileError
    from esml.sim.tradovate_api import TradovateSim
    from esml.sim.tradovate_market import ReplayMarket

    try:
        rate = _speed(speed)
        events, symbol = _replay_source(data, seed, synthetic_date, hours)
        market = ReplayMarket(events, symbol, speed=rate)
    except (DataFileError, ValueError, OSError) as e:
        console.print(f"[red]{e}", highlight=False)
        raise typer.Exit(2) from e
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sim = TradovateSim(name=user, password=password, cid=cid, sec=sec, accounts=[account],
                       market=market, port=port, ws_port=ws_port, md_port=md_port)  # fmt: skip
    with sim:
        print(json.dumps(sim.urls()), flush=True)
        stop.wait()
    console.print("stopped", highlight=False)


def _speed(text: str) -> float | None:
    if text == "step":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--speed must be a number, 'inf' or 'step', got {text!r}") from None
    if value < 0:
        raise ValueError(f"--speed must not be negative, got {text}")
    return value


def _replay_source(data: str, seed: int, day: str, hours: float) -> tuple[np.ndarray, str]:
    """The events to replay and the contract they trade."""
    import numpy as np

    from esml.data.dbn import main_instrument, read_dbn, record_symbols, to_events
    from esml.market.contracts import front_contract

    if data == "synthetic":
        from esml.sim.qr_params import default_params
        from esml.sim.queue_reactive import generate_day

        when = date.fromisoformat(day)
        events = generate_day(seed, when, hours=hours, params=default_params())
        return events, front_contract("ES", when).symbol
    path = Path(data)
    if not path.exists():
        raise ValueError(f"no such file: {data}")
    f = read_dbn(path)
    events = to_events(f)
    iid = main_instrument(events)
    mine = events["instrument_id"] == iid
    if not mine.any():
        raise ValueError(f"{data}: no events to replay")
    symbol = str(record_symbols(f)[np.flatnonzero(mine)[0]])
    if symbol.startswith("id"):
        raise ValueError(f"{data}: the file does not name instrument {iid}'s contract")
    return events[mine], symbol


if __name__ == "__main__":  # `python -m esml.cli.sim_cmd tradovate ...`: no other command loads
    app()
