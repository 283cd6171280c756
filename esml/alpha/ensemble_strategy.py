"""The ensemble as the engine's strategy: every member asked at each decision, one vote.

The trees read the engine's feature row; each net reads its window from the `ModelInputs`
the engine feeds. Until every window is full the strategy abstains (no signal, counted in
`warming`): a member that cannot see enough history has no opinion worth a weight, and
voting without it would trade on a mixture the calibrator never saw.
"""

from __future__ import annotations

import numpy as np

from esml.alpha.bundle import TREES, ServedBundle
from esml.alpha.exit_outcomes import ExitOutcomes
from esml.alpha.inputs import ModelInputs
from esml.alpha.strategy import Signal
from esml.market.side import Side

_SIDES = {"up": Side.BUY, "down": Side.SELL, "flat": None}


def exit_outcomes_of(strategy: object) -> list[ExitOutcomes]:
    """The held-out exit-plan outcomes a strategy's bundle ships (none for other kinds)."""
    if isinstance(strategy, EnsembleStrategy):
        return list(strategy.served.ensemble_manifest.exit_outcomes)
    return []


class EnsembleStrategy:
    def __init__(self, served: ServedBundle, inputs: ModelInputs) -> None:
        inputs.require(served.windows.values())
        self.served = served
        self.inputs = inputs
        self.warming = 0  # decisions abstained from while a window filled
        self._x: dict[str, np.ndarray] = {}

    @property
    def name(self) -> str:
        return self.served.name

    def on_decision(
        self, ts_ns: int, features: np.ndarray, mid: float, position: int
    ) -> Signal | None:
        x = self._x
        x[TREES] = features
        for member, spec in self.served.windows.items():
            window = self.inputs.read(spec)
            if window is None:
                self.warming += 1
                return None
            x[member] = window
        d = self.served.ensemble.decide(ts_ns, mid, x)
        side = _SIDES[d.direction]
        votes = " ".join(f"{m}={v}" for m, v in d.votes.items())
        return Signal(
            ts_ns, "ensemble", side, d.confidence, d.p_down, d.p_flat, d.p_up,
            agreement=d.agreement, reason=f"{self.name}: {votes}, agreement {d.agreement:.2f}",
        )  # fmt: skip
