"""Round trips, metrics and the HTML report on ES numbers worked out by hand: ES points are
$50 (tick 0.25 = $12.50), commissions $2.25 per contract per side."""

from __future__ import annotations

import math
import os
from itertools import count
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from esml.evaluation.metrics import (
    Metrics,
    compute_metrics,
    max_drawdown,
    metrics_table,
    profit_factor,
    trading_days,
    wilson_interval,
)
from esml.evaluation.report import (
    MAX_PRICE_POINTS,
    SYNTHETIC_BANNER,
    build_figure,
    downsample_minmax,
    write_report,
)
from esml.evaluation.trades import RoundTrip, round_trips
from esml.execution.orders import Fill, OrderRole, Side
from esml.market.instruments import ES, NQ

FEE = 2.25
_ids = count()


def ct(wall: str) -> int:
    """Chicago wall time as UTC nanoseconds."""
    return pd.Timestamp(wall, tz="America/Chicago").value


def fill(
    side: Side,
    qty: int,
    price: float,
    wall: str,
    order: str,
    role: OrderRole = OrderRole.ENTRY,
    symbol: str = "ESH4",
) -> Fill:
    return Fill(
        f"x{next(_ids)}", order, f"c-{order}", symbol, side, qty, price, FEE * qty, ct(wall), role
    )


BUY, SELL = Side.BUY, Side.SELL
STOP, TARGET, EXIT = OrderRole.STOP, OrderRole.TARGET, OrderRole.EXIT


# --- round trips ---------------------------------------------------------------------


def test_long_to_target() -> None:
    [rt] = round_trips(
        [
            fill(BUY, 1, 4800.00, "2024-03-04 09:30:01", "e1"),
            fill(SELL, 1, 4803.00, "2024-03-04 09:31:10", "t1", TARGET),
        ],
        ES,
    )
    assert (rt.side, rt.qty, rt.entry_price, rt.exit_price) == (BUY, 1, 4800.00, 4803.00)
    assert (rt.gross_pnl, rt.costs, rt.net_pnl) == (150.00, 4.50, 145.50)
    assert rt.exit_role is TARGET and rt.is_win
    assert rt.duration_ns == 69_000_000_000


def test_partially_filled_entry_is_one_trade_with_its_average_price() -> None:
    [rt] = round_trips(
        [
            fill(BUY, 1, 4800.00, "2024-03-04 09:30:01", "e1"),
            fill(BUY, 1, 4800.25, "2024-03-04 09:30:02", "e1"),
            fill(SELL, 2, 4798.00, "2024-03-04 09:33:00", "s1", STOP),
        ],
        ES,
    )
    # (4798 - 4800) * 50 + (4798 - 4800.25) * 50 = -100 - 112.50
    assert (rt.qty, rt.entry_price, rt.exit_price) == (2, 4800.125, 4798.00)
    assert (rt.gross_pnl, rt.costs, rt.net_pnl) == (-212.50, 9.00, -221.50)
    assert rt.entry_ts_ns == ct("2024-03-04 09:30:01") and rt.exit_role is STOP


def test_partially_filled_target_is_one_trade() -> None:
    [rt] = round_trips(
        [
            fill(BUY, 2, 4800.00, "2024-03-04 09:30:01", "e1"),
            fill(SELL, 1, 4805.00, "2024-03-04 09:40:00", "t1", TARGET),
            fill(SELL, 1, 4805.25, "2024-03-04 09:40:03", "t1", TARGET),
        ],
        ES,
    )
    assert (rt.qty, rt.exit_price, rt.exit_ts_ns) == (2, 4805.125, ct("2024-03-04 09:40:03"))
    assert (rt.gross_pnl, rt.costs, rt.net_pnl) == (512.50, 9.00, 503.50)


