"""The run report on one hand-worked ES trading day (ESH4, trade date 2024-03-05): seven
bracketed trades across every session segment, fills on the 0.25 grid, $2.25 per contract
per side, one trailed stop and one target filled in two parts. ES: $50 a point."""

from __future__ import annotations

from itertools import count
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from PIL import Image

from esml.evaluation.metrics import compute_metrics
from esml.evaluation.report import (
    PLOTLYJS_FILE,
    SYNTHETIC_BANNER,
    TradeLevels,
    breakdown_figure,
    build_figure,
    funnel_figure,
    levels_from_orders,
    pnl_by_hour,
    pnl_by_segment,
    summary_png_path,
    write_report,
    write_summary_png,
)
from esml.evaluation.trades import RoundTrip, round_trips
from esml.execution.orders import Fill, Order, OrderRole, OrderStatus, OrderType, Side
from esml.market.instruments import ES

FEE = 2.25
BUY, SELL = Side.BUY, Side.SELL
ENTRY, STOP, TARGET, EXIT = OrderRole.ENTRY, OrderRole.STOP, OrderRole.TARGET, OrderRole.EXIT
FUNNEL = [
    ("proposals", 40),
    ("trading_state", 40),
    ("session_budget", 38),
    ("max_spread", 21),
    ("cooldown", 9),
]
_ids = count()


def ct(wall: str) -> int:
    return pd.Timestamp(wall, tz="America/Chicago").value


# (entry time, side, qty, entry, stop, target, [(exit time, qty, price)], exit role)
TRADES = [
    ("2024-03-04 18:30:05", BUY, 1, 5120.25, 5117.75, 5126.50,
     [("2024-03-04 18:52:10", 1, 5126.50)], TARGET),  # asia +$308.00
    ("2024-03-05 03:15:00", SELL, 2, 5131.00, 5133.50, 5127.00,
     [("2024-03-05 03:21:30", 2, 5133.50)], STOP),  # europe -$259.00
    ("2024-03-05 07:45:12", BUY, 1, 5128.75, 5126.25, 5132.75,
     [("2024-03-05 08:05:00", 1, 5129.50)], EXIT),  # pre-market, time exit +$33.00
    ("2024-03-05 09:05:30", SELL, 1, 5140.50, 5143.00, 5134.25,
     [("2024-03-05 09:40:00", 1, 5134.25)], TARGET),  # rth +$308.00
    ("2024-03-05 09:50:00", BUY, 1, 5136.00, 5133.50, 5142.25,
     [("2024-03-05 09:52:30", 1, 5133.50)], STOP),  # rth -$129.50
    ("2024-03-05 13:40:00", BUY, 3, 5150.00, 5147.50, 5156.25,
     [("2024-03-05 13:58:00", 2, 5156.25), ("2024-03-05 13:58:01", 1, 5156.25)],
     TARGET),  # rth, target filled 2 + 1: one trade, +$924.00
    ("2024-03-05 15:20:00", SELL, 1, 5155.25, 5154.00, 5152.00,
     [("2024-03-05 15:31:00", 1, 5154.00)], STOP),  # post, stop trailed from 5157.75: +$58
]  # fmt: skip
NETS = [308.00, -259.00, 33.00, 308.00, -129.50, 924.00, 58.00]


def day() -> tuple[list[Order], list[Fill]]:
    """The broker's orders (entries and their bracket legs) and fills for TRADES."""
    orders, fills = [], []
    for k, (when, side, qty, px, stop, target, exits, role) in enumerate(TRADES):
        entry = f"E{k}"
        orders.append(
            Order(
                entry,
                f"c{k}",
                "ESH4",
                side,
                qty,
                OrderType.MARKET,
                ENTRY,
                status=OrderStatus.FILLED,
                ts_ns=ct(when),
            )
        )
        for leg, price, kind in ((STOP, stop, OrderType.STOP), (TARGET, target, OrderType.LIMIT)):
            orders.append(
                Order(
                    f"{entry}{leg.value}",
                    f"c{k}{leg.value}",
                    "ESH4",
                    side.opposite,
                    qty,
                    kind,
                    leg,
                    price=price,
                    parent_id=entry,
                )
            )
        fills.append(
            Fill(
                f"f{next(_ids)}", entry, f"c{k}", "ESH4", side, qty, px, FEE * qty, ct(when), ENTRY
            )
        )
        exit_order = f"{entry}{role.value}"
        for at, n, price in exits:
            fills.append(
                Fill(
                    f"f{next(_ids)}",
                    exit_order,
                    f"c{k}x",
                    "ESH4",
                    side.opposite,
                    n,
                    price,
                    FEE * n,
                    ct(at),
                    role,
                )
            )
    return orders, fills


