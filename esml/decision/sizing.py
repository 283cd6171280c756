"""How many contracts: fractional Kelly on the bracket's payoff, scaled by the PSO tier,
never above the hard maximum.

Kelly for a bet that wins `b` per unit risked with probability `p` stakes f = p - (1-p)/b
of capital. Here the unit risked is the bracket's stop plus the round-trip cost, and `b`
is what the target pays net of costs over that. A fraction of Kelly (a quarter by
default) keeps the stake sane when `p` is an estimate, which it always is.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from esml.config import SizingConfig
from esml.market.instruments import Instrument
from esml.market.side import Side


class Tier(enum.StrEnum):
    TURBO = "TURBO"
    BOOST = "BOOST"
    NORMAL = "NORMAL"
    CONTRA = "CONTRA"


TIER_MULTIPLIER = {Tier.TURBO: 2.0, Tier.BOOST: 1.5, Tier.NORMAL: 1.0, Tier.CONTRA: 0.5}


@dataclass(frozen=True)
class SizeDecision:
    qty: int  # 0: no edge, do not trade
    kelly: float  # the full-Kelly fraction of capital
    tier: Tier
    reason: str


def kelly_fraction(p_win: float, stop_ticks: int, target_ticks: int, instrument: Instrument,
                   round_trip_cost: float) -> float:  # fmt: skip
    risk = stop_ticks * instrument.tick_value + round_trip_cost
    reward = target_ticks * instrument.tick_value - round_trip_cost
    if reward <= 0:
        return -1.0  # the target cannot even pay for the trip
    return p_win - (1.0 - p_win) * risk / reward


def tier_of(pso: float | None, side: Side, cfg: SizingConfig) -> Tier:
    """The oscillator read in the trade's direction: a long with PSO high rides momentum."""
    if pso is None:
        return Tier.NORMAL
    x = pso * side.sign
    if x >= cfg.turbo_pso:
        return Tier.TURBO
    if x >= cfg.boost_pso:
        return Tier.BOOST
    if x <= cfg.contra_pso:
        return Tier.CONTRA
    return Tier.NORMAL


def size(
    p_win: float,
    side: Side,
    stop_ticks: int,
    target_ticks: int,
    pso: float | None,
    instrument: Instrument,
    commission_per_side: float,
    cfg: SizingConfig,
) -> SizeDecision:
    if not 0.0 <= p_win <= 1.0:
        raise ValueError(f"win probability {p_win} is not in [0, 1]")
    round_trip = 2 * commission_per_side
    f = kelly_fraction(p_win, stop_ticks, target_ticks, instrument, round_trip)
    tier = tier_of(pso, side, cfg)
    if f <= 0:
        return SizeDecision(0, f, tier, f"no edge: Kelly {f:+.3f} at p={p_win:.3f}")
    risk_per_lot = stop_ticks * instrument.tick_value + round_trip
    base = max(1, math.floor(cfg.kelly_fraction * f * cfg.account_equity / risk_per_lot))
    qty = max(1, math.floor(base * TIER_MULTIPLIER[tier]))
    capped = min(qty, cfg.max_lots)
    why = f"Kelly {f:.3f} x {cfg.kelly_fraction:g} -> {base}, {tier.value} -> {qty}"
    if capped < qty:
        why += f", hard max {cfg.max_lots}"
    return SizeDecision(capped, f, tier, why)
