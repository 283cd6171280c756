"""A self-contained report of a run: an HTML page (plotly) and a PNG summary, readable
offline and months later, with synthetic data never mistaken for real.

The page shows trades on the price with each trade's stop and target, the net equity curve
and its drawdown, P&L by hour and by session segment (by entry time: that is when the
gates and budgets decided), the gate funnel and the trade table. The PNG is the page's
headline (equity, drawdown, key metrics) for places that cannot show HTML.

plotly.js is 4.8 MB. By default ("directory") it is written once per folder of reports, as
plotly.min.js beside them, and each page loads it from there: a report stays small (tens
of kB) and still opens offline; copy the folder, not one file. `include_plotlyjs=True`
keeps it inline (one self-contained file); "cdn" is a script tag pinned to the installed
plotly.js version (needs internet to view). The page loads plotly.js once whatever the
number of charts on it.
"""

from __future__ import annotations

import html
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import DateFormatter
from matplotlib.figure import Figure as MplFigure
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from esml.evaluation.metrics import Metrics, metric_rows, usd
from esml.evaluation.trades import RoundTrip
from esml.execution.orders import Fill, Order, OrderRole, Side
from esml.market.calendar import CHICAGO, SEGMENTS, Segment
from esml.market.calendar_arrays import segment_codes
from esml.market.instruments import instrument_for

MAX_PRICE_POINTS = 50_000
MAX_TABLE_ROWS = 10_000  # beyond this the page gets slow; the journal has every trade
SYNTHETIC_BANNER = "SYNTHETIC DATA"
PLOTLYJS_FILE = "plotly.min.js"
GLOBEX_HOURS = (*range(17, 24), *range(0, 17))  # CT clock hours in trading-day order
PNG_SIZE_IN = (12.0, 7.0)
PNG_DPI = 100

PlotlyJs = Literal[True, "cdn", "directory"]

_WIN = "#1a9850"
_LOSS = "#d73027"
_TRADE_HOVER = (
    "%{customdata[0]} %{customdata[1]}<br>%{x|%Y-%m-%d %H:%M:%S.%L} CT<br>"
    "entry %{customdata[2]:.2f} → exit %{customdata[3]:.2f}<br>"
    "net %{customdata[4]}  (gross %{customdata[5]}, costs %{customdata[6]})<br>"
    "exit: %{customdata[7]}<extra></extra>"
)
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.synthetic { background: #b00020; color: #fff; font-size: 1.6em; font-weight: bold;
  padding: 0.6em; text-align: center; letter-spacing: 0.1em; }
