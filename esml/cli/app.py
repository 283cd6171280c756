"""The `esml` command."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from esml.alpha.model import OnnxAlphaModel
from esml.alpha.xgb import train_direction_model
from esml.cli import data_cmd, sim_cmd, train_cmd
from esml.config import ConfigError, EsmlConfig, load_config
from esml.data.dbn import DataFileError, main_instrument, read_mbo
from esml.engine.ablation import default_variants, run_ablation
from esml.engine.session import SessionResult, progress_bar, report_path, run_session
from esml.evaluation.ablation import html_section as ablation_html
from esml.evaluation.ablation import rich_tables as ablation_tables
from esml.evaluation.ablation import to_markdown as ablation_markdown
from esml.evaluation.metrics import metrics_table
from esml.evaluation.report import write_report
from esml.features.streaming import FEATURE_NAMES, FEATURE_VERSION
from esml.journal.sqlite import SQLiteJournal
from esml.sim.queue_reactive import generate_day
from esml.sim.synthetic import DEFAULT_START_NS, generate_session

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.add_typer(data_cmd.app, name="data")
app.add_typer(sim_cmd.app, name="sim")
app.add_typer(train_cmd.train_app, name="train")
app.add_typer(train_cmd.evaluate_app, name="evaluate")
console = Console(soft_wrap=True)

DEFAULT_ES_FILE = Path("data/samples/esh4-glbx-mdp3-20231225.mbo.dbn.zst")
DEMO_TRAIN_SEEDS = (11, 12, 13, 14, 15, 16)
DEMO_REPLAY_SEED = 99
DEMO_REPLAY_DAY = 7  # Monday 2024-03-11, RTH: after every training day, and the market is open
DAY_NS = 86_400 * 1_000_000_000
ABLATE_SYNTHETIC_DAY = "2024-03-05"


def _config(path: Path | None) -> EsmlConfig:
    try:
        return load_config(path)
    except ConfigError as e:
        console.print(f"[red]{e}")
        raise typer.Exit(2) from e


def _events(path: Path):
    try:
        ev = read_mbo(path)
    except DataFileError as e:
        console.print(f"[red]{e}")
        raise typer.Exit(2) from e
    if len(ev) == 0:
        console.print(f"[red]{path}: no MBO records")
        raise typer.Exit(2)
    return ev[ev["instrument_id"] == main_instrument(ev)]


def _load_model(model_dir: Path) -> OnnxAlphaModel:
    return OnnxAlphaModel.load(
        model_dir, feature_names=FEATURE_NAMES, feature_version=FEATURE_VERSION
    )


def _show(result: SessionResult, out_dir: Path) -> Path:
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
        notes=[f"{result.stats.decisions:,} decision points, {result.stats.orders:,} orders, "
               f"{result.stats.fills:,} fills"],
        levels=result.levels,
        funnel=result.funnel,
    )
    console.print(f"report: [link=file://{path.resolve()}]{path}[/link]")
    return path


@app.command()
def backtest(
    data: Path = typer.Option(..., "--data", help="a Databento MBO file (.dbn or .dbn.zst)"),
    model: Path | None = typer.Option(None, help="model directory (default: the config's)"),
    config: Path | None = typer.Option(None, help="esml TOML config"),
    out: Path = typer.Option(Path("runs/backtest"), help="journal and report folder"),
) -> None:
    """Replay a DBN file through the engine against the paper broker."""
    cfg = _config(config)
    ev = _events(data)
    out.mkdir(parents=True, exist_ok=True)
    alpha = _load_model(model or cfg.model_dir)
    with progress_bar() as bar, SQLiteJournal(out / "journal.sqlite") as journal:
        result = run_session(data.name, ev, cfg, alpha, journal, progress=bar)
    _show(result, out)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="journal, model and report folder"),
    es_file: Path = typer.Option(DEFAULT_ES_FILE, help="the real ES MBO file to replay"),
    train_minutes: float = typer.Option(60.0, help="minutes per synthetic training session"),
) -> None:
    """The embedded default end to end: synthetic training data, a trained model, then the
    real ES file and a fresh synthetic session through the live loop and paper broker."""
    cfg = load_config()
    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "model"
    console.print(Panel.fit(
        "esml demo: the embedded default (market simulator + paper exchange + SQLite)\n"
        "Training data is SYNTHETIC, from the seeded session generator; it is no evidence "
        "of an edge.", title="esml"))  # fmt: skip
    with progress_bar() as bar:
        task = bar.add_task("generate synthetic sessions", total=len(DEMO_TRAIN_SEEDS))
        sessions = []
        for seed in DEMO_TRAIN_SEEDS:
            start = DEFAULT_START_NS + len(sessions) * DAY_NS  # one session a day, in order
            sessions.append(generate_session(seed, start_ns=start, duration_s=train_minutes * 60))
            bar.advance(task)
    manifest = train_direction_model(
        sessions, cfg, model_dir, synthetic=True,
        source_names=[f"synthetic-seed-{s}" for s in DEMO_TRAIN_SEEDS], progress=None,
    )  # fmt: skip
    console.print(f"trained {manifest.name} on {manifest.training_rows:,} synthetic rows")
    alpha = _load_model(model_dir)
    journal_path = out / "journal.sqlite"
    journal_path.unlink(missing_ok=True)
    replay = [
        ("real ES MBO 2023-12-25", _events(es_file)),
        ("synthetic session", generate_session(
            DEMO_REPLAY_SEED, start_ns=DEFAULT_START_NS + DEMO_REPLAY_DAY * DAY_NS,
            duration_s=3600)),
    ]
    with progress_bar() as bar, SQLiteJournal(journal_path) as journal:
        results = [run_session(name, ev, cfg, alpha, journal, progress=bar)
                   for name, ev in replay]  # fmt: skip
    for r in results:
        _show(r, out)
    console.print(f"journal: {journal_path}")


@app.command()
def ablate(
    data: Path = typer.Option(DEFAULT_ES_FILE, "--data", help="a Databento MBO file"),
    model: Path | None = typer.Option(None, help="model directory (default: the config's)"),
    synthetic_hours: float = typer.Option(
        0.0, help="instead of --data: this many hours of a SYNTHETIC queue-reactive ES day"
    ),
    config: Path | None = typer.Option(None, help="esml TOML config"),
    out: Path = typer.Option(Path("runs/ablate"), help="report folder"),
) -> None:
    """The same events through every configuration: the model with all gates and with the
    risk limits only, and each rule strategy; one table, one funnel, deterministic."""
    cfg = _config(config)
    if synthetic_hours > 0:
        ev = generate_day(DEMO_REPLAY_SEED, ABLATE_SYNTHETIC_DAY, start="08:30",
                          hours=synthetic_hours)  # fmt: skip
        name = f"SYNTHETIC {synthetic_hours:g} h"
    else:
        ev, name = _events(data), data.name
    variants = default_variants(cfg, _load_model(model or cfg.model_dir))
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
    page = ablation_html(runs, include_plotlyjs=True)
    (out / "ablation.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>esml ablation: {name}</title>{page}"
    )
    console.print(f"tables: {out / 'ablation.md'}, {out / 'ablation.html'}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
