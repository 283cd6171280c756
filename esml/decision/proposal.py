"""What asks to trade and the account it would trade in: the inputs of every gate."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from esml.market.side import Side


class TradingState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"  # exits only
    HALTED = "HALTED"  # nothing; a person resumes


@dataclass(frozen=True)
class MarketContext:
    """What the tick loop knows at a decision. A TradingView alert knows none of it, so a
    gate whose input is missing passes and says nothing (the risk Lambda has no book)."""

    spread_ticks: float | None = None
    data_age_s: float | None = None  # since the last market event
    volatility_ticks: float | None = None  # 60-s realised volatility
    expected_move_ticks: float | None = None  # in the proposal's direction, net of nothing
    agreement: float | None = None  # share of ensemble weight on the proposal's side
    pso: float | None = None  # the PSO oscillator, [-1, 1]
    win_probability: float | None = None  # calibrated, for sizing


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
    context: MarketContext = field(default_factory=MarketContext)

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
    peak_pnl: float = 0.0  # today's best realised P&L: the drawdown breaker's reference
    loss_streak: int = 0  # losing round trips in a row, across days
    last_entry_ns: int = 0  # for the cooldown
    segment: str = ""  # the session segment segment_pnl belongs to
    segment_pnl: float = 0.0
    halt_reason: str = ""

    def roll_to(self, trading_day: str) -> None:
        """A new trading day starts with its loss budget restored; the position, the loss
        streak and a halt carry over (a halt is lifted only by a person)."""
        if trading_day != self.trading_day:
            self.trading_day = trading_day
            self.realized_pnl = 0.0
            self.peak_pnl = 0.0
            self.segment, self.segment_pnl = "", 0.0