table { border-collapse: collapse; margin: 1em 0; }
table td, table th { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; }
table th { text-align: left; background: #f4f4f4; }
td.v, th.v { text-align: right; font-variant-numeric: tabular-nums; }
tr.win td.net { color: #1a7f37; } tr.loss td.net { color: #b00020; }
.tz { color: #555; }
"""


@dataclass(frozen=True)
class TradeLevels:
    """The bracket of one entry fill, for drawing: a round trip whose first entry fill has
    this symbol and time gets these stop and target prices."""

    symbol: str
    entry_ts_ns: int
    stop: float | None
    target: float | None


def levels_from_orders(orders: Iterable[Order], fills: Iterable[Fill]) -> list[TradeLevels]:
    """Each entry fill's bracket from the broker's orders: the legs whose parent is the
    filled entry order. A stop that trailed shows where it last stood."""
    legs: dict[str, dict[OrderRole, float]] = {}
    for o in orders:
        is_leg = o.role in (OrderRole.STOP, OrderRole.TARGET)
        if is_leg and o.parent_id is not None and o.price is not None:
            legs.setdefault(o.parent_id, {})[o.role] = o.price
    out = []
    for f in sorted(fills, key=lambda f: f.ts_ns):
        if f.role is OrderRole.ENTRY and f.order_id in legs:
            leg = legs[f.order_id]
            out.append(
                TradeLevels(f.symbol, f.ts_ns, leg.get(OrderRole.STOP), leg.get(OrderRole.TARGET))
            )
    return out


def downsample_minmax(
    ts_ns: np.ndarray, price: np.ndarray, max_points: int = MAX_PRICE_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` points keeping each bucket's first, lowest, highest and last
    price in time order, so spikes and the shape of the line survive the thinning."""
    if max_points < 4:
        raise ValueError(f"max_points must be at least 4, got {max_points}")
    n = ts_ns.size
    if n <= max_points:
        return ts_ns, price
    buckets = max_points // 4
    width = -(-n // buckets)
    idx = np.minimum(np.arange(buckets * width), n - 1).reshape(buckets, width)
    rows = np.arange(buckets)
    lo = idx[rows, np.argmin(price[idx], axis=1)]
    hi = idx[rows, np.argmax(price[idx], axis=1)]
    keep = np.unique(np.concatenate([idx[:, 0], lo, hi, idx[:, -1]]))
    return ts_ns[keep], price[keep]


def to_chicago(ts_ns: np.ndarray | Sequence[int]) -> np.ndarray:
    """UTC nanoseconds as naive Chicago wall-clock datetimes: plotly axes have no time
    zone, so the conversion happens here and the axis says CT."""
    utc = pd.to_datetime(np.asarray(ts_ns, dtype=np.int64), unit="ns", utc=True)
    return utc.tz_convert(CHICAGO).tz_localize(None).to_numpy()


# --- breakdowns -----------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    label: str
    trades: int
    net_pnl: float


def pnl_by_hour(rts: Sequence[RoundTrip]) -> list[Bucket]:
    """Net P&L and trade count per Chicago clock hour of entry, every hour of the Globex
    day in its order (17:00 first), empty hours included so gaps show."""
    hours = pd.DatetimeIndex(to_chicago([rt.entry_ts_ns for rt in rts])).hour.to_numpy()
    nets = np.array([rt.net_pnl for rt in rts], dtype=float)
    return [
        Bucket(f"{h:02d}", int(np.sum(hours == h)), float(nets[hours == h].sum()))
        for h in GLOBEX_HOURS
    ]


def pnl_by_segment(rts: Sequence[RoundTrip]) -> list[Bucket]:
    """Net P&L and trade count per session segment of entry, in session order; CLOSED
    only when some trade was entered with the market closed (which is worth seeing)."""
    codes = segment_codes(np.array([rt.entry_ts_ns for rt in rts], dtype=np.int64))
    nets = np.array([rt.net_pnl for rt in rts], dtype=float)
    out = []
    for code, seg in enumerate(SEGMENTS):
        mask = codes == code
        if seg is Segment.CLOSED and not mask.any():
            continue
        out.append(Bucket(seg.value, int(mask.sum()), float(nets[mask].sum())))
    return out


# --- figures ----------------------------------------------------------------------------


def build_figure(
    *,
    title: str,
    prices: tuple[np.ndarray, np.ndarray],
    round_trips: Sequence[RoundTrip],
    synthetic: bool,
    levels: Sequence[TradeLevels] = (),
) -> go.Figure:
    """Price with trades and their brackets, net equity, and drawdown, on one time axis."""
    ts, px = _checked_prices(prices)
    rts = sorted(round_trips, key=lambda rt: rt.exit_ts_ns)
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.55, 0.27, 0.18],
        vertical_spacing=0.05,
        subplot_titles=(
            "Price, trades, stops and targets",
            "Net equity after costs, closed trades ($)",
            "Drawdown from the running peak ($)",
        ),
    )
    line_ts, line_px = downsample_minmax(ts, px)
    thinned = f" (min/max of {ts.size:,} points)" if line_ts.size < ts.size else ""
    fig.add_trace(
        go.Scatter(
            x=to_chicago(line_ts),
            y=line_px,
            mode="lines",
            name=f"price{thinned}",
            line={"color": "#4a4a4a", "width": 1},
            hovertemplate="%{x|%Y-%m-%d %H:%M:%S.%L} CT<br>%{y:.2f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    for trace in _level_traces(rts, _levels_by_entry(levels)):
        fig.add_trace(trace, row=1, col=1)
    for trace in _trade_traces(rts):
        fig.add_trace(trace, row=1, col=1)
    span = [int(t) for t in ts[[0, -1]]] if ts.size else []
    span += [t for rt in rts for t in (rt.entry_ts_ns, rt.exit_ts_ns)]
    if span:  # a session without prices or trades has no curve to draw
        for trace, row in _equity_traces(rts, min(span), max(span)):
            fig.add_trace(trace, row=row, col=1)
    heading = f"{SYNTHETIC_BANNER} — {title}" if synthetic else title
    fig.update_layout(
        title=heading, height=950, hovermode="closest", legend={"orientation": "h", "y": -0.06}
    )
    fig.update_xaxes(title_text="time (America/Chicago, CME)", row=3, col=1)
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="$", row=2, col=1)
    fig.update_yaxes(title_text="$", row=3, col=1)
    return fig


def breakdown_figure(rts: Sequence[RoundTrip]) -> go.Figure:
    """Net P&L by entry hour (CT) and by session segment, bars coloured by sign."""
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.7, 0.3],
        subplot_titles=("Net P&L by entry hour (CT)", "Net P&L by session segment"),
    )
    for col, name, buckets in (
        (1, "P&L by hour", pnl_by_hour(rts)),
        (2, "P&L by segment", pnl_by_segment(rts)),
    ):
        fig.add_trace(
            go.Bar(
                x=[b.label for b in buckets],
                y=[b.net_pnl for b in buckets],
                name=name,
                marker={"color": [_WIN if b.net_pnl > 0 else _LOSS for b in buckets]},
                customdata=[[b.trades, usd(b.net_pnl)] for b in buckets],
                hovertemplate="%{x}: %{customdata[1]} over %{customdata[0]} trades<extra></extra>",
                showlegend=False,
            ),
            row=1,
            col=col,
        )
    fig.update_xaxes(type="category", row=1, col=1)
    fig.update_yaxes(title_text="$", row=1, col=1)
    fig.update_layout(height=380)
    return fig


def funnel_figure(funnel: Sequence[tuple[str, int]]) -> go.Figure:
    """Proposals alive after each gate, as `GateStack.funnel()` lists them."""
    stages = _checked_funnel(funnel)
    fig = go.Figure(
        go.Funnel(
            y=[s for s, _ in stages],
            x=[n for _, n in stages],
            name="gate funnel",
            textinfo="value+percent initial",
        )
    )
    fig.update_layout(title="Gate funnel", height=max(300, 60 + 40 * len(stages)))
    return fig


# --- the page ---------------------------------------------------------------------------


def write_report(
    path: str | Path,
    *,
    title: str,
    prices: tuple[np.ndarray, np.ndarray],
    round_trips: Sequence[RoundTrip],
    metrics: Metrics,
    synthetic: bool,
    notes: Sequence[str] = (),
    levels: Sequence[TradeLevels] = (),
    funnel: Sequence[tuple[str, int]] = (),
    include_plotlyjs: PlotlyJs = "directory",
    summary_png: bool = True,
) -> Path:
    """Writes the HTML report (and, unless told not to, its PNG summary beside it with the
    suffix .png) and returns the HTML's path. Everything is rendered before anything is
    written, and each file appears whole or not at all: bad input leaves no file."""
    if not title.strip():
        raise ValueError("a report needs a title")
    if include_plotlyjs not in (True, "cdn", "directory"):
        raise ValueError(
            f"include_plotlyjs must be True, 'cdn' or 'directory', got {include_plotlyjs!r}"
        )
    out = Path(path)
    if summary_png and summary_png_path(out) == out:
        raise ValueError(f"{out}: the HTML report needs another suffix than its PNG summary")
    figures = [
        build_figure(
            title=title, prices=prices, round_trips=round_trips, synthetic=synthetic, levels=levels
        ),
        breakdown_figure(round_trips),
    ]
    if funnel:
        figures.append(funnel_figure(funnel))
    charts = "\n".join(
        fig.to_html(full_html=False, include_plotlyjs=include_plotlyjs if k == 0 else False)
        for k, fig in enumerate(figures)
    )
    body = (
        _metrics_table(metrics)
        + charts
        + (_funnel_table(_checked_funnel(funnel)) if funnel else "")
        + _trade_table(round_trips, _levels_by_entry(levels))
    )
    page = _page(title, body, synthetic, notes)
    png = (
        summary_png_bytes(
            title=title, round_trips=round_trips, metrics=metrics, synthetic=synthetic
        )
        if summary_png
        else None
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    if include_plotlyjs == "directory":
        ensure_plotlyjs(out.parent / PLOTLYJS_FILE)
    if png is not None:
        _write_atomic(summary_png_path(out), png)
    _write_atomic(out, page.encode("utf-8"))
    return out


def summary_png_path(html_path: str | Path) -> Path:
    return Path(html_path).with_suffix(".png")


def write_summary_png(
    path: str | Path,
    *,
    title: str,
    round_trips: Sequence[RoundTrip],
    metrics: Metrics,
    synthetic: bool,
) -> Path:
    """The PNG summary alone (equity, drawdown, key metrics)."""
    png = summary_png_bytes(
        title=title, round_trips=round_trips, metrics=metrics, synthetic=synthetic
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(out, png)
    return out


def summary_png_bytes(
    *, title: str, round_trips: Sequence[RoundTrip], metrics: Metrics, synthetic: bool
) -> bytes:
    """Equity and drawdown over the trades' exits with the key metrics beside them,
    rendered by matplotlib's Agg canvas: no browser, no global pyplot state."""
    rts = sorted(round_trips, key=lambda rt: rt.exit_ts_ns)
    fig = MplFigure(figsize=PNG_SIZE_IN, dpi=PNG_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 2, width_ratios=[2.2, 1], height_ratios=[2, 1])
    ax_eq = fig.add_subplot(grid[0, 0])
    ax_dd = fig.add_subplot(grid[1, 0], sharex=ax_eq)
    ax_txt = fig.add_subplot(grid[:, 1])
    ax_txt.axis("off")
    heading = f"{SYNTHETIC_BANNER} (not evidence of an edge) — {title}" if synthetic else title
    fig.suptitle(heading, color="#b00020" if synthetic else "#222", fontsize=13, weight="bold")
    if rts:
        x = [rts[0].entry_ts_ns, *(rt.exit_ts_ns for rt in rts)]
        when = to_chicago(x)
        equity = np.cumsum([0.0] + [rt.net_pnl for rt in rts])
        drawdown = equity - np.maximum.accumulate(equity)
        ax_eq.step(when, equity, where="post", color="#1f5fa8", linewidth=1.6)
        ax_eq.axhline(0.0, color="#9e9e9e", linewidth=0.8)
        ax_dd.fill_between(when, drawdown, 0.0, step="post", color=_LOSS, alpha=0.35)
        ax_dd.step(when, drawdown, where="post", color=_LOSS, linewidth=1.0)
        ax_dd.xaxis.set_major_formatter(DateFormatter("%m-%d %H:%M"))
        for label in ax_dd.get_xticklabels():
            label.set_rotation(25)
            label.set_horizontalalignment("right")
    else:
        ax_eq.text(
            0.5, 0.5, "no closed trades", ha="center", va="center", transform=ax_eq.transAxes
        )
        ax_dd.tick_params(labelbottom=False)
    ax_eq.set_ylabel("net equity ($)")
    ax_dd.set_ylabel("drawdown ($)")
    ax_dd.set_xlabel("time (America/Chicago)")
    ax_eq.tick_params(labelbottom=False)
    ax_eq.grid(alpha=0.3)
    ax_dd.grid(alpha=0.3)
    rows = metric_rows(metrics)
    width = max(len(k) for k, _ in rows)
    text = "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
    ax_txt.text(
        0.0,
        0.98,
        text,
        va="top",
        ha="left",
        family="monospace",
        fontsize=8.5,
        transform=ax_txt.transAxes,
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PNG_DPI)
    return buf.getvalue()


# --- helpers ----------------------------------------------------------------------------


def _write_atomic(out: Path, data: bytes) -> None:
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_plotlyjs(path: Path) -> None:
    """The shared plotly.js of "directory" reports, rewritten only when the installed
    plotly carries another version, so reports beside it always match their library."""
    js = get_plotlyjs().encode("utf-8")
    if not path.exists() or path.read_bytes() != js:
        _write_atomic(path, js)


def _checked_prices(prices: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ts = np.asarray(prices[0])
    px = np.asarray(prices[1], dtype=float)
    if not np.issubdtype(ts.dtype, np.integer):
        raise ValueError(f"price timestamps must be integer nanoseconds, got {ts.dtype}")
    ts = ts.astype(np.int64)
    if ts.ndim != 1 or ts.shape != px.shape:
        raise ValueError("prices need two 1-D arrays (ts_ns, price) of the same length")
    if np.any(np.diff(ts) < 0):
        raise ValueError("price timestamps must not go backwards")
    if not np.all(np.isfinite(px)):
        raise ValueError("prices must be finite")
    return ts, px


def _checked_funnel(funnel: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    out = []
    for row in funnel:
        if len(row) != 2:
            raise ValueError(f"a funnel row is (stage, count), got {row!r}")
        stage, n = row
        if not isinstance(stage, str) or not stage:
            raise ValueError(f"a funnel stage needs a name, got {stage!r}")
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"funnel stage {stage!r}: count must be a non-negative int, got {n!r}")
        out.append((stage, int(n)))
    return out


def _levels_by_entry(levels: Sequence[TradeLevels]) -> dict[tuple[str, int], TradeLevels]:
    out: dict[tuple[str, int], TradeLevels] = {}
    for lv in levels:
        for name, price in (("stop", lv.stop), ("target", lv.target)):
            if price is not None and not math.isfinite(price):
                raise ValueError(f"{lv.symbol} entry at {lv.entry_ts_ns}: {name} is {price}")
        out[(lv.symbol, lv.entry_ts_ns)] = lv
    return out


def _level_traces(
    rts: Sequence[RoundTrip], levels: dict[tuple[str, int], TradeLevels]
) -> list[go.Scatter]:
    """Each trade's stop and target as a dashed segment from its entry to its exit."""
    traces = []
    for name, colour, pick in (
        ("stop level", _LOSS, lambda lv: lv.stop),
        ("target level", _WIN, lambda lv: lv.target),
    ):
        xs: list[object] = []
        ys: list[float | None] = []
        for rt in rts:
            lv = levels.get((rt.symbol, rt.entry_ts_ns))
            price = pick(lv) if lv is not None else None
            if price is None:
                continue
            start, end = np.datetime_as_string(to_chicago([rt.entry_ts_ns, rt.exit_ts_ns]), "ms")
            xs += [start, end, None]
            ys += [price, price, None]
        if xs:
            traces.append(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    name=name,
                    line={"color": colour, "width": 1.5, "dash": "dash"},
                    hovertemplate=f"{name.split()[0]} %{{y:.2f}}<extra></extra>",
                )
            )
    return traces


def _trade_traces(rts: Sequence[RoundTrip]) -> list[go.Scatter]:
    """Entries (▲ long, ▼ short), exits (✕), and a thin line joining each pair; green for
    a net win, red for a net loss; the hover tells P&L and why the trade closed."""
    colour = [_WIN if rt.is_win else _LOSS for rt in rts]
    data = np.array(
        [
            [
                "long" if rt.side is Side.BUY else "short",
                rt.qty,
                rt.entry_price,
                rt.exit_price,
                usd(rt.net_pnl),
                usd(rt.gross_pnl),
                usd(rt.costs),
                rt.exit_role.value,
            ]
            for rt in rts
        ],
        dtype=object,
    ).reshape(len(rts), 8)
    traces = []
    path_x: list[object] = []
    path_y: list[float | None] = []
    for rt in rts:
        entry, exit_ = np.datetime_as_string(to_chicago([rt.entry_ts_ns, rt.exit_ts_ns]), "ms")
        path_x += [entry, exit_, None]
        path_y += [rt.entry_price, rt.exit_price, None]
    traces.append(
        go.Scatter(
            x=path_x,
            y=path_y,
            mode="lines",
            name="trade",
            hoverinfo="skip",
            line={"color": "#9e9e9e", "width": 1, "dash": "dot"},
        )
    )
    for side, name, symbol in (
        (Side.BUY, "long entry", "triangle-up"),
        (Side.SELL, "short entry", "triangle-down"),
    ):
        pick = [i for i, rt in enumerate(rts) if rt.side is side]
        traces.append(
            go.Scatter(
                x=to_chicago([rts[i].entry_ts_ns for i in pick]),
                y=[rts[i].entry_price for i in pick],
                mode="markers",
                name=name,
                marker={
                    "symbol": symbol,
                    "size": 11,
                    "color": [colour[i] for i in pick],
                    "line": {"color": "#000", "width": 0.5},
                },
                customdata=data[pick],
                hovertemplate=_TRADE_HOVER,
            )
        )
    traces.append(
        go.Scatter(
            x=to_chicago([rt.exit_ts_ns for rt in rts]),
            y=[rt.exit_price for rt in rts],
            mode="markers",
            name="exit",
            marker={"symbol": "x", "size": 9, "color": colour},
            customdata=data,
            hovertemplate=_TRADE_HOVER,
        )
    )
    return traces


def _equity_traces(
    rts: Sequence[RoundTrip], start_ns: int, end_ns: int
) -> list[tuple[go.Scatter, int]]:
    """Closed-trade net equity as steps from 0 with its running peak (row 2), and the
    drawdown below that peak (row 3)."""
    x = to_chicago([start_ns, *(rt.exit_ts_ns for rt in rts), end_ns])
    closed = np.cumsum([0.0] + [rt.net_pnl for rt in rts])
    equity = np.append(closed, closed[-1])
    peak = np.maximum.accumulate(equity)
    return [
        (
            go.Scatter(
                x=x,
                y=peak,
                mode="lines",
                name="equity peak",
                line_shape="hv",
                line={"color": "#9e9e9e", "width": 1, "dash": "dot"},
                hoverinfo="skip",
            ),
            2,
        ),
        (
            go.Scatter(
                x=x,
                y=equity,
                mode="lines",
                name="net equity",
                line_shape="hv",
                line={"color": "#1f5fa8", "width": 2},
                hovertemplate="%{x|%Y-%m-%d %H:%M:%S} CT<br>$%{y:,.2f}<extra></extra>",
            ),
            2,
        ),
        (
            go.Scatter(
                x=x,
                y=equity - peak,
                mode="lines",
                name="drawdown",
                line_shape="hv",
                line={"color": _LOSS, "width": 1},
                fill="tozeroy",
                fillcolor="rgba(215, 48, 39, 0.3)",
                hovertemplate="%{x|%Y-%m-%d %H:%M:%S} CT<br>$%{y:,.2f}<extra></extra>",
            ),
            3,
        ),
    ]


def _metrics_table(metrics: Metrics) -> str:
    esc = html.escape
    rows = "".join(
        f'<tr><td>{esc(k)}</td><td class="v">{esc(v)}</td></tr>' for k, v in metric_rows(metrics)
    )
    return f'<table class="metrics">{rows}</table>\n'


def _funnel_table(stages: Sequence[tuple[str, int]]) -> str:
    """Each stage's count, how many it removed and what share of the first stage is left."""
    first = stages[0][1] if stages else 0
    rows = []
    for k, (stage, n) in enumerate(stages):
        dropped = "" if k == 0 else f"{stages[k - 1][1] - n:,}"
        share = f"{n / first:.1%}" if first else "n/a"
        rows.append(
            f'<tr><td>{html.escape(stage)}</td><td class="v">{n:,}</td>'
            f'<td class="v">{dropped}</td><td class="v">{share}</td></tr>'
        )
    head = (
        '<tr><th>stage</th><th class="v">alive</th><th class="v">removed</th>'
        '<th class="v">of first</th></tr>'
    )
    return f'<h2>Gate funnel</h2><table class="funnel">{head}{"".join(rows)}</table>\n'


_TRADE_COLUMNS = (
    "#", "entry (CT)", "segment", "side", "qty", "entry", "stop", "target", "exit (CT)",
    "exit", "exit by", "ticks", "gross", "costs", "net", "held",
)  # fmt: skip
_NUMERIC_COLUMNS = frozenset({0, 4, 5, 6, 7, 9, 11, 12, 13, 14, 15})
_NET_COLUMN = _TRADE_COLUMNS.index("net")


def _trade_table(rts: Sequence[RoundTrip], levels: dict[tuple[str, int], TradeLevels]) -> str:
    """Every round trip in entry order (up to MAX_TABLE_ROWS), with its bracket."""
    ordered = sorted(rts, key=lambda rt: (rt.entry_ts_ns, rt.exit_ts_ns))
    shown = ordered[:MAX_TABLE_ROWS]
    segs = segment_codes(np.array([rt.entry_ts_ns for rt in shown], dtype=np.int64))
    entries = to_chicago([rt.entry_ts_ns for rt in shown])
    exits = to_chicago([rt.exit_ts_ns for rt in shown])
    rows = []
    for k, rt in enumerate(shown):
        lv = levels.get((rt.symbol, rt.entry_ts_ns))
        tick = instrument_for(rt.symbol).tick_size
        ticks = (rt.exit_price - rt.entry_price) * rt.side.sign / tick
        cells = (
            str(k + 1),
            np.datetime_as_string(entries[k], "ms").replace("T", " "),
            SEGMENTS[segs[k]].value,
            "long" if rt.side is Side.BUY else "short",
            str(rt.qty),
            f"{rt.entry_price:.2f}",
            _price(lv.stop if lv else None),
            _price(lv.target if lv else None),
            np.datetime_as_string(exits[k], "ms").replace("T", " "),
            f"{rt.exit_price:.2f}",
            rt.exit_role.value,
            f"{ticks:+.1f}",
            usd(rt.gross_pnl),
            usd(rt.costs),
            usd(rt.net_pnl),
            _held(rt.duration_ns),
        )
        tds = "".join(f"<td{_cell_class(i)}>{html.escape(c)}</td>" for i, c in enumerate(cells))
        rows.append(f'<tr class="{"win" if rt.is_win else "loss"}">{tds}</tr>')
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _TRADE_COLUMNS)
    caption = (
        f"<p>first {MAX_TABLE_ROWS:,} of {len(ordered):,} trades</p>"
        if len(ordered) > len(shown)
        else ""
    )
    return (
        f"<h2>Trades ({len(ordered):,})</h2>{caption}"
        f'<table class="trades"><tr>{head}</tr>{"".join(rows)}</table>\n'
    )


def _cell_class(column: int) -> str:
    names = (["v"] if column in _NUMERIC_COLUMNS else []) + (
        ["net"] if column == _NET_COLUMN else []
    )
    return f' class="{" ".join(names)}"' if names else ""


def _price(p: float | None) -> str:
    return "" if p is None else f"{p:.2f}"


def _held(ns: int) -> str:
    s = ns // 1_000_000_000
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}"


def _page(title: str, body: str, synthetic: bool, notes: Sequence[str]) -> str:
    esc = html.escape
    banner = (
        f'<div class="synthetic">{SYNTHETIC_BANNER}: not real market data, '
        "not evidence of an edge</div>"
        if synthetic
        else ""
    )
    note_list = "".join(f"<li>{esc(n)}</li>" for n in notes)
    head_title = f"{SYNTHETIC_BANNER} — {title}" if synthetic else title
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(head_title)}</title><style>{_STYLE}</style></head><body>\n"
        f"{banner}<h1>{esc(title)}</h1>"
        '<p class="tz">All times America/Chicago (CME). P&amp;L in dollars, net of '
        "commissions. P&amp;L by hour and by segment is by entry time.</p>"
        f"{f'<ul class=notes>{note_list}</ul>' if notes else ''}"
        f"{body}</body></html>\n"
    )
