"""How a position is entered, protected, trailed and left: one validated config section.

R is the initial stop distance of the position, `stop_ticks x tick`, the risk the decision
approved; R-multiples are measured from the average fill price of the position's first
entry, on the side of the book the position would exit at (the bid for a long, the ask
for a short), using the best such price seen since the minimum hold ended ("the peak").
Every stop level is rounded to the tick away from the market (never tighter than the
rule), and a stop only ever moves toward the market:

* breakeven at `breakeven_r` (0.6R): once the peak is 0.6R in favour, the stop moves to
  the entry price plus `breakeven_offset_ticks`.
* trail at `trail_r` (1.0R): once the peak is 1.0R in favour, the stop is placed
  `trail_distance_r` R (0.5R) behind the peak and from then on follows the peak at that
  distance. At activation it therefore locks in at least 1.0R - 0.5R = 0.5R.
* tighter trail at `tight_trail_r` (1.5R): from a peak 1.5R in favour, the distance
  shrinks to `tight_trail_distance_r` R (0.25R), locking in at least 1.25R.
* take profit at `take_profit_r` (4R): the exchange-held target of the bracket sits 4R
  from the entry (None: the session budget's target ticks).

A signal with `trail_ticks` (the rule strategies use 4) gets a fixed-distance trail
instead of the R stages: after the minimum hold the stop follows the peak at that many
ticks; its target is the signal's or the session budget's.

Nothing is evaluated during the first `min_hold_s` after the first entry fill (no stop
move, no trailing, no early exit); the exchange-held stop and target work throughout.
The time exit at the signal's prediction horizon is not held back by it: with a horizon
shorter than the minimum hold the time exit ends the trade before any trailing starts.

Adds (`max_adds` > 0): a same-side signal while the position is at least
`add_min_profit_r` R in profit adds `approved_qty` contracts, each add carrying its own
exchange-held OCO bracket placed at the position's current stop and target levels, so
every contract is protected from the moment it fills; trailing moves every stop of the
position together. Adds keep R and the entry reference of the first entry; each add
restarts the time exit at its own signal's horizon.
"""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ExitRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    entry: Literal["market", "limit"] = "market"  # limit: at the touch (bid to buy)
    entry_timeout_s: float = Field(5.0, gt=0)  # an unfilled limit entry is cancelled
    exit: Literal["market", "limit"] = "market"  # limit: the target moves to the touch
    exit_timeout_s: float = Field(3.0, gt=0)  # a limit exit still open goes to market
    min_hold_s: float = Field(30.0, ge=0)
    breakeven_r: float | None = Field(0.6, gt=0)
    breakeven_offset_ticks: int = Field(0, ge=0)
    trail_r: float | None = Field(1.0, gt=0)
    trail_distance_r: float = Field(0.5, gt=0)
    tight_trail_r: float | None = Field(1.5, gt=0)
    tight_trail_distance_r: float = Field(0.25, gt=0)
    take_profit_r: float | None = Field(4.0, gt=0)
    time_exit: bool = True  # at the signal's prediction horizon, when it has one
    flip_exit_confidence: float | None = Field(0.7, ge=0, le=1)  # None: no early exit
    max_adds: int = Field(0, ge=0)
    add_min_profit_r: float = Field(0.0, ge=0)
    emergency_stop_ticks: int = Field(8, ge=1)  # re-protection when the stop level is crossed

    @model_validator(mode="after")
    def _stages_in_order(self) -> ExitRules:
        stages = [
            (name, v)
            for name, v in (
                ("breakeven_r", self.breakeven_r),
                ("trail_r", self.trail_r),
                ("tight_trail_r", self.tight_trail_r),
                ("take_profit_r", self.take_profit_r),
            )
            if v is not None
        ]
        for (a, va), (b, vb) in itertools.pairwise(stages):
            if va >= vb:
                raise ValueError(f"{a} ({va}) must be below {b} ({vb})")
        if self.tight_trail_distance_r > self.trail_distance_r:
            raise ValueError("tight_trail_distance_r cannot be wider than trail_distance_r")
        for at, distance in (
            (self.trail_r, "trail_distance_r"),
            (self.tight_trail_r, "tight_trail_distance_r"),
        ):
            if at is not None and getattr(self, distance) >= at:
                raise ValueError(
                    f"{distance} must be below the R it starts at ({at}), or the "
                    "stop would start behind the entry"
                )
        return self
