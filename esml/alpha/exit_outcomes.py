"""What an exit plan really earned on held-out rows, by the probability the model gave it.

A signal's bracket (a 25-tick target, a 10-tick stop) says little about what a trade makes
when the 20-second time exit closes almost every trade long before either is touched.
`exit_plan_outcomes` walks each held-out decision's own future mid path through the whole
plan, target, stop and time exit, for a long and for a short: the first touch of the
target or the stop wins, otherwise the trade is marked at the time exit. The outcomes,
in ticks in the trade's direction and before costs, are grouped by the calibrated
probability of the trade's side (p_up for a long, p_down for a short) into equal-count
bins, so `expected_ticks(p)` is the held-out mean outcome of trades the model rated alike.
The expected-move gate (`esml.decision.gates.ExpectedMoveGate`) reads it.

The mid path is the decision grid's (one mid per decision interval), so a touch between
two decisions is missed both ways; decisions whose path has a gap before the time exit
are left out.

Reading the table needs no numpy (the risk Lambda runs the gate without it); building it
imports numpy when it runs.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    import numpy as np

_NS = 1_000_000_000
DEFAULT_BINS = 8
MIN_ROWS_PER_BIN = 30


class ExitPlan(BaseModel):
    """Target and stop in ticks from the entry, and the time exit in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stop_ticks: int = Field(ge=1)
    target_ticks: int = Field(ge=1)
    time_exit_s: float = Field(gt=0)

    def describe(self) -> str:
        return (
            f"target {self.target_ticks}, stop {self.stop_ticks} ticks, "
            f"time exit {self.time_exit_s:g} s"
        )


class ExitOutcomes(BaseModel):
    """Held-out outcomes of one plan: bin i holds trades whose side probability is at most
    `p_upper[i]` (and above the bin before); `mean_ticks[i]` is their mean outcome."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    plan: ExitPlan
    p_upper: list[float] = Field(min_length=1)
    mean_ticks: list[float] = Field(min_length=1)
    count: list[int] = Field(min_length=1)
    share_target: float = Field(ge=0, le=1)
    share_stop: float = Field(ge=0, le=1)
    share_time: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> ExitOutcomes:
        if not len(self.p_upper) == len(self.mean_ticks) == len(self.count):
            raise ValueError("p_upper, mean_ticks and count must have one entry per bin")
        if any(b <= a for a, b in zip(self.p_upper, self.p_upper[1:], strict=False)):
            raise ValueError("p_upper must increase")
        return self

    @property
    def trades(self) -> int:
        return sum(self.count)

    def expected_ticks(self, p_side: float) -> float:
        """The held-out mean outcome of trades rated like `p_side` (the top bin beyond it:
        no extrapolation past what was seen)."""
        i = min(bisect.bisect_left(self.p_upper, p_side), len(self.p_upper) - 1)
        return self.mean_ticks[i]


def exit_plan_outcomes(
    ts_ns: np.ndarray,
    mid: np.ndarray,
    p_up: np.ndarray,
    p_down: np.ndarray,
    tick_size: float,
    plan: ExitPlan,
    n_bins: int = DEFAULT_BINS,
    min_per_bin: int = MIN_ROWS_PER_BIN,
) -> ExitOutcomes:
    """The plan's outcomes at every decision (long and short) of a held-out stretch."""
    import numpy as np

    ts = np.asarray(ts_ns, np.int64)
    m = np.asarray(mid, np.float64)
    if not (len(ts) == len(m) == len(p_up) == len(p_down)) or len(ts) < 2:
        raise ValueError("ts_ns, mid, p_up and p_down must be equally long, 2 rows or more")
    if np.any(np.diff(ts) <= 0):
        raise ValueError("decision times must be strictly increasing")
    long_ticks, long_how, ok = _walk(ts, m, tick_size, plan, +1)
    short_ticks, short_how, _ = _walk(ts, m, tick_size, plan, -1)
    p = np.concatenate([np.asarray(p_up)[ok], np.asarray(p_down)[ok]])
    ticks = np.concatenate([long_ticks[ok], short_ticks[ok]])
    how = np.concatenate([long_how[ok], short_how[ok]])
    bins = min(n_bins, len(p) // min_per_bin)
    if bins < 1:
        raise ValueError(
            f"{len(p)} held-out trades are too few to value the exit plan (at least {min_per_bin})"
        )
    # equal-count bins by the quantiles of p; tied quantiles collapse into one bin
    edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, bins + 1)[1:]))
    which = np.searchsorted(edges, p, side="left")
    used = [b for b in range(len(edges)) if np.any(which == b)]
    return ExitOutcomes(
        plan=plan,
        p_upper=[float(edges[b]) for b in used],
        mean_ticks=[float(ticks[which == b].mean()) for b in used],
        count=[int(np.sum(which == b)) for b in used],
        share_target=float(np.mean(how == 1)),
        share_stop=float(np.mean(how == -1)),
        share_time=float(np.mean(how == 0)),
    )


def _walk(
    ts: np.ndarray, mid: np.ndarray, tick: float, plan: ExitPlan, sign: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(outcome ticks, how it ended: 1 target / -1 stop / 0 time, whether the path is
    whole) of a trade entered at each row's mid in direction `sign`."""
    import numpy as np

    n = len(ts)
    horizon = round(plan.time_exit_s * _NS)
    end = np.searchsorted(ts, ts + horizon, side="right") - 1  # last row within the plan
    step = float(np.median(np.diff(ts)))
    rows = np.arange(n)
    # the path reaches the time exit, and without a gap: (nearly) one row per step
    ok = (ts[end] >= ts + horizon - step) & (end - rows >= 0.8 * horizon / step)
    ticks = np.zeros(n)
    how = np.zeros(n, np.int8)
    open_ = np.ones(n, bool)
    for k in range(1, int((end - rows).max(initial=0)) + 1):
        j = np.minimum(rows + k, n - 1)
        live = open_ & (rows + k <= end)
        move = sign * (mid[j] - mid) / tick
        hit_stop = live & (move <= -plan.stop_ticks)
        hit_target = live & ~hit_stop & (move >= plan.target_ticks)  # both: the stop first
        ticks[hit_stop], how[hit_stop] = -plan.stop_ticks, -1
        ticks[hit_target], how[hit_target] = plan.target_ticks, 1
        open_ &= ~(hit_stop | hit_target)
    timed = open_
    ticks[timed] = sign * (mid[end[timed]] - mid[timed]) / tick
    return ticks, how, ok & (end > rows)
