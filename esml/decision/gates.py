"""Gates: small named checks, each saying why it rejects. The same objects run in the tick
loop, the backtest and the risk Lambda."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from esml.config import RiskConfig
from esml.decision.proposal import AccountState, Proposal, TradingState


class Gate(Protocol):
    name: str

    def check(self, p: Proposal, acct: AccountState) -> str | None:
        """None to pass, else the reason for rejecting."""
        ...


@dataclass(frozen=True)
class TradingStateGate:
    name: str = "trading_state"

    def check(self, p: Proposal, acct: AccountState) -> str | None:
        if acct.state is TradingState.HALTED:
            return "trading is HALTED; a person must resume it"
        if acct.state is TradingState.REDUCING and not p.is_exit:
            return "trading is REDUCING: exits only"
        return None


@dataclass(frozen=True)
class ConfidenceGate:
    min_confidence: float
    name: str = "confidence"

    def check(self, p: Proposal, acct: AccountState) -> str | None:
        if p.is_exit or p.confidence is None:
            return None
        if p.confidence < self.min_confidence:
            return f"confidence {p.confidence:.3f} below {self.min_confidence:.3f}"
        return None


@dataclass(frozen=True)
class MaxPositionGate:
    max_contracts: int
    name: str = "max_position"

    def check(self, p: Proposal, acct: AccountState) -> str | None:
        if p.is_exit:
            return None
        after = acct.position + p.signed_qty
        if abs(after) > self.max_contracts:
            return f"position would be {after:+d}, limit is {self.max_contracts}"
        return None


@dataclass(frozen=True)
class DailyLossGate:
    max_daily_loss: float
    name: str = "daily_loss"

    def check(self, p: Proposal, acct: AccountState) -> str | None:
        if p.is_exit:
            return None
        if acct.realized_pnl <= -self.max_daily_loss:
            return (
                f"daily loss ${-acct.realized_pnl:,.2f} reached the limit "
                f"${self.max_daily_loss:,.2f}"
            )
        return None


@dataclass(frozen=True)
class Verdict:
    approved: bool
    gate: str | None = None
    reason: str = ""


@dataclass
class GateStack:
    """Runs gates in order; the first rejection wins and is counted under its gate."""

    gates: list[Gate]
    rejections: Counter[str] = field(default_factory=Counter)
    passed: int = 0

    @classmethod
    def from_config(cls, risk: RiskConfig) -> GateStack:
        return cls(
            [
                TradingStateGate(),
                ConfidenceGate(risk.min_confidence),
                MaxPositionGate(risk.max_position),
                DailyLossGate(risk.max_daily_loss),
            ]
        )

    def evaluate(self, p: Proposal, acct: AccountState) -> Verdict:
        for gate in self.gates:
            reason = gate.check(p, acct)
            if reason is not None:
                self.rejections[gate.name] += 1
                return Verdict(False, gate.name, reason)
        self.passed += 1
        return Verdict(True)