def test_a_fill_through_zero_closes_the_short_and_opens_a_long() -> None:
    short, long_ = round_trips(
        [
            fill(SELL, 1, 4810.00, "2024-03-04 10:00:00", "e1"),
            fill(BUY, 2, 4806.50, "2024-03-04 10:05:00", "flip", EXIT),  # $4.50 commission
            fill(SELL, 1, 4804.00, "2024-03-04 10:09:00", "s2", STOP),
        ],
        ES,
    )
    assert (short.side, short.qty, short.exit_role) == (SELL, 1, EXIT)
    assert (short.gross_pnl, short.costs, short.net_pnl) == (175.00, 4.50, 170.50)
    assert (long_.side, long_.entry_price, long_.entry_ts_ns) == (
        BUY,
        4806.50,
        ct("2024-03-04 10:05:00"),
    )
    assert (long_.gross_pnl, long_.costs, long_.net_pnl) == (-125.00, 4.50, -129.50)


def test_scale_in_is_closed_first_in_first_out() -> None:
    first, second = round_trips(
        [
            fill(BUY, 1, 4800.00, "2024-03-04 11:00:00", "e1"),
            fill(BUY, 1, 4802.00, "2024-03-04 11:02:00", "e2"),
            fill(SELL, 1, 4804.00, "2024-03-04 11:04:00", "t1", TARGET),
            fill(SELL, 1, 4799.00, "2024-03-04 11:06:00", "s1", STOP),
        ],
        ES,
    )
    assert (first.entry_price, first.gross_pnl, first.net_pnl) == (4800.00, 200.00, 195.50)
    assert (second.entry_price, second.gross_pnl, second.net_pnl) == (4802.00, -150.00, -154.50)


def test_fills_are_taken_in_time_order_and_open_contracts_are_not_a_trade() -> None:
    late_exit = fill(SELL, 1, 4801.00, "2024-03-04 12:01:00", "x1", EXIT)
    entry = fill(BUY, 1, 4800.00, "2024-03-04 12:00:00", "e1")
    still_open = fill(BUY, 1, 4801.25, "2024-03-04 12:05:00", "e2")
    [rt] = round_trips([late_exit, still_open, entry], ES)
    assert (rt.entry_price, rt.exit_price, rt.net_pnl) == (4800.00, 4801.00, 45.50)


def test_each_contract_month_is_its_own_position() -> None:
    rts = round_trips(
        [
            fill(BUY, 1, 4800.00, "2024-03-14 09:00:00", "e1", symbol="ESH4"),
            fill(SELL, 1, 4801.00, "2024-03-14 09:10:00", "roll", EXIT, symbol="ESH4"),
            fill(BUY, 1, 4852.00, "2024-03-14 09:10:00", "roll2", symbol="ESM4"),
            fill(SELL, 1, 4850.00, "2024-03-14 09:30:00", "s1", STOP, symbol="ESM4"),
        ],
        ES,
    )
    assert [(rt.symbol, rt.gross_pnl) for rt in rts] == [("ESH4", 50.0), ("ESM4", -100.0)]


def test_fills_of_another_instrument_are_refused() -> None:
    with pytest.raises(ValueError, match="NQH4"):
        round_trips([fill(BUY, 1, 17800.0, "2024-03-04 09:30:00", "e1", symbol="NQH4")], ES)
    assert round_trips([], NQ) == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-3, 3).filter(bool), st.integers(-40, 40)),
        min_size=1,
        max_size=25,
    )
)
def test_round_trips_reconcile_with_cash_flows(moves: list[tuple[int, int]]) -> None:
    """Whatever the order of scale-ins, partial exits and flips: once flat, the round
    trips' net P&L is the fills' cash flow less every commission."""
    fills, position = [], 0
    t = ct("2024-03-04 08:30:00")
    legs = [*moves, (-sum(q for q, _ in moves), 0)]
    for i, (qty, ticks) in enumerate(legs):
        if qty == 0:
            continue
        side = Side.of_position(qty)
        fills.append(
            Fill(
                f"h{i}",
                f"o{i}",
                "c",
                "ESM4",
                side,
                abs(qty),
                4800 + 0.25 * ticks,
                FEE * abs(qty),
                t + i * 1_000_000_000,
            )
        )
        position += qty
    assert position == 0
    rts = round_trips(fills, ES)
    cash = -sum(f.side.sign * f.qty * f.price * ES.point_value for f in fills)
    commissions = sum(f.commission for f in fills)
    assert sum(rt.net_pnl for rt in rts) == pytest.approx(cash - commissions, abs=1e-6)
    assert sum(rt.costs for rt in rts) == pytest.approx(commissions, abs=1e-9)


