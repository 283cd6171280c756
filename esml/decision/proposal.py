"""What asks to trade and the account it would trade in: the inputs of every gate."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from esml.execution.orders import Side


class TradingState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"  # exits only
    HALTED = "HALTED"  # nothing; a person resumes


@dataclass(frozen=True)
class Proposal:
    """A wish to trade, from the model loop or a TradingView alert."""

    symbol: str
    side: Side
    qty: int
    source: str  # "model" | "tradingview"
    ts_ns: int
    confidence: float | None = None  # model signals only
    is_exit: bool = False

    @property
    def signed_qty(self) -> int:
        return self.qty * self.side.sign


@dataclass
class AccountState:
    """Per-account risk state: one copy in SQLite locally, one item in DynamoDB on AWS."""

    trading_day: str
    position: int = 0
    realized_pnl: float = 0.0  # net of costs, this trading day
    state: TradingState = TradingState.ACTIVE
    version: int = 0  # optimistic-lock counter for the shared copy

    def roll_to(self, trading_day: str) -> None:
        """A new trading day starts with its loss budget restored; the position carries."""
        if trading_day != self.trading_day:
            self.trading_day = trading_day
            self.realized_pnl = 0.0