def session() -> tuple[list[RoundTrip], list[TradeLevels], tuple[np.ndarray, np.ndarray]]:
    orders, fills = day()
    rts = round_trips(fills, ES)
    ts = np.array(sorted(f.ts_ns for f in fills), np.int64)
    px = np.array([f.price for f in sorted(fills, key=lambda f: f.ts_ns)])
    return rts, levels_from_orders(orders, fills), (ts, px)


def test_the_hand_worked_day_reconciles() -> None:
    rts, levels, _ = session()
    assert [rt.net_pnl for rt in rts] == pytest.approx(NETS)
    assert rts[5].qty == 3 and rts[5].costs == pytest.approx(13.50)
    assert compute_metrics(rts).net_pnl == pytest.approx(1242.50)
    by_entry = {lv.entry_ts_ns: lv for lv in levels}
    assert len(levels) == 7
    assert by_entry[ct("2024-03-05 15:20:00")].stop == 5154.00  # where the trail left it
    assert by_entry[ct("2024-03-05 13:40:00")].target == 5156.25


def test_pnl_by_entry_hour_and_segment() -> None:
    rts, _, _ = session()
    hours = pnl_by_hour(rts)
    assert [b.label for b in hours[:3]] == ["17", "18", "19"] and hours[-1].label == "16"
    assert len(hours) == 24 and sum(b.trades for b in hours) == 7
    got = {b.label: (b.trades, b.net_pnl) for b in hours if b.trades}
    assert got == {
        "18": (1, 308.0),
        "03": (1, -259.0),
        "07": (1, 33.0),
        "09": (2, 178.5),
        "13": (1, 924.0),
        "15": (1, 58.0),
    }
    segments = {b.label: (b.trades, b.net_pnl) for b in pnl_by_segment(rts)}
    assert segments == {
        "asia": (1, 308.0),
        "europe": (1, -259.0),
        "pre_market": (1, 33.0),
        "rth": (3, 1102.5),
        "post": (1, 58.0),
    }


def test_figures_carry_trades_levels_equity_drawdown_and_funnel() -> None:
    rts, levels, prices = session()
    fig = build_figure(title="t", prices=prices, round_trips=rts, synthetic=False, levels=levels)
    traces = {t.name: t for t in fig.data}
    assert {
        "long entry",
        "short entry",
        "exit",
        "stop level",
        "target level",
        "net equity",
        "drawdown",
        "equity peak",
    } <= set(traces)
    stop_y = [y for y in traces["stop level"].y if y is not None]
    assert (
        stop_y
        == [5117.75] * 2
        + [5133.50] * 2
        + [5126.25] * 2
        + [5143.00] * 2
        + [5133.50] * 2
        + [5147.50] * 2
        + [5154.00] * 2
    )
    equity = np.asarray(traces["net equity"].y)
    assert equity[-1] == pytest.approx(1242.50)
    assert np.asarray(traces["drawdown"].y).min() == pytest.approx(-259.0)  # the europe stop
    bars = breakdown_figure(rts).data
    assert dict(zip(bars[1].x, bars[1].y, strict=True))["rth"] == pytest.approx(1102.5)
    funnel = funnel_figure(FUNNEL).data[0]
    assert isinstance(funnel, go.Funnel) and list(funnel.x) == [40, 40, 38, 21, 9]


