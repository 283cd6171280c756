"""The paper broker: the Broker protocol over the exchange simulator, on a book built from
MBO events. The matching rules themselves are proved in tests/test_exchange_sim.py; here,
what a strategy sees: placements, updates, idempotency, modifies, cancels and flattening."""

from __future__ import annotations

import pytest

from esml.broker.base import Broker, OrderRejected
from esml.broker.paper import PaperBroker
from esml.data.book import BookState
from esml.execution.orders import (
    BracketSpec,
    OrderIntent,
    OrderRole,
    OrderStatus,
    OrderType,
    Side,
)
from esml.market.events import ADD, ASK, BID, TRADE
from esml.market.instruments import ES
from esml.sim.exchange import ExchangeConfig, LatencyConfig
from esml.sim.exchange_core import X_N_ORDERS
from tests.test_exchange_sim import LADDER, T0, US, at, events


@pytest.fixture
def broker() -> PaperBroker:
    """ES 4800.00 bid (5, 10, 20 lots down) / 4800.25 ask (3, 7, 20 lots up), 1 ms each way."""
    latency = LatencyConfig(feed_us=0.0, order_entry_us=1000.0, response_us=1000.0)
    b = PaperBroker(ES, BookState.new(ES.tick_fixed), ExchangeConfig(latency=latency))
    b.replay(events(*[(0, *row) for row in LADDER]))
    return b


def _intent(side: Side, qty: int = 1, cid: str = "c1") -> OrderIntent:
    return OrderIntent(cid, "ES", side, qty, bracket=BracketSpec(stop_ticks=8, target_ticks=12))


def test_it_is_a_broker() -> None:
    assert isinstance(PaperBroker(ES, BookState.new(ES.tick_fixed)), Broker)


def test_a_placement_is_pending_until_the_exchange_answers(broker) -> None:
    p = broker.place(_intent(Side.BUY, qty=5))
    orders, fills = broker.take_updates()
    assert {o.role for o in orders} == {OrderRole.ENTRY, OrderRole.STOP, OrderRole.TARGET}
    assert all(o.status is OrderStatus.PENDING for o in orders) and fills == []
    at(broker, 1999)
    assert broker.position("ES") == 0  # filled at 1 ms; the news arrives at 2 ms
    broker.advance_to(T0 + 2000 * US)
    orders, fills = broker.take_updates()
    assert [(f.qty, f.price) for f in fills] == [(3, 4800.25), (2, 4800.50)]  # a fill per level
    assert sum(f.commission for f in fills) == pytest.approx(5 * 2.25)
    assert p.entry.avg_fill_price == pytest.approx((3 * 4800.25 + 2 * 4800.50) / 5)
    assert broker.position("ES") == 5
    assert broker.take_updates() == ([], [])  # each change is handed over once


def test_bracket_legs_sit_at_their_tick_distances_from_the_first_fill(broker) -> None:
    p = broker.place(_intent(Side.BUY))
    at(broker, 2000)
    assert p.stop.price == 4800.25 - 8 * 0.25 and p.stop.side is Side.SELL
    assert p.target.price == 4800.25 + 12 * 0.25 and p.target.side is Side.SELL
    assert p.stop.oco_id == p.target.order_id and p.target.oco_id == p.stop.order_id
    assert p.stop.parent_id == p.entry.order_id


def test_the_same_intent_twice_places_once(broker) -> None:
    first = broker.place(_intent(Side.BUY, cid="same"))
    again = broker.place(_intent(Side.BUY, cid="same"))
    assert again is first
    at(broker, 2000)
    assert len(broker.fills()) == 1 and broker.position("ES") == 1


def test_a_trailing_stop_moves_with_modify_after_the_round_trip(broker) -> None:
    p = broker.place(_intent(Side.BUY))
    at(broker, 2000)
    broker.modify(p.stop.order_id, price=4799.75)
    at(broker, 3999)
    assert p.stop.price == 4798.25  # the modify is still on its way
    at(broker, 4000)
    assert p.stop.price == 4799.75
    at(broker, 4100, (TRADE, ASK, 4799.75, 1, 0))
    at(broker, 6000)
    assert [(f.role, f.price) for f in broker.fills()][-1] == (OrderRole.STOP, 4800.00)
    assert p.target.status is OrderStatus.CANCELLED and broker.position("ES") == 0


