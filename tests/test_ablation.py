"""The ablation table on three configurations of one ES day (ESH4, 2024-03-05), trades
worked out by hand: 0.25 grid, $12.50 a tick, $2.25 per contract per side."""

from __future__ import annotations

import math
from itertools import count

import pandas as pd
import pytest
from rich.console import Console

from esml.evaluation.ablation import (
    RunResult,
    ablation_rows,
    funnel_matrix,
    html_section,
    rich_tables,
    to_markdown,
)
from esml.evaluation.metrics import compute_metrics
from esml.evaluation.trades import RoundTrip, round_trips
from esml.execution.orders import Fill, OrderRole, Side
from esml.market.instruments import ES

FEE = 2.25
BUY, SELL = Side.BUY, Side.SELL
STOP, TARGET = OrderRole.STOP, OrderRole.TARGET
_ids = count()

# (entry CT, side, qty, entry, exit CT, exit, exit role): net by hand on the right
WITH_GATES = [
    ("09:05:00", BUY, 1, 5120.25, "09:20:00", 5126.50, TARGET),  # +25 ticks: +$308.00
    ("09:41:10", SELL, 1, 5131.00, "09:44:00", 5133.50, STOP),  # -10 ticks: -$129.50
    ("10:15:30", BUY, 1, 5128.75, "10:31:00", 5132.75, TARGET),  # +16 ticks: +$195.50
    ("11:02:00", SELL, 1, 5140.50, "11:06:45", 5143.00, STOP),  # -$129.50
    ("13:40:00", BUY, 1, 5136.00, "14:02:00", 5142.25, TARGET),  # +$308.00
]
NO_GATES = [
    ("09:01:00", BUY, 1, 5120.25, "09:03:00", 5117.75, STOP),  # -$129.50
    ("09:07:00", BUY, 2, 5121.00, "09:12:00", 5118.50, STOP),  # 2 x -10 ticks: -$259.00
    ("09:41:10", SELL, 1, 5131.00, "09:50:00", 5127.00, TARGET),  # +$195.50
]


def trips(spec: list[tuple[str, Side, int, float, str, float, OrderRole]]) -> list[RoundTrip]:
    fills = []
    for k, (t_in, side, qty, px_in, t_out, px_out, role) in enumerate(spec):
        at_in = pd.Timestamp(f"2024-03-05 {t_in}", tz="America/Chicago").value
        at_out = pd.Timestamp(f"2024-03-05 {t_out}", tz="America/Chicago").value
        fills.append(
            Fill(f"f{next(_ids)}", f"e{k}", f"c{k}", "ESH4", side, qty, px_in, FEE * qty, at_in)
        )
        fills.append(
            Fill(
                f"f{next(_ids)}", f"x{k}", f"c{k}x", "ESH4", side.opposite, qty, px_out,
                FEE * qty, at_out, role,
            )
        )  # fmt: skip
    return round_trips(fills, ES)


def run(name: str, spec: list, funnel: list[tuple[str, int]], signals: int, orders: int,
        synthetic: bool = False) -> RunResult:  # fmt: skip
    rts = trips(spec)
    return RunResult(name, tuple(rts), compute_metrics(rts), tuple(funnel), signals, orders,
                     synthetic)  # fmt: skip


def runs() -> list[RunResult]:
    return [
        run("ensemble + gates", WITH_GATES,
            [("proposals", 96), ("trading_state", 96), ("max_spread", 60), ("cooldown", 5)],
            signals=120, orders=5),
        run("ensemble, no gates", NO_GATES, [("proposals", 4), ("trading_state", 4)],
            signals=120, orders=3),
        run("zscore_regime", [],
            [("proposals", 7), ("trading_state", 7), ("session_budget", 7), ("max_spread", 4),
             ("cooldown", 0)],
            signals=7, orders=0),
    ]  # fmt: skip


EXPECTED_MARKDOWN = """\
| configuration | trades | win rate (Wilson 95%) | profit factor | net P&L | max drawdown | return / max DD |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
| ensemble + gates | 5 | 60.0% (23.1%–88.2%) | 3.13 | $552.50 | $129.50 | 4.27 |
| ensemble, no gates | 3 | 33.3% (6.1%–79.2%) | 0.50 | -$193.00 | $388.50 | -0.50 |
| zscore_regime | 0 | n/a (0.0%–100.0%) | 0.00 | $0.00 | $0.00 | n/a |

| stage | ensemble + gates | ensemble, no gates | zscore_regime |
| --- | ---: | ---: | ---: |
| signals | 120 | 120 | 7 |
| proposals | 96 | 4 | 7 |
| trading_state | 96 | 4 | 7 |
| session_budget | — | — | 7 |
| max_spread | 60 | — | 4 |
| cooldown | 5 | — | 0 |
| orders | 5 | 3 | 0 |
"""  # noqa: E501


