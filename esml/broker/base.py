"""What every broker offers the execution layer: the paper exchange and Tradovate alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from esml.execution.orders import Fill, Order, OrderIntent
from esml.execution.ports import (
    BrokerFailure,
    FindsByClientId,
    ListsWorkingOrders,
    Modifies,
    OrderRefused,
    PlacesProtectiveStops,
    ReportsUpdates,
)

# Optional capabilities a broker may add to the protocol below; the execution layer
# (`esml.execution.manager`) checks for each with hasattr/isinstance and falls back
# without it. Defined in `esml.execution.ports`, which sits below this package.
OPTIONAL_CAPABILITIES = (
    Modifies,  # modify(order_id, *, price=None, qty=None): trailing stops, resized brackets
    ListsWorkingOrders,  # working_orders(symbol): recovery after a restart
    FindsByClientId,  # order_for_client(client_id): was a journaled intent ever sent?
    PlacesProtectiveStops,  # protect(symbol, side, qty, stop_price, client_id)
    ReportsUpdates,  # take_updates(): order changes and new fills since the last call
)


class BrokerError(BrokerFailure):
    """The broker could not be reached or answered with something unusable."""


class OrderRejected(BrokerError, OrderRefused):
    """The broker refused the order; nothing was placed."""

    def __init__(self, client_id: str, reason: str) -> None:
        super().__init__(f"order {client_id} rejected: {reason}")
        self.client_id = client_id
        self.reason = reason


@dataclass(frozen=True)
class Placement:
    """The broker's answer to an intent: the entry and, for a bracket, its two OCO legs."""

    entry: Order
    stop: Order | None = None
    target: Order | None = None

    @property
    def orders(self) -> list[Order]:
        return [o for o in (self.entry, self.stop, self.target) if o is not None]


@runtime_checkable
class Broker(Protocol):
    def place(self, intent: OrderIntent) -> Placement:
        """Place an entry (with its OCO bracket when the intent has one).

        Idempotent on `intent.client_id`: placing the same intent twice returns the first
        placement and sends nothing new. Raises `OrderRejected` when refused.
        """
        ...

    def cancel(self, order_id: str) -> None: ...

    def flatten(self, symbol: str, client_id: str, reason: str) -> Order | None:
        """Cancel the symbol's working orders and close its position at market."""
        ...

    def position(self, symbol: str) -> int:
        """Signed contracts held (positive long)."""
        ...

    def fills(self) -> list[Fill]:
        """Every fill so far, oldest first."""
        ...
