"""The ablation table: N configurations run on identical data, side by side.

One row per configuration with the numbers that decide whether a component earns its
place (trades, win rate with its Wilson 95% interval, profit factor, net P&L, max drawdown,
return / max drawdown), and the funnel from signals through each gate to orders, one
column per configuration. Rendered for the terminal (rich), for docs (markdown) and as an
HTML section (plotly). Rows keep the order the runner gave; the funnel's stages keep each
run's gate order, so the same runs always give the same text.

The runner fills `RunResult`; every number shown comes from its metrics (which must be
those of its round trips), never recomputed differently here.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import plotly.graph_objects as go
from rich.table import Table

from esml.evaluation.metrics import Metrics, usd
from esml.evaluation.trades import RoundTrip

SIGNALS = "signals"
ORDERS = "orders"
SYNTHETIC_NOTE = "SYNTHETIC DATA: not real market data, not evidence of an edge"
ABLATION_COLUMNS = (
    "configuration",
    "trades",
    "win rate (Wilson 95%)",
    "profit factor",
    "net P&L",
    "max drawdown",
    "return / max DD",
)


@dataclass(frozen=True)
class RunResult:
    """What one configuration produced. `funnel` is `GateStack.funnel()`: ("proposals", n)
    then (gate name, proposals still alive after it) in gate order; `signals` counts the
    signals that reached the decision layer, `orders` the entry orders sent."""

    name: str
    round_trips: tuple[RoundTrip, ...]
    metrics: Metrics
    funnel: tuple[tuple[str, int], ...]
    signals: int
    orders: int
    synthetic: bool

    def __post_init__(self) -> None:
        # the runner may hand lists (GateStack.funnel() returns one): keep immutable copies
        object.__setattr__(self, "round_trips", tuple(self.round_trips))
        object.__setattr__(self, "funnel", tuple((s, n) for s, n in self.funnel))
        if not self.name.strip():
            raise ValueError("a run needs a name")
        for what, n in (("signals", self.signals), ("orders", self.orders)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"{self.name}: {what} must be a non-negative int, got {n!r}")
        if self.metrics.trades != len(self.round_trips):
            raise ValueError(
                f"{self.name}: metrics count {self.metrics.trades} trades but there are "
                f"{len(self.round_trips)} round trips"
            )
        net = math.fsum(rt.net_pnl for rt in self.round_trips)
        if not math.isclose(net, self.metrics.net_pnl, rel_tol=1e-9, abs_tol=1e-6):
            raise ValueError(
                f"{self.name}: metrics say net {self.metrics.net_pnl} but the round trips "
                f"sum to {net}"
            )
        stages = [s for s, _ in self.funnel]
        if len(set(stages)) != len(stages) or {SIGNALS, ORDERS} & set(stages):
            raise ValueError(
                f"{self.name}: funnel stages must be unique and not named "
                f"{SIGNALS!r} or {ORDERS!r}: {stages}"
            )
        for stage, n in self.funnel:
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"{self.name}: funnel stage {stage!r} has count {n!r}")


@dataclass(frozen=True)
class AblationRow:
    name: str
    trades: int
    win_rate: float | None
    win_rate_ci95: tuple[float, float]
    profit_factor: float
    net_pnl: float
    max_drawdown: float
    return_over_max_drawdown: float | None

    def cells(self) -> tuple[str, ...]:
        lo, hi = self.win_rate_ci95
        rate = "n/a" if self.win_rate is None else f"{self.win_rate:.1%}"
        return (
            self.name,
            f"{self.trades:,}",
            f"{rate} ({lo:.1%}–{hi:.1%})",
            _ratio(self.profit_factor),
            usd(self.net_pnl),
            usd(self.max_drawdown),
            _ratio(self.return_over_max_drawdown),
        )


def ablation_rows(runs: Sequence[RunResult]) -> list[AblationRow]:
    _check_names(runs)
    return [
        AblationRow(
            name=r.name,
            trades=r.metrics.trades,
            win_rate=r.metrics.win_rate,
            win_rate_ci95=r.metrics.win_rate_ci95,
            profit_factor=r.metrics.profit_factor,
            net_pnl=r.metrics.net_pnl,
            max_drawdown=r.metrics.max_drawdown,
            return_over_max_drawdown=r.metrics.return_over_max_drawdown,
        )
        for r in runs
    ]


def funnel_matrix(runs: Sequence[RunResult]) -> tuple[list[str], list[list[int | None]]]:
    """(stages, counts[stage][run]): signals, the union of every run's funnel stages, then
    orders. A stage a run does not have (its gate was off) is None. A stage first seen in
    a later run goes right after the stage that precedes it there, so gate order holds."""
    _check_names(runs)
    stages: list[str] = []
    for r in runs:
        after = -1
        for stage, _ in r.funnel:
            if stage in stages:
                after = stages.index(stage)
            else:
                after += 1
                stages.insert(after, stage)
    order = [SIGNALS, *stages, ORDERS]
    counts: list[list[int | None]] = []
    for stage in order:
        row: list[int | None] = []
        for r in runs:
            if stage == SIGNALS:
                row.append(r.signals)
            elif stage == ORDERS:
                row.append(r.orders)
            else:
                row.append(dict(r.funnel).get(stage))
        counts.append(row)
    return order, counts


def rich_tables(runs: Sequence[RunResult]) -> tuple[Table, Table]:
    """The results table and the funnel table for the terminal."""
    note = f" — {SYNTHETIC_NOTE}" if _any_synthetic(runs) else ""
    results = Table(title=f"Ablation{note}")
    for k, col in enumerate(ABLATION_COLUMNS):
        results.add_column(col, justify="left" if k == 0 else "right")
    for row in ablation_rows(runs):
        results.add_row(*row.cells())
    stages, counts = funnel_matrix(runs)
    funnel = Table(title=f"Funnel: signals → gates → orders{note}")
    funnel.add_column("stage")
    for r in runs:
        funnel.add_column(r.name, justify="right")
    for stage, row in zip(stages, counts, strict=True):
        funnel.add_row(stage, *(_count(n) for n in row))
    return results, funnel


def to_markdown(runs: Sequence[RunResult]) -> str:
    """Both tables as GitHub markdown, for docs and pull requests."""
    lines = []
    if _any_synthetic(runs):
        lines += [f"**{SYNTHETIC_NOTE}**", ""]
    lines += _md_table(ABLATION_COLUMNS, [row.cells() for row in ablation_rows(runs)], first=1)
    stages, counts = funnel_matrix(runs)
    lines += [""]
    lines += _md_table(
        ("stage", *(r.name for r in runs)),
        [(s, *(_count(n) for n in row)) for s, row in zip(stages, counts, strict=True)],
        first=1,
    )
    return "\n".join(lines) + "\n"


def html_section(
    runs: Sequence[RunResult], *, include_plotlyjs: bool | Literal["cdn", "directory"] = False
) -> str:
    """An HTML fragment: both tables and a grouped bar chart of the funnel. plotly.js is
    left to the page (False) unless asked for (True inline, or "cdn")."""
    esc = html.escape
    synthetic = (
        f'<div class="synthetic">{esc(SYNTHETIC_NOTE)}</div>' if _any_synthetic(runs) else ""
    )
    rows = ablation_rows(runs)
    stages, counts = funnel_matrix(runs)
    results = _html_table(ABLATION_COLUMNS, [row.cells() for row in rows], "ablation")
    funnel = _html_table(
        ("stage", *(r.name for r in runs)),
        [(s, *(_count(n) for n in row)) for s, row in zip(stages, counts, strict=True)],
        "funnel",
    )
    fig = go.Figure(
        [go.Bar(name=r.name, x=stages, y=[row[k] for row in counts]) for k, r in enumerate(runs)]
    )
    fig.update_layout(
        barmode="group",
        title="Funnel: signals → gates → orders",
        yaxis_title="count",
        height=420,
    )
    chart = fig.to_html(full_html=False, include_plotlyjs=include_plotlyjs)
    return (
        f'<section class="ablation">{synthetic}<h2>Ablation</h2>{results}'
        f"<h3>Funnel</h3>{funnel}{chart}</section>\n"
    )


def _check_names(runs: Sequence[RunResult]) -> None:
    if not runs:
        raise ValueError("an ablation needs at least one run")
    names = [r.name for r in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"run names must be unique; repeated: {dupes}")


def _any_synthetic(runs: Sequence[RunResult]) -> bool:
    return any(r.synthetic for r in runs)


def _count(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _ratio(x: float | None) -> str:
    if x is None:
        return "n/a"
    return "∞" if math.isinf(x) else f"{x:.2f}"


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]], first: int) -> list[str]:
    """Left-aligned label columns, right-aligned numbers; pipes in names escaped."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    align = ["---"] * first + ["---:"] * (len(head) - first)
    return [
        "| " + " | ".join(cell(h) for h in head) + " |",
        "| " + " | ".join(align) + " |",
        *("| " + " | ".join(cell(c) for c in row) + " |" for row in rows),
    ]


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]], css: str) -> str:
    esc = html.escape
    th = "".join(f"<th{'' if k == 0 else ' class=v'}>{esc(h)}</th>" for k, h in enumerate(head))
    body = "".join(
        "<tr>"
        + "".join(f"<td{'' if k == 0 else ' class=v'}>{esc(c)}</td>" for k, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f'<table class="{css}"><tr>{th}</tr>{body}</table>'
