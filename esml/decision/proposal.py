"""What asks to trade and the account it would trade in: the inputs of every gate."""

from __future__ import annotations

import dataclasses
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
    position: int = 0  # of the instrument decided on (in a SharedAccount: a gate view)
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


class ReservationStatus(enum.StrEnum):
    PENDING = "pending"  # reserved; the order is being sent
    PLACED = "placed"  # the broker accepted it; fills consume the reservation
    UNKNOWN = "unknown"  # the answer was lost: only a look-up by client id can tell


@dataclass
class Reservation:
    """A position change an order may still cause, counted against the limits until its
    fills arrive or the broker says it is over. Never released on a guess: an UNKNOWN one
    stays until the order is looked up at the broker by its client id."""

    client_id: str
    symbol: str
    signed_qty: int  # what is still open of the order (positive buys)
    qty: int  # the order's size, to tell how much of it has filled
    is_exit: bool
    status: ReservationStatus
    ts_ns: int  # the server's wall clock when made: the sync's in-flight window counts from it
    prior_entry_ns: int = 0  # the cooldown's reference before this entry moved it
    cancel_at_ns: int = 0  # a limit entry's cancel-after deadline (server time); 0: none

    @property
    def filled(self) -> int:
        return self.qty - abs(self.signed_qty)


@dataclass
class Book:
    """One contract's position and today's P&L, as the broker's fills made them."""

    position: int = 0  # signed, filled contracts
    avg_price: float = 0.0  # of the open position; 0 when flat
    realized_pnl: float = 0.0  # closed round trips today, net of commissions
    trip_pnl: float = 0.0  # the open round trip so far (commissions, partial closes)


@dataclass
class SharedAccount:
    """The account state every path shares (one DynamoDB item): positions and P&L per
    contract, the orders that may still change them, and the account-wide protections.

    `risk.position` is not used here: each gate sees `gate_view(symbol, side)`, whose
    position is the worst case that contract can reach in that direction.
    """

    risk: AccountState
    books: dict[str, Book] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    unsettled: list[str] = field(default_factory=list)  # orders whose record must follow

    def unsettle(self, client_id: str) -> None:
        """Note that the order's record (orders table) must be brought level with the
        broker: written with the change that made it stale, so it cannot be forgotten."""
        if client_id and client_id not in self.unsettled:
            self.unsettled.append(client_id)

    def position(self, symbol: str) -> int:
        book = self.books.get(symbol)
        return book.position if book else 0

    def worst_case(self, symbol: str, side: Side) -> int:
        """Contracts held in `side`'s direction if every open order on `symbol` that adds
        to that direction filled and none that reduces it did."""
        held = self.position(symbol) * side.sign
        adding = sum(
            max(0, r.signed_qty * side.sign)
            for r in self.reservations.values()
            if r.symbol == symbol
        )
        return held + adding

    def gate_view(self, symbol: str, side: Side) -> AccountState:
        """The AccountState the gates read for a proposal on `symbol` in `side`."""
        view = dataclasses.replace(self.risk)
        view.position = side.sign * self.worst_case(symbol, side)
        return view

    def unresolved(self, symbol: str) -> list[Reservation]:
        return [
            r
            for r in self.reservations.values()
            if r.symbol == symbol and r.status is ReservationStatus.UNKNOWN
        ]

    def roll_to(self, trading_day: str) -> None:
        """A new trading day: the loss budget and each contract's day P&L start afresh."""
        if trading_day != self.risk.trading_day:
            for book in self.books.values():
                book.realized_pnl = 0.0
            self.books = {
                s: b for s, b in self.books.items() if b.position != 0 or b.trip_pnl != 0.0
            }
        self.risk.roll_to(trading_day)