def test_a_cancel_that_arrives_after_the_fill_is_answered_too_late(broker) -> None:
    p = broker.place(OrderIntent("c1", "ES", Side.SELL, 1, OrderType.LIMIT, 4800.25))
    at(broker, 1500)
    broker.cancel(p.entry.order_id)  # sent at 1.5 ms, arrives at 2.5 ms
    at(broker, 2000, (TRADE, BID, 4800.50, 1, 0))  # through our offer at 2 ms: filled
    at(broker, 5000)
    assert p.entry.status is OrderStatus.FILLED and broker.position("ES") == -1
    assert broker.request_rejections == [(p.entry.order_id,
                                          "too late: the order had already ended")]  # fmt: skip


def test_a_cancelled_entry_takes_its_unfilled_legs_with_it(broker) -> None:
    p = broker.place(OrderIntent("c1", "ES", Side.BUY, 1, OrderType.LIMIT, 4799.00,
                                 BracketSpec(4, 4)))  # fmt: skip
    at(broker, 2000)
    broker.cancel(p.entry.order_id)
    at(broker, 4000)
    assert [o.status for o in p.orders] == [OrderStatus.CANCELLED] * 3
    assert broker.working_orders("ES") == []


def test_flatten_cancels_the_bracket_and_closes_at_market(broker) -> None:
    p = broker.place(_intent(Side.BUY, qty=2))
    at(broker, 2000)
    exit_ = broker.flatten("ES", "x1", "time exit")
    assert broker.flatten("ES", "x1", "time exit") is exit_  # idempotent on its client id
    at(broker, 4000)
    assert exit_.role is OrderRole.EXIT and exit_.avg_fill_price == 4800.00
    assert p.stop.status is OrderStatus.CANCELLED and p.target.status is OrderStatus.CANCELLED
    assert broker.position("ES") == 0
    assert broker.flatten("ES", "x2", "again") is None


def test_flatten_never_doubles_an_exit_a_stop_already_made(broker) -> None:
    p = broker.place(_intent(Side.BUY))
    at(broker, 2000)
    at(broker, 2500, (TRADE, ASK, 4798.25, 1, 0))  # the stop fires at 2.5 ms...
    exit_ = broker.flatten("ES", "x1", "time exit")  # ...we send a flatten, not knowing
    at(broker, 6000)
    assert p.stop.status is OrderStatus.FILLED
    assert exit_.status is OrderStatus.CANCELLED and exit_.filled_qty == 0
    assert broker.position("ES") == 0 and broker.exchange.position == 0


def test_bad_requests_are_refused_at_once_and_send_nothing(broker) -> None:
    with pytest.raises(OrderRejected, match="tick grid"):
        broker.place(OrderIntent("c1", "ES", Side.BUY, 1, OrderType.LIMIT, 4800.10))
    with pytest.raises(OrderRejected, match="market order takes no limit price"):
        broker.place(OrderIntent("c3", "ES", Side.BUY, 1, limit_price=4800.00))
    with pytest.raises(OrderRejected, match="trades ES only"):
        broker.place(OrderIntent("c2", "NQH4", Side.BUY, 1))
    assert broker.take_updates() == ([], [])
    assert int(broker.exchange.xm[X_N_ORDERS]) == 0  # no order reached the exchange's tables


def test_replay_delivers_reports_as_events_pass(broker) -> None:
    """Without an engine, `replay` runs book and matching and hands over what is visible."""
    broker.place(OrderIntent("c1", "ES", Side.BUY, 2, OrderType.LIMIT, 4800.00))
    broker.replay(events((500, ADD, BID, 4800.00, 1, 9), (1500, TRADE, ASK, 4799.75, 2, 0),
                         (3000, ADD, ASK, 4801.00, 1, 10)))  # fmt: skip
    assert broker.position("ES") == 2
    assert [f.ts_ns for f in broker.fills()] == [T0 + 1500 * US]
