"""One symbol's position, from the signal that opens it to the fill that closes it.

The engine calls these, only at decision points:

* `on_market(ts, bid, ask, last)` at every decision time: timeouts, the time exit, and
  after the minimum hold the trailing stop;
* `on_signal(signal, approved_qty, stop_ticks, target_ticks, ts, horizon_s)` for every
  signal, approved or not (exits need no approval): entries, adds, early exits;
* `on_updates(orders, fills)` with what the broker reported: the order state machine,
  the fills (journaled once, by fill id) and the position;
* `close(reason)` to close everything at market now (end of data, a halt).

At start-up (fresh or after a crash) the manager comes from `esml.execution.recovery.recover`.

The manager keeps a desired state (the position's stop and target levels, in the plan)
and after each call brings the broker's orders to it: the protective stops and targets
cover exactly the open quantity (partial fills resize them), sit at the plan's levels,
and are cancelled when nothing is open. It waits while a broker's order reports and its
fills disagree (a fill on its way), so it never acts on half the news. Every order is
journaled PENDING under its client id before it is sent (write-ahead), so a restart
(`esml.execution.recovery`) can ask the broker for it by that id and never send it twice.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, replace
from typing import Literal

from esml.alpha.strategy import Signal
from esml.execution.journaling import PositionPlan
from esml.execution.orders import (
    BracketSpec,
    Fill,
    Order,
    OrderIntent,
    OrderRole,
    OrderStatus,
    OrderType,
    Side,
    client_order_id,
)
from esml.execution.ports import (
    BrokerFailure,
    BrokerPort,
    ExecutionJournal,
    FindsByClientId,
    Modifies,
    OrderRefused,
    PlacementView,
    PlacesProtectiveStops,
)
from esml.execution.rules import ExitRules
from esml.execution.state_machine import OrderTracker, Tracked
from esml.execution.trailing import away_from_market, stop_level
from esml.market.instruments import Instrument, instrument_for

NS = 1_000_000_000
MODIFY_WAIT_NS = 2 * NS  # a modify with no answer by then is taken as refused

Action = Literal["entry", "add", "exit", "cancel", "rejected", "none"]


def leg_id(client_id: str, role: OrderRole) -> str:
    """A bracket leg's own client id; the same form `esml.broker.tradovate` sends."""
    return f"{client_id}-{role.value}"


@dataclass(frozen=True)
class Quote:
    ts_ns: int
    bid: float
    ask: float
    last: float


@dataclass(frozen=True)
class Outcome:
    """What `on_signal` did, for the engine's records (cooldowns, rejections)."""

    action: Action
    reason: str
    client_id: str | None = None


@dataclass
class _Exit:
    kind: Literal["limit", "market"]
    since_ns: int
    reason: str
    order_id: str | None = None