def test_table_numbers_are_compute_metrics_of_each_run() -> None:
    rs = runs()
    for row, r in zip(ablation_rows(rs), rs, strict=True):
        m = compute_metrics(list(r.round_trips))
        assert row.name == r.name
        assert (row.trades, row.win_rate, row.win_rate_ci95) == (m.trades, m.win_rate,
                                                                 m.win_rate_ci95)  # fmt: skip
        assert (row.profit_factor, row.net_pnl, row.max_drawdown) == (
            m.profit_factor, m.net_pnl, m.max_drawdown)  # fmt: skip
        assert row.return_over_max_drawdown == m.return_over_max_drawdown
    gated = ablation_rows(rs)[0]  # by hand: +308 -129.5 +195.5 -129.5 +308
    assert gated.net_pnl == pytest.approx(552.50) and gated.max_drawdown == pytest.approx(129.50)
    assert gated.profit_factor == pytest.approx(811.5 / 259.0)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval written out from its textbook form."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_win_rates_carry_their_wilson_intervals() -> None:
    rows = ablation_rows(runs())
    assert rows[0].win_rate_ci95 == pytest.approx(wilson(3, 5))
    assert rows[0].win_rate_ci95 == pytest.approx((0.2307, 0.8824), abs=1e-4)
    assert rows[1].win_rate_ci95 == pytest.approx(wilson(1, 3))
    assert rows[2].win_rate is None and rows[2].win_rate_ci95 == (0.0, 1.0)


def test_markdown_is_exact_and_deterministic() -> None:
    assert to_markdown(runs()) == EXPECTED_MARKDOWN
    assert to_markdown(runs()) == to_markdown(runs())


def test_funnel_keeps_gate_order_and_marks_gates_that_were_off() -> None:
    stages, counts = funnel_matrix(runs())
    assert stages == ["signals", "proposals", "trading_state", "session_budget", "max_spread",
                      "cooldown", "orders"]  # fmt: skip
    assert counts[stages.index("session_budget")] == [None, None, 7]
    assert counts[-1] == [5, 3, 0]


def test_terminal_tables_are_deterministic_and_say_synthetic() -> None:
    def text(rs: list[RunResult]) -> str:
        console = Console(record=True, width=160, color_system=None)
        for table in rich_tables(rs):
            console.print(table)
        return console.export_text()

    out = text(runs())
    assert out == text(runs())
    assert "60.0% (23.1%–88.2%)" in out and "-$193.00" in out and "SYNTHETIC" not in out
    synthetic = [*runs(), run("sim: queue-reactive", WITH_GATES[:2], [("proposals", 2)], 2, 2,
                              synthetic=True)]  # fmt: skip
    assert "SYNTHETIC DATA" in text(synthetic) and "SYNTHETIC DATA" in to_markdown(synthetic)


def test_html_section_has_both_tables_and_the_funnel_chart() -> None:
    page = html_section(runs())
    assert page.count("<table") == 2 and "Plotly.newPlot" in page
    assert "<td>session_budget</td><td class=v>—</td>" in page
    assert "<td>ensemble + gates</td><td class=v>5</td>" in page
    assert "plotly.js v" not in page  # the page it goes into loads plotly.js once


def test_bad_runs_are_refused() -> None:
    good = runs()[0]
    with pytest.raises(ValueError, match="5 round trips"):
        RunResult("x", good.round_trips, compute_metrics([]), (), 0, 0, False)
    with pytest.raises(ValueError, match="sum to"):
        other = compute_metrics(trips(NO_GATES[:1] * 5))
        RunResult("x", good.round_trips, other, (), 0, 0, False)
    with pytest.raises(ValueError, match="unique"):
        RunResult("x", (), compute_metrics([]), (("orders", 1),), 0, 0, False)
    with pytest.raises(ValueError, match="non-negative"):
        RunResult("x", (), compute_metrics([]), (), -1, 0, False)
    with pytest.raises(ValueError, match="repeated"):
        ablation_rows([good, good])
    with pytest.raises(ValueError, match="at least one run"):
        to_markdown([])
