"""Execution cases in the manner of nautilus_trader's ExecTester matrix (market, limit,
stop and stop-limit orders, OSO brackets, OCO pairs, modification chains, cancels,
liquidation, rejections, partial fills), run by the Tradovate client against the loopback
simulator: orders over REST, their updates and fills over the user socket."""

from __future__ import annotations

import pytest

from esml.broker.base import BrokerError, OrderRejected
from esml.broker.tradovate import OrderSpec, TradovateClient
from esml.execution.orders import (
    BracketSpec,
    OrderIntent,
    OrderRole,
    OrderStatus,
    OrderType,
    Side,
)
from esml.sim.tradovate_api import TradovateSim
from tests.tradovate_client_support import (
    PRICE,
    SYMBOL,
    Heard,
    a_connected_client,
    a_running_sim,
    bracket_long,
    orders_sent_as,
    position,
)

sim = pytest.fixture(name="sim")(a_running_sim)
client = pytest.fixture(name="client")(a_connected_client)


@pytest.fixture
def heard(client: TradovateClient) -> Heard:
    return Heard(client)


def test_market_order_fills_at_the_market(
    sim: TradovateSim, client: TradovateClient, heard: Heard
) -> None:
    o = client.place_order(OrderSpec("mkt-1", SYMBOL, Side.BUY, 2))
    assert (o.status, o.filled_qty, o.avg_fill_price) == (OrderStatus.FILLED, 2, PRICE)
    assert heard.until(lambda: len(heard.fills) == 1)
    (f,) = heard.fills
    assert (f.order_id, f.client_id, f.qty, f.price) == (o.order_id, "mkt-1", 2, PRICE)
    assert sim.calls("/order/placeorder")[0].body["isAutomated"] is True
    assert position(sim) == 2 == client.position(SYMBOL)


def test_limit_order_rests_then_fills_at_its_price(
    sim: TradovateSim, client: TradovateClient, heard: Heard
) -> None:
    o = client.place_order(OrderSpec("lmt-1", SYMBOL, Side.BUY, 1, "Limit", price=PRICE - 2))
    assert o.status is OrderStatus.WORKING and o.price == PRICE - 2
    sim.set_price(SYMBOL, PRICE - 1)  # not there yet
    sim.set_price(SYMBOL, PRICE - 2.5)  # through the limit: filled at the limit
    assert heard.until(lambda: heard.status(o.order_id) is OrderStatus.FILLED)
    assert [(f.qty, f.price) for f in heard.fills] == [(1, PRICE - 2)]


def test_stop_order_triggers_when_the_market_reaches_it(
    sim: TradovateSim, client: TradovateClient, heard: Heard
) -> None:
    client.place_order(OrderSpec("long-1", SYMBOL, Side.BUY, 1))
    stop = client.protect(SYMBOL, Side.SELL, 1, PRICE - 3, "stop-1")
    assert (stop.order_type, stop.role, stop.price) == (OrderType.STOP, OrderRole.STOP, PRICE - 3)
    sim.set_price(SYMBOL, PRICE - 3.25)
    assert heard.until(lambda: heard.status(stop.order_id) is OrderStatus.FILLED)
    assert position(sim) == 0


def test_stop_limit_goes_out_with_both_prices(sim: TradovateSim, client: TradovateClient) -> None:
    spec = OrderSpec("stplmt-1", SYMBOL, Side.SELL, 1, "StopLimit", price=PRICE - 4,
                     stop_price=PRICE - 3)  # fmt: skip
    with pytest.raises(OrderRejected, match="Unsupported"):  # the simulator does not model it
        client.place_order(spec)
    (call,) = sim.calls("/order/placeorder")
    assert (call.body["orderType"], call.body["price"], call.body["stopPrice"]) == (
        "StopLimit", PRICE - 4, PRICE - 3,
    )  # fmt: skip
    assert orders_sent_as(sim, "stplmt-1") == []
    with pytest.raises(ValueError, match="needs a stop_price"):
        OrderSpec("bad", SYMBOL, Side.SELL, 1, "StopLimit", price=PRICE - 4)


