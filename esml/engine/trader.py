"""One decision, from opinion to order size: the strategy's signal, the gate stack with
what the book says now, then Kelly sizing on the session's bracket. Python runs this only
at decision times; the engine owns the clock, the book and the broker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esml.alpha.strategy import Signal, Strategy
from esml.config import EsmlConfig, SessionBudget
from esml.decision.gates import GateStack, Verdict
from esml.decision.proposal import AccountState, MarketContext, Proposal
from esml.decision.sizing import SizeDecision, size
from esml.features.streaming import FEATURE_NAMES
from esml.market.instruments import PRICE_SCALE

_VOL = FEATURE_NAMES.index("realized_vol_60s_ticks")
_PSO = FEATURE_NAMES.index("pso")
NS = 1_000_000_000


@dataclass(frozen=True)
class Decision:
    signal: Signal | None
    proposal: Proposal | None = None
    verdict: Verdict | None = None
    sizing: SizeDecision | None = None
    budget: SessionBudget | None = None

    @property
    def qty(self) -> int:
        """Contracts to enter: what the gates allow and Kelly wants, whichever is less."""
        if self.verdict is None or not self.verdict.approved or self.sizing is None:
            return 0
        return min(self.verdict.qty, self.sizing.qty)

    @property
    def stop_ticks(self) -> int:
        assert self.signal is not None and self.budget is not None
        return self.signal.stop_ticks or self.budget.stop_ticks

    @property
    def target_ticks(self) -> int:
        assert self.signal is not None and self.budget is not None
        return self.signal.target_ticks or self.budget.target_ticks


class Trader:
    def __init__(self, cfg: EsmlConfig, strategy: Strategy, gates: GateStack) -> None:
        self.cfg = cfg
        self.strategy = strategy
        self.gates = gates
        self.instrument = cfg.instrument_spec
        self.signals = 0

    def decide(
        self,
        ts_ns: int,
        row: np.ndarray,
        touch: tuple[int, int, int, int],
        account: AccountState,
        last_event_ns: int,
    ) -> Decision:
        bp, _, ap, _ = touch
        mid = 0.5 * (bp + ap) / PRICE_SCALE
        signal = self.strategy.on_decision(ts_ns, row, mid, account.position)
        if signal is None:
            return Decision(None)
        self.signals += 1
        budget = self.gates.budget_at(ts_ns)
        if signal.side is None:
            return Decision(signal, budget=budget)
        bracket = Decision(signal, budget=budget)
        stop, target = bracket.stop_ticks, bracket.target_ticks
        p_side = signal.p_up if signal.side.sign > 0 else signal.p_down
        p_against = signal.p_down if signal.side.sign > 0 else signal.p_up
        has_probs = signal.p_up + signal.p_down + signal.p_flat > 0
        context = MarketContext(
            spread_ticks=(ap - bp) / self.instrument.tick_fixed,
            data_age_s=(ts_ns - last_event_ns) / NS,
            volatility_ticks=float(row[_VOL]),
            # the bracket's expectation in ticks: target when right, stop when wrong
            expected_move_ticks=p_side * target - p_against * stop if has_probs else None,
            agreement=signal.agreement,
            pso=float(row[_PSO]),
            win_probability=p_side if has_probs else signal.confidence,
        )
        proposal = Proposal(
            self.cfg.instrument, signal.side, self.cfg.risk.sizing.max_lots, signal.source,
            ts_ns, signal.confidence, context=context,
        )  # fmt: skip
        verdict = self.gates.evaluate(proposal, account)
        if not verdict.approved:
            return Decision(signal, proposal, verdict, budget=budget)
        sizing = size(
            context.win_probability or signal.confidence, signal.side, stop, target,
            context.pso, self.instrument, self.cfg.execution.commission_per_side,
            self.cfg.risk.sizing,
        )  # fmt: skip
        return Decision(signal, proposal, verdict, sizing, budget)
