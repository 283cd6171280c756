"""The paper broker fills against a book built from MBO events, one rule per test."""

from __future__ import annotations

import pytest

from esml.broker.base import OrderRejected
from esml.broker.paper import PaperBroker
from esml.data.book import BookState, apply_event
from esml.execution.orders import BracketSpec, OrderIntent, OrderRole, OrderStatus, Side
from esml.features.kernel import NO_TRIGGER_HI, NO_TRIGGER_LO
from esml.market.events import ADD, ASK, BID
from esml.market.instruments import ES


def _px(p: float) -> int:
    return ES.to_fixed(p)


@pytest.fixture
def book() -> BookState:
    """ES 4800.00 bid (5, 10, 20 lots down) / 4800.25 ask (3, 7, 20 lots up)."""
    b = BookState.new(ES.tick_fixed)
    oid = 1
    for k, (bid_q, ask_q) in enumerate([(5, 3), (10, 7), (20, 20)]):
        apply_event(*b.arrays, ADD, BID, _px(4800.00 - 0.25 * k), bid_q, oid)
        apply_event(*b.arrays, ADD, ASK, _px(4800.25 + 0.25 * k), ask_q, oid + 1)
        oid += 2
    return b


def _intent(side: Side, qty: int = 1, cid: str = "c1") -> OrderIntent:
    return OrderIntent(cid, "ES", side, qty, bracket=BracketSpec(stop_ticks=8, target_ticks=12))


def test_market_buy_walks_the_book_and_pays_commission(book) -> None:
    broker = PaperBroker(ES, book, commission_per_side=2.25)
    p = broker.place(_intent(Side.BUY, qty=5))
    # 3 @ 4800.25 + 2 @ 4800.50
    assert p.entry.avg_fill_price == pytest.approx((3 * 4800.25 + 2 * 4800.50) / 5)
    assert broker.position("ES") == 5
    assert broker.fills()[0].commission == pytest.approx(5 * 2.25)


def test_bracket_legs_sit_at_their_tick_distances_and_are_oco(book) -> None:
    broker = PaperBroker(ES, book, 2.25)
    p = broker.place(_intent(Side.BUY))
    assert p.stop.price == 4800.25 - 8 * 0.25 and p.stop.side is Side.SELL
    assert p.target.price == 4800.25 + 12 * 0.25 and p.target.side is Side.SELL
    assert p.stop.oco_id == p.target.order_id and p.target.oco_id == p.stop.order_id
    lo, hi = broker.trigger_levels()
    assert lo == _px(4798.25) and hi == _px(4803.50)  # stop at; target one tick through


def test_stop_triggers_on_a_trade_at_the_stop_and_cancels_the_target(book) -> None:
    broker = PaperBroker(ES, book, 2.25)
    p = broker.place(_intent(Side.BUY))
    assert broker.on_trade(_px(4798.50)) == []  # above the stop: nothing
    fills = broker.on_trade(_px(4798.25))
    assert [f.role for f in fills] == [OrderRole.STOP]
    assert fills[0].price == 4800.00  # a stop becomes a market order: the best bid
    assert p.target.status is OrderStatus.CANCELLED
    assert broker.position("ES") == 0
    assert broker.trigger_levels() == (NO_TRIGGER_LO, NO_TRIGGER_HI)


def test_target_fills_only_on_a_print_through_it(book) -> None:
    broker = PaperBroker(ES, book, 2.25)
    p = broker.place(_intent(Side.SELL))  # sold 4800.00; target 4797.00, stop 4802.00
    assert broker.on_trade(_px(4797.00)) == []  # at the limit: queue unknown, no fill
    fills = broker.on_trade(_px(4796.75))
    assert fills[0].role is OrderRole.TARGET and fills[0].price == 4797.00
    assert p.stop.status is OrderStatus.CANCELLED
    assert broker.position("ES") == 0


def test_the_same_intent_twice_places_once(book) -> None:
    broker = PaperBroker(ES, book, 2.25)
    first = broker.place(_intent(Side.BUY, cid="same"))
    again = broker.place(_intent(Side.BUY, cid="same"))
    assert again is first
    assert len(broker.fills()) == 1 and broker.position("ES") == 1


def test_not_enough_liquidity_is_a_reject_that_changes_nothing(book) -> None:
    broker = PaperBroker(ES, book, 2.25)
    with pytest.raises(OrderRejected, match="liquidity"):
        broker.place(_intent(Side.BUY, qty=31))  # only 30 offered
    assert broker.position("ES") == 0 and broker.fills() == []


def test_flatten_cancels_the_bracket_and_closes_at_market(book) -> None:
    broker = PaperBroker(ES, book, 2.25)
    p = broker.place(_intent(Side.BUY, qty=2))
    exit_ = broker.flatten("ES", "x1", "time exit")
    assert exit_.avg_fill_price == 4800.00 and exit_.role is OrderRole.EXIT
    assert p.stop.status is OrderStatus.CANCELLED and p.target.status is OrderStatus.CANCELLED
    assert broker.position("ES") == 0
    assert broker.flatten("ES", "x2", "again") is None
