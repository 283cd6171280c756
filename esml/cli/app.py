"""The `esml` command.

`esml --help` and every subcommand's `--help` answer in a fraction of a second because
nothing heavy loads until a command runs. The rule for every command module (this one
included): at module level import only the standard library, typer, rich and light esml
modules (esml.market.calendar/instruments, constants); numpy, numba-compiled modules,
pandas, torch, xgboost, sklearn, onnxruntime, plotly and boto3 are imported inside the
command functions that use them (annotations of helpers under TYPE_CHECKING).
tests/test_startup.py runs every command's `--help` and names any heavy module it pulls in.

Registering a command module is one or two lines here:

    from esml.cli import live_cmd                      # light at import, as above
    app.add_typer(live_cmd.app, name="live")           # a typer group of subcommands
    app.command("score")(score_cmd.score)              # or a single command function
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from esml.cli import (
    bars_cmd,
    data_cmd,
    live_cmd,
    models_cmd,
    monitor_cmd,
    score_cmd,
    sim_cmd,
    train_cmd,
)

if TYPE_CHECKING:
    import numpy as np

    from esml.config import EsmlConfig
    from esml.engine.serving import Served
    from esml.engine.session import SessionResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="esml: machine-learning trading of CME E-mini S&P 500 futures. Start with "
    "`esml demo`; docs/quickstart.md walks through the first hour.",
)
app.add_typer(data_cmd.app, name="data")
app.add_typer(bars_cmd.app, name="bars")
app.add_typer(sim_cmd.app, name="sim")
app.add_typer(models_cmd.app, name="models")
app.add_typer(train_cmd.train_app, name="train")
app.add_typer(train_cmd.evaluate_app, name="evaluate")
app.command("live")(live_cmd.live)
app.command("monitor")(monitor_cmd.monitor)
app.command("score")(score_cmd.score)
console = Console(soft_wrap=True)

DEFAULT_ES_FILE = Path("data/samples/esh4-glbx-mdp3-20231225.mbo.dbn.zst")
DEMO_REPLAY_SEED = 99
DEMO_REPLAY_DATE = "2024-03-15"  # after the shipped bundle's SYNTHETIC training dates
DEMO_REPLAY_HOURS = 3.0  # the bar LSTM reads an hour of minute bars before it votes
ABLATE_SYNTHETIC_DAY = "2024-03-05"
MODEL_HELP = "a model root with a champion, a bundle, or a trees model (default: the config's)"
RULES = "zscore_regime, momentum, mean_reversion"  # esml.alpha.rules.RULE_CONFIGS


def _config(path: Path | None) -> EsmlConfig:
    from esml.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as e:
        console.print(f"[red]{e}")
        raise typer.Exit(2) from e


def _events(path: Path) -> np.ndarray:
    from esml.data.dbn import DataFileError, main_instrument, read_mbo

    try:
        ev = read_mbo(path)
    except DataFileError as e:
        console.print(f"[red]{e}")
        raise typer.Exit(2) from e
    if len(ev) == 0:
        console.print(f"[red]{path}: no MBO records")
        raise typer.Exit(2)
    return ev[ev["instrument_id"] == main_instrument(ev)]


def _serve(path: Path, cfg: EsmlConfig) -> Served:
    """A replay serves what the path holds now: no hot swap mid-replay."""
    from esml.alpha.manifest import ModelFileError
    from esml.engine.serving import serve

    try:
        return serve(path, cfg, hot_swap=False)
    except (ModelFileError, ValueError) as e:
        console.print(f"[red]{e}")
        raise typer.Exit(2) from e


def _show(result: SessionResult, out_dir: Path) -> Path:
    from esml.engine.session import report_path
    from esml.evaluation.metrics import metrics_table
    from esml.evaluation.report import write_report

    label = " (SYNTHETIC)" if result.synthetic else ""
    console.print(metrics_table(result.metrics, f"{result.name}{label}"))
    funnel = Table(title="decision funnel", show_header=True)
    funnel.add_column("stage")
    funnel.add_column("count", justify="right")
    funnel.add_row("events", f"{result.stats.events:,}")
    funnel.add_row("signals", f"{result.stats.signals:,}")
    for stage, n in result.funnel:  # in gate order: what is still alive after each
        funnel.add_row(f"  after {stage}" if stage != "proposals" else "proposals", f"{n:,}")
    funnel.add_row("orders", f"{result.stats.orders:,}")
    funnel.add_row("fills", f"{result.stats.fills:,}")
    console.print(funnel)
    if result.round_trips:
        trades = Table(title=f"trades ({len(result.round_trips)})")
        for col in ("entry (UTC)", "side", "entry", "exit", "exit by", "net $"):
            trades.add_column(col)
        for rt in result.round_trips[:20]:
            t = datetime.fromtimestamp(rt.entry_ts_ns / 1e9, UTC).strftime("%m-%d %H:%M:%S")
            trades.add_row(t, rt.side.value, f"{rt.entry_price:.2f}", f"{rt.exit_price:.2f}",
                           rt.exit_role.value, f"{rt.net_pnl:,.2f}")  # fmt: skip
        if len(result.round_trips) > 20:
            trades.caption = f"first 20 of {len(result.round_trips)}"
        console.print(trades)
    path = write_report(
        report_path(out_dir, result.name),
        title=result.name,
        prices=result.prices,
        round_trips=result.round_trips,
        metrics=result.metrics,
        synthetic=result.synthetic,
        notes=[
            f"{result.stats.decisions:,} decision points, {result.stats.orders:,} orders, "
            f"{result.stats.fills:,} fills"
        ],
        levels=result.levels,
        funnel=result.funnel,
    )
    console.print(f"report: [link=file://{path.resolve()}]{path}[/link]")
    return path


@app.command()
def backtest(
    data: Path = typer.Option(..., "--data", help="a Databento MBO file (.dbn or .dbn.zst)"),
    model: Path | None = typer.Option(None, help=MODEL_HELP),
    strategy: str = typer.Option(
        "model", help="'model' (the champion of --model) or a rule strategy: " + RULES
    ),
    config: Path | None = typer.Option(None, help="esml TOML config"),
    out: Path = typer.Option(Path("runs/backtest"), help="journal and report folder"),
) -> None:
    """Replay a DBN file through the engine against the paper broker."""
    from esml.engine.session import progress_bar, run_session
    from esml.journal.sqlite import SQLiteJournal

    cfg = _config(config)
    ev = _events(data)
    if strategy == "model":
        trader = _serve(model or cfg.model.path, cfg).strategy
    else:
        from esml.alpha.rules import make_rule_strategy

        try:
            trader = make_rule_strategy(strategy, tick_size=cfg.instrument_spec.tick_size)
        except ValueError as e:
            console.print(f"[red]--strategy: {e}")
            raise typer.Exit(2) from e
    out.mkdir(parents=True, exist_ok=True)
    with progress_bar() as bar, SQLiteJournal(out / "journal.sqlite") as journal:
        result = run_session(data.name, ev, cfg, trader, journal, progress=bar)
    _show(result, out)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="journal and report folder"),
    es_file: Path = typer.Option(DEFAULT_ES_FILE, help="the real ES MBO file to replay"),
    model: Path | None = typer.Option(None, help=MODEL_HELP),
    replay: bool = typer.Option(True, help="the engine replays; --no-replay: real bars only"),
) -> None:
    """The embedded default end to end: first the shipped bar bundle scored and traded out
    of sample on the held-out years of nine years of real ES 5-minute bars; then the
    shipped champion bundle (the ensemble of trees and nets) trades the real ES file and a
    SYNTHETIC ES morning through the live loop, the gates, the position manager and the
    paper exchange, into a SQLite journal."""
    from esml.alpha.ensemble_strategy import EnsembleStrategy
    from esml.cli.demo_bars import DEMO_BAR_MODELS, DEMO_BARS, show_held_out
    from esml.engine.session import progress_bar, run_session
    from esml.journal.sqlite import SQLiteJournal
    from esml.sim.queue_reactive import generate_day

    cfg = _config(None)
    out.mkdir(parents=True, exist_ok=True)
    console.print(Panel.fit(
        "esml demo: the embedded default (market simulator + paper exchange + SQLite)\n"
        "First a real-data test: the bar bundle on years of real ES bars it never saw.\n"
        "Then the engine replays, with the champion trained on SYNTHETIC data (`make\n"
        "models` regenerates it): those are no evidence of an edge.", title="esml"))  # fmt: skip
    show_held_out(console, DEMO_BARS, DEMO_BAR_MODELS)
    if not replay:
        return
    served = _serve(model or cfg.model.path, cfg)
    _describe_models(served)
    journal_path = out / "journal.sqlite"
    journal_path.unlink(missing_ok=True)
    replay = [
        ("real ES MBO 2023-12-25", _events(es_file)),
        (f"synthetic ES {DEMO_REPLAY_DATE} morning", generate_day(
            DEMO_REPLAY_SEED, DEMO_REPLAY_DATE, start="07:30", hours=DEMO_REPLAY_HOURS)),
    ]  # fmt: skip
    with progress_bar() as bar, SQLiteJournal(journal_path) as journal:
        runs = []
        for name, ev in replay:  # each session starts cold, as a fresh engine would
            strategy = served.make()
            runs.append((run_session(name, ev, cfg, strategy, journal, progress=bar), strategy))
    for r, strategy in runs:
        _show(r, out)
        if isinstance(strategy, EnsembleStrategy) and strategy.warming:
            console.print(f"the ensemble abstained at {strategy.warming:,} of "
                          f"{r.stats.decisions:,} decisions while its windows filled")  # fmt: skip
    console.print(f"journal: {journal_path}")


def _describe_models(served: Served) -> None:
    from esml.alpha.bundle_manifest import promotion_line
    from esml.alpha.ensemble_strategy import EnsembleStrategy

    s = served.strategy
    if not isinstance(s, EnsembleStrategy):
        console.print(f"serving one model: {s.name}")
        return
    members = ", ".join(f"{m} x{w:g}" for m, w in s.served.ensemble.cfg.weights.items())
    label = " (trained on SYNTHETIC data)" if served.synthetic else ""
    console.print(f"serving bundle {s.name}{label}: ensemble of {members}")
    console.print(f"  {promotion_line(s.served.manifest)}", highlight=False)
    for verdict in s.served.ensemble_manifest.held_out.verdicts:
        console.print(f"  held out: {verdict}")


@app.command()
def ablate(
    data: Path = typer.Option(DEFAULT_ES_FILE, "--data", help="a Databento MBO file"),
    model: Path | None = typer.Option(None, help=MODEL_HELP),
    synthetic_hours: float = typer.Option(
        0.0, help="instead of --data: this many hours of a SYNTHETIC queue-reactive ES day"
    ),
    config: Path | None = typer.Option(None, help="esml TOML config"),
    out: Path = typer.Option(Path("runs/ablate"), help="report folder"),
) -> None:
    """The same events through every configuration: the model with all gates and with the
    risk limits only, and each rule strategy; one table, one funnel, deterministic."""
    from esml.engine.ablation import default_variants, run_ablation
    from esml.engine.session import progress_bar
    from esml.evaluation.ablation import html_section as ablation_html
    from esml.evaluation.ablation import rich_tables as ablation_tables
    from esml.evaluation.ablation import to_markdown as ablation_markdown
    from esml.evaluation.report import PLOTLYJS_FILE, ensure_plotlyjs
    from esml.sim.queue_reactive import generate_day

    cfg = _config(config)
    if synthetic_hours > 0:
        ev = generate_day(DEMO_REPLAY_SEED, ABLATE_SYNTHETIC_DAY, start="08:30",
                          hours=synthetic_hours)  # fmt: skip
        name = f"SYNTHETIC {synthetic_hours:g} h"
    else:
        ev, name = _events(data), data.name
    variants = default_variants(cfg, _serve(model or cfg.model.path, cfg).make)
    with progress_bar() as bar:
        task = bar.add_task(f"ablation on {name}", total=len(variants))
        runs = []
        for v in variants:
            runs += run_ablation(ev, [v], name=name)
            bar.advance(task)
    results, funnel = ablation_tables(runs)
    console.print(results)
    console.print(funnel)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.md").write_text(ablation_markdown(runs))
    page = ablation_html(runs, include_plotlyjs="directory")
    ensure_plotlyjs(out / PLOTLYJS_FILE)  # once per folder, beside the pages that load it
    (out / "ablation.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>esml ablation: {name}</title>{page}"
    )
    console.print(f"tables: {out / 'ablation.md'}, {out / 'ablation.html'}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