def test_oso_bracket_releases_its_legs_on_the_fill_and_leaves_no_orphan(
    sim: TradovateSim, client: TradovateClient, heard: Heard
) -> None:
    intent = OrderIntent("oso-1", SYMBOL, Side.BUY, 1, OrderType.LIMIT, limit_price=PRICE - 1,
                         bracket=BracketSpec(8, 12))  # fmt: skip
    p = client.place(intent)
    assert p.stop is not None and p.target is not None
    assert {o["ordStatus"] for o in sim.orders() if o.get("parentId")} == {"Suspended"}
    sim.set_price(SYMBOL, PRICE - 1)  # the entry fills: the legs go live
    assert heard.until(lambda: heard.status(p.entry.order_id) is OrderStatus.FILLED)
    assert {o["ordStatus"] for o in sim.orders() if o.get("parentId")} == {"Working"}
    sim.set_price(SYMBOL, PRICE - 1 + 12 * 0.25)  # the target
    assert heard.until(lambda: heard.status(p.stop.order_id) is OrderStatus.CANCELLED)
    assert heard.status(p.target.order_id) is OrderStatus.FILLED
    assert [f.role for f in heard.fills] == [OrderRole.ENTRY, OrderRole.TARGET]
    assert position(sim) == 0
    assert not [o for o in sim.orders() if o["ordStatus"] in ("Working", "Suspended")]


def test_oco_pair_one_fills_the_other_is_cancelled(
    sim: TradovateSim, client: TradovateClient, heard: Heard
) -> None:
    client.place_order(OrderSpec("oco-long", SYMBOL, Side.BUY, 1))
    stop_leg = OrderSpec("oco-stop", SYMBOL, Side.SELL, 1, "Stop", stop_price=PRICE - 2,
                         role=OrderRole.STOP)  # fmt: skip
    target_leg = OrderSpec("oco-tgt", SYMBOL, Side.SELL, 1, "Limit", price=PRICE + 2,
                           role=OrderRole.TARGET)  # fmt: skip
    stop, target = client.place_oco(stop_leg, target_leg)
    assert stop.oco_id == target.order_id and target.oco_id == stop.order_id
    sim.set_price(SYMBOL, PRICE - 2.25)
    assert heard.until(lambda: heard.status(target.order_id) is OrderStatus.CANCELLED)
    assert heard.status(stop.order_id) is OrderStatus.FILLED
    assert position(sim) == 0


def test_modification_chain_price_qty_price_then_fill(
    sim: TradovateSim, client: TradovateClient, heard: Heard
) -> None:
    o = client.place_order(OrderSpec("mod-1", SYMBOL, Side.BUY, 1, "Limit", price=PRICE - 5))
    client.modify(o.order_id, price=PRICE - 4)
    client.modify(o.order_id, qty=3)
    client.modify(o.order_id, price=PRICE - 3)
    versions = client.order_versions(o.order_id)
    assert [(v["orderQty"], v["price"]) for v in versions] == [
        (1, PRICE - 5), (1, PRICE - 4), (3, PRICE - 4), (3, PRICE - 3),
    ]  # fmt: skip
    assert heard.until(
        lambda: heard.status(o.order_id) and heard.last(o.order_id).price == PRICE - 3
    )
    assert heard.last(o.order_id).qty == 3
    sim.set_price(SYMBOL, PRICE - 3)
    assert heard.until(lambda: sum(f.qty for f in heard.fills) == 3)
    with pytest.raises(OrderRejected, match="already Filled"):
        client.modify(o.order_id, price=PRICE - 2)


