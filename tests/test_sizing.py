"""Sizing: fractional Kelly on the bracket's payoff, PSO tiers, the hard maximum."""

from __future__ import annotations

import pytest

from esml.config import SizingConfig
from esml.decision.sizing import Tier, kelly_fraction, size, tier_of
from esml.execution.orders import Side
from esml.market.instruments import ES, MES

CFG = SizingConfig()  # quarter Kelly, $50,000, 10 lots


def test_kelly_on_an_rth_bracket_by_hand() -> None:
    # stop 10 ticks = $125 + $4.50 costs = $129.50 risked; target 25 = $312.50 - 4.50 = $308
    f = kelly_fraction(0.40, 10, 25, ES, 4.50)
    assert f == pytest.approx(0.40 - 0.60 * 129.50 / 308.0)
    d = size(0.40, Side.BUY, 10, 25, None, ES, 2.25, CFG)
    # 0.25 * 0.1477 * 50,000 / 129.50 = 14.26 -> 14, capped at the hard maximum
    assert (d.qty, d.tier) == (10, Tier.NORMAL) and "hard max 10" in d.reason


def test_no_edge_means_no_trade() -> None:
    # break-even p for a 10/16 bracket with costs is above 40%
    d = size(0.38, Side.SELL, 10, 16, 0.9, ES, 2.25, CFG)
    assert d.qty == 0 and d.kelly < 0 and d.reason.startswith("no edge")
    assert kelly_fraction(0.99, 10, 1, MES, 4.50) == -1.0  # a target below the costs


@pytest.mark.parametrize(
    ("pso", "side", "tier"),
    [(0.5, Side.BUY, Tier.TURBO), (0.3, Side.BUY, Tier.BOOST), (0.1, Side.BUY, Tier.NORMAL),
     (-0.5, Side.BUY, Tier.CONTRA), (-0.6, Side.SELL, Tier.TURBO), (0.6, Side.SELL, Tier.CONTRA),
     (None, Side.BUY, Tier.NORMAL)],
)  # fmt: skip
def test_tiers_read_the_oscillator_in_the_trades_direction(pso, side, tier) -> None:
    assert tier_of(pso, side, CFG) is tier


def test_tiers_scale_the_kelly_size() -> None:
    small = SizingConfig(account_equity=5_000)  # base size 1 at p=0.40
    sizes = {pso: size(0.40, Side.BUY, 10, 25, pso, ES, 2.25, small).qty
             for pso in (0.6, 0.3, 0.0, -0.7)}  # fmt: skip
    assert sizes == {0.6: 2, 0.3: 1, 0.0: 1, -0.7: 1}
    bigger = SizingConfig(account_equity=20_000)  # base 5
    assert [size(0.40, Side.BUY, 10, 25, p, ES, 2.25, bigger).qty for p in (0.6, 0.3, 0, -0.7)] \
        == [10, 7, 5, 2]


def test_a_bad_probability_is_refused() -> None:
    with pytest.raises(ValueError, match="not in"):
        size(1.2, Side.BUY, 10, 25, None, ES, 2.25, CFG)
