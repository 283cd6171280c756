"""What the engine asks at each decision time, whoever answers: an alpha model, the
ensemble or a rule strategy. One interface, so an ablation swaps them on identical data.

A strategy sees the decision time, the feature row (in `esml.features.streaming`'s
FEATURE_NAMES order, complete: it is only asked once features are warm), the mid and the
signed position, and answers with a `Signal` or None. It may keep its own state between
calls (rule strategies keep price history); it must not look at anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from esml.alpha.model import AlphaModel
from esml.market.side import Side


@dataclass(frozen=True)
class Signal:
    """An opinion at one decision time. `side` None means no new entry; `exit_position`
    asks to close what is open (a fade reaching its exit level, a strong opposite view)."""

    ts_ns: int
    source: str
    side: Side | None
    confidence: float  # in [0, 1]: the probability the strategy gives its side
    p_down: float = 0.0
    p_flat: float = 0.0
    p_up: float = 0.0
    agreement: float | None = None  # ensemble only: share of weight on `side`
    exit_position: bool = False
    stop_ticks: int | None = None  # None: the session budget's bracket
    target_ticks: int | None = None
    trail_ticks: int | None = None  # a fixed-distance trailing stop instead of R-multiples
    reason: str = ""


class Strategy(Protocol):
    @property
    def name(self) -> str: ...

    def on_decision(
        self, ts_ns: int, features: np.ndarray, mid: float, position: int
    ) -> Signal | None: ...


class ModelStrategy:
    """A direction model as a strategy: its more likely direction, with that probability
    as confidence. Flat-most-likely still answers a side: the gates judge confidence."""

    def __init__(self, model: AlphaModel) -> None:
        self.model = model

    @property
    def name(self) -> str:
        return self.model.name

    def on_decision(
        self, ts_ns: int, features: np.ndarray, mid: float, position: int
    ) -> Signal | None:
        p_down, p_flat, p_up = self.model.predict_one(features)
        side = Side.BUY if p_up >= p_down else Side.SELL
        return Signal(
            ts_ns, "model", side, max(p_up, p_down), p_down, p_flat, p_up,
            reason=f"{self.model.name}: p_up {p_up:.3f} p_down {p_down:.3f}",
        )  # fmt: skip
