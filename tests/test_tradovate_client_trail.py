"""The Tradovate client's trailing stops against the simulator over real HTTP: a bracket
whose stop leg is a `TrailingStop`, placed through a lost answer (found by clOrdId, never
resent), read back as the market moves it, its peg modified through a lost answer (read
back, in force, not resent), and firing as a stop. Nothing mocked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from esml.broker.tradovate import OrderSpec
from esml.execution.orders import BracketSpec, OrderIntent, OrderRole, OrderType, Side
from esml.sim.tradovate_api import TradovateSim
from tests.tradovate_client_support import (
    PRICE,
    SYMBOL,
    client_for,
    orders_sent_as,
    position,
    running_sim,
)


@pytest.fixture
def sim() -> Iterator[TradovateSim]:
    with running_sim() as s:
        yield s


def test_a_short_with_a_trailing_stop_leg_through_lost_answers(sim: TradovateSim) -> None:
    client = client_for(sim)
    trailing = BracketSpec(stop_ticks=8, target_ticks=40, trail_ticks=8)
    short = OrderIntent("trail-short-1", SYMBOL, Side.SELL, 1, reason="test", bracket=trailing)
    sim.faults.rest("drop-after-accept", path="/order/placeoso")
    placement = client.place(short, reference_price=PRICE)
    assert client.counters["lookup_found"] == 1 and len(sim.calls("/order/placeoso")) == 1
    (leg,) = orders_sent_as(sim, "trail-short-1-stop")
    assert (leg["action"], leg["orderType"], leg["stopPrice"], leg["pegDifference"]) == (
        "Buy", "TrailingStop", PRICE + 2.0, 2.0)  # fmt: skip
    assert placement.stop is not None and placement.stop.order_id == str(leg["id"])
    assert position(sim) == -1

    for px, trailed in ((5770.0, 5772.0), (5771.5, 5772.0), (5769.0, 5771.0)):
        sim.set_price(SYMBOL, px)
        seen = client.order_for_client("trail-short-1-stop")
        assert seen is not None and (seen.price, seen.order_type) == (trailed, OrderType.STOP)
        assert seen.role is OrderRole.STOP

    sim.faults.rest("500-after-accept", path="/order/modifyorder")
    client.modify(str(leg["id"]), peg=1.0)  # one point behind from now on
    assert len(sim.calls("/order/modifyorder")) == 1, "in force when read back: not resent"
    (leg,) = orders_sent_as(sim, "trail-short-1-stop")
    assert (leg["stopPrice"], leg["pegDifference"]) == (5770.0, 1.0)
    with pytest.raises(ValueError, match="no peg"):
        client.modify(placement.orders[2].order_id, peg=1.0)  # the target is a Limit

    sim.set_price(SYMBOL, 5770.25)  # up through the stop: it buys back
    assert position(sim) == 0
    statuses = {o["clOrdId"]: o["ordStatus"] for o in sim.orders()}
    assert statuses["trail-short-1-stop"] == "Filled"
    assert statuses["trail-short-1-target"] == "Canceled"


def test_a_standalone_trailing_stop_and_its_checks(sim: TradovateSim) -> None:
    client = client_for(sim)
    for bad in (
        {"order_type": "TrailingStop", "peg": 2.0},  # a Sell stop pegged above the market
        {"order_type": "TrailingStop"},  # no peg
        {"order_type": "Stop", "stop_price": 5770.0, "peg": -2.0},  # a peg on a plain stop
    ):
        with pytest.raises(ValueError):
            OrderSpec("bad", SYMBOL, Side.SELL, 1, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no further"):
        BracketSpec(stop_ticks=12, target_ticks=8, trail_ticks=8)
    sim.set_price(SYMBOL, PRICE)
    client.place_order(OrderSpec("buy-1", SYMBOL, Side.BUY, 1))
    spec = OrderSpec("trail-1", SYMBOL, Side.SELL, 1, "TrailingStop", peg=-1.26)
    assert spec.body()["pegDifference"] == -1.25  # on the tick grid
    order = client.place_order(spec)
    assert (order.order_type, order.price) == (OrderType.STOP, None)  # Tradovate places it
    sim.set_price(SYMBOL, 5774.0)
    seen = client.order_for_client("trail-1")
    assert seen is not None and seen.price == 5772.75
