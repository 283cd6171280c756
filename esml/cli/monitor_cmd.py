"""`esml monitor`: watch a running (or finished) engine in the browser, through its journal."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(soft_wrap=True)


def monitor(
    journal: Path | None = typer.Argument(
        None, help="the engine's SQLite journal, e.g. runs/backtest/journal.sqlite"
    ),
    dynamodb_orders: str | None = typer.Option(
        None, "--dynamodb-orders", envvar="ORDERS_TABLE", help="on AWS: the orders table"
    ),
    dynamodb_fills: str | None = typer.Option(
        None, "--dynamodb-fills", envvar="FILLS_TABLE", help="on AWS: the fills table"
    ),
    data: Path | None = typer.Option(
        None, "--data", help="the DBN file the engine replays: its trades drawn as the price"
    ),
    host: str = typer.Option("127.0.0.1", help="address to serve on (loopback by default)"),
    port: int = typer.Option(8765, min=1, max=65535, help="port to serve on"),
    poll: float = typer.Option(1.0, min=0.2, help="seconds between the page's updates"),
) -> None:
    """A live page of the engine: price with entries, exits, stop and target; position and
    P&L; equity and drawdown; the gate funnel; latest signals; model state; data age.
    Read-only: the journal is never written."""
    import uvicorn

    from esml.data.dbn import DataFileError
    from esml.monitor.server import create_app, market_prices
    from esml.monitor.source import DynamoDBSource, JournalSource, SQLiteSource

    source: JournalSource
    if journal is not None:
        source = SQLiteSource(journal)
    elif dynamodb_orders and dynamodb_fills:
        import boto3

        ddb = boto3.resource("dynamodb")
        source = DynamoDBSource(ddb.Table(dynamodb_orders), ddb.Table(dynamodb_fills))
        poll = max(poll, 5.0)  # each poll scans the tables
    else:
        console.print("[red]give a JOURNAL file, or --dynamodb-orders and --dynamodb-fills")
        raise typer.Exit(2)
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]serving on {host}: anyone who reaches it sees the journal")
    try:
        prices = market_prices(data) if data is not None else None
    except DataFileError as e:
        console.print(f"[red]{e}")
        raise typer.Exit(2) from e
    console.print(f"esml monitor of {source.name}: http://{host}:{port}/  (Ctrl-C stops)")
    app = create_app(source, poll, prices)
    uvicorn.run(app, host=host, port=port, log_level="warning")
