"""The expected-move gate values the exit plan that will really run: target, stop and the
time exit, from held-out outcomes (`esml.alpha.exit_outcomes`). Paths here are SYNTHETIC
mid series on a one-second decision grid, built so the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from esml.alpha.exit_outcomes import ExitOutcomes, ExitPlan, exit_plan_outcomes
from esml.config import load_config
from esml.decision.gates import GateStack
from esml.decision.proposal import AccountState, MarketContext, Proposal
from esml.execution.orders import Side
from esml.market.instruments import ES
from tests.test_decision import RTH

NS = 1_000_000_000
TICK = ES.tick_size
RTH_PLAN = ExitPlan(stop_ticks=10, target_ticks=25, time_exit_s=20.0)  # the RTH budget's


def grid(mid_ticks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ts_ns, mid) of a one-second decision grid from mid prices in ticks."""
    ts = RTH + np.arange(len(mid_ticks), dtype=np.int64) * NS
    return ts, 5000.0 + np.asarray(mid_ticks, np.float64) * TICK


def proposal(side: Side, p_side: float, bracket_ticks: float) -> Proposal:
    ctx = MarketContext(spread_ticks=1, data_age_s=0.1, volatility_ticks=2.0,
                        expected_move_ticks=bracket_ticks, agreement=0.6, pso=0.1,
                        win_probability=p_side)  # fmt: skip
    return Proposal("ES", side, 1, "model", RTH, p_side, False, ctx)


def stack(outcomes: list[ExitOutcomes], time_exit_s: float | None = 20.0) -> GateStack:
    return GateStack.from_config(
        load_config().risk, ES, 2.25, exit_outcomes=outcomes, time_exit_s=time_exit_s
    )


def test_the_walk_takes_the_first_touch_and_marks_the_rest_at_the_time_exit():
    plan = ExitPlan(stop_ticks=2, target_ticks=3, time_exit_s=4.0)
    #       row 0  1  2  3  4  5   6   7   8  9 10 11 12 13
    path = [0, 1, 3, 2, 0, 0, -1, -2, -5, 0, 0, 0, 1, 1]
    ts, mid = grid(np.array(path))
    n = len(path)
    half = np.full(n, 0.5)
    out = exit_plan_outcomes(ts, mid, half, half, TICK, plan, n_bins=1, min_per_bin=1)
    # rows 10.. cannot reach the time exit. Long from row 0: +3 at row 2; row 1: marked at
    # row 5, -1; rows 2-7: the stop first (row 7: -3 at row 8); row 8: +5 at row 9 -> +3
    longs = [3, -1, -2, -2, -2, -2, -2, -2, 3, 1]
    shorts = [-2, -2, 3, 3, 3, 3, 3, 3, -2, -1]
    assert out.trades == 20 and out.count == [20]
    assert out.mean_ticks[0] == pytest.approx((sum(longs) + sum(shorts)) / 20)
    assert (out.share_target, out.share_stop, out.share_time) == pytest.approx((0.4, 0.45, 0.15))


def test_a_gap_in_the_path_leaves_those_decisions_out():
    ts, mid = grid(np.zeros(200))
    ts[100:] += 600 * NS  # ten minutes without decisions
    out = exit_plan_outcomes(ts, mid, np.full(200, 0.4), np.full(200, 0.3), TICK, RTH_PLAN)
    # left out: the 19 rows before the gap and before the end whose path stops short of the
    # time exit by more than one decision step
    assert out.trades == 2 * (200 - 2 * 19)
    assert out.p_upper == [0.3, 0.4] and out.count == [162, 162]  # shorts, longs