def test_report_page_has_every_section_and_trade_row(tmp_path: Path) -> None:
    rts, levels, prices = session()
    out = write_report(
        tmp_path / "run" / "es-2024-03-05.html",
        title="ESH4 2024-03-05 hand-worked",
        prices=prices,
        round_trips=rts,
        metrics=compute_metrics(rts),
        synthetic=False,
        levels=levels,
        funnel=FUNNEL,
    )
    page = out.read_text(encoding="utf-8")
    assert "* plotly.js v" not in page and page.count(f'src="{PLOTLYJS_FILE}"') == 1
    assert page.count("Plotly.newPlot") == 3  # price/equity/drawdown, breakdowns, funnel
    for name in (
        "stop level",
        "target level",
        "net equity",
        "drawdown",
        "P&L by hour",
        "P&L by segment",
        "gate funnel",
    ):
        assert f'"name":"{name}"' in page.replace("&amp;", "&")
    assert SYNTHETIC_BANNER not in page and "Trades (7)" in page
    assert page.count('<tr class="win">') == 5 and page.count('<tr class="loss">') == 2
    trailed = (
        '<td>post</td><td>short</td><td class="v">1</td><td class="v">5155.25</td>'
        '<td class="v">5154.00</td><td class="v">5152.00</td>'
    )
    assert trailed in page
    assert '<td class="v net">$924.00</td>' in page and "-$259.00" in page
    assert '<td>max_spread</td><td class="v">21</td><td class="v">17</td>' in page
    assert summary_png_path(out).exists()
    assert len(page) < 500_000  # plotly.js is written once beside the reports, not in each
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        [out.name, summary_png_path(out).name, PLOTLYJS_FILE]
    )


def test_png_summary_is_a_real_picture_of_equity_and_drawdown(tmp_path: Path) -> None:
    rts, _, _ = session()
    out = write_summary_png(
        tmp_path / "s.png",
        title="ESH4",
        round_trips=rts,
        metrics=compute_metrics(rts),
        synthetic=False,
    )
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 20_000 < len(data) < 1_000_000
    with Image.open(out) as im:
        assert im.size == (1200, 700)
        px = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)
    blue = np.all(np.abs(px - [0x1F, 0x5F, 0xA8]) < 30, axis=1).sum()  # the equity line
    red = np.all(np.abs(px - [0xD7, 0x30, 0x27]) < 30, axis=1).sum()  # the drawdown edge
    assert blue > 500 and red > 100


def test_plotlyjs_from_a_cdn_or_one_shared_file(tmp_path: Path) -> None:
    rts, _, prices = session()
    common = dict(
        prices=prices,
        round_trips=rts,
        metrics=compute_metrics(rts),
        synthetic=True,
        summary_png=False,
    )
    cdn = write_report(tmp_path / "cdn" / "a.html", title="a", include_plotlyjs="cdn", **common)
    page = cdn.read_text(encoding="utf-8")
    assert 'src="https://cdn.plot.ly/plotly-' in page and "* plotly.js v" not in page
    assert len(page) < 500_000 and f'<div class="synthetic">{SYNTHETIC_BANNER}' in page
    pages = [
        write_report(
            tmp_path / "dir" / f"{n}.html", title=n, include_plotlyjs="directory", **common
        )
        for n in ("b", "c")
    ]
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == [
        "b.html",
        "c.html",
        PLOTLYJS_FILE,
    ]
    assert (tmp_path / "dir" / PLOTLYJS_FILE).stat().st_size > 1_000_000
    for p in pages:
        text = p.read_text(encoding="utf-8")
        assert f'src="{PLOTLYJS_FILE}"' in text and len(text) < 500_000


def test_bad_input_writes_nothing(tmp_path: Path) -> None:
    rts, _, prices = session()
    common = dict(
        title="t", prices=prices, round_trips=rts, metrics=compute_metrics(rts), synthetic=False
    )
    with pytest.raises(ValueError, match="non-negative int"):
        write_report(tmp_path / "a.html", funnel=[("proposals", 10), ("cooldown", -1)], **common)
    with pytest.raises(ValueError, match="include_plotlyjs"):
        write_report(tmp_path / "a.html", include_plotlyjs="inline", **common)  # type: ignore[arg-type]
    bad = [TradeLevels("ESH4", rts[0].entry_ts_ns, float("nan"), None)]
    with pytest.raises(ValueError, match="stop is nan"):
        write_report(tmp_path / "a.html", levels=bad, **common)
    assert list(tmp_path.iterdir()) == []
