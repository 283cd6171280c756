"""Where a position's stop belongs, from the rules in `esml.execution.rules`: pure
arithmetic in ticks, so each stage can be checked by hand."""

from __future__ import annotations

import math
from dataclasses import dataclass

from esml.execution.orders import Side
from esml.execution.rules import ExitRules

_EPS = 1e-9


@dataclass(frozen=True)
class StopLevel:
    ticks: int  # the stop price in ticks (price / tick size)
    stage: str  # which rule put it there


def away_from_market(side: Side, ticks: float) -> int:
    """Round a stop level to the grid on the loose side: down for a long's stop, up for a
    short's, so rounding never makes a stop tighter than its rule."""
    return math.floor(ticks + _EPS) if side is Side.BUY else math.ceil(ticks - _EPS)


def stop_level(
    rules: ExitRules,
    side: Side,
    entry_ticks: float,
    peak_ticks: int,
    r_ticks: int,
    trail_ticks: int | None = None,
) -> StopLevel | None:
    """The stop the rules ask for, given the position's side, its entry (average fill, in
    ticks), the best exit-side price since the minimum hold ended, and R in ticks. None
    when no rule has triggered yet. The caller keeps the better of this and the current
    stop: a stop never loosens."""
    sign = side.sign
    if trail_ticks is not None:
        return StopLevel(
            away_from_market(side, peak_ticks - sign * trail_ticks),
            f"trail {trail_ticks} ticks behind the best price",
        )
    favour = (peak_ticks - entry_ticks) * sign / r_ticks  # in R
    if rules.tight_trail_r is not None and favour >= rules.tight_trail_r - _EPS:
        distance = rules.tight_trail_distance_r * r_ticks
        stage = f"tight trail at {rules.tight_trail_r}R"
    elif rules.trail_r is not None and favour >= rules.trail_r - _EPS:
        distance = rules.trail_distance_r * r_ticks
        stage = f"trail at {rules.trail_r}R"
    elif rules.breakeven_r is not None and favour >= rules.breakeven_r - _EPS:
        level = entry_ticks + sign * rules.breakeven_offset_ticks
        return StopLevel(away_from_market(side, level), f"breakeven at {rules.breakeven_r}R")
    else:
        return None
    return StopLevel(away_from_market(side, peak_ticks - sign * distance), stage)
