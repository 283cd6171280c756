"""The execution layer: every exit rule on a hand-built price path, the bracket through
partial fills, and the order state machine, against the loopback Tradovate server over
real HTTP (`tests.execution_sim`; prices SYNTHETIC, near where ES traded in March 2025).

Unless a test says otherwise: long 1 ES at 5772.25 (market, filled at the ask), R = 8
ticks = 2.00 points, so the exchange-held stop starts at 5770.25 and the target (4R) at
5780.25. The quote is a one-tick market: bid = price - 0.25, ask = price.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
from pydantic import ValidationError

from esml.alpha.strategy import Signal
from esml.broker.base import OPTIONAL_CAPABILITIES, Broker
from esml.broker.paper import PaperBroker
from esml.broker.tradovate import TradovateClient, TradovateCredentials
from esml.data.book import BookState
from esml.execution.journaling import PositionPlan, latest_plan
from esml.execution.manager import Outcome, PositionManager
from esml.execution.orders import Order, OrderRole, OrderStatus, OrderType, Side
from esml.execution.ports import (
    BrokerPort,
    OrderRefused,
)
from esml.execution.recovery import RecoveryError, recover
from esml.execution.rules import ExitRules
from esml.execution.state_machine import IllegalTransition, OrderTracker
from esml.execution.trailing import stop_level
from esml.journal.sqlite import SQLiteJournal
from esml.market.events import ADD, ASK, BID, CANCEL, TRADE, empty_events
from esml.market.instruments import ES
from esml.sim.exchange import ExchangeConfig, LatencyConfig
from tests.aws_fixtures import ACCOUNT_SPEC, TRADOVATE_LOGIN
from tests.execution_sim import SYMBOL, TICK, ExecutionSim

ENTRY, STOP0, TARGET0 = 5772.25, 5770.25, 5780.25


class Desk:
    """A PositionManager trading through the Tradovate client; `at` moves the market,
    lets the manager hear the broker and evaluate, and hears back what it sent."""

    def __init__(self, sim: ExecutionSim, rules: ExitRules) -> None:
        credentials = TradovateCredentials.model_validate(
            {**TRADOVATE_LOGIN, "env": "demo", "accountSpec": ACCOUNT_SPEC}
        )
        self.sim = sim
        self.client = TradovateClient(credentials, base_url=sim.base_url)
        self.journal = SQLiteJournal(":memory:")
        self.m = PositionManager(SYMBOL, self.client, self.journal, rules)

    def at(self, at_s: float, price: float, *, ask: float | None = None) -> int:
        ts = self.sim.at(at_s, price)
        self.hear()
        self.m.on_market(ts, price - TICK, ask if ask is not None else price, price)
        self.hear()
        return ts

    def hear(self) -> None:
        self.m.on_updates(*self.client.take_updates())

    def signal(
        self,
        at_s: float,
        side: Side | None,
        confidence: float = 0.8,
        qty: int = 1,
        horizon_s: float | None = None,
        **kw: object,
    ) -> Outcome:
        ts = self.sim.ns(at_s)
        sig = Signal(ts, "test", side, confidence, **kw)  # type: ignore[arg-type]
        out = self.m.on_signal(sig, qty, 8, 25, ts, horizon_s=horizon_s)
        self.hear()
        return out

    def stops(self) -> list[dict[str, object]]:
        return [o for o in self.sim.live_orders() if o["orderType"] == "Stop"]

    def targets(self) -> list[dict[str, object]]:
        return [
            o for o in self.sim.live_orders() if o["orderType"] == "Limit" and o.get("parentId")
        ]

    def stop_price(self) -> float:
        (stop,) = self.stops()
        return float(stop["stopPrice"])  # type: ignore[arg-type]

    def position(self) -> int:
        held = self.sim.net_position(ACCOUNT_SPEC, SYMBOL)
        assert held == self.m.position, "the manager and the broker disagree"
        return held

    def notes(self) -> list[str]:
        return [d.reason for d in self.journal.decisions() if d.source == "execution"]

    def long(self, **kw: object) -> None:
        self.at(0, ENTRY)
        assert self.signal(0, Side.BUY, **kw).action == "entry"
        assert self.position() == 1


@pytest.fixture
def sim() -> Iterator[ExecutionSim]:
    with ExecutionSim() as s:
        yield s


def desk(sim: ExecutionSim, **rules: object) -> Desk:
    return Desk(sim, ExitRules(**rules))  # type: ignore[arg-type]


# --- the rules, as a config section and as arithmetic ------------------------------------
def test_exit_rules_are_strict_and_their_stages_ordered() -> None:
    r = ExitRules()
    assert (r.breakeven_r, r.trail_r, r.tight_trail_r, r.take_profit_r) == (0.6, 1.0, 1.5, 4.0)
    assert r.min_hold_s == 30
    with pytest.raises(ValidationError, match="extra"):
        ExitRules(trailing=True)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="trail_r"):
        ExitRules(breakeven_r=1.2)
    with pytest.raises(ValidationError, match="wider"):
        ExitRules(tight_trail_distance_r=0.8)
    with pytest.raises(ValidationError):
        r.min_hold_s = 0  # type: ignore[misc]
    assert ExitRules(breakeven_r=None, trail_r=None).tight_trail_r == 1.5


def test_stop_levels_by_stage_in_ticks() -> None:
    rules, r = ExitRules(), 8
    assert stop_level(rules, Side.BUY, 100.0, 104, r) is None  # 0.5R: nothing yet
    be = stop_level(rules, Side.BUY, 100.0, 105, r)  # 0.625R
    assert be is not None and (be.ticks, be.stage) == (100, "breakeven at 0.6R")
    assert stop_level(rules, Side.BUY, 100.0, 108, r).ticks == 104  # type: ignore[union-attr]
    assert stop_level(rules, Side.BUY, 100.0, 112, r).ticks == 110  # type: ignore[union-attr]
    assert stop_level(rules, Side.SELL, 100.0, 88, r).ticks == 90  # type: ignore[union-attr]
    # an off-grid entry rounds the breakeven stop away from the market, never tighter
    assert stop_level(rules, Side.BUY, 100.5, 106, r).ticks == 100  # type: ignore[union-attr]
    assert stop_level(rules, Side.SELL, 100.5, 95, r).ticks == 101  # type: ignore[union-attr]
    fixed = stop_level(rules, Side.BUY, 100.0, 103, r, trail_ticks=4)
    assert fixed is not None and fixed.ticks == 99


# --- each exit rule on the loopback broker ------------------------------------------------
def test_the_entry_carries_an_exchange_held_oco_bracket_at_4r(sim: ExecutionSim) -> None:
    d = desk(sim, min_hold_s=0)
    d.long()
    (stop,), (target,) = d.stops(), d.targets()
    assert (stop["action"], stop["stopPrice"], stop["orderQty"]) == ("Sell", STOP0, 1)
    assert (target["action"], target["price"], target["orderQty"]) == ("Sell", TARGET0, 1)
    assert stop["ocoId"] == target["id"]
    assert d.m.plan is not None and (d.m.plan.stop_price, d.m.plan.target_price) == (
        STOP0,
        TARGET0,
    )


def test_breakeven_at_0_6r(sim: ExecutionSim) -> None:
    d = desk(sim, min_hold_s=0)
    d.long()
    d.at(1, 5773.50)  # bid 5773.25: +4 ticks = 0.5R
    assert d.stop_price() == STOP0
    d.at(2, 5773.75)  # bid 5773.50: +5 ticks = 0.625R
    assert d.stop_price() == ENTRY
    assert any("breakeven at 0.6R" in n for n in d.notes())


def test_trail_at_1r_follows_the_best_price_half_an_r_behind(sim: ExecutionSim) -> None:
    d = desk(sim, min_hold_s=0)
    d.long()
    d.at(1, 5774.50)  # bid 5774.25: +8 ticks = 1.0R -> 0.5R (4 ticks) behind
    assert d.stop_price() == 5773.25
    d.at(2, 5775.00)  # bid 5774.75: the best price moves, the stop follows
    assert d.stop_price() == 5773.75
    d.at(3, 5774.50)  # back down: a stop never loosens
    assert d.stop_price() == 5773.75


def test_tighter_trail_at_1_5r(sim: ExecutionSim) -> None:
    d = desk(sim, min_hold_s=0)
    d.long()
    d.at(1, 5775.25)  # bid 5775.00: +11 ticks, still the 1R trail
    assert d.stop_price() == 5774.00
    d.at(2, 5775.50)  # bid 5775.25: +12 ticks = 1.5R -> 0.25R (2 ticks) behind
    assert d.stop_price() == 5774.75
    d.at(3, 5774.75)  # the trailing stop is hit at the exchange
    assert d.position() == 0 and d.stops() == [] and d.targets() == []
    assert d.m.plan is None


def test_take_profit_at_4r_cancels_the_stop(sim: ExecutionSim) -> None:
    d = desk(sim, min_hold_s=0)
    d.long()
    d.at(1, TARGET0)
    assert d.position() == 0 and sim.live_orders() == []
    status = {o.role: o.status for o in d.journal.orders()}
    assert status[OrderRole.TARGET] is OrderStatus.FILLED
    assert status[OrderRole.STOP] is OrderStatus.CANCELLED


def test_nothing_is_evaluated_in_the_first_30_seconds(sim: ExecutionSim) -> None:
    d = desk(sim)  # min_hold_s = 30
    d.long()
    d.at(10, 5775.75)  # +13 ticks: would be a tight trail
    assert d.stop_price() == STOP0
    flip = d.signal(20, Side.SELL, confidence=0.95)
    assert flip.action == "none" and "minimum hold" in flip.reason and d.position() == 1
    d.at(31, 5773.25)  # the hold is over; the first 30 s are not looked back on
    assert d.stop_price() == STOP0
    d.at(32, 5774.00)  # bid 5773.75: +6 ticks since the hold ended -> breakeven
    assert d.stop_price() == ENTRY


def test_the_exchange_held_stop_works_during_the_hold(sim: ExecutionSim) -> None:
    d = desk(sim)
    d.long()
    d.at(5, STOP0)
    assert d.position() == 0 and d.m.plan is None


def test_time_exit_at_the_prediction_horizon(sim: ExecutionSim) -> None:
    d = desk(sim)  # the time exit is not held back by the 30 s minimum hold
    d.long(horizon_s=20)
    d.at(19, 5772.75)
    assert d.position() == 1
    d.at(20, 5772.75)
    assert d.position() == 0 and sim.live_orders() == []
    (exit_,) = [o for o in d.journal.orders() if o.role is OrderRole.EXIT]
    assert exit_.status is OrderStatus.FILLED
    assert any("time exit at the prediction horizon" in n for n in d.notes())


def test_a_time_exit_that_finds_the_broker_flat_waits_for_the_stops_fill(
    sim: ExecutionSim,
) -> None:
    """The stop fills at the exchange just before the time exit and its news is still on
    its way: the liquidation finds nothing to close. Nothing may be re-protected on the flat
    account (a stand-alone stop there would open a position the other way)."""
    d = desk(sim)
    d.long(horizon_s=20)
    ts = sim.at(20, STOP0)  # the exchange-held stop fills; the manager has not heard yet
    d.m.on_market(ts, STOP0 - TICK, STOP0, STOP0)
    assert any("held nothing to close" in n for n in d.notes())
    for at_s in (20.5, 21, 22):  # steps while the fill is still on its way
        ts = sim.at(at_s, STOP0 - 2)
        d.m.on_market(ts, STOP0 - 2 - TICK, STOP0 - 2, STOP0 - 2)
        assert sim.live_orders() == [] and sim.net_position(ACCOUNT_SPEC, SYMBOL) == 0
    d.hear()
    assert d.position() == 0 and sim.live_orders() == []
    assert d.m.plan is None or d.m.plan.closed
    (stop,) = [o for o in d.journal.orders() if o.role is OrderRole.STOP]
    assert stop.status is OrderStatus.FILLED


def test_early_exit_on_a_strong_opposite_signal(sim: ExecutionSim) -> None:
    d = desk(sim)  # flip_exit_confidence = 0.7
    d.long()
    d.at(35, 5772.75)
    assert d.signal(36, Side.SELL, confidence=0.6).action == "none"
    assert d.signal(36, Side.BUY, confidence=0.9).action == "none"  # same side: no adds
    assert d.position() == 1
    out = d.signal(37, Side.SELL, confidence=0.75)
    assert out.action == "exit" and d.position() == 0 and sim.live_orders() == []


def test_a_signal_asking_to_exit_closes_the_position(sim: ExecutionSim) -> None:
    d = desk(sim, min_hold_s=0)
    d.long()
    out = d.signal(1, None, confidence=0.5, exit_position=True, reason="fade reached z 0.2")
    assert out == Outcome("exit", "fade reached z 0.2", out.client_id)
    assert d.position() == 0


def test_adds_carry_their_own_bracket_at_the_positions_levels(sim: ExecutionSim) -> None:
    d = desk(sim, min_hold_s=0, max_adds=1)
    d.long()
    d.at(1, 5772.25)
    assert d.signal(1, Side.BUY).action == "none"  # not in profit
    d.at(2, 5773.00)  # bid 5772.75: +2 ticks
    assert d.signal(2, Side.BUY).action == "add"
    assert d.position() == 2
    assert sorted((o["stopPrice"], o["orderQty"]) for o in d.stops()) == [(STOP0, 1)] * 2
    assert sorted((o["price"], o["orderQty"]) for o in d.targets()) == [(TARGET0, 1)] * 2
    assert "adds used up" in d.signal(3, Side.BUY).reason
    d.at(4, 5774.50)  # bid +8 ticks from the first entry: trail, every stop together
    assert [o["stopPrice"] for o in d.stops()] == [5773.25, 5773.25]
    d.at(5, 5773.25)
    assert d.position() == 0 and sim.live_orders() == []


def test_a_limit_entry_at_the_touch_is_cancelled_after_its_timeout(sim: ExecutionSim) -> None:
    d = desk(sim, entry="limit", entry_timeout_s=5)
    d.at(0, ENTRY)
    assert d.signal(0, Side.BUY).action == "entry"
    (entry,) = [o for o in sim.live_orders() if not o.get("parentId")]
    assert (entry["orderType"], entry["price"]) == ("Limit", ENTRY - TICK)  # at the bid
    d.at(4, ENTRY)
    assert d.position() == 0 and sim.live_orders() != []
    d.at(5, ENTRY)
    assert sim.live_orders() == [] and d.position() == 0 and d.m.plan is None
    statuses = [n.split(": ")[1] for n in d.notes() if n.startswith(f"order {entry['clOrdId']}:")]
    assert statuses[-2:] == ["Working -> CancelPending", "CancelPending -> Canceled"]
    assert any("entry timeout" in n for n in d.notes())


def test_a_limit_entry_that_fills_in_time_is_kept(sim: ExecutionSim) -> None:
    d = desk(sim, entry="limit", entry_timeout_s=5)
    d.at(0, ENTRY)
    d.signal(0, Side.BUY)
    d.at(2, ENTRY - TICK)
    d.at(6, ENTRY)
    assert d.position() == 1 and d.stop_price() == ENTRY - TICK - 2.0


def test_a_limit_exit_that_times_out_goes_to_market(sim: ExecutionSim) -> None:
    d = desk(sim, exit="limit", exit_timeout_s=3)
    d.long(horizon_s=10)
    d.at(10, 5773.00, ask=5773.25)  # time exit: the target moves to the ask
    (target,) = d.targets()
    assert target["price"] == 5773.25 and d.position() == 1
    d.at(12, 5773.00)
    assert d.position() == 1
    d.at(13, 5773.00)  # 3 s later, still open: at market
    assert d.position() == 0 and sim.live_orders() == []
    assert any("exit timeout" in n for n in d.notes())
    assert len(sim.calls("/order/liquidateposition")) == 1


def test_a_limit_exit_that_fills_needs_no_market_order(sim: ExecutionSim) -> None:
    d = desk(sim, exit="limit", exit_timeout_s=3)
    d.long(horizon_s=10)
    d.at(10, 5773.00, ask=5773.25)
    d.at(11, 5773.25)
    assert d.position() == 0 and sim.live_orders() == []
    assert sim.calls("/order/liquidateposition") == []


def test_close_exits_at_market_whatever_the_rules_wait_for(sim: ExecutionSim) -> None:
    d = desk(sim)  # inside the minimum hold
    d.long()
    d.m.close("end of data")
    d.hear()
    assert d.position() == 0 and sim.live_orders() == [] and d.m.plan is None
    d2 = desk(sim, entry="limit")
    d2.at(1, ENTRY)
    d2.signal(1, Side.BUY)
    d2.m.close("halted by a person")
    d2.hear()
    assert sim.live_orders() == [] and d2.m.plan is None


# --- partial fills: the bracket covers exactly what is filled ---------------------------
def test_partial_entry_fills_resize_the_bracket_and_a_cancelled_rest_is_reprotected(
    sim: ExecutionSim,
) -> None:
    sim.fill_cap = 1  # one contract per price change rests at a limit
    d = desk(sim, entry="limit", entry_timeout_s=5)
    d.at(0, ENTRY)
    assert d.signal(0, Side.BUY, qty=3).action == "entry"
    bid = ENTRY - TICK
    d.at(1, bid)  # 1 of 3 fills; the legs are released at 3, resized to 1
    assert d.position() == 1
    assert [(o["orderQty"], o["stopPrice"]) for o in d.stops()] == [(1, bid - 2.0)]
    assert [o["orderQty"] for o in d.targets()] == [1]
    d.at(2, bid)
    assert d.position() == 2
    assert [o["orderQty"] for o in d.stops() + d.targets()] == [2, 2]
    d.at(5, ENTRY)  # the rest times out; the broker cancels the legs with the entry
    assert d.position() == 2
    assert [(o["orderQty"], o["stopPrice"]) for o in d.stops()] == [(2, bid - 2.0)]
    assert d.stops()[0].get("parentId") is None  # a stand-alone protective stop
    assert any("re-protect 2 contracts at the plan's stop" in n for n in d.notes())


def test_partial_target_fills_shrink_the_stop_with_the_position(sim: ExecutionSim) -> None:
    sim.fill_cap = 1
    d = desk(sim, min_hold_s=0)
    d.at(0, ENTRY)
    d.signal(0, Side.BUY, qty=3)
    assert d.position() == 3
    held = []
    for i in range(3):
        d.at(1 + i, TARGET0)
        held.append((d.position(), [o["orderQty"] - o["filled"] for o in d.stops()]))
    assert held == [(2, [2]), (1, [1]), (0, [])]
    assert sim.live_orders() == []


# --- refusals and bad input ---------------------------------------------------------------
def test_a_refused_entry_is_journaled_rejected_with_the_brokers_reason(
    sim: ExecutionSim,
) -> None:
    d = desk(sim)
    d.at(0, ENTRY)
    out = d.signal(0, Side.BUY, qty=51)  # the account's limit is 50
    assert out.action == "rejected" and "MaxOrderQtyLimitReached" in out.reason
    assert {o.status for o in d.journal.orders()} == {OrderStatus.REJECTED}
    assert d.m.plan is None and sim.orders() == []


def test_the_same_signal_twice_places_one_entry(sim: ExecutionSim) -> None:
    d = desk(sim, min_hold_s=0)
    d.long()
    d.at(1, ENTRY)
    d.m.plan = None  # even a manager that forgot its plan knows the client id
    assert d.signal(0, Side.BUY).reason in (
        "this signal was already acted on",
        "orders or a position without a plan: waiting",
    )
    assert len(sim.calls("/order/placeoso")) == 1


def test_bad_input_is_refused_and_changes_nothing(sim: ExecutionSim) -> None:
    d = desk(sim)
    with pytest.raises(RuntimeError, match="on_market"):
        d.signal(0, Side.BUY)
    with pytest.raises(ValueError, match="quote"):
        d.m.on_market(1, 5773.0, 5772.0, 5772.5)
    assert d.m.quote is None
    d.at(0, ENTRY)
    with pytest.raises(ValueError, match="bad signal"):
        d.m.on_signal(Signal(1, "t", Side.BUY, 0.8), -1, 8, 25, 1)
    with pytest.raises(ValueError, match="horizon"):
        d.m.on_signal(Signal(1, "t", Side.BUY, 0.8), 1, 8, 25, 1, horizon_s=0)
    assert d.journal.orders() == [] and sim.orders() == []


def test_recovery_needs_a_broker_that_lists_its_orders() -> None:
    class Bare:
        def place(self, intent):  # type: ignore[no-untyped-def]
            raise AssertionError

    with pytest.raises(RecoveryError, match="cannot list"):
        recover(
            SYMBOL,
            Bare(),
            SQLiteJournal(":memory:"),
            ExitRules(),  # type: ignore[arg-type]
            ts_ns=1,
            bid=1.0,
            ask=1.25,
            last=1.0,
        )


def test_the_tradovate_client_has_every_capability(sim: ExecutionSim) -> None:
    client = Desk(sim, ExitRules()).client
    assert isinstance(client, Broker)
    missing = [c.__name__ for c in OPTIONAL_CAPABILITIES if not isinstance(client, c)]
    assert missing == []
    _: BrokerPort = client


# --- what the execution layer added to the Tradovate client ------------------------------
def test_tradovate_modify_checks_before_sending_and_refuses_a_finished_order(
    sim: ExecutionSim,
) -> None:
    d = desk(sim, min_hold_s=0)
    d.long()
    stop_id = str(d.stops()[0]["id"])
    entry_id = next(str(o["id"]) for o in sim.orders() if o.get("parentId") is None)
    for bad in ({}, {"qty": 0}, {"price": float("nan")}):
        with pytest.raises(ValueError):
            d.client.modify(stop_id, **bad)  # type: ignore[arg-type]
    assert sim.calls("/order/modifyorder") == []
    with pytest.raises(OrderRefused, match="already Filled"):
        d.client.modify(entry_id, price=5771.0)
    d.client.modify(stop_id, price=5771.1)  # snapped to the tick grid
    assert d.stops()[0]["stopPrice"] == 5771.0


def test_tradovate_protect_is_idempotent_on_its_client_id(sim: ExecutionSim) -> None:
    d = desk(sim)
    d.long()
    with pytest.raises(ValueError):
        d.client.protect(SYMBOL, Side.SELL, 0, 5768.0, "p-stop")
    first = d.client.protect(SYMBOL, Side.SELL, 1, 5768.0, "p-stop")
    again = d.client.protect(SYMBOL, Side.SELL, 1, 5768.0, "p-stop")
    assert first == again and first.role is OrderRole.STOP and first.price == 5768.0
    assert len(sim.calls("/order/placeorder")) == 1


def test_a_fresh_tradovate_client_finds_orders_by_client_id_and_hands_every_fill_once(
    sim: ExecutionSim,
) -> None:
    d = desk(sim)
    d.long()
    restarted = Desk(sim, ExitRules()).client
    entry_id = d.m.plan.entry_id if d.m.plan else ""
    found = restarted.order_for_client(entry_id)
    assert found is not None and (found.role, found.status) == (OrderRole.ENTRY, OrderStatus.FILLED)
    assert restarted.order_for_client("never-sent") is None
    working = restarted.working_orders(SYMBOL)
    assert sorted(o.role for o in working) == [OrderRole.STOP, OrderRole.TARGET]
    assert {o.client_id for o in working} == {f"{entry_id}-stop", f"{entry_id}-target"}
    _, fills = restarted.take_updates()
    assert [(f.client_id, f.role, f.qty) for f in fills] == [(entry_id, OrderRole.ENTRY, 1)]
    assert restarted.take_updates() == ([], [])


# --- the state machine ----------------------------------------------------------------------
def _order(status: OrderStatus = OrderStatus.PENDING, **kw: object) -> Order:
    fields = {
        "order_id": "o1",
        "client_id": "o1",
        "symbol": SYMBOL,
        "side": Side.BUY,
        "qty": 2,
        "order_type": OrderType.LIMIT,
        "role": OrderRole.ENTRY,
        "price": 5772.0,
        "status": status,
        **kw,
    }
    return Order(**fields)  # type: ignore[arg-type]


def test_the_state_machine_walks_the_legal_path_and_journals_each_step() -> None:
    j = SQLiteJournal(":memory:")
    tr = OrderTracker(j, SYMBOL)
    t = tr.new(_order(), "intent")
    assert tr.move(t, OrderStatus.WORKING, 1, "acknowledged")
    assert tr.move(t, OrderStatus.PARTIALLY_FILLED, 2, "1 filled", filled_qty=1)
    assert tr.move(t, OrderStatus.CANCEL_PENDING, 3, "timeout")
    assert tr.move(t, OrderStatus.FILLED, 4, "filled before the cancel", filled_qty=2)
    assert not tr.move(t, OrderStatus.FILLED, 5, "again")  # nothing changed, nothing written
    (row,) = j.orders()
    assert (row.status, row.filled_qty) == (OrderStatus.FILLED, 2)
    said = [d.reason for d in j.decisions()]
    assert said == [
        "order o1: new entry order (Pending): intent",
        "order o1: Pending -> Working: acknowledged",
        "order o1: Working -> PartiallyFilled: 1 filled",
        "order o1: PartiallyFilled -> CancelPending: timeout",
        "order o1: CancelPending -> Filled: filled before the cancel",
    ]


@pytest.mark.parametrize(
    ("start", "to", "changes"),
    [
        (OrderStatus.FILLED, OrderStatus.WORKING, {"filled_qty": 2}),
        (OrderStatus.CANCELLED, OrderStatus.FILLED, {"filled_qty": 2}),
        (OrderStatus.REJECTED, OrderStatus.WORKING, {}),
        (OrderStatus.WORKING, OrderStatus.PENDING, {}),
        (OrderStatus.PARTIALLY_FILLED, OrderStatus.WORKING, {"filled_qty": 1}),
        (OrderStatus.WORKING, OrderStatus.REJECTED, {}),
        (OrderStatus.PARTIALLY_FILLED, OrderStatus.PARTIALLY_FILLED, {"filled_qty": 0}),
        (OrderStatus.WORKING, OrderStatus.FILLED, {"filled_qty": 1}),  # 1 of 2 is not filled
        (OrderStatus.WORKING, OrderStatus.PARTIALLY_FILLED, {"filled_qty": 3}),
    ],
)
def test_illegal_transitions_raise_and_change_nothing(
    start: OrderStatus, to: OrderStatus, changes: dict[str, object]
) -> None:
    j = SQLiteJournal(":memory:")
    tr = OrderTracker(j, SYMBOL)
    filled = {OrderStatus.FILLED: 2, OrderStatus.PARTIALLY_FILLED: 1}.get(start, 0)
    t = tr.load(_order(start, filled_qty=filled))
    j.record_order(t.order)
    before = (j.orders(), j.decisions(), t.order)
    with pytest.raises(IllegalTransition):
        tr.move(t, to, 1, "should not happen", **changes)
    assert (j.orders(), j.decisions(), t.order) == before


def test_an_older_broker_snapshot_changes_nothing_and_a_contradiction_raises() -> None:
    tr = OrderTracker(SQLiteJournal(":memory:"), SYMBOL)
    t = tr.new(_order(), "intent")
    tr.apply(t, _order(OrderStatus.WORKING, filled_qty=1), 1)
    assert t.status is OrderStatus.PARTIALLY_FILLED
    assert not tr.apply(t, _order(OrderStatus.WORKING), 2)  # older news
    tr.apply(t, _order(OrderStatus.FILLED, filled_qty=2), 3)
    with pytest.raises(IllegalTransition):
        tr.apply(t, _order(OrderStatus.CANCELLED, filled_qty=2), 4)


def test_an_order_cannot_be_created_twice_or_start_anywhere_but_pending() -> None:
    tr = OrderTracker(SQLiteJournal(":memory:"), SYMBOL)
    tr.new(_order(), "intent")
    with pytest.raises(IllegalTransition, match="already exists"):
        tr.new(_order(), "again")
    with pytest.raises(IllegalTransition, match="PENDING"):
        tr.new(_order(OrderStatus.WORKING, order_id="o2"), "no")


def test_every_transition_of_a_whole_trade_is_journaled_with_a_reason(
    sim: ExecutionSim,
) -> None:
    d = desk(sim, min_hold_s=0)
    d.long(horizon_s=5)
    d.at(1, 5774.50)  # trail
    d.at(5, 5774.50)  # time exit
    assert d.position() == 0
    for o in d.journal.orders():
        steps = [n.split(": ", 2) for n in d.notes() if n.startswith(f"order {o.order_id}: ")]
        path = [s[1] for s in steps if " -> " in s[1]]
        assert steps[0][1].startswith(f"new {o.role.value} order (Pending)"), o.order_id
        assert all(len(s) == 3 and s[2] for s in steps), "a transition without its reason"
        assert path[-1].endswith(f"-> {o.status.value}"), (o.order_id, path)
        for a, b in itertools.pairwise(path):
            assert a.split(" -> ")[1] == b.split(" -> ")[0], "a transition went unrecorded"


def test_notes_and_plans_round_trip_through_the_journal() -> None:
    j = SQLiteJournal(":memory:")
    plan = PositionPlan("e1", SYMBOL, Side.SELL, 8, 32, None, 1, 99, stop_price=5774.25)
    j.record_decision(plan.note(5, 1, "entry"))
    assert latest_plan(j.decisions(), SYMBOL) == plan
    assert latest_plan(j.decisions(), "NQH5") is None


# --- the same manager on the paper exchange (asynchronous reports, exchange-sized legs) ---
T0 = 1_709_562_600_000_000_000  # Monday 2024-03-04 08:30 CT: the market is open
NS = 1_000_000_000


def _mbo(t_s: float, *rows: tuple[int, int, float, int, int]) -> np.ndarray:
    """Hand-built MBO events (SYNTHETIC): (action, side, price, size, order id) at t_s."""
    ev = empty_events(len(rows))
    for k, (action, side, price, size, oid) in enumerate(rows):
        ev[k]["ts_event"] = ev[k]["ts_recv"] = T0 + round(t_s * NS)
        ev[k]["action"], ev[k]["side"], ev[k]["order_id"] = action, side, oid
        ev[k]["price"], ev[k]["size"] = ES.to_fixed(price), size
    return ev


def test_the_paper_exchange_partial_limit_entry_trail_and_time_exit() -> None:
    latency = LatencyConfig(feed_us=0.0, order_entry_us=1000.0, response_us=1000.0)
    broker = PaperBroker(ES, BookState.new(ES.tick_fixed), ExchangeConfig(latency=latency))
    journal = SQLiteJournal(":memory:")
    m = PositionManager("ES", broker, journal, ExitRules(min_hold_s=0, entry="limit"))
    broker.replay(_mbo(0, (ADD, BID, 4800.00, 5, 1), (ADD, ASK, 4800.25, 3, 2)))

    def at(t_s: float, bid: float, ask: float, *rows: tuple[int, int, float, int, int]) -> None:
        if rows:
            broker.replay(_mbo(t_s, *rows))
        broker.advance_to(T0 + round(t_s * NS))
        m.on_updates(*broker.take_updates())
        m.on_market(T0 + round(t_s * NS), bid, ask, bid)

    at(0, 4800.00, 4800.25)
    assert m.on_signal(Signal(T0, "t", Side.BUY, 0.8), 5, 8, 25, T0, horizon_s=60).action == (
        "entry"
    )
    at(0.01, 4800.00, 4800.25)  # our bid rests behind the 5 lots there
    at(1, 4800.00, 4800.25, (TRADE, ASK, 4800.00, 7, 0), (CANCEL, BID, 4800.00, 5, 1))
    at(1.01, 4800.00, 4800.25)  # 2 of 5 filled; the exchange sized the legs to 2
    assert m.position == broker.position("ES") == 2
    legs = {o.role: o for o in broker.working_orders("ES") if o.role is not OrderRole.ENTRY}
    assert {(r, o.qty, o.price) for r, o in legs.items()} == {
        (OrderRole.STOP, 2, 4798.00),
        (OrderRole.TARGET, 2, 4808.00),
    }
    at(5.01, 4800.00, 4800.25)  # the rest timed out; the legs stay with the 2 filled
    at(5.02, 4800.00, 4800.25)
    assert [o.role for o in broker.working_orders("ES")] == [OrderRole.STOP, OrderRole.TARGET]
    up = [(CANCEL, ASK, 4800.25, 3, 2), (ADD, BID, 4802.50, 5, 11), (ADD, ASK, 4802.75, 5, 12),
          (TRADE, BID, 4802.75, 1, 0)]  # fmt: skip
    at(10, 4802.50, 4802.75, *up)  # +10 ticks = 1.25R: the stop trails 0.5R behind
    at(10.01, 4802.50, 4802.75)
    (stop,) = [o for o in broker.working_orders("ES") if o.role is OrderRole.STOP]
    assert stop.price == 4801.50
    at(61, 4802.50, 4802.75)  # the horizon: flatten at the exchange
    at(61.01, 4802.50, 4802.75)
    assert m.position == broker.position("ES") == 0 and broker.working_orders("ES") == []
    assert all(o.status.is_final for o in journal.orders())
    assert sorted(f.fill_id for f in journal.fills()) == sorted(f.fill_id for f in broker.fills())
