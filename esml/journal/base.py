"""The Journal protocol: what the engine and the Lambdas record, whatever the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from esml.execution.orders import Fill, Order
from esml.execution.ports import DecisionRecord

__all__ = ["DecisionRecord", "Journal", "JournalConflict", "JournalError", "SignalRecord"]


class JournalError(RuntimeError):
    """The journal is unusable, or a write conflicts with what it holds; nothing was written."""


class JournalConflict(JournalError):
    """A write would replace a different record under the same key (an order id, a fill id)."""


@dataclass(frozen=True)
class SignalRecord:
    ts_ns: int
    symbol: str
    source: str
    p_down: float
    p_flat: float
    p_up: float
    confidence: float
    model: str


class Journal(Protocol):
    """Writes are idempotent on their natural keys: an order by its id, a fill by its
    fill id. Recording the same thing twice leaves one record."""

    def record_signal(self, s: SignalRecord) -> None: ...

    def record_decision(self, d: DecisionRecord) -> None: ...

    def record_order(self, o: Order) -> None:
        """Insert, or update the status of, the order with this id."""
        ...

    def record_fill(self, f: Fill) -> bool:
        """True when the fill was new, False when it was already recorded."""
        ...

    def orders(self) -> list[Order]: ...

    def fills(self) -> list[Fill]: ...

    def decisions(self) -> list[DecisionRecord]: ...

    def signals(self) -> list[SignalRecord]: ...
