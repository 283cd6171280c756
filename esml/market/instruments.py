"""CME equity-index futures: tick sizes and values, so P&L and prices are never guessed."""

from __future__ import annotations

from dataclasses import dataclass

PRICE_SCALE = 1_000_000_000
"""Prices travel as int64 fixed-point with 1e-9 units, as in Databento's DBN."""


@dataclass(frozen=True)
class Instrument:
    root: str
    tick_size: float
    tick_value: float
    exchange: str = "CME"
    description: str = ""

    @property
    def point_value(self) -> float:
        """Dollars per one full index point per contract."""
        return self.tick_value / self.tick_size

    @property
    def tick_fixed(self) -> int:
        return round(self.tick_size * PRICE_SCALE)

    def to_fixed(self, price: float) -> int:
        return round(price * PRICE_SCALE)

    def to_float(self, fixed: int) -> float:
        return fixed / PRICE_SCALE

    def round_to_tick(self, price: float) -> float:
        return round(price / self.tick_size) * self.tick_size

    def pnl(self, entry: float, exit_: float, signed_qty: int) -> float:
        """Gross dollar P&L of `signed_qty` contracts (positive long) from entry to exit."""
        return (exit_ - entry) * self.point_value * signed_qty


ES = Instrument("ES", 0.25, 12.50, description="E-mini S&P 500")
MES = Instrument("MES", 0.25, 1.25, description="Micro E-mini S&P 500")
NQ = Instrument("NQ", 0.25, 5.00, description="E-mini Nasdaq-100")
MNQ = Instrument("MNQ", 0.25, 0.50, description="Micro E-mini Nasdaq-100")

INSTRUMENTS: dict[str, Instrument] = {i.root: i for i in (ES, MES, NQ, MNQ)}


def instrument_for(symbol: str) -> Instrument:
    """The instrument of a root ("ES") or a contract symbol ("ESH4", "MESZ5")."""
    s = symbol.upper().strip()
    for root in sorted(INSTRUMENTS, key=len, reverse=True):
        if s == root or (s.startswith(root) and _is_contract_suffix(s[len(root):])):
            return INSTRUMENTS[root]
    raise ValueError(f"unknown instrument {symbol!r}; known roots: {sorted(INSTRUMENTS)}")


_MONTH_CODES = set("FGHJKMNQUVXZ")


def _is_contract_suffix(rest: str) -> bool:
    return len(rest) >= 2 and rest[0] in _MONTH_CODES and rest[1:].isdigit()
