"""Bar fills never flatter a strategy: entries at the next open plus a tick, the stop before
the target when a bar reaches both, targets only when traded through, time exits, fees.
The bars here are SYNTHETIC, hand-made to put each case in one bar."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from esml.alpha.bar_features import BAR_NS, FEATURE_NAMES, BarFrame
from esml.alpha.strategy import Signal
from esml.evaluation.bar_trading import simulate
from esml.execution.orders import OrderRole
from esml.market.side import Side

T0 = pd.Timestamp("2019-03-05 14:30", tz="UTC").value  # 08:30 CT


def _frame(ohlc: list[tuple[float, float, float, float]], atr_ticks: float = 8.0) -> BarFrame:
    """SYNTHETIC bars: consecutive 5-minute bars, every one a decision bar."""
    n = len(ohlc)
    x = np.zeros((n, len(FEATURE_NAMES)), np.float32)
    x[:, FEATURE_NAMES.index("bar_atr_14_ticks")] = atr_ticks
    o, h, lo, c = (np.array(col, float) for col in zip(*ohlc, strict=True))
    ts = T0 + np.arange(n, dtype=np.int64) * BAR_NS
    prices = pd.DataFrame(
        {"ts": ts, "open": o, "high": h, "low": lo, "close": c, "contract": "ESH9"}
    )
    zeros = np.zeros(n, np.int64)
    return BarFrame(
        ts + BAR_NS,
        x,
        zeros,
        zeros.astype(bool),
        zeros,
        zeros.astype(bool),
        np.ones(n, bool),
        prices,
        np.full(n, 2019),
        zeros,
    )


def _buy_once(at: int = 0, confidence: float = 0.6):
    def decide(i: int, position: int) -> Signal | None:
        if i == at and position == 0:
            return Signal(0, "test", Side.BUY, confidence, 0.2, 0.2, confidence)
        return None

    return decide


FLAT_BAR = (100.0, 100.25, 99.75, 100.0)


def test_entry_is_next_open_plus_a_tick_and_stop_fills_first() -> None:
    # bar 1: entry at 100.25 (open 100 + 1 tick); stop 8 ticks = 98.25, target 4R = 108.25
    # bar 2 touches both the stop and the target: the stop fills, less a tick
    f = _frame([FLAT_BAR, FLAT_BAR, (100.0, 110.0, 98.0, 105.0), FLAT_BAR])
    (rt,) = simulate(f, np.arange(4), _buy_once())
    assert rt.entry_price == 100.25 and rt.exit_role is OrderRole.STOP
    assert rt.exit_price == 98.0  # 98.25 less one tick
    assert rt.gross_pnl == pytest.approx((98.0 - 100.25) * 50) and rt.costs == 4.5
    assert rt.net_pnl == pytest.approx(rt.gross_pnl - 4.5)


def test_target_fills_only_when_traded_through() -> None:
    touch = (101.0, 108.25, 100.5, 108.0)  # reaches the target, not through it
    through = (108.0, 108.5, 108.0, 108.25)  # above the stop trailed to 107.75
    f = _frame([FLAT_BAR, FLAT_BAR, touch, through, FLAT_BAR])
    (rt,) = simulate(f, np.arange(5), _buy_once())
    assert rt.exit_role is OrderRole.TARGET and rt.exit_price == 108.25
    assert rt.exit_ts_ns == f.prices["ts"].iat[3]


def test_gap_through_the_stop_fills_at_the_open_less_a_tick() -> None:
    f = _frame([FLAT_BAR, FLAT_BAR, (97.0, 97.5, 96.0, 97.0), FLAT_BAR])
    (rt,) = simulate(f, np.arange(4), _buy_once())
    assert rt.exit_role is OrderRole.STOP and rt.exit_price == 96.75


def test_time_exit_after_thirty_minutes_and_low_confidence_is_gated() -> None:
    f = _frame([FLAT_BAR] * 10)
    (rt,) = simulate(f, np.arange(10), _buy_once())
    assert rt.exit_role is OrderRole.EXIT and rt.exit_price == 99.75  # close 100 less a tick
    assert rt.exit_ts_ns - rt.entry_ts_ns == 6 * BAR_NS  # entry at bar 1's open, out at 7's
    assert simulate(f, np.arange(10), _buy_once(confidence=0.54)) == []


def test_no_entry_across_a_gap_and_open_positions_close_at_a_gap() -> None:
    f = _frame([FLAT_BAR] * 6)
    bars = np.array([0, 2, 3, 4])  # bar 1 missing: the decision at bar 0 cannot fill at 2
    assert simulate(f, bars, _buy_once()) == []
    (rt,) = simulate(f, np.array([0, 1, 2, 4, 5]), _buy_once())
    assert rt.exit_ts_ns == f.prices["ts"].iat[2] + BAR_NS  # out at bar 2's close
