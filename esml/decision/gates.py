"""Gates: small named checks, each saying why it rejects. The same objects run in the tick
loop, the backtest and the risk Lambda.

A gate sees the proposal, the account and the budget of the session segment the proposal
falls in (RTH, the overnight sessions: each has its own stop, target, cooldown, spread and
loss limit). It passes (None), rejects (a reason), or caps the size (`Cap`). Exits pass
every gate but a halt: reducing risk is never blocked by a limit meant to stop adding it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from esml.alpha.exit_outcomes import ExitOutcomes
from esml.config import RiskConfig, SessionBudget
from esml.decision.proposal import AccountState, Proposal, TradingState
from esml.market.calendar import CHICAGO, Segment, session_segment
from esml.market.instruments import ES, Instrument

EASTERN = ZoneInfo("America/New_York")
NS = 1_000_000_000


@dataclass(frozen=True)
class Cap:
    """Pass, but with at most `qty` contracts."""

    qty: int
    reason: str


class Gate(Protocol):
    name: str

    def check(self, p: Proposal, acct: AccountState, budget: SessionBudget) -> str | Cap | None:
        """None to pass, a reason to reject, or a Cap to shrink the order."""
        ...


def _hhmm(text: str) -> time:
    h, m = text.strip().split(":")
    return time(int(h), int(m))


@dataclass(frozen=True)
class TradingStateGate:
    name: str = "trading_state"

    def check(self, p: Proposal, acct: AccountState, budget: SessionBudget) -> str | None:
        if acct.state is TradingState.HALTED:
            why = f" ({acct.halt_reason})" if acct.halt_reason else ""
            return f"trading is HALTED{why}; a person must resume it"
        if acct.state is TradingState.REDUCING and not p.is_exit:
            return "trading is REDUCING: exits only"
        return None


@dataclass(frozen=True)
class SessionGate:
    """The market must be open, and this session segment's own loss limit not spent."""

    name: str = "session_budget"

    def check(self, p: Proposal, acct: AccountState, budget: SessionBudget) -> str | None:
        segment = session_segment(p.ts_ns)
        if segment is Segment.CLOSED:
            return "the market is closed"
        if p.is_exit:
            return None
        if acct.segment == segment.name and acct.segment_pnl <= -budget.loss_limit:
            return (
                f"{segment.name} loss ${-acct.segment_pnl:,.2f} reached its limit "
                f"${budget.loss_limit:,.2f}"
            )
        return None


@dataclass(frozen=True)
class TimeOfDayGate:
    windows: tuple[tuple[time, time], ...]  # Chicago time, [start, end)
    name: str = "time_of_day"

    @classmethod
    def parse(cls, specs: tuple[str, ...]) -> TimeOfDayGate:
        return cls(tuple((_hhmm(s.split("-")[0]), _hhmm(s.split("-")[1])) for s in specs))

    def check(self, p: Proposal, acct: AccountState, budget: SessionBudget) -> str | None:
        if p.is_exit:
            return None
        now = datetime.fromtimestamp(p.ts_ns / NS, tz=CHICAGO).time()
        for lo, hi in self.windows:
            if lo <= now < hi:
                return f"{now:%H:%M:%S} CT is inside the blocked window {lo:%H:%M}-{hi:%H:%M}"
        return None


@dataclass(frozen=True)
class NewsBlackoutGate:
    """No new risk just before and after scheduled releases (08:30 ET data, FOMC, ...)."""

    recurring: tuple[time, ...]  # US/Eastern, every weekday
    events: tuple[datetime, ...]  # aware
    before: timedelta
    after: timedelta
    name: str = "news_blackout"

    def check(self, p: Proposal, acct: AccountState, budget: SessionBudget) -> str | None:
        if p.is_exit:
            return None
        now = datetime.fromtimestamp(p.ts_ns / NS, tz=UTC).astimezone(EASTERN)
        releases = list(self.events)
        if now.weekday() < 5:
            releases += [datetime.combine(now.date(), t, EASTERN) for t in self.recurring]
        for release in releases:
            if release - self.before <= now < release + self.after:
                return f"news blackout around the {release:%Y-%m-%d %H:%M} ET release"
        return None


@dataclass(frozen=True)
class StaleDataGate:
    max_age_s: float
    name: str = "stale_data"

    def check(self, p: Proposal, acct: AccountState, budget: SessionBudget) -> str | None:
        age = p.context.data_age_s
        if p.is_exit or age is None or age <= self.max_age_s:
            return None
        return f"market data is {age:.1f} s old, limit {self.max_age_s:.1f} s"


@dataclass(frozen=True)
class MaxSpreadGate:
    name: str = "max_spread"

    def check(self, p: Proposal, acct: AccountState, budget: SessionBudget) -> str | None:
        spread = p.context.spread_ticks
        if p.is_exit or spread is None or spread <= budget.max_spread_ticks:
            return None
        return f"spread {spread:g} ticks, limit {budget.max_spread_ticks:g}"