class PositionManager:
    def __init__(
        self,
        symbol: str,
        broker: BrokerPort,
        journal: ExecutionJournal,
        rules: ExitRules,
        *,
        instrument: Instrument | None = None,
        source: str = "model",
    ) -> None:
        self.symbol = symbol
        self.broker = broker
        self.journal = journal
        self.rules = rules
        self.instrument = instrument or instrument_for(symbol)
        self.source = source
        self.tracker = OrderTracker(journal, symbol)
        self.position = 0  # signed contracts, from the fills
        self.plan: PositionPlan | None = None
        self.quote: Quote | None = None
        self.now_ns = 0
        self._fill_ids: set[str] = set()
        self._fresh: set[str] = set()  # orders reported or filled since this process began
        self._adopted: set[str] = set()  # orders known only from their fills
        self._exit: _Exit | None = None
        self._peak: int | None = None  # ticks
        self._first_fill_ns: int | None = None
        self._serial = 0
        params = inspect.signature(broker.place).parameters
        self._priced_by_reference = "reference_price" in params
        self._can_modify = isinstance(broker, Modifies)

    # --- the engine's calls ------------------------------------------------------------
    def on_market(self, ts_ns: int, bid: float, ask: float, last: float) -> None:
        self.set_quote(ts_ns, bid, ask, last)
        self.step()

    def on_updates(self, orders: list[Order], fills: list[Fill]) -> list[Fill]:
        """Apply the broker's news; returns the fills that were new (as journaled)."""
        new = [v for f in fills if f.symbol == self.symbol and (v := self.take_fill(f))]
        for o in orders:
            t = self.tracker.by_broker(o.order_id) if o.symbol == self.symbol else None
            if t is not None:
                self._fresh.add(t.id)
                self.tracker.apply(t, o, self.now_ns)
        self.step()
        return new

    def on_signal(
        self,
        signal: Signal,
        approved_qty: int,
        stop_ticks: int,
        target_ticks: int,
        ts_ns: int,
        horizon_s: float | None = None,
    ) -> Outcome:
        """`approved_qty` is what the gate stack allowed (0: not approved; an exit needs
        no approval); `stop_ticks` / `target_ticks` the session budget's bracket, used
        when the signal names none; `horizon_s` the prediction horizon (time exit)."""
        if approved_qty < 0 or stop_ticks < 1 or target_ticks < 1:
            raise ValueError(
                f"bad signal inputs: qty {approved_qty}, stop {stop_ticks}, target {target_ticks}"
            )
        if horizon_s is not None and not horizon_s > 0:
            raise ValueError(f"the prediction horizon must be positive, got {horizon_s}")
        if self.quote is None:
            raise RuntimeError("on_signal before any on_market: no price to act at")
        self.now_ns = max(self.now_ns, ts_ns)
        plan = self.plan
        if plan is None:
            if self.position != 0 or self.tracker.live():
                return Outcome("none", "orders or a position without a plan: waiting")
            if signal.side is None or approved_qty == 0:
                return Outcome("none", "flat, and the signal asks for no entry")
            return self._enter(signal, approved_qty, stop_ticks, target_ticks, horizon_s)
        opposite = signal.side is plan.side.opposite
        flip = self.rules.flip_exit_confidence
        if signal.exit_position or (opposite and flip is not None and signal.confidence >= flip):
            why = signal.reason or (
                "exit asked by the signal"
                if signal.exit_position
                else f"strong opposite signal ({signal.confidence:.2f})"
            )
            return self._early_exit(why)
        if signal.side is plan.side and approved_qty > 0:
            return self._add(signal, approved_qty, horizon_s)
        return Outcome("none", "position open: the signal changes nothing")

    def close(self, reason: str) -> None:
        """Close everything now, at market, whatever the rules would wait for: the end of
        the data, a halt. A working entry with nothing filled is cancelled."""
        if self.position == 0:
            for t in self.tracker.live(OrderRole.ENTRY):
                self._cancel(t, reason)
            return
        ex = self._exit
        if ex is not None and ex.order_id and self.tracker.get(ex.order_id).live:
            return  # a market exit is already on its way
        self._market_exit(reason)

    # --- used by the engine's loop and by recovery -------------------------------------
    def set_quote(self, ts_ns: int, bid: float, ask: float, last: float) -> None:
        if not all(math.isfinite(v) and v > 0 for v in (bid, ask, last)) or bid > ask:
            raise ValueError(f"unusable quote: bid {bid}, ask {ask}, last {last}")
        self.quote = Quote(ts_ns, bid, ask, last)
        self.now_ns = max(self.now_ns, ts_ns)

    def step(self) -> None:
        """Evaluate the rules and bring the broker's orders to the plan."""
        if self.quote is None:
            return
        self._expire_modifies()
        self._resolve_unresolved()
        self._entry_timeouts()
        self._exit_rules()
        self._reconcile()
        self._close_if_done()

    def take_fill(self, f: Fill) -> Fill | None:
        """Journal a fill once (by its fill id) and count it into the position."""
        if f.fill_id in self._fill_ids:
            return None
        t = self.tracker.by_broker(f.order_id) or self._owner(f)
        view = f if t is None else replace(f, order_id=t.id, client_id=t.id, role=t.role)
        new = self.journal.record_fill(view)
        self._fill_ids.add(f.fill_id)
        if not new:
            return None
        self.position += f.side.sign * f.qty
        if t is not None:
            t.fills_seen += f.qty
            self._fresh.add(t.id)
            if t.role is OrderRole.ENTRY and self._first_fill_ns is None:
                self._first_fill_ns = f.ts_ns
            if t.id in self._adopted and t.live:
                self._fills_tell_status(t, f)
        else:
            self.tracker.note(
                self.now_ns,
                f.qty,
                f.side.value,
                f"fill {f.fill_id} of an order esml did not send "
                f"({f.order_id}): counted, the broker's position wins",
            )
        return view

    def set_plan(self, plan: PositionPlan | None, why: str) -> None:
        """Journal the plan (the decision log keeps every version) and adopt it."""
        if plan is not None:
            note = plan.note(self.now_ns, abs(self.position), why)
            self.journal.record_decision(note)
        self.plan = None if plan is None or plan.closed else plan

    def mine(self, client_id: str, role: OrderRole) -> Tracked | None:
        """Our order behind a broker's client id: its own (a Tradovate leg has one) or,
        for a bracket leg that shares its entry's (the paper broker), the leg's."""
        if not client_id:
            return None
        for cid in (client_id, leg_id(client_id, role)):
            if cid in self.tracker and self.tracker.get(cid).role is role:
                return self.tracker.get(cid)
        return None

    def adopt(self, t: Tracked, o: Order, why: str) -> None:
        """Bind our order to the broker's and take the broker's view of it."""
        self.tracker.bind(t, o.order_id)
        self._fresh.add(t.id)
        self.tracker.apply(t, o, self.now_ns, why)

    def restore_fill(self, f: Fill) -> None:
        """A fill read back from the journal (a restart): counted, not written."""
        if f.fill_id in self._fill_ids:
            return
        self._fill_ids.add(f.fill_id)
        self.position += f.side.sign * f.qty
        if f.order_id in self.tracker:
            self.tracker.get(f.order_id).fills_seen += f.qty

    def resume(self, plan: PositionPlan | None, first_fill_ns: int | None) -> None:
        """Carry on with the journaled plan after a restart. The best price since the
        minimum hold is not journaled: it starts again from the market."""
        self.plan = plan
        self._first_fill_ns = first_fill_ns
        if plan is not None and plan.exit_reason is not None:
            self._exit = _Exit("limit", plan.exit_since_ns or self.now_ns, plan.exit_reason)

    def held(self) -> bool:
        """The minimum hold is over (the first entry filled long enough ago)."""
        first = self._first_fill_ns
        return first is not None and self.now_ns - first >= self.rules.min_hold_s * NS

    # --- entries and adds ----------------------------------------------------------------
    def _enter(
        self, signal: Signal, qty: int, stop_ticks: int, target_ticks: int, horizon_s: float | None
    ) -> Outcome:
        assert signal.side is not None
        cid = client_order_id(self.source, self.symbol, signal.ts_ns, "entry")
        if cid in self.tracker:
            return Outcome("none", "this signal was already acted on", cid)
        r = signal.stop_ticks or stop_ticks
        target = signal.target_ticks or target_ticks
        if signal.target_ticks is None and signal.trail_ticks is None and self.rules.take_profit_r:
            target = math.ceil(self.rules.take_profit_r * r - 1e-9)
        plan = PositionPlan(
            entry_id=cid,
            symbol=self.symbol,
            side=signal.side,
            stop_ticks=r,
            target_ticks=target,
            trail_ticks=signal.trail_ticks,
            opened_ns=signal.ts_ns,
            exit_due_ns=self._due(horizon_s),
        )
        why = f"{signal.source}: {signal.side.value} {qty} ({signal.reason or 'signal'})"
        self.set_plan(plan, f"entry: {why}")
        return self._send_entry(cid, signal.side, qty, r, target, why, add=False)

    def _add(self, signal: Signal, qty: int, horizon_s: float | None) -> Outcome:
        plan, q = self.plan, self.quote
        assert plan is not None and q is not None
        if plan.adds >= self.rules.max_adds:
            return Outcome("none", f"adds used up ({plan.adds} of {self.rules.max_adds})")
        if self.tracker.live(OrderRole.ENTRY) or self._exit is not None or self.position == 0:
            return Outcome("none", "no add while an entry or an exit is on its way")
        entry = self._entry_ticks()
        if entry is None or plan.stop_price is None or plan.target_price is None:
            return Outcome("none", "no add before the bracket is in place")
        sign = plan.side.sign
        profit = (self._ticks(q.bid if sign > 0 else q.ask) - entry) * sign
        if profit <= 0 or profit < self.rules.add_min_profit_r * plan.stop_ticks:
            return Outcome("none", f"no add: {profit:+.1f} ticks is not enough profit")
        cid = client_order_id(self.source, self.symbol, signal.ts_ns, "add", plan.adds + 1)
        if cid in self.tracker:
            return Outcome("none", "this signal was already acted on", cid)
        ref = self._ticks(self._entry_price(plan.side))
        stop = round((ref - self._ticks(plan.stop_price)) * sign)
        target = round((self._ticks(plan.target_price) - ref) * sign)
        if stop < 1 or target < 1:
            return Outcome("none", "the position's levels leave no room for an add's bracket")
        due = self._due(horizon_s) or plan.exit_due_ns
        why = f"{signal.source}: add {qty} ({signal.reason or 'same-side signal'})"
        self.set_plan(replace(plan, adds=plan.adds + 1, exit_due_ns=due), why)
        return self._send_entry(cid, plan.side, qty, stop, target, why, add=True)

    def _send_entry(
        self,
        cid: str,
        side: Side,
        qty: int,
        stop_ticks: int,
        target_ticks: int,
        why: str,
        *,
        add: bool,
    ) -> Outcome:
        limit = self.rules.entry == "limit"
        ref = self._entry_price(side)
        now = self.now_ns
        kind = OrderType.LIMIT if limit else OrderType.MARKET
        stop_id, target_id = leg_id(cid, OrderRole.STOP), leg_id(cid, OrderRole.TARGET)
        entry = self.tracker.new(
            self._order(cid, side, qty, kind, OrderRole.ENTRY, price=ref if limit else None), why
        )
        stop = self.tracker.new(
            self._order(stop_id, side.opposite, qty, OrderType.STOP, OrderRole.STOP,
                        parent=cid, oco=target_id),
            f"bracket of {cid}",
        )  # fmt: skip
        target = self.tracker.new(
            self._order(target_id, side.opposite, qty, OrderType.LIMIT, OrderRole.TARGET,
                        parent=cid, oco=stop_id),
            f"bracket of {cid}",
        )  # fmt: skip
        intent = OrderIntent(
            cid,
            self.symbol,
            side,
            qty,
            kind,
            ref if limit else None,
            BracketSpec(stop_ticks, target_ticks),
            why,
            now,
        )
        action: Action = "add" if add else "entry"
        try:
            placement = self._place(intent, ref)
        except OrderRefused as e:
            for t in (entry, stop, target):
                self.tracker.move(t, OrderStatus.REJECTED, now, e.reason, reject_reason=e.reason)
            if self.plan is not None:
                plan = self.plan
                again = replace(plan, adds=plan.adds - 1) if add else replace(plan, closed=True)
                self.set_plan(again, f"{'add' if add else 'entry'} refused: {e.reason}")
            return Outcome("rejected", e.reason, cid)
        except BrokerFailure as e:
            for t in (entry, stop, target):
                t.unresolved = True
            self.tracker.note(now, qty, side.value, f"order {cid}: sent, answer lost: {e}")
            return Outcome(action, f"sent; the broker's answer was lost ({e})", cid)
        self._bind_placement(placement, entry, stop, target)
        return Outcome(action, why, cid)

    def _place(self, intent: OrderIntent, reference: float) -> PlacementView:
        if self._priced_by_reference:  # the bracket of a market entry is priced from it
            return self.broker.place(intent, reference_price=reference)  # type: ignore[call-arg]
        return self.broker.place(intent)

    def _bind_placement(
        self, p: PlacementView, entry: Tracked, stop: Tracked, target: Tracked
    ) -> None:
        for t, o in ((entry, p.entry), (stop, p.stop), (target, p.target)):
            if o is None:
                self.tracker.move(
                    t, OrderStatus.CANCELLED, self.now_ns, "the broker placed no such bracket leg"
                )
                continue
            self.tracker.bind(t, o.order_id)
            self._fresh.add(t.id)
            self.tracker.apply(t, o, self.now_ns, "placed")

    # --- exits -----------------------------------------------------------------------------
    def _early_exit(self, why: str) -> Outcome:
        if self.position == 0:
            for t in self.tracker.live(OrderRole.ENTRY):
                self._cancel(t, f"exit before the entry filled: {why}")
            return Outcome("cancel", why)
        if not self.held():
            return Outcome("none", f"minimum hold ({self.rules.min_hold_s:g} s): no early exit")
        if self._exit is not None:
            return Outcome("none", "already exiting")
        self._start_exit(why)
        return Outcome("exit", why, self._exit.order_id if self._exit else None)

    def _start_exit(self, why: str) -> None:
        plan, q = self.plan, self.quote
        assert plan is not None and q is not None
        targets = [t for t in self._active_exits() if t.role is OrderRole.TARGET]
        if self.rules.exit == "limit" and targets and self._can_modify:
            touch = q.ask if plan.side is Side.BUY else q.bid
            self._exit = _Exit("limit", self.now_ns, why)
            self.set_plan(
                replace(plan, target_price=touch, exit_reason=why, exit_since_ns=self.now_ns),
                f"exit by a limit at the touch ({touch}): {why}",
            )
            return
        self._market_exit(why)

    def _market_exit(self, why: str) -> None:
        """Close the position at market: the broker cancels the symbol's working orders and
        closes what it holds, in one request."""
        if self.position == 0:
            return
        cid = self._new_id("exit")
        now, qty = self.now_ns, abs(self.position)
        side = Side.of_position(-self.position)
        t = self.tracker.new(
            self._order(cid, side, qty, OrderType.MARKET, OrderRole.EXIT),
            why,
        )
        cancelling = [
            o
            for o in self.tracker.live()
            if o is not t
            and o.broker_id is not None
            and o.status in (OrderStatus.WORKING, OrderStatus.PARTIALLY_FILLED)
        ]
        for o in cancelling:
            self.tracker.move(o, OrderStatus.CANCEL_PENDING, now, f"closing the position: {why}")
        self._exit = _Exit("market", now, why, cid)
        try:
            closing = self.broker.flatten(self.symbol, cid, why)
        except OrderRefused as e:
            self.tracker.move(t, OrderStatus.REJECTED, now, e.reason, reject_reason=e.reason)
            for o in cancelling:
                self._cancel_refused(o, e.reason)
            self._exit = None
            return
        except BrokerFailure as e:
            t.unresolved = True
            self.tracker.note(now, qty, side.value, f"order {cid}: sent, answer lost: {e}")
            return
        if closing is None:
            self.tracker.move(t, OrderStatus.CANCELLED, now, "the broker held nothing to close")
            return
        self.tracker.bind(t, closing.order_id)
        self._fresh.add(t.id)
        self.tracker.apply(t, closing, now, "placed")

    def _exit_rules(self) -> None:
        plan, q = self.plan, self.quote
        if plan is None or q is None or self.position == 0:
            return
        if self._exit is not None:
            ex = self._exit
            if ex.kind == "limit" and self.now_ns - ex.since_ns >= self.rules.exit_timeout_s * NS:
                self._market_exit(
                    f"exit timeout ({self.rules.exit_timeout_s:g} s), at market: {ex.reason}"
                )
            elif (
                ex.kind == "market"
                and ex.order_id
                and not self.tracker.get(ex.order_id).live
                and self._consistent()
            ):
                self._exit = None  # it ended with the position still open: try again
                self._market_exit(f"again: {ex.reason}")
            return
        if plan.exit_due_ns is not None and self.now_ns >= plan.exit_due_ns:
            self._start_exit("time exit at the prediction horizon")
            return
        if not self.held():
            return
        self._trail(plan, q)

    def _trail(self, plan: PositionPlan, q: Quote) -> None:
        sign = plan.side.sign
        px = self._ticks(q.bid if sign > 0 else q.ask)
        self._peak = px if self._peak is None else (max if sign > 0 else min)(self._peak, px)
        traded = self._ticks(q.last)  # an exchange triggers stops on trades
        reach = min(px, traded) if sign > 0 else max(px, traded)
        entry = self._entry_ticks()
        if entry is None:
            return
        level = stop_level(
            self.rules, plan.side, entry, self._peak, plan.stop_ticks, plan.trail_ticks
        )
        if level is None:
            return
        if plan.stop_price is not None and (level.ticks - self._ticks(plan.stop_price)) * sign <= 0:
            return  # never loosen
        if (reach - level.ticks) * sign <= 0:
            self._market_exit(
                f"{level.stage}: the stop level {self._price(level.ticks)} was "
                "crossed between decision points"
            )
            return
        self.set_plan(
            replace(plan, stop_price=self._price(level.ticks)),
            f"{level.stage}: stop to {self._price(level.ticks)}",
        )

    # --- bringing the broker's orders to the plan ---------------------------------------
    def _reconcile(self) -> None:
        if not self._consistent():
            return  # fills on their way: act on the whole news
        ex = self._exit
        if ex is not None and ex.order_id and self.tracker.get(ex.order_id).live:
            return  # the broker is closing the position
        if ex is not None and ex.kind == "market" and self.plan is not None:
            # closing at market, and the liquidation found the broker flat (or ended short):
            # the fills that flattened it are on their way, and the exit rules ask again.
            # A stop placed now could sit on a flat account and open a position the other way
            return
        self._adopt_levels()
        exits = self._active_exits()
        if self.position == 0:
            active = {t.id for t in exits}
            entry_live = bool(self.tracker.live(OrderRole.ENTRY))
            for t in self.tracker.live(OrderRole.STOP, OrderRole.TARGET):
                if t.id in active or not entry_live:
                    self._cancel(t, "nothing open to protect")
            return
        side = Side.of_position(self.position)
        if self.plan is not None and side is not self.plan.side:
            self._market_exit(f"the position is {self.position:+d}, the wrong way round")
            return
        need = abs(self.position)
        self._size([t for t in exits if t.role is OrderRole.STOP], need, protect=True)
        self._size([t for t in exits if t.role is OrderRole.TARGET], need, protect=False)
        if self.plan is None:
            return
        for t in self._active_exits():
            level = self.plan.stop_price if t.role is OrderRole.STOP else self.plan.target_price
            if level is not None and (t.price is None or abs(t.price - level) > 1e-9):
                self._modify(t, price=level, why="to the plan's level")

    def _size(self, orders: list[Tracked], need: int, *, protect: bool) -> None:
        """Make `orders` cover exactly `need` contracts: trim the newest, grow the oldest,
        or (stops) add a stand-alone stop."""
        covered = sum(t.remaining for t in orders)
        if covered > need:
            excess = covered - need
            for t in reversed(orders):
                if excess == 0:
                    break
                rem = t.remaining
                if rem <= excess:
                    self._cancel(t, f"covers {rem} more than the {need} open")
                    excess -= rem
                else:
                    self._modify(
                        t, qty=t.order.filled_qty + rem - excess, why=f"resize to the {need} open"
                    )
                    excess = 0
        elif covered < need:
            gap = need - covered
            if orders and self._can_modify:
                t = orders[0]
                self._modify(
                    t, qty=t.order.filled_qty + t.remaining + gap, why=f"resize to the {need} open"
                )
            elif protect:
                self._protect(gap)

    def _protect(self, qty: int) -> None:
        q = self.quote
        assert q is not None
        side = Side.of_position(self.position)
        sign = side.sign
        if not isinstance(self.broker, PlacesProtectiveStops):
            self._market_exit(
                f"{qty} contracts without a stop, and this broker cannot place a stand-alone stop"
            )
            return
        px = self._ticks(q.bid if sign > 0 else q.ask)
        level = self.plan.stop_price if self.plan is not None else None
        why = f"re-protect {qty} contracts at the plan's stop"
        if level is None or (px - self._ticks(level)) * sign <= 0:
            emergency = away_from_market(side, px - sign * self.rules.emergency_stop_ticks)
            why = (
                f"re-protect {qty} contracts {self.rules.emergency_stop_ticks} ticks from "
                f"the market (the plan's stop {level} is already crossed or unknown)"
            )
            level = self._price(emergency)
        cid = self._new_id("protect", OrderRole.STOP)
        order = self._order(cid, side.opposite, qty, OrderType.STOP, OrderRole.STOP, price=level)
        t = self.tracker.new(order, why)
        try:
            o = self.broker.protect(self.symbol, side.opposite, qty, level, cid)
        except OrderRefused as e:
            self.tracker.move(
                t, OrderStatus.REJECTED, self.now_ns, e.reason, reject_reason=e.reason
            )
            self._market_exit(f"could not re-protect ({e.reason})")
            return
        except BrokerFailure as e:
            t.unresolved = True
            self.tracker.note(self.now_ns, qty, side.value, f"order {cid}: sent, answer lost: {e}")
            return
        self.tracker.bind(t, o.order_id)
        self._fresh.add(t.id)
        self.tracker.apply(t, o, self.now_ns, "placed")
        if self.plan is not None and self.plan.stop_price != level:
            self.set_plan(replace(self.plan, stop_price=level), why)

    def _modify(
        self, t: Tracked, *, price: float | None = None, qty: int | None = None, why: str
    ) -> None:
        if not self._can_modify or t.broker_id is None or t.status is OrderStatus.PENDING:
            return
        what = ", ".join(
            s
            for s in (
                f"price {price}" if price is not None else "",
                f"quantity {qty}" if qty is not None else "",
            )
            if s
        )
        self.tracker.note(
            self.now_ns,
            t.order.qty,
            t.order.side.value,
            f"order {t.id}: modify to {what} requested: {why}",
        )
        try:
            self.broker.modify(t.broker_id, price=price, qty=qty)  # type: ignore[attr-defined]
        except BrokerFailure as e:
            self.tracker.note(
                self.now_ns, t.order.qty, t.order.side.value, f"order {t.id}: modify refused: {e}"
            )
            return
        if price is not None:
            t.want_price = price
        if qty is not None:
            t.want_qty = qty
        t.want_since_ns = self.now_ns

    def _cancel(self, t: Tracked, why: str) -> None:
        if t.broker_id is None or t.status not in (
            OrderStatus.WORKING,
            OrderStatus.PARTIALLY_FILLED,
        ):
            return
        self.tracker.move(t, OrderStatus.CANCEL_PENDING, self.now_ns, why)
        try:
            self.broker.cancel(t.broker_id)
        except BrokerFailure as e:
            self._cancel_refused(t, str(e))

    def _cancel_refused(self, t: Tracked, why: str) -> None:
        back = t.before_cancel or OrderStatus.WORKING
        self.tracker.move(t, back, self.now_ns, f"cancel refused: {why}")

    # --- housekeeping ----------------------------------------------------------------------
    def _entry_timeouts(self) -> None:
        limit_ns = self.rules.entry_timeout_s * NS
        for t in self.tracker.live(OrderRole.ENTRY):
            if t.order.order_type is OrderType.LIMIT and self.now_ns - t.sent_ns >= limit_ns:
                self._cancel(t, f"entry timeout: unfilled after {self.rules.entry_timeout_s:g} s")

    def _expire_modifies(self) -> None:
        for t in self.tracker.live():
            if (t.want_price is not None or t.want_qty is not None) and (
                self.now_ns - t.want_since_ns >= MODIFY_WAIT_NS
            ):
                t.want_price = t.want_qty = None

    def _resolve_unresolved(self) -> None:
        """Orders whose send had no answer: ask the broker by client id."""
        for t in self.tracker.all():
            if not t.unresolved or t.broker_id is not None:
                t.unresolved = False if t.broker_id is not None else t.unresolved
                continue
            if not isinstance(self.broker, FindsByClientId):
                continue
            try:
                o = self.broker.order_for_client(t.id)
            except BrokerFailure:
                continue
            if o is not None:
                self.adopt(t, o, "found at the broker by its client id")
            elif t.role is OrderRole.EXIT and self.position == 0:
                # a liquidation carries no client id: its fills, adopted, would have bound it
                self.tracker.move(t, OrderStatus.CANCELLED, self.now_ns, "nothing is left to close")
            else:
                self.tracker.move(
                    t,
                    OrderStatus.CANCELLED,
                    self.now_ns,
                    "the broker has no order under this client id: never sent",
                )
            t.unresolved = False

    def _close_if_done(self) -> None:
        if self.plan is None or self.position != 0 or self.tracker.live():
            return
        if not self._consistent():
            return
        self.set_plan(replace(self.plan, closed=True), "position closed")
        self._exit = None
        self._peak = None
        self._first_fill_ns = None

    def _adopt_levels(self) -> None:
        """The bracket's first levels are the broker's (priced from the reference or the
        fill): the plan takes them from the entry's legs once they have prices."""
        plan = self.plan
        if plan is None or (plan.stop_price is not None and plan.target_price is not None):
            return
        levels = {}
        for role in (OrderRole.STOP, OrderRole.TARGET):
            lid = leg_id(plan.entry_id, role)
            if lid in self.tracker and self.tracker.get(lid).order.price is not None:
                levels[role] = self.tracker.get(lid).order.price
        stop = plan.stop_price if plan.stop_price is not None else levels.get(OrderRole.STOP)
        target = (
            plan.target_price if plan.target_price is not None else levels.get(OrderRole.TARGET)
        )
        if (stop, target) != (plan.stop_price, plan.target_price):
            self.set_plan(
                replace(plan, stop_price=stop, target_price=target), "the broker's bracket levels"
            )

    def _fills_tell_status(self, t: Tracked, f: Fill) -> None:
        """An order known only from its fills (a liquidation carries no client id)."""
        filled = t.fills_seen
        status = OrderStatus.FILLED if filled >= t.order.qty else OrderStatus.PARTIALLY_FILLED
        qty = max(t.order.qty, filled)
        avg = (t.order.avg_fill_price * t.order.filled_qty + f.price * f.qty) / max(
            t.order.filled_qty + f.qty, 1
        )
        self.tracker.move(
            t,
            status,
            self.now_ns,
            f"fill {f.fill_id} at the broker",
            filled_qty=filled,
            qty=qty,
            avg_fill_price=avg,
        )

    def _owner(self, f: Fill) -> Tracked | None:
        """The order a fill belongs to when its broker id is not bound yet: by the client id
        the broker reports, else an exit of ours still waiting for its broker id."""
        if f.client_id:
            t = self.mine(f.client_id, f.role)
            if t is None or t.broker_id is not None:
                return None
            self.tracker.bind(t, f.order_id)
            return t
        for t in self.tracker.all():
            owed = t.live or t.order.filled_qty > t.fills_seen
            if (
                t.role is OrderRole.EXIT
                and t.broker_id is None
                and t.order.side is f.side
                and t.status is not OrderStatus.REJECTED
                and owed
            ):
                self.tracker.bind(t, f.order_id)
                self._adopted.add(t.id)
                return t
        return None

    def _consistent(self) -> bool:
        """Every order's reported fills have arrived as fills, and no fill is ahead of
        its order's report. Orders that ended consistent are not looked at again."""
        done = set()
        for i in self._fresh:
            t = self.tracker.get(i)
            if i in self._adopted or t.order.filled_qty == t.fills_seen:
                if not t.live:
                    done.add(i)
                continue
            return False
        self._fresh -= done
        return True

    def _active_exits(self) -> list[Tracked]:
        """Stops and targets that protect filled contracts: stand-alone ones, and bracket
        legs whose entry has filled (a leg of an unfilled entry is only armed)."""
        out = []
        for t in self.tracker.live(OrderRole.STOP, OrderRole.TARGET):
            if t.status is OrderStatus.CANCEL_PENDING:
                continue
            parent = t.order.parent_id
            if parent is None or (parent in self.tracker and self.tracker.get(parent).fills_seen):
                out.append(t)
        return out

    def _order(self, cid: str, side: Side, qty: int, kind: OrderType, role: OrderRole, *,
               price: float | None = None, parent: str | None = None,
               oco: str | None = None) -> Order:  # fmt: skip
        """An intent as the journal first records it: esml's id is its client id."""
        return Order(cid, cid, self.symbol, side, qty, kind, role, price=price,
                     parent_id=parent, oco_id=oco, ts_ns=self.now_ns)  # fmt: skip

    def _new_id(self, what: str, role: OrderRole | None = None) -> str:
        """A client id no order in the journal has (a restart at the same instant must
        not reuse the id of an exit journaled before the crash)."""
        while True:
            self._serial += 1
            cid = client_order_id(self.source, self.symbol, what, self.now_ns, self._serial)
            cid = leg_id(cid, role) if role is not None else cid
            if cid not in self.tracker:
                return cid

    # --- prices ------------------------------------------------------------------------------
    def _due(self, horizon_s: float | None) -> int | None:
        if not self.rules.time_exit or horizon_s is None:
            return None
        return self.now_ns + round(horizon_s * NS)

    def _entry_price(self, side: Side) -> float:
        """Where an entry goes: a limit joins the touch on its own side; a market order is
        priced (its bracket's reference) where it would fill."""
        q = self.quote
        assert q is not None
        own, far = (q.bid, q.ask) if side is Side.BUY else (q.ask, q.bid)
        return own if self.rules.entry == "limit" else far

    def _entry_ticks(self) -> float | None:
        """The first entry's average fill, in ticks: the reference of every R-multiple."""
        if self.plan is None or self.plan.entry_id not in self.tracker:
            return None
        e = self.tracker.get(self.plan.entry_id).order
        return self._ticks(e.avg_fill_price) if e.filled_qty and e.avg_fill_price else None

    def _ticks(self, price: float) -> float:
        t = price / self.instrument.tick_size
        return float(round(t)) if abs(t - round(t)) < 1e-6 else t

    def _price(self, ticks: float) -> float:
        return round(ticks) * self.instrument.tick_size
