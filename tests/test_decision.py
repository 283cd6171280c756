"""The gate stack, the protections and the config they come from: every gate proved."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from esml.config import ConfigError, load_config
from esml.decision.gates import GateStack
from esml.decision.proposal import AccountState, MarketContext, Proposal, TradingState
from esml.decision.protections import halt, note_entry, record_round_trip, resume
from esml.execution.orders import Side

NS = 1_000_000_000


def _ns(y: int, mo: int, d: int, h: int, mi: int, s: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=UTC).timestamp()) * NS


RTH = _ns(2024, 3, 5, 16, 0)  # Tue 10:00 CST
ASIA = _ns(2024, 3, 5, 2, 0)  # Mon 20:00 CST
EUROPE = _ns(2024, 3, 5, 9, 0)  # Tue 03:00 CST
SATURDAY = _ns(2024, 3, 9, 16, 0)
GOOD = MarketContext(spread_ticks=1, data_age_s=0.1, volatility_ticks=2.0,
                     expected_move_ticks=3.0, agreement=0.6, pso=0.1)  # fmt: skip


def _p(side: Side = Side.BUY, qty: int = 1, conf: float | None = 0.8, exit_: bool = False,
       ts: int = RTH, ctx: MarketContext = GOOD) -> Proposal:  # fmt: skip
    return Proposal("ES", side, qty, "model", ts, conf, exit_, ctx)


def _stack(**risk: object) -> GateStack:
    return GateStack.from_config(load_config(risk=risk).risk)


def _acct(**kw: object) -> AccountState:
    return AccountState("2024-03-05", **kw)  # type: ignore[arg-type]


def test_a_clean_proposal_passes_every_gate() -> None:
    v = _stack().evaluate(_p(), _acct())
    assert v.approved and v.qty == 1 and v.caps == ()


@pytest.mark.parametrize(
    ("proposal", "acct", "gate", "reason"),
    [
        (_p(), _acct(state=TradingState.HALTED, halt_reason="by hand"), "trading_state",
         "trading is HALTED (by hand); a person must resume it"),
        (_p(), _acct(state=TradingState.REDUCING), "trading_state",
         "trading is REDUCING: exits only"),
        (_p(ts=SATURDAY), _acct(), "session_budget", "the market is closed"),
        (_p(ts=ASIA), _acct(segment="ASIA", segment_pnl=-350.0), "session_budget",
         "ASIA loss $350.00 reached its limit $350.00"),
        (_p(ts=_ns(2024, 3, 5, 21, 56)), _acct(), "time_of_day",
         "15:56:00 CT is inside the blocked window 15:55-16:00"),
        (_p(ts=_ns(2024, 3, 5, 13, 29)), _acct(), "news_blackout",
         "news blackout around the 2024-03-05 08:30 ET release"),
        (_p(ctx=replace(GOOD, data_age_s=5.0)), _acct(), "stale_data",
         "market data is 5.0 s old, limit 2.0 s"),
        (_p(ctx=replace(GOOD, spread_ticks=2)), _acct(), "max_spread",
         "spread 2 ticks, limit 1"),
        (_p(ctx=replace(GOOD, volatility_ticks=20.0)), _acct(), "volatility_halt",
         "60-s volatility 20.0 ticks above the halt level 12"),
        (_p(ctx=replace(GOOD, agreement=0.2)), _acct(), "agreement",
         "ensemble agreement 20% below 25%"),
        (_p(conf=0.5), _acct(), "confidence", "confidence 0.500 below 0.550"),
        (_p(ctx=replace(GOOD, expected_move_ticks=0.5)), _acct(), "expected_move",
         "expected move $6.25 under 1.5x the round-trip cost $17.00"),
        (_p(), _acct(last_entry_ns=RTH - 10 * NS), "cooldown",
         "10.0 s since the last entry, cooldown 30 s"),
        (_p(), _acct(position=1), "max_position", "position +1 is at the limit 1"),
        (_p(), _acct(realized_pnl=-1500.0), "daily_loss",
         "daily loss $1,500.00 reached the limit $1,500.00"),
        (_p(), _acct(realized_pnl=-900.0, peak_pnl=1100.0), "drawdown_breaker",
         "drawdown $2,000.00 from today's peak reached $2,000.00"),
    ],
)  # fmt: skip
def test_each_gate_rejects_with_its_name_and_reason(
    proposal: Proposal, acct: AccountState, gate: str, reason: str
) -> None:
    stack = _stack()
    v = stack.evaluate(proposal, acct)
    assert (v.approved, v.gate, v.reason) == (False, gate, reason)
    assert dict(stack.rejections) == {gate: 1}


def test_session_budgets_differ_by_segment() -> None:
    """Two ticks of spread are too wide in RTH but fine in Europe; Asia allows four."""
    stack, wide = _stack(), replace(GOOD, spread_ticks=2)
    assert stack.evaluate(_p(ctx=wide), _acct()).gate == "max_spread"
    assert stack.evaluate(_p(ts=EUROPE, ctx=wide), _acct()).approved
    assert stack.evaluate(_p(ts=ASIA, ctx=replace(GOOD, spread_ticks=4)), _acct()).approved
    assert stack.evaluate(_p(ts=ASIA, ctx=replace(GOOD, agreement=0.3)), _acct()).gate == (
        "agreement"
    )  # 40% overnight
    waited = _acct(last_entry_ns=ASIA - 45 * NS)
    assert stack.evaluate(_p(ts=ASIA), waited).gate == "cooldown"  # 60 s in Asia
    assert stack.evaluate(_p(), replace(waited, last_entry_ns=RTH - 45 * NS)).approved
    # a loss booked in another segment does not count against this one
    assert stack.evaluate(_p(), _acct(segment="ASIA", segment_pnl=-400.0)).approved


def test_a_partial_budget_table_overrides_only_what_it_names() -> None:
    stack = _stack(budgets={"RTH": {"max_spread_ticks": 2}})
    assert stack.evaluate(_p(ctx=replace(GOOD, spread_ticks=2)), _acct()).approved
    assert stack.budgets["RTH"].target_ticks == 25 and stack.budgets["ASIA"].stop_ticks == 12


def test_caps_shrink_the_order_instead_of_rejecting() -> None:
    stack = _stack(max_position=5)
    v = stack.evaluate(_p(qty=4), _acct(position=3))
    assert v.approved and v.qty == 2 and v.caps[0][0] == "max_position"
    v = stack.evaluate(_p(qty=4), _acct(loss_streak=3))
    assert v.approved and v.qty == 1 and v.caps == (("loss_streak", "3 losses in a row"),)
    assert stack.evaluate(_p(qty=4), _acct(loss_streak=2)).qty == 4
    assert dict(stack.caps) == {"max_position": 1, "loss_streak": 1}
    # a short against a long position has the whole limit plus the long to unwind
    assert stack.evaluate(_p(Side.SELL, qty=4), _acct(position=3)).qty == 4


def test_exits_pass_every_gate_but_a_halt() -> None:
    stack = _stack()
    bad = MarketContext(spread_ticks=9, data_age_s=60, volatility_ticks=99, agreement=0.0)
    acct = _acct(position=1, realized_pnl=-5000.0, state=TradingState.REDUCING,
                 last_entry_ns=RTH - NS)  # fmt: skip
    assert stack.evaluate(_p(Side.SELL, conf=None, exit_=True, ctx=bad), acct).approved
    assert stack.evaluate(_p(), acct).gate == "trading_state"
    halt(acct, "drawdown breaker")
    assert stack.evaluate(_p(Side.SELL, exit_=True), acct).gate == "trading_state"


def test_alerts_without_market_context_skip_the_gates_that_need_it() -> None:
    alert = Proposal("ESM4", Side.BUY, 1, "tradingview", RTH)
    assert _stack().evaluate(alert, _acct()).approved


def test_the_funnel_counts_down_through_the_gates_in_order() -> None:
    stack = _stack()
    stack.evaluate(_p(conf=0.5), _acct())
    stack.evaluate(_p(ctx=replace(GOOD, spread_ticks=3)), _acct())
    stack.evaluate(_p(), _acct())
    funnel = dict(stack.funnel())
    assert funnel["proposals"] == 3
    assert funnel["max_spread"] == 2 and funnel["confidence"] == 1
    assert stack.funnel()[-1] == ("loss_streak", 1) and stack.passed == 1


def test_protections_book_round_trips_and_trip_the_breaker() -> None:
    risk = load_config().risk
    acct = _acct()
    record_round_trip(acct, 500.0, RTH, risk)
    assert (acct.realized_pnl, acct.peak_pnl, acct.loss_streak) == (500.0, 500.0, 0)
    for _ in range(3):
        record_round_trip(acct, -400.0, RTH, risk)
    assert acct.loss_streak == 3 and acct.state is TradingState.ACTIVE
    assert (acct.segment, acct.segment_pnl) == ("RTH", -700.0)
    record_round_trip(acct, -800.0, RTH, risk)  # 500 peak -> -1,500: $2,000 back
    assert acct.state is TradingState.HALTED and "drawdown breaker" in acct.halt_reason
    with pytest.raises(ValueError, match="name of the person"):
        resume(acct, " ")
    assert acct.state is TradingState.HALTED
    resume(acct, "alice")
    assert acct.state is TradingState.ACTIVE and acct.halt_reason == ""
    record_round_trip(acct, 100.0, ASIA, risk)
    assert (acct.segment, acct.segment_pnl, acct.loss_streak) == ("ASIA", 100.0, 0)


def test_a_new_trading_day_restores_the_loss_budgets_but_not_a_halt() -> None:
    acct = _acct(position=1, realized_pnl=-900.0, peak_pnl=50.0, segment="RTH",
                 segment_pnl=-900.0, loss_streak=2)  # fmt: skip
    halt(acct, "by hand")
    note_entry(acct, RTH)
    acct.roll_to("2024-03-06")
    assert (acct.realized_pnl, acct.peak_pnl, acct.segment_pnl) == (0.0, 0.0, 0.0)
    assert acct.position == 1 and acct.loss_streak == 2 and acct.state is TradingState.HALTED
    assert acct.last_entry_ns == RTH


def test_bad_config_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "esml.toml"
    for text, message in [
        ("[risk]\nmax_positon = 2\n", "max_positon"),
        ('instrument = "SPX"\n', "unknown instrument 'SPX'"),
        ("[risk\n", "not valid TOML"),
        ('[risk]\nblocked_ct = ["9:30"]\n', "not HH:MM-HH:MM"),
        ('[risk]\nblocked_ct = ["25:00-26:00"]\n', "not a HH:MM time"),
        ("[risk.budgets.LUNCH]\nstop_ticks = 3\n", "unknown session"),
        ("[risk.budgets.RTH]\nstop_ticks = 0\n", "stop_ticks"),
        ("[risk.sizing]\nmax_lots = 0\n", "max_lots"),
    ]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    good = tmp_path / "ok.toml"
    good.write_text('instrument = "MES"\n[risk]\nmax_position = 3\n')
    cfg = load_config(good)
    assert cfg.instrument_spec.tick_value == 1.25 and cfg.risk.max_position == 3