def test_the_gate_rejects_a_bracket_that_the_time_exit_never_lets_happen():
    """A quiet market (one-tick steps, 20 s time exit): a 25-tick target and a 10-tick
    stop are never touched, every trade ends at the time exit with a few ticks either way.
    The bracket formula prices the signal at 0.6 * 25 - 0.3 * 10 = 12 ticks ($150) and
    passes it; the held-out outcomes of the real plan say about zero, and it is refused."""
    rng = np.random.default_rng(4)
    path = np.cumsum(rng.choice([-1, 0, 1], size=4000, p=[0.2, 0.6, 0.2]))
    ts, mid = grid(path)
    p_up = rng.uniform(0.3, 0.7, len(path))
    out = exit_plan_outcomes(ts, mid, p_up, 0.9 - p_up, TICK, RTH_PLAN)
    assert out.share_time > 0.98 and all(abs(m) < 1.0 for m in out.mean_ticks)
    bracket = 0.6 * 25 - 0.3 * 10
    assert (
        GateStack.from_config(load_config().risk)
        .evaluate(proposal(Side.BUY, 0.6, bracket), AccountState("2024-03-05"))
        .approved
    )  # the old valuation lets it through
    v = stack([out]).evaluate(proposal(Side.BUY, 0.6, bracket), AccountState("2024-03-05"))
    assert not v.approved and v.gate == "expected_move"
    assert v.reason.startswith("held-out outcome (target 25, stop 10 ticks, time exit 20 s)")


def test_the_gate_passes_the_side_that_earned_on_held_out_rows_and_refuses_the_other():
    """A steady up-drift of 0.3 tick a second: longs end at the time exit about 6 ticks up
    ($75, above 1.5 x $17 round trip), shorts about 6 down; the model rated longs 0.7."""
    path = np.round(np.arange(3000) * 0.3)
    ts, mid = grid(path)
    out = exit_plan_outcomes(ts, mid, np.full(3000, 0.7), np.full(3000, 0.1), TICK, RTH_PLAN)
    assert out.expected_ticks(0.7) == pytest.approx(6.0, abs=0.1)
    assert out.expected_ticks(0.1) == pytest.approx(-6.0, abs=0.1)
    gates = stack([out])
    acct = AccountState("2024-03-05")
    assert gates.evaluate(proposal(Side.BUY, 0.7, 15.0), acct).approved
    assert not gates.evaluate(proposal(Side.SELL, 0.1, 15.0), acct).approved


def test_outcomes_for_another_plan_or_without_a_time_exit_leave_the_bracket_estimate():
    path = np.zeros(500)
    ts, mid = grid(path)
    other = ExitPlan(stop_ticks=12, target_ticks=16, time_exit_s=20.0)  # ASIA's, not RTH's
    out = exit_plan_outcomes(ts, mid, np.full(500, 0.6), np.full(500, 0.2), TICK, other)
    acct = AccountState("2024-03-05")
    assert stack([out]).evaluate(proposal(Side.BUY, 0.6, 12.0), acct).approved
    rth = exit_plan_outcomes(ts, mid, np.full(500, 0.6), np.full(500, 0.2), TICK, RTH_PLAN)
    assert stack([rth], time_exit_s=None).evaluate(proposal(Side.BUY, 0.6, 12.0), acct).approved
    gates = stack([])
    gates.use_exit_outcomes([rth])  # a hot swap brings the new bundle's outcomes
    assert not gates.evaluate(proposal(Side.BUY, 0.6, 12.0), acct).approved


def test_too_few_rows_and_bad_paths_are_refused():
    ts, mid = grid(np.zeros(30))
    with pytest.raises(ValueError, match="too few"):
        exit_plan_outcomes(ts, mid, np.full(30, 0.5), np.full(30, 0.5), TICK, RTH_PLAN)
    with pytest.raises(ValueError, match="strictly increasing"):
        exit_plan_outcomes(ts[::-1], mid, np.full(30, 0.5), np.full(30, 0.5), TICK, RTH_PLAN)
    with pytest.raises(ValueError, match="p_upper must increase"):
        ExitOutcomes(plan=RTH_PLAN, p_upper=[0.5, 0.4], mean_ticks=[0, 0], count=[1, 1],
                     share_target=0, share_stop=0, share_time=1)  # fmt: skip
