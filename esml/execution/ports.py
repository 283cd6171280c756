"""What the execution layer needs from a broker and from a journal, named here.

`esml.execution` sits below `esml.broker` and `esml.journal` in the package order, so it
states the shapes it calls instead of importing them: every `esml.broker.base.Broker`
satisfies `BrokerPort` and every `esml.journal.base.Journal` satisfies `ExecutionJournal`.
The broker failures are defined here for the same reason; `esml.broker.base.BrokerError`
and `OrderRejected` derive from them, so the execution layer can catch what brokers raise.

Beyond the core methods every broker has, each capability below is optional: the
execution layer checks for it with `hasattr` and falls back when it is missing (no
`modify`: stops cannot trail; no `protect`: an unprotected position is closed at market
instead of re-protected).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from esml.execution.orders import Fill, Order, OrderIntent, Side


class BrokerFailure(RuntimeError):
    """The broker could not be reached or answered with something unusable: the outcome
    of the request is unknown."""


class OrderRefused(BrokerFailure):
    """The broker refused the order; nothing was placed. Raised by brokers as
    `esml.broker.base.OrderRejected`, which sets `client_id` and `reason`."""

    client_id: str
    reason: str


class PlacementView(Protocol):
    """`esml.broker.base.Placement` as the execution layer reads it."""

    @property
    def entry(self) -> Order: ...

    @property
    def stop(self) -> Order | None: ...

    @property
    def target(self) -> Order | None: ...


class BrokerPort(Protocol):
    """The core of `esml.broker.base.Broker`."""

    def place(self, intent: OrderIntent) -> PlacementView: ...

    def cancel(self, order_id: str) -> None: ...

    def flatten(self, symbol: str, client_id: str, reason: str) -> Order | None: ...

    def position(self, symbol: str) -> int: ...

    def fills(self) -> list[Fill]: ...


@runtime_checkable
class Modifies(Protocol):
    def modify(self, order_id: str, *, price: float | None = None, qty: int | None = None) -> None:
        """A new limit/stop price and/or total quantity for a working order. A broker that
        answers later reports the change (or nothing, when refused) among its updates."""
        ...


@runtime_checkable
class ListsWorkingOrders(Protocol):
    def working_orders(self, symbol: str) -> list[Order]:
        """The symbol's orders not yet final, as the broker knows them, with client ids."""
        ...


@runtime_checkable
class FindsByClientId(Protocol):
    def order_for_client(self, client_id: str) -> Order | None:
        """The order sent under `client_id`, in whatever state, or None when the broker
        never received it: how a restart learns whether a journaled intent was sent."""
        ...


@runtime_checkable
class PlacesProtectiveStops(Protocol):
    def protect(
        self, symbol: str, side: Side, qty: int, stop_price: float, client_id: str
    ) -> Order:
        """A stand-alone stop order closing `qty` of an open position (`side` is the
        stop's own side). Idempotent on `client_id`."""
        ...


@runtime_checkable
class ReportsUpdates(Protocol):
    def take_updates(self) -> tuple[list[Order], list[Fill]]:
        """Orders created or changed and fills made since the last call."""
        ...


@dataclass(frozen=True)
class DecisionRecord:
    """One line of the journal's append-only decision log: a gate's verdict on a signal, or
    an execution note (`esml.execution.journaling`). Defined here, below the journal, so
    the execution layer writes the journal's own record type."""

    ts_ns: int
    symbol: str
    source: str
    side: str
    qty: int
    approved: bool
    gate: str | None
    reason: str


class ExecutionJournal(Protocol):
    """The part of `esml.journal.base.Journal` the execution layer writes and reads.
    Writes are idempotent on natural keys: an order by its id, a fill by its fill id."""

    def record_order(self, o: Order) -> None: ...

    def record_fill(self, f: Fill) -> bool: ...

    def record_decision(self, d: DecisionRecord) -> None: ...

    def orders(self) -> list[Order]: ...

    def fills(self) -> list[Fill]: ...

    def decisions(self) -> list[DecisionRecord]: ...
