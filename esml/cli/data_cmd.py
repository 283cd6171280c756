"""`esml data`: put market data files into the Parquet store and say what it holds."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from esml.data.bar_store import is_bar_file, load_bar_files, write_bar_files
from esml.data.dbn import DataFileError
from esml.data.store import info as store_info
from esml.data.store import ingest as store_ingest

app = typer.Typer(
    help="Market data: ingest DBN (any GLBX.MDP3 schema) and CSV tick files into the "
    "Parquet store, and summarise what it holds.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(soft_wrap=True)

STORE_OPTION = typer.Option(..., "--store", envvar="ESML_STORE", help="store directory")


@app.command()
def ingest(
    paths: list[Path] = typer.Argument(
        ..., help="DBN (.dbn, .dbn.zst), tick CSV, Sierra Chart bar exports or Lean bar zips"
    ),
    store: Path = STORE_OPTION,
    symbol: str | None = typer.Option(
        None, "--symbol", help="contract of CSV ticks whose file name does not say, e.g. ESU1"
    ),
) -> None:
    """Add files to the store: all of them or, if one is bad, none."""
    bar_files = [p for p in paths if is_bar_file(p)]
    try:
        loaded = load_bar_files(bar_files)  # checked before anything is written
        others = [p for p in paths if p not in bar_files]
        results = store_ingest(store, others, symbol=symbol) if others or not loaded else []
        bars = write_bar_files(store, loaded)
    except DataFileError as e:
        console.print(f"[red]{e}[/red]\nnothing was added to {store}")
        raise typer.Exit(2) from e
    table = Table(title=f"ingest into {store}")
    for col in ("file", "schema", "instruments", "trading days", "records", "status"):
        table.add_column(col, justify="right" if col == "records" else "left")
    for r in results:
        table.add_row(r.path.name, r.schema, " ".join(r.instruments), _days(r.dates),
                      f"{r.rows:,}", r.status)  # fmt: skip
    for b in bars:
        span = f"{_utc(b.ts_min)} .. {_utc(b.ts_max)} UTC"
        table.add_row(b.path.name, b.format, " ".join(b.instruments), span, f"{b.rows:,}",
                      b.status)  # fmt: skip
    console.print(table)


@app.command()
def info(store: Path = STORE_OPTION) -> None:
    """Instruments, schemas, trading days, records and time range in the store."""
    try:
        summary = store_info(store)
    except DataFileError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from e
    table = Table(title=f"{store}: {summary.sources} source files")
    for col in ("instrument", "schema", "trading days", "records", "first (UTC)",
                "last (UTC)", "synthetic", "sources"):  # fmt: skip
        table.add_column(col, justify="right" if col in ("records", "sources") else "left")
    for r in summary.rows:
        table.add_row(r.instrument, r.schema, _days(r.dates), f"{r.rows:,}", _utc(r.ts_min),
                      _utc(r.ts_max), r.synthetic.upper() if r.synthetic != "no" else "no",
                      str(r.sources))  # fmt: skip
    console.print(table)
    for p in summary.problems:
        console.print(f"[red]{p}[/red]")
    if summary.problems:
        raise typer.Exit(1)


def _days(dates: tuple[str, ...]) -> str:
    if len(dates) <= 1:
        return "".join(dates)
    return f"{dates[0]} .. {dates[-1]} ({len(dates)})"


def _utc(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S")
