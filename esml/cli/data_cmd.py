"""`esml data`: describe market data files, put them into the Parquet store, and say what
it holds."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from esml.data.describe import Description

app = typer.Typer(
    help="Market data: describe files (DBN of any GLBX.MDP3 schema, LOBSTER, tick CSV), "
    "ingest them into the Parquet store, and summarise what it holds.",
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
    from esml.data.bar_store import is_bar_file, load_bar_files, write_bar_files
    from esml.data.dbn import DataFileError
    from esml.data.store import ingest as store_ingest

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
def info(
    paths: list[Path] = typer.Argument(
        None, help="files to describe: DBN (any schema), LOBSTER, tick CSV, or a store folder"
    ),
    store: Path | None = typer.Option(
        None, "--store", envvar="ESML_STORE", help="describe this store (without FILE)"
    ),
    symbol: str | None = typer.Option(
        None, "--symbol", help="contract of CSV ticks whose file name does not say, e.g. ESU1"
    ),
) -> None:
    """Schema, instruments, records, time range, trading days and gaps of each file; with
    --store (and no FILE), what the store holds."""
    if paths:
        _describe_files(paths, symbol)
    elif store is not None:
        _describe_store(store)
    else:
        console.print("[red]give FILE... to describe, or --store STORE (or $ESML_STORE)")
        raise typer.Exit(2)


def _describe_files(paths: list[Path], symbol: str | None) -> None:
    """One row per file; a file that cannot be read gets its error and exit status 2,
    after the others are described."""
    from esml.data.dbn import DataFileError
    from esml.data.describe import describe

    table = Table(title="market data files")
    for col in ("file", "format", "schema", "instruments", "records", "first (UTC)",
                "last (UTC)", "trading days", "gaps"):  # fmt: skip
        table.add_column(col, justify="right" if col == "records" else "left")
    failed, details = [], []
    for path in paths:
        try:
            d = describe(path, symbol)
        except (DataFileError, OSError) as e:
            failed.append(str(e))
            continue
        label = " SYNTHETIC" if d.synthetic else ""
        table.add_row(d.path.name, d.format + label, d.schema, _instruments(d.instruments),
                      f"{d.records:,}", _utc(d.ts_min), _utc(d.ts_max), _days(d.trading_days),
                      _gap_summary(d))  # fmt: skip
        details += [f"{d.path.name}: gap of {_span(g.open_ns)} from {_utc(g.start_ns)} to "
                    f"{_utc(g.end_ns)} UTC" for g in d.gaps]  # fmt: skip
        if d.notes:
            details.append(f"{d.path.name}: {'; '.join(d.notes)}")
    if table.rows:
        console.print(table)
    for line in details:
        console.print(line, highlight=False)
    for e in failed:
        console.print(f"[red]{e}[/red]", highlight=False)
    if failed:
        raise typer.Exit(2)


def _describe_store(store: Path) -> None:
    from esml.data.dbn import DataFileError
    from esml.data.store import info as store_info

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


def _instruments(counts: tuple[tuple[str, int], ...], shown: int = 3) -> str:
    if len(counts) == 1:
        return counts[0][0]
    text = ", ".join(f"{sym} {n:,}" for sym, n in counts[:shown])
    return text + (f" (+{len(counts) - shown} more)" if len(counts) > shown else "")


def _gap_summary(d: Description) -> str:
    if d.records == 0:
        return "-"
    if d.gap_count == 0:
        return f"none over {_span(d.gap_threshold_ns)}"
    return f"{d.gap_count} over {_span(d.gap_threshold_ns)}, longest {_span(d.gaps[0].open_ns)}"


def _span(ns: int) -> str:
    s = ns // 1_000_000_000
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s // 60} min" if s >= 60 else f"{s} s"


def _days(dates: tuple[str, ...]) -> str:
    if len(dates) <= 1:
        return "".join(dates)
    return f"{dates[0]} .. {dates[-1]} ({len(dates)})"


def _utc(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "-"
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S")