def test_cancel_then_cancel_again_is_refused(
    sim: TradovateSim, client: TradovateClient, heard: Heard
) -> None:
    o = client.place_order(OrderSpec("cxl-1", SYMBOL, Side.SELL, 1, "Limit", price=PRICE + 5))
    client.cancel(o.order_id)
    assert heard.until(lambda: heard.status(o.order_id) is OrderStatus.CANCELLED)
    with pytest.raises(BrokerError, match="TooLate"):
        client.cancel(o.order_id)
    sim.set_price(SYMBOL, PRICE + 6)
    assert position(sim) == 0 and heard.fills == []


def test_liquidate_closes_the_position_and_its_bracket(
    sim: TradovateSim, client: TradovateClient, heard: Heard
) -> None:
    p = client.place(bracket_long("liq-1", qty=2), reference_price=PRICE)
    closing = client.flatten(SYMBOL, "liq-exit", "end of test")
    assert closing is not None and (closing.side, closing.qty) == (Side.SELL, 2)
    assert heard.until(lambda: len(heard.fills) == 2)
    assert p.stop is not None and p.target is not None
    assert heard.until(lambda: heard.status(p.stop.order_id) is OrderStatus.CANCELLED)
    assert heard.status(p.target.order_id) is OrderStatus.CANCELLED
    assert position(sim) == 0 and client.flatten(SYMBOL, "liq-exit-2", "again") is None


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (OrderSpec("rej-qty", SYMBOL, Side.BUY, 60), "MaxOrderQtyLimitReached"),
        (OrderSpec("rej-sym", "NQH5", Side.BUY, 1), "InvalidContract"),
    ],
)
def test_rejections_carry_tradovates_reason_and_place_nothing(
    sim: TradovateSim, client: TradovateClient, spec: OrderSpec, reason: str
) -> None:
    with pytest.raises(OrderRejected, match=reason) as first:
        client.place_order(spec)
    with pytest.raises(OrderRejected) as again:  # never resent
        client.place_order(spec)
    assert again.value is first.value
    assert len(sim.calls("/order/placeorder")) == 1 and orders_sent_as(sim, spec.client_id) == []
    assert client.counters["rest_rejected"] == 1


def test_a_partly_filled_entry_is_reported_partly_filled(
    sim: TradovateSim, client: TradovateClient, heard: Heard
) -> None:
    sim.faults.cap_fills(1)
    intent = OrderIntent("part-1", SYMBOL, Side.BUY, 2, OrderType.LIMIT, limit_price=PRICE - 1,
                         bracket=BracketSpec(8, 12))  # fmt: skip
    p = client.place(intent)
    sim.set_price(SYMBOL, PRICE - 1.25)
    assert heard.until(
        lambda: heard.status(p.entry.order_id) and heard.last(p.entry.order_id).filled_qty == 1
    )
    view = heard.last(p.entry.order_id)
    assert view.status is OrderStatus.PARTIALLY_FILLED and view.remaining == 1
    assert client.order_for_client("part-1").status is OrderStatus.PARTIALLY_FILLED  # REST too


def test_rest_reads_for_a_trading_program(sim: TradovateSim, client: TradovateClient) -> None:
    spec = client.product(SYMBOL)
    assert (spec.product, spec.tick_size, spec.value_per_point, spec.tick_value) == (
        "ES", 0.25, 50.0, 12.5,
    )  # fmt: skip
    o = client.place_order(OrderSpec("reads-1", SYMBOL, Side.BUY, 1))
    (account,) = client.accounts()
    assert [r["id"] for r in client.order_list()] == [int(o.order_id)]
    assert [(f["orderId"], f["qty"]) for f in client.fill_list()] == [(int(o.order_id), 1)]
    assert [(p["accountId"], p["netPos"]) for p in client.position_list()] == [(account["id"], 1)]
    assert {r["execType"] for r in client.execution_reports()} >= {"New", "Trade"}
    assert [c["accountId"] for c in client.cash_balances()] == [account["id"]]
