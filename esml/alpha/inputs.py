"""The neural models' windows, kept from the engine's own event path.

The engine runs each chunk of events through its compiled kernel and then hands the same
slice here: tick bars fold in the slice's trades, the minute-bar ring keeps the bar the
engine's feature state has just closed (the engine's own technicals, not a second copy),
and book snapshots, which need the book after every packet, replay the slice through a
book of their own only once a model asks for them. The functions are `sequences`' own,
so a window read at a decision equals the batch builder's window at that time: what the
models were trained on is what they see live.

The rings do not belong to a model: when a new bundle is swapped in, its nets read windows
that are already warm.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import numpy as np

from esml.features.sequences import (
    B_MISSED,
    BAR,
    LOB,
    TICK,
    BarRowState,
    LobState,
    TickBarState,
    WindowSpec,
    capture_bar,
    feed_lob,
    feed_ticks,
    read_bars,
    read_lob,
    read_ticks,
)
from esml.features.streaming import FeatureState

NET_WINDOWS: dict[str, WindowSpec] = {"tick_lstm": TICK, "deeplob": LOB, "bar_lstm": BAR}
"""Each net kind's input window."""
_SPECS = {spec.name: spec for spec in NET_WINDOWS.values()}
MAX_DECISION_INTERVAL_S = 60.0  # one chunk between decisions may close one minute bar, not two
_FOREVER = np.iinfo(np.int64).max


class ModelInputs:
    """Tick bars, minute bars and (on request) book snapshots for the nets of a bundle."""

    def __init__(self, tick_fixed: int) -> None:
        self.ticks = TickBarState(tick_fixed)
        self.bars = BarRowState()
        self.lob: LobState | None = None
        self._tick_fixed = tick_fixed
        self._out = {name: np.zeros(spec.shape, np.float32) for name, spec in _SPECS.items()}

    def require(self, specs: Iterable[WindowSpec]) -> None:
        """Start keeping what `specs` need; a window started now is cold until it fills."""
        for spec in specs:
            if _SPECS.get(spec.name) != spec:
                raise ValueError(f"window {spec} is not one this build keeps: {list(_SPECS)}")
            if spec.name == LOB.name and self.lob is None:
                self.lob = LobState(self._tick_fixed)

    def on_events(self, ev: np.ndarray, start: int, stop: int, features: FeatureState) -> None:
        """Events [start, stop) of a chunk have just gone through the engine's kernel."""
        if stop <= start:
            return
        chunk = ev[start:stop]
        t = self.ticks
        feed_ticks(chunk, 0, _FOREVER, t.meta, t.cur, t.bars, t.tick)
        if self.lob is not None:
            stopped = feed_lob(chunk, 0, _FOREVER, *self.lob.arrays)
            if stopped < 0:
                self.lob.book.check(f" at record {start - 1 - stopped} of this chunk")
        self.on_decision(features)

    def on_decision(self, features: FeatureState) -> None:
        """Keep the bar the feature state closed, whether an event or `compute` closed it."""
        b = self.bars
        capture_bar(b.meta, b.end, b.rows, features.s)
        if b.meta[B_MISSED]:
            raise RuntimeError(
                f"{int(b.meta[B_MISSED])} minute bars closed unseen: decisions must come at "
                f"least every {MAX_DECISION_INTERVAL_S:g} s"
            )

    def read(self, spec: WindowSpec) -> np.ndarray | None:
        """The window now (a buffer reused at the next read), or None while it fills."""
        out = self._out[spec.name]
        if spec.name == TICK.name:
            ok = read_ticks(self.ticks.meta, self.ticks.bars, out)
        elif spec.name == BAR.name:
            ok = read_bars(self.bars.meta, self.bars.rows, out)
        else:
            if self.lob is None:
                raise ValueError("book snapshots were never required")
            ok = read_lob(self.lob.meta, self.lob.snaps, out)
        return out if ok else None


@runtime_checkable
class ReadsWindows(Protocol):
    """A strategy whose models read windows: the engine feeds its `inputs`."""

    inputs: ModelInputs
