"""`esml bars`: the bar-level models on the shipped nine years of real ES 5-minute bars.

- `esml bars evaluate`: the walk-forward by year, written to docs/bar-model-evaluation.md
  and an HTML chart beside it;
- `esml bars train`: the models fitted on every year but the held-out last ones, shipped
  as a bundle under models/;
- `esml bars pack`: rebuild the shipped Parquet from the Sierra Chart exports.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
console = Console(soft_wrap=True)

DATA_HELP = "the shipped bars (zstd Parquet with its .sha256 beside it)"


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    )


def load_frame(data: Path):
    """Features and labels of the shipped bars, or a clear error and exit 2."""
    from esml.alpha.bar_bundle import frame_from_shipped
    from esml.data.dbn import DataFileError

    try:
        return frame_from_shipped(data)
    except DataFileError as e:
        console.print(f"[red]{e}")
        raise typer.Exit(2) from e


@app.command()
def evaluate(
    data: Path = typer.Option(Path("data/samples/es-bars/es-5m-sierra.parquet"), help=DATA_HELP),
    out: Path = typer.Option(Path("docs/bar-model-evaluation.md"), help="the document"),
    years: str = typer.Option("2017-2023", help="test years, e.g. 2017-2023 or 2019,2021"),
    nets: bool = typer.Option(True, help="also the bar LSTM and the Transformer"),
    n_boot: int = typer.Option(500, help="bootstrap replicates"),
) -> None:
    """Walk-forward by year: fit on the years before, score against baselines, trade."""
    from esml.evaluation.bar_report import BarReportContext, render_html, render_markdown
    from esml.evaluation.bar_walkforward import BarEvalSettings, evaluate_bars
    from esml.evaluation.report import PLOTLYJS_FILE, ensure_plotlyjs

    start = time.perf_counter()
    test_years = _years(years)
    settings = BarEvalSettings(
        test_years=test_years, n_boot=n_boot, nets=("bar_lstm", "bar_transformer") if nets else ()
    )
    shipped = load_frame(data)
    with progress_bar() as progress:
        results = evaluate_bars(shipped.frame, settings, progress)
    wall = time.perf_counter() - start
    ctx = BarReportContext(
        "esml bars " + shlex.join(sys.argv[2:])
        if sys.argv[1:2] == ["bars"]
        else "esml bars evaluate",
        wall,
        f"{data.name} ({shipped.contracts} contracts, sha256 {shipped.sha256[:16]}...)",
        shipped.bars,
        settings,
        shipped.rolls,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(results, ctx))
    html = out.with_suffix(".html")
    ensure_plotlyjs(html.parent / PLOTLYJS_FILE)
    html.write_text(render_html(results))
    console.print(f"wrote {out} and {html} in {wall / 60:.1f} minutes")


def _years(text: str) -> tuple[int, ...]:
    try:
        if "-" in text:
            a, b = (int(x) for x in text.split("-"))
            return tuple(range(a, b + 1))
        return tuple(int(x) for x in text.split(","))
    except ValueError as e:
        raise typer.BadParameter(f"years must look like 2017-2023 or 2019,2021: {text!r}") from e


@app.command()
def pack(
    sierra_dir: Path = typer.Argument(..., help="folder of Sierra exports with SOURCE.txt"),
    out: Path = typer.Option(Path("data/samples/es-bars/es-5m-sierra.parquet"), help="Parquet"),
) -> None:
    """Check every export against SOURCE.txt and write the shipped Parquet and its sha256."""
    from esml.data.dbn import DataFileError
    from esml.data.sierra import read_sierra_dir, write_shipped_bars

    try:
        exports = read_sierra_dir(sierra_dir)
    except DataFileError as e:
        console.print(f"[red]{e}")
        raise typer.Exit(2) from e
    digest = write_shipped_bars(exports, out)
    console.print(
        f"{out}: {sum(len(s.bars) for s in exports):,} bars of {len(exports)} "
        f"contracts, {out.stat().st_size / 1e6:.1f} MB, sha256 {digest}"
    )


@app.command()
def train(
    data: Path = typer.Option(Path("data/samples/es-bars/es-5m-sierra.parquet"), help=DATA_HELP),
    out: Path = typer.Option(Path("models"), help="folder the bundle directory is made in"),
    held_out_years: int = typer.Option(
        2, min=0, help="last years left out (purged), to score the bundle on out of sample"
    ),
) -> None:
    """Fit the bar models on the real bars but their last years and write a bundle under
    models/ (the shipped one holds out 2022-2023: `esml demo` scores it on them)."""
    from esml.alpha.bar_bundle import train_bar_bundle
    from esml.alpha.bar_models import BarBudget

    start = time.perf_counter()
    shipped = load_frame(data)
    with progress_bar() as progress:
        path = train_bar_bundle(shipped, out, BarBudget(), progress, held_out_years)
    console.print(
        f"wrote {path} (trained on REAL ES bars, {shipped.bars:,} bars) in "
        f"{(time.perf_counter() - start) / 60:.1f} minutes"
    )
