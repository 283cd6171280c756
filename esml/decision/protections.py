"""Protections that learn from closed trades: the loss streak, the day's peak, the
per-session P&L, and the drawdown breaker that halts trading until a person resumes it.

The gates only read this state; these functions are the only writers, so the same
account bookkeeping serves the tick loop, the backtest and the risk Lambda.
"""

from __future__ import annotations

from esml.config import RiskConfig
from esml.decision.proposal import AccountState, TradingState
from esml.market.calendar import session_segment


def record_round_trip(acct: AccountState, net_pnl: float, ts_ns: int, risk: RiskConfig) -> None:
    """Book one closed round trip (net of costs) into the account's protections."""
    segment = session_segment(ts_ns).name
    if acct.segment != segment:
        acct.segment, acct.segment_pnl = segment, 0.0
    acct.segment_pnl += net_pnl
    acct.realized_pnl += net_pnl
    acct.peak_pnl = max(acct.peak_pnl, acct.realized_pnl)
    acct.loss_streak = acct.loss_streak + 1 if net_pnl < 0 else 0
    drawdown = max(acct.peak_pnl, 0.0) - acct.realized_pnl
    if drawdown >= risk.max_drawdown and acct.state is not TradingState.HALTED:
        halt(acct, f"drawdown breaker: ${drawdown:,.2f} from today's peak")


def note_entry(acct: AccountState, ts_ns: int) -> None:
    """An entry was approved: the cooldown counts from here."""
    acct.last_entry_ns = ts_ns


def halt(acct: AccountState, reason: str) -> None:
    acct.state = TradingState.HALTED
    acct.halt_reason = reason


def resume(acct: AccountState, by: str) -> None:
    """Only a person resumes trading, and says who they are."""
    if not by.strip():
        raise ValueError("resuming trading needs the name of the person who decided it")
    acct.state = TradingState.ACTIVE
    acct.halt_reason = ""