@dataclass(frozen=True)
class VolatilityHaltGate:
    max_ticks: float
    name: str = "volatility_halt"

    def check(self, p: Proposal, acct: AccountState, budget: SessionBudget) -> str | None:
        vol = p.context.volatility_ticks
        if p.is_exit or vol is None or vol <= self.max_ticks:
            return None
        return f"60-s volatility {vol:.1f} ticks above the halt level {self.max_ticks:g}"


@dataclass(frozen=True)
class AgreementGate:
    name: str = "agreement"

    def check(self, p: Proposal, acct: AccountState, budget: SessionBudget) -> str | None:
        agree = p.context.agreement
        if p.is_exit or agree is None or agree >= budget.min_agreement:
            return None
        return f"ensemble agreement {agree:.0%} below {budget.min_agreement:.0%}"


@dataclass(frozen=True)
class ConfidenceGate:
    min_confidence: float  # used where the session budget sets none
    name: str = "confidence"

    def check(self, p: Proposal, acct: AccountState, budget: SessionBudget) -> str | None:
        if p.is_exit or p.confidence is None:
            return None
        floor = budget.min_confidence if budget.min_confidence is not None else self.min_confidence
        if p.confidence < floor:
            return f"confidence {p.confidence:.3f} below {floor:.3f}"
        return None


@dataclass(frozen=True)
class ExpectedMoveGate:
    """The move the trade can be expected to make must pay for the round trip, with room
    to spare. With held-out outcomes of the exit plan that will really run (target, stop
    and time exit: `esml.alpha.exit_outcomes`, shipped in the bundle), the move is what
    trades rated like this one made on held-out rows; a bracket's p * target - q * stop
    would price a trade that, when the time exit closes it first, does not happen. Without
    outcomes for the session's plan (a model that ships none), the proposal's own estimate
    is used."""

    round_trip_cost: float  # USD per contract: commission both sides plus a tick of slippage
    tick_value: float
    min_multiple: float
    outcomes: tuple[ExitOutcomes, ...] = ()  # one per exit plan the sessions use
    time_exit_s: float | None = None  # the engine's time exit, to find the session's plan
    name: str = "expected_move"

    def plan_outcomes(self, budget: SessionBudget) -> ExitOutcomes | None:
        """The held-out outcomes of the plan this session's bracket and time exit make."""
        want = (budget.stop_ticks, budget.target_ticks, self.time_exit_s)
        for o in self.outcomes:
            if (o.plan.stop_ticks, o.plan.target_ticks, o.plan.time_exit_s) == want:
                return o
        return None

    def check(self, p: Proposal, acct: AccountState, budget: SessionBudget) -> str | None:
        if p.is_exit:
            return None
        table = self.plan_outcomes(budget)
        win = p.context.win_probability
        if table is not None and win is not None:
            move = table.expected_ticks(win)
            what = f"held-out outcome ({table.plan.describe()}) at p {win:.2f}:"
        else:
            move, what = p.context.expected_move_ticks, "expected move"
        if move is None:
            return None
        value = move * self.tick_value
        if value < self.min_multiple * self.round_trip_cost:
            return (
                f"{what} ${value:.2f} under {self.min_multiple:g}x the round-trip cost "
                f"${self.round_trip_cost:.2f}"
            )
        return None


@dataclass(frozen=True)
class CooldownGate:
    name: str = "cooldown"

    def check(self, p: Proposal, acct: AccountState, budget: SessionBudget) -> str | None:
        if p.is_exit or acct.last_entry_ns == 0:
            return None
        waited = (p.ts_ns - acct.last_entry_ns) / NS
        if waited < budget.cooldown_s:
            return f"{waited:.1f} s since the last entry, cooldown {budget.cooldown_s:g} s"
        return None


@dataclass(frozen=True)
class MaxPositionGate:
    max_contracts: int
    name: str = "max_position"

    def check(self, p: Proposal, acct: AccountState, budget: SessionBudget) -> str | Cap | None:
        if p.is_exit:
            return None
        room = self.max_contracts - acct.position * p.side.sign
        if room <= 0:
            return f"position {acct.position:+d} is at the limit {self.max_contracts}"
        if p.qty > room:
            return Cap(room, f"position {acct.position:+d}, limit {self.max_contracts}")
        return None


@dataclass(frozen=True)
class DailyLossGate:
    max_daily_loss: float
    name: str = "daily_loss"

    def check(self, p: Proposal, acct: AccountState, budget: SessionBudget) -> str | None:
        if p.is_exit:
            return None
        if acct.realized_pnl <= -self.max_daily_loss:
            return (
                f"daily loss ${-acct.realized_pnl:,.2f} reached the limit "
                f"${self.max_daily_loss:,.2f}"
            )
        return None


@dataclass(frozen=True)
class DrawdownBreakerGate:
    """Refuses entries once today's give-back from the peak reaches the limit. The trip
    itself (HALTED, a person resumes) is recorded by `protections.record_round_trip`."""

    max_drawdown: float
    name: str = "drawdown_breaker"

    def check(self, p: Proposal, acct: AccountState, budget: SessionBudget) -> str | None:
        if p.is_exit:
            return None
        drawdown = max(acct.peak_pnl, 0.0) - acct.realized_pnl
        if drawdown >= self.max_drawdown:
            return f"drawdown ${drawdown:,.2f} from today's peak reached ${self.max_drawdown:,.2f}"
        return None


