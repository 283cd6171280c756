"""Tradovate's `TrailingStop` in the simulator, raw over real sockets (no client of ours):
placed alone, in an OCO and as the stop leg of an OSO bracket, its stop following the
market by `pegDifference` and never back, each move a new order version pushed as
`props`, a modify of the peg, and the trigger as a stop. On a set price and on the
replayed real ES book (conftest's ESH4 file)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from esml.sim.tradovate_api import TradovateSim
from esml.sim.tradovate_market import ReplayMarket
from tests.aws_fixtures import ACCOUNT_SPEC, sim_arguments, tradovate_sim
from tests.tradovate_sim_wire import Wire, login, order_body, rest_caller


def _order(sim: TradovateSim, oid: int) -> dict[str, Any]:
    return next(o for o in sim.orders() if o["id"] == oid)


@pytest.fixture
def priced() -> Iterator[TradovateSim]:
    with tradovate_sim() as s:  # ESH5 at 5772.25
        yield s


def test_trailing_stop_on_a_set_price(priced: TradovateSim) -> None:
    sim, call = priced, rest_caller(priced.base_url)
    trail = {**order_body("Sell", 1, "TrailingStop"), "pegDifference": -2.0}
    # refused field by field, nothing placed
    bad = [
        ({**trail, "pegDifference": None}, 400, None),
        ({**trail, "pegDifference": 2.0}, 200, "InvalidPrice"),  # a Sell stop above the market
        ({**trail, "pegDifference": -0.3}, 200, "InvalidPrice"),  # off the tick grid
        ({**order_body("Sell", 1, "Limit", price=5780.0), "pegDifference": -1.0}, 400, None),
    ]
    for body, status, reason in bad:
        code, answer = call("/order/placeorder", body)
        assert code == status and answer.get("failureReason") == reason, answer
    assert sim.orders() == []

    w = Wire(sim.ws_url)
    assert w.authorize(login(sim.base_url)["accessToken"])["s"] == 200
    w.answers_of(w.send("user/syncrequest", {"splitResponses": True, "accounts": [1000]}), 7)
    code, placed = call("/order/placeorder", trail)
    oid = placed["orderId"]
    assert _order(sim, oid)["stopPrice"] == 5770.25  # the market plus the peg
    for px, stop in ((5774.0, 5772.0), (5773.0, 5772.0), (5776.5, 5774.5), (5775.0, 5774.5)):
        sim.set_price("ESH5", px)
        assert _order(sim, oid)["stopPrice"] == stop, px  # up with the market, never back
    code, _ = call(
        "/order/modifyorder",
        {
            "orderId": oid,
            "orderQty": 1,
            "isAutomated": True,
            "orderType": "TrailingStop",
            "pegDifference": -1.0,
        },
    )
    assert code == 200 and _order(sim, oid)["stopPrice"] == 5774.5  # 5775 - 1 is below it
    sim.set_price("ESH5", 5776.0)
    assert _order(sim, oid)["stopPrice"] == 5775.0  # now one point behind
    sim.set_price("ESH5", 5774.75)  # through the stop: it fills as a stop does
    o = _order(sim, oid)
    assert (o["ordStatus"], o["filledQty"]) == ("Filled", 1)
    _, versions = call("/orderVersion/deps", masterid=oid)
    assert [(v["stopPrice"], v["pegDifference"]) for v in versions] == [
        (5770.25, -2.0),
        (5772.0, -2.0),
        (5774.5, -2.0),
        (5774.5, -1.0),
        (5775.0, -1.0),
    ]
    pushed = w.events(
        "props",
        lambda got: sum(p["d"]["entityType"] == "orderVersion" for p in got) == len(versions),
    )
    assert [
        p["d"]["entity"]["stopPrice"] for p in pushed if p["d"]["entityType"] == "orderVersion"
    ] == [v["stopPrice"] for v in versions]
    _, fills = call("/fill/deps", masterid=oid)
    assert [(f["qty"], f["price"]) for f in fills] == [(1, 5774.75)]

    # an OCO with a Buy trailing stop: pegged above the market, the other leg goes with it
    code, pair = call(
        "/order/placeoco",
        {
            **order_body("Buy", 1, "Limit", price=5770.0),
            "other": {"action": "Buy", "orderType": "TrailingStop", "pegDifference": 1.5},
        },
    )
    assert code == 200 and _order(sim, pair["ocoId"])["stopPrice"] == 5776.25
    sim.set_price("ESH5", 5773.0)
    assert _order(sim, pair["ocoId"])["stopPrice"] == 5774.5
    sim.set_price("ESH5", 5774.5)
    assert _order(sim, pair["ocoId"])["ordStatus"] == "Filled"
    assert _order(sim, pair["orderId"])["ordStatus"] == "Canceled"


@pytest.fixture
def replay(es_events: np.ndarray) -> Iterator[TradovateSim]:
    market = ReplayMarket(es_events, "ESH4", speed=None)  # step mode: the test drives it
    with TradovateSim(**sim_arguments(prices=None, market=market)) as s:
        yield s


def test_bracket_trailing_stop_leg_on_the_replayed_es_book(replay: TradovateSim) -> None:
    sim, call = replay, rest_caller(replay.base_url)
    market = sim.market
    assert market is not None
    market.step(2_000)  # into the session: trades on the tape
    assert len(market.tape())
    ask = market.touch()[2]
    peg = -1.0  # four ticks, once modified
    code, ids = call(
        "/order/placeoso",
        {
            **order_body("Buy", 1, symbol="ESH4"),
            "bracket1": {
                "action": "Sell",
                "orderType": "TrailingStop",
                "pegDifference": -3.0,
                "stopPrice": ask - 2.0,
            },
            "bracket2": {"action": "Sell", "orderType": "Limit", "price": ask + 50.0},
        },
    )
    assert code == 200, ids
    stop_id, target_id = ids["oso1Id"], ids["oso2Id"]
    assert _order(sim, stop_id)["stopPrice"] == ask - 2.0  # where it was sent
    modify = {"orderId": stop_id, "orderQty": 1, "orderType": "TrailingStop",
              "pegDifference": peg, "isAutomated": True}  # fmt: skip
    assert call("/order/modifyorder", modify)[0] == 200
    last = float(market.tape()["price"][-1])
    stops = [_order(sim, stop_id)["stopPrice"]]
    assert stops == [max(ask - 2.0, last + peg)]  # the new peg trails from the last trade
    start = int(np.searchsorted(market._trade_at, market.i))
    while _order(sim, stop_id)["ordStatus"] == "Working" and market.i < len(market.events):
        market.step(500)
        stops.append(_order(sim, stop_id)["stopPrice"])
    leg = _order(sim, stop_id)
    assert (leg["ordStatus"], leg["filledQty"]) == ("Filled", 1)
    assert _order(sim, target_id)["ordStatus"] == "Canceled"
    assert sim.net_position(ACCOUNT_SPEC, "ESH4") == 0
    assert stops == sorted(stops) and stops[-1] > stops[0], "it trailed up, never down"
    # the trail replayed by hand on the tape: trades of one timestamp move it together
    tape = market.tape()[start:]
    expected, triggered = stops[0], False
    for ts in np.unique(tape["ts"]):
        prices = tape["price"][tape["ts"] == ts]
        if prices.min() <= expected:
            triggered = True  # a trade reached the stop: it sold at the market then
            break
        expected = max(expected, float(prices.max()) + peg)
    assert triggered and stops[-1] == expected
    _, fills = call("/fill/deps", masterid=stop_id)
    assert [f["qty"] for f in fills] == [1]
    _, versions = call("/orderVersion/deps", masterid=stop_id)
    terms = [(v["stopPrice"], v["pegDifference"]) for v in versions]
    assert terms[0] == (ask - 2.0, -3.0) and {p for _, p in terms[1:]} == {peg}
    assert {s for s, _ in terms} == {ask - 2.0, *stops} and len(set(terms)) == len(terms)
