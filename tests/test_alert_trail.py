"""A trailing stop in the alert language (`trail`), end to end: validated strictly, sent
as the bracket's Tradovate `TrailingStop` leg, recorded in the orders table, trailing at
the simulator as the market moves, and when it fires its fill lands once and the shared
account goes flat. The three real handlers over moto, the simulator over real HTTP."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from esml.decision.alerts import TradingViewAlert, parse_alert
from esml.market.side import Side
from tests.alert_stack import Stack
from tests.aws_fixtures import FILLS_TABLE, alert

# the three handlers share Powertools' metric buffer in one process: the innermost flushes it
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


def _brackets(**fields: Any) -> tuple[list[tuple[int, int, int]], int | None]:
    a = parse_alert(json.dumps(alert(**fields)))
    return a.bracket_ticks(Side.BUY), a.trail_ticks(Side.BUY)


def test_trail_is_validated_strictly() -> None:
    # alone it replaces the fixed stop: the stop starts at the trail (8 ticks, not the default)
    assert _brackets(trail={"ticks": 8}) == ([(1, 8, 12)], 8)
    assert _brackets(trail={"points": 3}, stop={"ticks": 4}) == ([(1, 4, 12)], 12)
    assert _brackets(trail={"percent": 0.05}) == ([(1, 12, 12)], 12)  # 2.886 points
    assert _brackets(trail={"ticks": 6}, stop={"price": 5770.75}) == ([(1, 6, 12)], 6)
    refused = [
        {"trail": {"ticks": 0}},
        {"trail": {"ticks": -4}},
        {"trail": {"ticks": "8"}},  # a quoted number
        {"trail": {"price": 5770.0}},  # a place, not a distance
        {"trail": {"ticks": 8, "points": 2}},  # one unit only
        {"trail": {"ticks": 8, "step": 1}},  # an unknown field
        {"trail": {"ticks": 8}, "stop": {"ticks": 12}},  # the stop beyond the trail
        {"trail": {"points": 0.1}},  # less than a tick
        {"action": "exit", "contracts": None, "trail": {"ticks": 8}},
    ]
    for fields in refused:
        with pytest.raises(ValidationError):
            parse_alert(json.dumps(alert(**fields)))
    # the trail is part of what the alert asks for: another trail, another order
    ids = {
        TradingViewAlert.model_validate(alert(trail={"ticks": t})).client_order_id() for t in (8, 9)
    }
    assert len(ids) == 2


def _by_id(stack: Stack) -> dict[str, dict[str, Any]]:
    return {o["client_id"]: o for o in stack.orders()}


def test_a_trailing_bracket_trails_fires_and_leaves_the_account_flat(stack: Stack) -> None:
    payload = alert(trail={"ticks": 8}, targets=[{"points": 20}])
    status, answer = stack.post(payload)
    assert status == 200 and answer["status"] == "placed", answer
    cid = TradingViewAlert.model_validate(payload).client_order_id()
    (call,) = stack.sim.calls("/order/placeoso")
    assert call.body["bracket1"] == {
        "action": "Sell", "timeInForce": "GTC", "orderType": "TrailingStop",
        "stopPrice": 5770.25, "pegDifference": -2.0, "clOrdId": f"{cid}-stop",
    }  # fmt: skip
    stop = _by_id(stack)[f"{cid}-stop"]
    assert (stop["role"], stop["status"], stop["price"]) == ("stop", "Working", Decimal("5770.25"))
    assert stack.position() == stack.broker_position() == 1

    for px, trailed in ((5775.0, 5773.0), (5774.0, 5773.0), (5776.5, 5774.5)):
        stack.sim.set_price("ESH5", px)
        (leg,) = [o for o in stack.working() if o["orderType"] == "TrailingStop"]
        assert leg["stopPrice"] == trailed, px
    stack.sim.set_price("ESH5", 5774.25)  # through the trailed stop: it fires
    assert stack.broker_position() == 0
    assert stack.position() == 1  # nothing has told the account yet
    for _ in range(2):  # the scheduled sync, twice: the fill is applied once
        stack.sync()
    fills = [f for f in stack.items(FILLS_TABLE) if f["client_id"] == f"{cid}-stop"]
    assert [(f["qty"], f["price"]) for f in fills] == [(1, Decimal("5774.25"))]
    by_id = _by_id(stack)
    assert (by_id[f"{cid}-stop"]["status"], by_id[f"{cid}-target"]["status"]) == (
        "Filled",
        "Canceled",
    )
    assert by_id[f"{cid}-stop"]["price"] == Decimal("5774.5")  # where it had trailed to
    account = stack.account()
    assert account.position("ESH5") == 0 and account.reservations == {}
    assert account.books["ESH5"].realized_pnl == pytest.approx((5774.25 - 5772.25) * 50)
    assert stack.working() == []


def test_break_even_after_tp1_tightens_a_trailing_stop_and_never_loosens_it(
    make_stack: Any,
) -> None:
    stack = make_stack({"risk": {"max_position": 2}})
    two = alert(
        contracts=2,
        trail={"ticks": 8},
        targets=[{"ticks": 4, "contracts": 1}, {"points": 20, "contracts": 1}],
        breakeven_after_tp1=True,
    )
    assert stack.post(two)[1]["status"] == "placed"
    calls = stack.sim.calls("/order/placeoso")
    assert [c.body["bracket1"]["orderType"] for c in calls] == ["TrailingStop"] * 2
    stack.sim.set_price("ESH5", 5773.25)  # TP1; the second stop has trailed to 5771.25
    stack.sync()
    (leg,) = [o for o in stack.working() if o["orderType"] == "TrailingStop"]
    assert (leg["stopPrice"], leg["pegDifference"]) == (5772.25, -2.0)  # to the entry
    stack.sim.set_price("ESH5", 5777.0)
    (leg,) = [o for o in stack.working() if o["orderType"] == "TrailingStop"]
    assert leg["stopPrice"] == 5775.0  # and it trails on from there
    stack.sync()  # nothing new: nothing moves it back
    stack.sim.set_price("ESH5", 5775.0)
    stack.sync()
    assert stack.broker_position() == stack.position() == 0
    assert stack.account().books["ESH5"].realized_pnl == pytest.approx((1.0 + 2.75) * 50)

    # again at 5775.00, but the market runs through TP1: the trail is past the entry by then
    stack.clock.advance(120)
    later = {**two, "price": 5775.0, "time": stack.clock.now.isoformat().replace("+00:00", "Z")}
    assert stack.post(later)[1]["status"] == "placed"
    modifies = len(stack.sim.calls("/order/modifyorder"))
    stack.sim.set_price("ESH5", 5777.5)  # TP1 at 5776.00 fills; the stop trails to 5775.50
    stack.sync()
    (leg,) = [o for o in stack.working() if o["orderType"] == "TrailingStop"]
    assert leg["stopPrice"] == 5775.5, "break-even would have loosened it: left alone"
    assert len(stack.sim.calls("/order/modifyorder")) == modifies
    assert stack.position() == 1


@pytest.fixture
def stack(make_stack: Any) -> Stack:
    return make_stack()