@dataclass(frozen=True)
class LossStreakGate:
    streak: int
    size: int
    name: str = "loss_streak"

    def check(self, p: Proposal, acct: AccountState, budget: SessionBudget) -> Cap | None:
        if p.is_exit or acct.loss_streak < self.streak or p.qty <= self.size:
            return None
        return Cap(self.size, f"{acct.loss_streak} losses in a row")


@dataclass(frozen=True)
class Verdict:
    approved: bool
    gate: str | None = None
    reason: str = ""
    qty: int = 0  # what may be traded: the proposal's size, or less after caps
    caps: tuple[tuple[str, str], ...] = ()  # (gate, reason) of each cap applied


@dataclass
class GateStack:
    """Runs gates in order; the first rejection wins and is counted under its gate. The
    counts make the funnel: proposals in, then how many each gate stopped, then approvals."""

    gates: list[Gate]
    budgets: dict[str, SessionBudget]
    rejections: Counter[str] = field(default_factory=Counter)
    caps: Counter[str] = field(default_factory=Counter)
    seen: int = 0
    passed: int = 0

    @classmethod
    def from_config(
        cls,
        risk: RiskConfig,
        instrument: Instrument = ES,
        commission_per_side: float = 2.25,
        *,
        exit_outcomes: Sequence[ExitOutcomes] = (),
        time_exit_s: float | None = None,
    ) -> GateStack:
        """The gate stack of a configuration; `exit_outcomes` (a bundle's held-out outcomes
        of its exit plans, with the engine's `time_exit_s`) price the expected move."""
        news = risk.news
        events = tuple(datetime.fromisoformat(e).replace(tzinfo=EASTERN) for e in news.events_et)
        round_trip = 2 * commission_per_side + instrument.tick_value  # a tick of slippage
        news_gate = NewsBlackoutGate(
            tuple(_hhmm(t) for t in news.recurring_et),
            events,
            timedelta(minutes=news.before_min),
            timedelta(minutes=news.after_min),
        )
        gates: list[Gate] = [
            TradingStateGate(),
            SessionGate(),
            TimeOfDayGate.parse(risk.blocked_ct),
            news_gate,
            StaleDataGate(risk.max_data_age_s),
            MaxSpreadGate(),
            VolatilityHaltGate(risk.max_volatility_ticks),
            AgreementGate(),
            ConfidenceGate(risk.min_confidence),
            ExpectedMoveGate(
                round_trip,
                instrument.tick_value,
                risk.min_edge_over_costs,
                tuple(exit_outcomes),
                time_exit_s,
            ),
            CooldownGate(),
            MaxPositionGate(risk.max_position),
            DailyLossGate(risk.max_daily_loss),
            DrawdownBreakerGate(risk.max_drawdown),
            LossStreakGate(risk.loss_streak, risk.loss_streak_size),
        ]
        names = [g.name for g in gates]
        unknown = set(risk.gates_off) - set(names)
        if unknown or "trading_state" in risk.gates_off:
            raise ValueError(
                f"gates_off: {sorted(unknown) or ['trading_state']} cannot be turned off; "
                f"choose from {names[1:]}"
            )
        return cls([g for g in gates if g.name not in risk.gates_off], dict(risk.budgets))

    def use_exit_outcomes(self, outcomes: Sequence[ExitOutcomes]) -> None:
        """Price the expected move with another model's held-out outcomes (a hot swap)."""
        self.gates = [
            replace(g, outcomes=tuple(outcomes)) if isinstance(g, ExpectedMoveGate) else g
            for g in self.gates
        ]

    def budget_at(self, ts_ns: int) -> SessionBudget:
        """The budget of the segment `ts_ns` falls in (RTH's while the market is closed, so
        a closed-market proposal still meets a complete budget and the session gate)."""
        segment = session_segment(ts_ns)
        return self.budgets[segment.name if segment is not Segment.CLOSED else "RTH"]

    def evaluate(self, p: Proposal, acct: AccountState) -> Verdict:
        self.seen += 1
        budget = self.budget_at(p.ts_ns)
        qty, caps = p.qty, []
        for gate in self.gates:
            result = gate.check(p, acct, budget)
            if isinstance(result, Cap):
                if result.qty < qty:
                    qty = result.qty
                    caps.append((gate.name, result.reason))
                    self.caps[gate.name] += 1
                continue
            if result is not None:
                self.rejections[gate.name] += 1
                return Verdict(False, gate.name, result)
        self.passed += 1
        return Verdict(True, qty=qty, caps=tuple(caps))

    def funnel(self) -> list[tuple[str, int]]:
        """(stage, proposals still alive after it): proposals, then each gate in order."""
        alive, rows = self.seen, [("proposals", self.seen)]
        for gate in self.gates:
            alive -= self.rejections[gate.name]
            rows.append((gate.name, alive))
        return rows
