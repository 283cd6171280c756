"""After a restart: one symbol's position and orders rebuilt from the journal and the
broker, and whatever is open protected before anything else happens.

The broker wins on what happened: its working orders, its fills, its position. The
journal supplies what was meant: each order's client id and role, and the plan (bracket
parameters, the stop level as it stood, deadlines). Nothing is sent twice: every order
esml sends is journaled under its client id before it is sent, so a journaled order is
looked for at the broker by that id, never sent again; one the broker never received is
closed as never sent. Nothing is lost or doubled: the broker's fills are journaled by
fill id, each once. Broker orders on the symbol that the journal does not know are
orphans and are cancelled. Then the manager's first step runs: a position without a
working stop gets one at once, at the plan's stop level, or `emergency_stop_ticks` from
the market when that level is already crossed (`PositionManager._protect`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from esml.execution.journaling import PositionPlan, latest_plan
from esml.execution.manager import PositionManager
from esml.execution.orders import OrderRole, OrderStatus, Side
from esml.execution.ports import (
    BrokerPort,
    ExecutionJournal,
    FindsByClientId,
    ListsWorkingOrders,
    ReportsUpdates,
)
from esml.execution.rules import ExitRules
from esml.execution.state_machine import Tracked
from esml.market.instruments import Instrument


class RecoveryError(RuntimeError):
    """Recovery cannot be trusted with this broker; nothing was changed."""


@dataclass(frozen=True)
class RecoveryReport:
    broker_position: int
    journal_position: int  # what the journal's fills said before the broker's were read
    found: tuple[str, ...]  # journaled orders found at the broker
    never_sent: tuple[str, ...]  # journaled intents the broker never received
    orphans: tuple[str, ...]  # broker order ids not in the journal, cancelled
    fills_added: tuple[str, ...]  # broker fill ids journaled now


def recover(
    symbol: str,
    broker: BrokerPort,
    journal: ExecutionJournal,
    rules: ExitRules,
    *,
    ts_ns: int,
    bid: float,
    ask: float,
    last: float,
    source: str = "model",
    instrument: Instrument | None = None,
) -> tuple[PositionManager, RecoveryReport]:
    """A manager carrying on where the journal and the broker say things stand. Call it
    at every start (with an empty journal it finds nothing to do)."""
    if not isinstance(broker, ListsWorkingOrders):
        raise RecoveryError(f"{type(broker).__name__} cannot list its working orders")
    m = PositionManager(symbol, broker, journal, rules, instrument=instrument, source=source)
    m.set_quote(ts_ns, bid, ask, last)

    for o in journal.orders():
        if o.symbol == symbol:
            m.tracker.load(o)
    for f in journal.fills():
        if f.symbol == symbol:
            m.restore_fill(f)
    journal_position = m.position

    found: list[str] = []
    orphans = []
    for o in broker.working_orders(symbol):
        t = m.mine(o.client_id, o.role)
        if t is None or t.broker_id is not None:
            orphans.append(o)
            continue
        m.adopt(t, o, "recovery: working at the broker")
        found.append(t.id)
    for t in m.tracker.live():
        if t.broker_id is None and isinstance(broker, FindsByClientId):
            o = broker.order_for_client(t.id)
            if o is not None:
                m.adopt(t, o, "recovery: found at the broker by its client id")
                found.append(t.id)

    added = tuple(
        f.fill_id for f in broker.fills() if f.symbol == symbol and m.take_fill(f) is not None
    )
    never_sent = [t.id for t in m.tracker.live() if t.broker_id is None]
    for t in m.tracker.live():
        if t.broker_id is None:
            _close_unknown(m, t)
    for o in orphans:
        m.tracker.note(
            ts_ns,
            o.qty,
            o.side.value,
            f"recovery: broker order {o.order_id} ({o.client_id or 'no client id'}) "
            "is not in the journal: an orphan, cancelled",
        )
        broker.cancel(o.order_id)

    held = broker.position(symbol)
    if held != m.position:
        m.tracker.note(
            ts_ns,
            abs(held),
            Side.of_position(held or 1).value,
            f"recovery: the broker holds {held:+d}, the journal's fills say "
            f"{m.position:+d}: the broker wins",
        )
        m.position = held
    _resume_plan(m, journal, rules)
    m.step()
    if isinstance(broker, ReportsUpdates):  # hear back from what the first step sent
        m.on_updates(*broker.take_updates())
    report = RecoveryReport(
        held,
        journal_position,
        tuple(found),
        tuple(never_sent),
        tuple(o.order_id for o in orphans),
        added,
    )
    return m, report


def _close_unknown(m: PositionManager, t: Tracked) -> None:
    """A journaled order the broker has no record of: an intent never sent (the process
    stopped first), or one the broker no longer lists, which its fills describe."""
    now = m.now_ns
    if t.status is OrderStatus.PENDING and not t.fills_seen:
        m.tracker.move(
            t,
            OrderStatus.CANCELLED,
            now,
            "recovery: never reached the broker (the process stopped before sending it)",
        )
    elif t.fills_seen >= t.order.qty:
        m.tracker.move(
            t,
            OrderStatus.FILLED,
            now,
            "recovery: filled, by the broker's fills",
            filled_qty=t.order.qty,
        )
    else:
        m.tracker.move(
            t,
            OrderStatus.CANCELLED,
            now,
            "recovery: the broker no longer lists it",
            filled_qty=max(t.fills_seen, t.order.filled_qty),
        )


def _resume_plan(m: PositionManager, journal: ExecutionJournal, rules: ExitRules) -> None:
    plan = latest_plan(journal.decisions(), m.symbol)
    open_ = m.position != 0 or bool(m.tracker.live())
    if not open_:
        if plan is not None and not plan.closed:
            m.set_plan(replace(plan, closed=True), "recovery: nothing open")
        m.resume(None, None)
        return
    if plan is None or plan.closed:
        plan = _plan_from_orders(m, rules)
        if plan is None:
            m.resume(None, None)
            return
        m.set_plan(plan, "recovery: an open position without a journaled plan")
    first = min((f.ts_ns for f in journal.fills() if f.order_id == plan.entry_id), default=None)
    m.resume(plan, first)


def _plan_from_orders(m: PositionManager, rules: ExitRules) -> PositionPlan | None:
    """A plan for what the journal cannot explain: the side held, the emergency distance
    as R, the live stop (if any) as the level, no time exit."""
    entries = m.tracker.live(OrderRole.ENTRY)
    if m.position != 0:
        side = Side.of_position(m.position)
    elif entries:
        side = entries[0].order.side
    else:
        return None
    stops = [t.price for t in m.tracker.live(OrderRole.STOP) if t.price is not None]
    best = (max if side is Side.BUY else min)(stops) if stops else None
    entry_id = entries[0].id if entries else f"recovered-{m.symbol}-{m.now_ns}"
    return PositionPlan(
        entry_id=entry_id,
        symbol=m.symbol,
        side=side,
        stop_ticks=rules.emergency_stop_ticks,
        target_ticks=rules.emergency_stop_ticks,
        trail_ticks=None,
        opened_ns=m.now_ns,
        exit_due_ns=None,
        stop_price=best,
    )