# --- metrics -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wins", "n", "low", "high"),
    [
        (7, 10, 0.3968, 0.8922),
        (3, 6, 0.1876, 0.8124),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (55, 100, 0.4524, 0.6438),
    ],
)
def test_wilson_interval_known_values(wins: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(wins, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo99, hi99 = wilson_interval(7, 10, z=2.576)
    lo95, hi95 = wilson_interval(7, 10)
    assert lo99 < lo95 and hi99 > hi95
    for bad in [(11, 10), (-1, 10), (1, -1)]:
        with pytest.raises(ValueError):
            wilson_interval(*bad)


def rt(net: float, exit_wall: str, minutes: int = 30, side: Side = BUY) -> RoundTrip:
    """A one-lot round trip with $4.50 of costs, entered `minutes` before its exit."""
    exit_ns = ct(exit_wall)
    return RoundTrip(
        "ESM4",
        side,
        1,
        exit_ns - minutes * 60_000_000_000,
        4800.0,
        exit_ns,
        4800.0 + (net + 4.5) / 50,
        net + 4.5,
        4.5,
        net,
        TARGET if net > 0 else STOP,
    )


# Three trading days; the third trade exits Tuesday 18:30 CT, which is Wednesday's session.
SEQUENCE = [
    rt(+200.0, "2024-03-05 09:00"),
    rt(-100.0, "2024-03-05 10:00"),
    rt(+50.0, "2024-03-05 18:30"),
    rt(-150.0, "2024-03-06 10:00"),
    rt(-100.0, "2024-03-07 09:00", side=SELL),
    rt(+300.0, "2024-03-07 11:00"),
]


def test_metrics_of_a_hand_made_sequence() -> None:
    m = compute_metrics(SEQUENCE)
    assert (m.trades, m.wins, m.losses, m.win_rate) == (6, 3, 3, 0.5)
    assert m.win_rate_ci95 == pytest.approx((0.1876, 0.8124), abs=1e-4)
    assert m.profit_factor == pytest.approx(550 / 350)
    assert (m.net_pnl, m.gross_pnl, m.costs) == pytest.approx((200.0, 227.0, 27.0))
    assert m.avg_trade == pytest.approx(200 / 6)
    # equity 0, 200, 100, 150, 0, -100, 200: peak 200, trough -100
    assert m.max_drawdown == pytest.approx(300.0)
    assert m.return_over_max_drawdown == pytest.approx(2 / 3)
    # daily +100, -100, +200: mean 200/3, sd sqrt(70000/3) -> 200 * sqrt(252 / 210000)
    assert m.days == 3
    assert m.sharpe == pytest.approx(200 * math.sqrt(252 / 210_000))
    # six 30-minute holds from Tue 08:30 to Thu 11:00 CT (50.5 h)
    assert m.time_in_market == pytest.approx(3.0 / 50.5)


def test_trading_day_rolls_at_the_cme_evening_open() -> None:
    days = trading_days([ct("2024-03-05 16:00"), ct("2024-03-05 17:00"), ct("2024-03-08 17:30")])
    assert [str(d) for d in days] == ["2024-03-05", "2024-03-06", "2024-03-11"]


def test_metrics_with_an_equity_curve_count_flat_days() -> None:
    ts = np.array(
        [
            ct(w)
            for w in [
                "2024-03-04 08:30",
                "2024-03-04 15:00",
                "2024-03-05 15:00",
                "2024-03-06 09:00",
                "2024-03-06 15:00",
            ]
        ]
    )
    equity = np.array([0.0, 100.0, 100.0, 250.0, 300.0])
    trades = [rt(100.0, "2024-03-04 14:30", minutes=60), rt(200.0, "2024-03-06 14:00", 300)]
    m = compute_metrics(trades, (ts, equity))
    # daily +100, 0, +200: mean 100, sd 100
    assert m.days == 3 and m.sharpe == pytest.approx(math.sqrt(252))
    assert m.time_in_market == pytest.approx(6 / (48 + 6.5))
    with pytest.raises(ValueError, match="backwards"):
        compute_metrics(trades, (ts[::-1], equity))


def test_metrics_edge_cases() -> None:
    none = compute_metrics([])
    assert (none.trades, none.win_rate, none.win_rate_ci95) == (0, None, (0.0, 1.0))
    assert (none.profit_factor, none.max_drawdown, none.net_pnl) == (0.0, 0.0, 0.0)
    assert (none.sharpe, none.return_over_max_drawdown, none.avg_trade) == (None, None, None)
    only_wins = compute_metrics([rt(120.5, "2024-03-05 09:00"), rt(33.0, "2024-03-05 10:00")])
    assert only_wins.profit_factor == math.inf and only_wins.return_over_max_drawdown == math.inf
    assert only_wins.sharpe is None  # one trading day
    assert profit_factor([-4.5, -4.5]) == 0.0 and max_drawdown([-4.5, -4.5]) == 9.0


def test_metrics_table_and_dict() -> None:
    m = compute_metrics(SEQUENCE)
    console = Console(record=True, width=100)
    console.print(metrics_table(m, "ESM4 walk-forward fold 3"))
    text = console.export_text()
    for expected in [
        "ESM4 walk-forward fold 3",
        "Profit factor",
        "1.57",
        "$200.00",
        "$300.00",
        "50.0% (18.8%–81.2%)",
        "6.93",
    ]:
        assert expected in text
    d = m.as_dict()
    assert d["trades"] == 6 and d["max_drawdown"] == pytest.approx(300.0)
    assert set(d) == set(Metrics.__dataclass_fields__)
    inf_text = Console(record=True, width=100)
    inf_text.print(metrics_table(compute_metrics([rt(50.0, "2024-03-05 09:00")]), "one win"))
    assert "∞" in inf_text.export_text()


# --- report --------------------------------------------------------------------------


def synthetic_session(n: int = 3_000) -> tuple[np.ndarray, np.ndarray]:
    """A seeded ES random walk in whole ticks around 4800, one print a second from 08:30 CT.
    Synthetic: only for exercising the report."""
    rng = np.random.default_rng(20240304)
    ts = ct("2024-03-04 08:30:00") + np.arange(n, dtype=np.int64) * 1_000_000_000
    return ts, 4800.0 + 0.25 * np.cumsum(rng.integers(-1, 2, n))


def trades_on(
    ts: np.ndarray, px: np.ndarray, pairs: list[tuple[int, int, Side]]
) -> list[RoundTrip]:
    """Round trips filled at the series' own prices: (entry index, exit index, side)."""
    fills = []
    for k, (i, j, side) in enumerate(pairs):
        fills.append(Fill(f"r{k}e", f"e{k}", f"c{k}", "ESH4", side, 1, px[i], FEE, int(ts[i])))
        fills.append(
            Fill(
                f"r{k}x",
                f"x{k}",
                f"c{k}",
                "ESH4",
                side.opposite,
                1,
                px[j],
                FEE,
                int(ts[j]),
                EXIT if k % 2 else STOP,
            )
        )
    return round_trips(fills, ES)


def test_synthetic_report_has_the_banner_traces_and_metrics(tmp_path: Path) -> None:
    ts, px = synthetic_session()
    trips = trades_on(ts, px, [(100, 400, BUY), (900, 1300, SELL), (2000, 2600, BUY)])
    out = write_report(
        tmp_path / "reports" / "synthetic.html",
        title="Synthetic ES random walk, seed 20240304",
        prices=(ts, px),
        round_trips=trips,
        metrics=compute_metrics(trips),
        synthetic=True,
        notes=["model es_direction_20s <v3>"],
    )
    page = out.read_text(encoding="utf-8")
    assert f'<div class="synthetic">{SYNTHETIC_BANNER}' in page
    for trace in [
        '"name":"long entry"',
        '"name":"short entry"',
        '"name":"exit"',
        '"name":"net equity"',
        '"name":"drawdown"',
        '"name":"price"',
    ]:
        assert trace in page
    assert "Profit factor" in page and "model es_direction_20s &lt;v3&gt;" in page
    # opens offline: plotly.js is the file written once beside the reports, not a CDN
    assert 'src="plotly.min.js"' in page and "* plotly.js v" not in page
    assert (out.parent / "plotly.min.js").stat().st_size > 1_000_000
    assert not list(out.parent.glob(".*tmp"))


def test_bad_prices_write_no_file(tmp_path: Path) -> None:
    ts, px = synthetic_session(100)
    with pytest.raises(ValueError, match="backwards"):
        write_report(
            tmp_path / "r.html",
            title="t",
            prices=(ts[::-1], px),
            round_trips=[],
            metrics=compute_metrics([]),
            synthetic=True,
        )
    with pytest.raises(ValueError, match="integer nanoseconds"):
        build_figure(title="t", prices=(ts.astype(float), px), round_trips=[], synthetic=True)
    with pytest.raises(ValueError, match="same length"):
        build_figure(title="t", prices=(ts, px[:-1]), round_trips=[], synthetic=True)
    assert list(tmp_path.iterdir()) == []


def test_a_session_without_decision_points_still_gets_a_report(tmp_path: Path) -> None:
    empty = (np.array([], np.int64), np.array([], np.float64))
    out = write_report(
        tmp_path / "quiet.html",
        title="synthetic quiet session",
        prices=empty,
        round_trips=[],
        metrics=compute_metrics([]),
        synthetic=True,
    )
    assert "Round trips" in out.read_text(encoding="utf-8")


def test_downsampling_keeps_extremes_and_order() -> None:
    ts, px = synthetic_session(200_000)
    px[123_457] = 4700.0  # a one-print spike must survive the thinning
    dts, dpx = downsample_minmax(ts, px, 2_000)
    assert dts.size <= 2_000 and np.all(np.diff(dts) > 0)
    assert dpx.min() == 4700.0 and dpx.max() == px.max()
    assert (dts[0], dts[-1]) == (ts[0], ts[-1])
    assert downsample_minmax(ts[:10], px[:10], 2_000)[0].size == 10


def esm8_trades() -> tuple[np.ndarray, np.ndarray]:
    root = Path(os.environ.get("ESML_DATA_DIR", Path(__file__).parents[1] / "../shared/data"))
    path = root / "es-trades" / "ESM8_trades_2018-05-07.csv"
    if not path.exists():
        pytest.skip(f"real ES data not found at {path}")
    df = pd.read_csv(path)
    ts = pd.to_datetime(df["ts"], format="ISO8601", utc=True).dt.as_unit("ns")
    return ts.astype("int64").to_numpy(), df["price"].to_numpy(dtype=float)


def test_real_es_report_is_thinned_keeps_every_trade_and_has_no_banner(tmp_path: Path) -> None:
    ts, px = esm8_trades()
    assert ts.size > MAX_PRICE_POINTS
    pairs = [(i, i + 1500, BUY if k % 2 else SELL) for k, i in enumerate(range(100, 70_000, 3500))]
    trips = trades_on(ts, px, pairs)
    fig = build_figure(
        title="ESM8 2018-05-07 RTH", prices=(ts, px), round_trips=trips, synthetic=False
    )
    traces = {t.name.split(" (")[0]: t for t in fig.data}
    price = traces["price"]
    assert len(price.x) <= MAX_PRICE_POINTS and f"{ts.size:,}" in price.name
    assert min(price.y) == px.min() and max(price.y) == px.max()
    entries = len(traces["long entry"].x) + len(traces["short entry"].x)
    assert entries == len(traces["exit"].x) == len(trips) == len(pairs)
    # shown in Chicago time: the file starts at the 08:30 CT open
    assert str(price.x[0]).startswith("2018-05-07T08:30:00")
    assert {row[7] for row in traces["exit"].customdata} == {"stop", "exit"}
    out = write_report(
        tmp_path / "esm8.html",
        title="ESM8 2018-05-07 RTH",
        prices=(ts, px),
        round_trips=trips,
        metrics=compute_metrics(trips),
        synthetic=False,
    )
    page = out.read_text(encoding="utf-8")
    assert SYNTHETIC_BANNER not in page and "Round trips" in page
