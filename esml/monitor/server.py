"""The monitor's web server: a Starlette app with three read-only routes.

    /              the page (static HTML; it polls /api/state and redraws with Plotly.react)
    /plotly.min.js plotly.js from the installed plotly package: the page works offline
    /api/state     the journal as `esml.monitor.state.monitor_state` sees it now

Only GET is served; the journal is opened read-only on every poll, so the monitor can
neither change an engine's records nor hold up its writes.
"""

from __future__ import annotations

import asyncio
import time
from functools import cache
from importlib.resources import files
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from esml.monitor.source import JournalNotReady, JournalSource
from esml.monitor.state import monitor_state

MAX_PRICE_POINTS = 4_000  # each poll sends them: enough for the chart's width


def market_prices(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Trade prints of the busiest instrument of a DBN MBO file (the one a backtest or a
    replaying simulator trades), thinned keeping each bucket's extremes."""
    from esml.data.dbn import main_instrument, read_mbo
    from esml.evaluation.report import downsample_minmax
    from esml.market.events import TRADE
    from esml.market.instruments import PRICE_SCALE

    ev = read_mbo(path)
    ev = ev[(ev["instrument_id"] == main_instrument(ev)) & (ev["action"] == TRADE)]
    ts = ev["ts_recv"].astype(np.int64)
    return downsample_minmax(ts, ev["price"] / PRICE_SCALE, MAX_PRICE_POINTS)


@cache
def _page() -> str:
    return files("esml.monitor").joinpath("page.html").read_text(encoding="utf-8")


@cache
def _plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


def create_app(
    source: JournalSource, poll_s: float = 1.0, prices: tuple[np.ndarray, np.ndarray] | None = None
) -> Starlette:
    """The monitor of one journal; the page asks for news every `poll_s` seconds. `prices`
    (see `market_prices`) draws the market under the fills."""

    async def page(_: Request) -> HTMLResponse:
        return HTMLResponse(_page().replace("__POLL_MS__", str(int(poll_s * 1000))))

    async def plotly_js(_: Request) -> Response:
        return Response(_plotly_js(), media_type="text/javascript",
                        headers={"Cache-Control": "max-age=86400"})  # fmt: skip

    async def state(_: Request) -> JSONResponse:
        try:  # a scan of DynamoDB or a large SQLite file must not stall the event loop
            data = await asyncio.to_thread(source.read)
        except JournalNotReady as e:
            return JSONResponse({"source": source.name, "waiting": str(e)})
        return JSONResponse(monitor_state(data, source.name, time.time(), prices))

    return Starlette(routes=[
        Route("/", page, methods=["GET"]),
        Route("/plotly.min.js", plotly_js, methods=["GET"]),
        Route("/api/state", state, methods=["GET"]),
    ])  # fmt: skip
