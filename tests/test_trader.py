"""One decision from signal to size, on real ES features: context, gates, Kelly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from esml.alpha import registry
from esml.alpha.model import OnnxAlphaModel
from esml.alpha.strategy import ModelStrategy, Signal
from esml.config import load_config
from esml.decision.gates import GateStack
from esml.decision.proposal import AccountState
from esml.engine.trader import Trader
from esml.execution.orders import Side
from esml.features.batch import batch_features
from esml.features.streaming import FEATURE_NAMES
from esml.market.instruments import ES, PRICE_SCALE


class Fixed:
    """A strategy that always says the same thing (the trader, not the opinion, is tested)."""

    name = "fixed"

    def __init__(self, signal: Signal) -> None:
        self.signal = signal

    def on_decision(self, ts_ns, features, mid, position):
        return replace(self.signal, ts_ns=ts_ns)


@pytest.fixture(scope="module")
def frame(es_events):
    return batch_features(es_events, ES.tick_fixed, 1.0)


def _touch(mid: float, spread_ticks: int = 1) -> tuple[int, int, int, int]:
    half = spread_ticks * ES.tick_fixed // 2
    m = round(mid * PRICE_SCALE)
    return (m - half, 5, m + half, 7)


def _trader(signal: Signal, **risk: object) -> Trader:
    cfg = load_config(risk={"max_position": 5, **risk})
    return Trader(cfg, Fixed(signal), GateStack.from_config(cfg.risk))


LONG = Signal(0, "test", Side.BUY, 0.6, p_down=0.2, p_flat=0.2, p_up=0.6)


def test_the_context_comes_from_the_book_and_the_features(frame) -> None:
    i = len(frame.ts_ns) // 2
    ts, row = int(frame.ts_ns[i]), frame.X[i]
    acct = AccountState("2023-12-26")
    d = _trader(LONG).decide(ts, row, _touch(frame.mid[i]), acct, ts - 250_000_000)
    ctx = d.proposal.context
    assert ctx.spread_ticks == 1 and ctx.data_age_s == pytest.approx(0.25)
    assert ctx.pso == pytest.approx(float(row[FEATURE_NAMES.index("pso")]))
    # ASIA budget (the file is the Christmas reopen): stop 12, target 16
    assert (d.stop_ticks, d.target_ticks) == (12, 16)
    assert ctx.expected_move_ticks == pytest.approx(0.6 * 16 - 0.2 * 12)
    assert d.verdict.approved and 1 <= d.qty <= 5


def test_a_wide_book_or_no_edge_trades_nothing(frame) -> None:
    i = len(frame.ts_ns) // 2
    ts, row = int(frame.ts_ns[i]), frame.X[i]
    acct = AccountState("2023-12-26")
    wide = _trader(LONG).decide(ts, row, _touch(frame.mid[i], 6), acct, ts)
    assert wide.qty == 0 and wide.verdict.gate == "max_spread"
    coin = replace(LONG, confidence=0.40, p_up=0.40, p_down=0.39, p_flat=0.21)  # 12/16: p < 0.44
    weak = _trader(coin, min_confidence=0.0, min_edge_over_costs=0.0).decide(
        ts, row, _touch(frame.mid[i]), acct, ts
    )
    assert weak.verdict.approved and weak.sizing.qty == 0 and weak.qty == 0
    assert weak.sizing.reason.startswith("no edge")


def test_the_shipped_model_decides_on_real_features(frame) -> None:
    model = OnnxAlphaModel.load(registry.champion(Path("models")) / "trees")
    cfg = load_config(risk={"min_confidence": 0.0})
    trader = Trader(cfg, ModelStrategy(model), GateStack.from_config(cfg.risk))
    acct = AccountState("2023-12-26")
    for i in range(0, len(frame.ts_ns), 60):
        ts = int(frame.ts_ns[i])
        d = trader.decide(ts, frame.X[i], _touch(frame.mid[i]), acct, ts)
        p = d.signal
        assert p.confidence == max(p.p_up, p.p_down)
        assert np.isclose(p.p_up + p.p_flat + p.p_down, 1.0, atol=1e-5)
    assert trader.signals == len(range(0, len(frame.ts_ns), 60))
