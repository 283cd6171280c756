"""Ablation: the same events through N configurations of the same engine (models on and
off, gates on and off, rule strategies beside them), one result each, in a fixed order.

Each run gets a fresh engine, a fresh strategy (rule strategies keep history) and its own
in-memory journal, so no run can see another's state: the same input gives the same table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from esml.alpha.rules import make_rule_strategy
from esml.alpha.strategy import Strategy
from esml.config import EsmlConfig
from esml.engine.backtest import run_backtest
from esml.evaluation.ablation import RunResult

# gates that only exist to protect a model's edge; the "no filters" run turns them off
FILTER_GATES = (
    "stale_data", "max_spread", "volatility_halt", "agreement", "confidence",
    "expected_move", "cooldown", "time_of_day", "news_blackout",
)  # fmt: skip


@dataclass(frozen=True)
class Variant:
    name: str
    make_strategy: Callable[[], Strategy]
    cfg: EsmlConfig


def default_variants(cfg: EsmlConfig, make_model: Callable[[], Strategy] | None) -> list[Variant]:
    """The seeds' comparison: the model (or ensemble) with every gate, the same with only
    the hard risk limits, and each rule strategy with every gate; each run gets a fresh
    strategy, so no run inherits another's state."""
    out: list[Variant] = []
    if make_model is not None:
        loose = cfg.model_copy(
            update={"risk": cfg.risk.model_copy(update={"gates_off": FILTER_GATES})}
        )
        out += [
            Variant("model, all gates", make_model, cfg),
            Variant("model, risk limits only", make_model, loose),
        ]
    tick = cfg.instrument_spec.tick_size
    for kind in ("zscore_regime", "momentum", "mean_reversion"):
        out.append(
            Variant(f"rule: {kind}", lambda k=kind: make_rule_strategy(k, tick_size=tick), cfg)
        )
    return out


def run_ablation(events: np.ndarray, variants: Sequence[Variant], *, name: str) -> list[RunResult]:
    results = []
    for v in variants:
        r = run_backtest(events, v.cfg, v.make_strategy(), name=f"{name}: {v.name}")
        results.append(
            RunResult(
                name=v.name,
                round_trips=tuple(r.round_trips),
                metrics=r.metrics,
                funnel=tuple(r.funnel),
                signals=r.stats.signals,
                orders=r.stats.orders,
                synthetic=r.synthetic,
            )
        )
    return results
