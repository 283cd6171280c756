"""A self-contained HTML report of a run: trades on the price, the net equity curve and the
metrics, readable offline and months later, with synthetic data never mistaken for real."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from esml.evaluation.metrics import Metrics, metric_rows, usd
from esml.evaluation.trades import RoundTrip
from esml.execution.orders import Side
from esml.market.calendar import CHICAGO

MAX_PRICE_POINTS = 50_000
SYNTHETIC_BANNER = "SYNTHETIC DATA"

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
table.metrics { border-collapse: collapse; margin: 1em 0; }
table.metrics td { border-bottom: 1px solid #ddd; padding: 0.25em 1em; }
table.metrics td.v { text-align: right; font-variant-numeric: tabular-nums; }
.tz { color: #555; }
"""


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


def build_figure(
    *,
    title: str,
    prices: tuple[np.ndarray, np.ndarray],
    round_trips: Sequence[RoundTrip],
    synthetic: bool,
) -> go.Figure:
    ts, px = _checked_prices(prices)
    rts = sorted(round_trips, key=lambda rt: rt.exit_ts_ns)
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.65, 0.35],
        vertical_spacing=0.06,
        subplot_titles=("Price and trades", "Net equity after costs, closed trades ($)"),
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
    for trace in _trade_traces(rts):
        fig.add_trace(trace, row=1, col=1)
    span = [int(t) for t in ts[[0, -1]]] if ts.size else []
    span += [t for rt in rts for t in (rt.entry_ts_ns, rt.exit_ts_ns)]
    if span:  # a session without prices or trades has no curve to draw
        for trace in _equity_traces(rts, min(span), max(span)):
            fig.add_trace(trace, row=2, col=1)
    heading = f"{SYNTHETIC_BANNER} — {title}" if synthetic else title
    fig.update_layout(
        title=heading, height=850, hovermode="closest", legend={"orientation": "h", "y": -0.08}
    )
    fig.update_xaxes(title_text="time (America/Chicago, CME)", row=2, col=1)
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="$", row=2, col=1)
    return fig


def write_report(
    path: str | Path,
    *,
    title: str,
    prices: tuple[np.ndarray, np.ndarray],
    round_trips: Sequence[RoundTrip],
    metrics: Metrics,
    synthetic: bool,
    notes: Sequence[str] = (),
) -> Path:
    """Writes the report (plotly.js inline, so it opens offline) and returns its path.
    The file appears whole or not at all: a bad input or a failed write leaves no file."""
    if not title.strip():
        raise ValueError("a report needs a title")
    fig = build_figure(title=title, prices=prices, round_trips=round_trips, synthetic=synthetic)
    page = _page(
        title, fig.to_html(full_html=False, include_plotlyjs=True), metrics, synthetic, notes
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


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


def _equity_traces(rts: Sequence[RoundTrip], start_ns: int, end_ns: int) -> list[go.Scatter]:
    """Closed-trade net equity as steps from 0, shaded down from its running peak."""
    x = to_chicago([start_ns, *(rt.exit_ts_ns for rt in rts), end_ns])
    closed = np.cumsum([0.0] + [rt.net_pnl for rt in rts])
    equity = np.append(closed, closed[-1])
    peak = np.maximum.accumulate(equity)
    return [
        go.Scatter(
            x=x,
            y=peak,
            mode="lines",
            name="equity peak",
            line_shape="hv",
            line={"color": "#9e9e9e", "width": 1, "dash": "dot"},
            hoverinfo="skip",
        ),
        go.Scatter(
            x=x,
            y=equity,
            mode="lines",
            name="drawdown",
            line_shape="hv",
            line={"width": 0},
            fill="tonexty",
            fillcolor="rgba(215, 48, 39, 0.3)",
            hoverinfo="skip",
        ),
        go.Scatter(
            x=x,
            y=equity,
            mode="lines",
            name="net equity",
            line_shape="hv",
            line={"color": "#1f5fa8", "width": 2},
            hovertemplate="%{x|%Y-%m-%d %H:%M:%S} CT<br>$%{y:,.2f}<extra></extra>",
        ),
    ]


def _page(
    title: str, figure_html: str, metrics: Metrics, synthetic: bool, notes: Sequence[str]
) -> str:
    esc = html.escape
    banner = (
        f'<div class="synthetic">{SYNTHETIC_BANNER}: not real market data, '
        "not evidence of an edge</div>"
        if synthetic
        else ""
    )
    rows = "".join(
        f'<tr><td>{esc(k)}</td><td class="v">{esc(v)}</td></tr>' for k, v in metric_rows(metrics)
    )
    note_list = "".join(f"<li>{esc(n)}</li>" for n in notes)
    head_title = f"{SYNTHETIC_BANNER} — {title}" if synthetic else title
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(head_title)}</title><style>{_STYLE}</style></head><body>\n"
        f"{banner}<h1>{esc(title)}</h1>"
        '<p class="tz">All times America/Chicago (CME). P&amp;L in dollars, net of '
        "commissions.</p>"
        f"{f'<ul class=notes>{note_list}</ul>' if notes else ''}"
        f'<table class="metrics">{rows}</table>\n{figure_html}\n</body></html>\n'
    )
