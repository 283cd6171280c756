"""Fills paired into round trips, FIFO, so every trade statistic starts from dollars that
reconcile with the broker's fills and commissions."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from esml.execution.orders import Fill, OrderRole, Side
from esml.market.instruments import Instrument, instrument_for


@dataclass(frozen=True)
class RoundTrip:
    """Contracts opened and closed again; `side` is the position's (BUY = long)."""

    symbol: str
    side: Side
    qty: int
    entry_ts_ns: int  # the first entry fill consumed
    entry_price: float  # quantity-weighted over the entry fills consumed
    exit_ts_ns: int  # the last exit fill
    exit_price: float  # quantity-weighted over the exit fills
    gross_pnl: float
    costs: float  # commissions of both sides, pro rata to the contracts closed
    net_pnl: float
    exit_role: OrderRole  # why it closed: stop, target, exit (time / flip / flatten)

    @property
    def is_win(self) -> bool:
        return self.net_pnl > 0

    @property
    def duration_ns(self) -> int:
        return self.exit_ts_ns - self.entry_ts_ns


@dataclass
class _Lot:
    """Open contracts from one entry fill, waiting to be closed first-in first-out."""

    qty: int
    price: float
    ts_ns: int
    commission_per_contract: float


@dataclass
class _Closing:
    """The round trip being closed by one exit order; its partial fills add up here."""

    order_id: str
    symbol: str
    side: Side
    qty: int = 0
    entry_ts_ns: int = 0
    entry_value: float = 0.0
    exit_ts_ns: int = 0
    exit_value: float = 0.0
    gross_pnl: float = 0.0
    costs: float = 0.0
    exit_role: OrderRole = OrderRole.EXIT

    def done(self) -> RoundTrip:
        return RoundTrip(
            symbol=self.symbol,
            side=self.side,
            qty=self.qty,
            entry_ts_ns=self.entry_ts_ns,
            entry_price=self.entry_value / self.qty,
            exit_ts_ns=self.exit_ts_ns,
            exit_price=self.exit_value / self.qty,
            gross_pnl=self.gross_pnl,
            costs=self.costs,
            net_pnl=self.gross_pnl - self.costs,
            exit_role=self.exit_role,
        )


class _Book:
    """The open lots of one contract symbol and the round trip its exit order is closing."""

    def __init__(self, symbol: str, instrument: Instrument) -> None:
        self.symbol = symbol
        self.instrument = instrument
        self.lots: deque[_Lot] = deque()
        self.sign = 0  # +1 long, -1 short, 0 flat
        self.closing: _Closing | None = None
        self.closed: list[RoundTrip] = []

    def apply(self, f: Fill) -> None:
        sign = Side(f.side).sign
        per_contract = f.commission / f.qty
        if self.sign in (0, sign):
            self._flush()
            self.sign = sign
            self.lots.append(_Lot(f.qty, f.price, f.ts_ns, per_contract))
            return
        if self.closing is not None and self.closing.order_id != f.order_id:
            self._flush()
        if self.closing is None:
            self.closing = _Closing(f.order_id, self.symbol, Side.of_position(self.sign))
        left = self._close(f, per_contract)
        if not self.lots:
            self._flush()
            self.sign = 0
        if left:  # the fill went through zero: the rest opens the other way
            self.sign = sign
            self.lots.append(_Lot(left, f.price, f.ts_ns, per_contract))

    def _close(self, f: Fill, per_contract: float) -> int:
        """Closes open lots FIFO against the fill; returns the contracts left over."""
        rt = self.closing
        assert rt is not None
        left = f.qty
        while left and self.lots:
            lot = self.lots[0]
            n = min(left, lot.qty)
            if rt.qty == 0:
                rt.entry_ts_ns = lot.ts_ns
            rt.qty += n
            rt.entry_value += lot.price * n
            rt.exit_value += f.price * n
            rt.gross_pnl += self.instrument.pnl(lot.price, f.price, self.sign * n)
            rt.costs += (lot.commission_per_contract + per_contract) * n
            rt.exit_ts_ns = f.ts_ns
            rt.exit_role = OrderRole(f.role)
            lot.qty -= n
            left -= n
            if lot.qty == 0:
                self.lots.popleft()
        return left

    def _flush(self) -> None:
        if self.closing is not None:
            self.closed.append(self.closing.done())
            self.closing = None


def round_trips(fills: Iterable[Fill], instrument: Instrument) -> list[RoundTrip]:
    """Closed round trips of `instrument`'s contracts, ordered by exit time.

    Fills are taken in time order (ties keep their given order). Each contract symbol is
    its own position, so a roll (sell ESH4, buy ESM4) is not a trade. Consecutive fills of
    one exit order make one round trip, so a partially filled target is one trade;
    entry fills are consumed first-in first-out. A fill through zero closes the position
    and opens the rest the other way, its commission split pro rata. Contracts still open
    at the end are not a round trip.
    """
    books: dict[str, _Book] = {}
    for f in sorted(fills, key=lambda f: f.ts_ns):
        if f.qty <= 0:
            raise ValueError(f"fill {f.fill_id}: quantity must be positive, got {f.qty}")
        if f.commission < 0:
            raise ValueError(f"fill {f.fill_id}: negative commission {f.commission}")
        if instrument_for(f.symbol) != instrument:
            raise ValueError(
                f"fill {f.fill_id} is for {f.symbol}, not an {instrument.root} contract"
            )
        book = books.get(f.symbol)
        if book is None:
            book = books[f.symbol] = _Book(f.symbol, instrument)
        book.apply(f)
    closed: list[RoundTrip] = []
    for book in books.values():
        book._flush()
        closed.extend(book.closed)
    closed.sort(key=lambda rt: rt.exit_ts_ns)
    return closed
