"""One set of limits for every order: the engine's entries reserved on the shared account.

The tick engine and the TradingView path (`lambdas/risk`) trade the same account, so an
entry of the engine passes the same gate code against the same DynamoDB item as an alert,
and is reserved there in the same conditional write (`AccountStore.update`): a concurrent
alert and an engine signal can never together exceed `max_position` or the daily loss
limit. The gates see the contract's worst case (`SharedAccount.gate_view`) and no market
context (the engine's own gate stack, with the book, has already passed the signal).

It runs in process, on the same table, wrapped around the engine's broker: `place` gates
and reserves before the order is sent, refuses with the gate's reason (the position
manager journals it as a rejection) and follows the send's outcome: placed (kept until
fills consume it, through `esml.decision.fills`), refused (released), answer lost (kept,
UNKNOWN, until the broker is asked by client id). An entry that ends unfilled (cancelled,
rejected) is released at the next look at the broker's news, after its fills were booked.
Exits, stop moves and flattening pass untouched: reducing risk is never blocked.

Time is the server's, as on the alert path: the gates, the cooldown and each
reservation's stamp (its age decides when an unanswered order may be given up) read the
store's clock, never the intent's market time. That clock is the wall clock, except for
the paper broker, whose simulated exchange is the server (a replay's time).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from esml.broker.base import OrderRejected, Placement
from esml.broker.paper import PaperBroker
from esml.config import RiskConfig
from esml.decision.account_store import AccountStore
from esml.decision.broker_sync import mark, release
from esml.decision.fills import FillLedger
from esml.decision.gates import GateStack, Verdict
from esml.decision.proposal import Proposal, Reservation, ReservationStatus, SharedAccount
from esml.decision.protections import note_entry
from esml.engine.engine import EngineBroker
from esml.execution.orders import Fill, Order, OrderIntent, OrderStatus
from esml.execution.ports import BrokerFailure, OrderRefused
from esml.journal.dynamodb import DynamoDBJournal
from esml.journal.ledger import LedgerJournal


class SharedRiskBroker:
    """`broker` with each entry gated and reserved on `account` in `store` first."""

    def __init__(self, broker: EngineBroker, store: AccountStore, account: str,
                 gates: GateStack, source: str = "model") -> None:  # fmt: skip
        self.broker = broker
        self.store = store
        self.account = account
        self.gates = gates
        self.source = source
        self._priced = "reference_price" in inspect.signature(broker.place).parameters
        self._reserved: set[str] = set()
        self._release_next: list[str] = []

    def place(self, intent: OrderIntent, reference_price: float | None = None) -> Placement:
        verdict = self.reserve(intent)
        if not verdict.approved:
            raise OrderRejected(intent.client_id, f"shared risk, {verdict.gate}: {verdict.reason}")
        try:
            if self._priced:
                placement = self.broker.place(intent, reference_price=reference_price)  # type: ignore[call-arg]
            else:
                placement = self.broker.place(intent)
        except OrderRefused:
            self._release(intent.client_id)
            raise
        except BrokerFailure:
            mark(self.store, self.account, intent.client_id, ReservationStatus.UNKNOWN)
            raise
        mark(self.store, self.account, intent.client_id, ReservationStatus.PLACED)
        return placement

    def reserve(self, intent: OrderIntent) -> Verdict:
        """Gate `intent` on the shared worst case and reserve it, in one conditional write.

        Stamped with the server's clock (`AccountStore.now_ns`), not the intent's market
        time: a reservation's age, its expiry and the cooldown are server-clock concepts,
        shared with the alert path, which stamps the same way."""
        now_ns = self.store.now_ns()
        proposal = Proposal(intent.symbol, intent.side, intent.qty, self.source, now_ns)

        def decide(state: SharedAccount) -> Verdict:
            if intent.client_id in state.reservations:  # a retry: reserved before
                return Verdict(True, qty=intent.qty)
            v = self.gates.evaluate(proposal, state.gate_view(intent.symbol, intent.side))
            if v.approved and v.qty < intent.qty:
                return Verdict(False, v.caps[-1][0], f"{v.caps[-1][1]} (capped to {v.qty})")
            if v.approved:
                state.reservations[intent.client_id] = Reservation(
                    intent.client_id, intent.symbol, intent.side.sign * intent.qty, intent.qty,
                    False, ReservationStatus.PENDING, now_ns, state.risk.last_entry_ns,
                )  # fmt: skip
                note_entry(state.risk, now_ns)
            return v

        _, verdict = self.store.update(self.account, decide)
        if verdict.approved:
            self._reserved.add(intent.client_id)
        return verdict

    def take_updates(self) -> tuple[list[Order], list[Fill]]:
        for cid in self._release_next:  # their fills were booked at the last look
            self._release(cid)
        orders, fills = self.broker.take_updates()
        self._release_next = [
            o.client_id
            for o in orders
            if o.client_id in self._reserved
            and o.status in (OrderStatus.CANCELLED, OrderStatus.REJECTED)
        ]
        return orders, fills

    def _release(self, client_id: str) -> None:
        state = self.store.load(self.account)
        r = state.reservations.get(client_id)
        if r is not None:
            release(self.store, self.account, r)
        self._reserved.discard(client_id)

    def __getattr__(self, name: str) -> Any:  # the rest of the broker, untouched
        return getattr(self.broker, name)


class ReplaysTime(Protocol):
    now_ns: int  # the time of the last event it has seen


def exchange_clock(exchange: ReplaysTime) -> Callable[[], datetime]:
    """A simulated exchange's clock (the paper broker's, the Tradovate simulator's replay):
    the server's time when the market is a replay."""
    return lambda: datetime.fromtimestamp(exchange.now_ns / 1e9, UTC)


def on_shared_account(
    broker: EngineBroker,
    *,
    orders_table: Any,
    fills_table: Any,
    risk_table: Any,
    account: str,
    gates: GateStack,
    risk: RiskConfig,
    clock: Callable[[], datetime] | None = None,
) -> tuple[SharedRiskBroker, LedgerJournal]:
    """The engine's broker and journal on the AWS tables (boto3 Table resources): entries
    reserved on the shared account, fills booked into it once each, orders, signals and
    decisions in the orders table. `clock` is the server's: by default the wall clock,
    and for the paper broker its simulated exchange's (a replay's time: that exchange is
    the server then)."""
    if clock is None and isinstance(broker, PaperBroker):
        clock = exchange_clock(broker)
    store = AccountStore(risk_table) if clock is None else AccountStore(risk_table, clock)
    ledger = FillLedger(store, fills_table, risk)
    journal = LedgerJournal(DynamoDBJournal(orders_table, fills_table), ledger, account)
    return SharedRiskBroker(broker, store, account, gates), journal
