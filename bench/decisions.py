"""Decision latency, measured inside the engine itself on a replay: at each decision the
engine computes the 77 features from its kernel state, then the champion bundle's ensemble
reads its windows and asks every member through onnxruntime; then the gates, sizing, the
position manager and the journal run. Three figures per decision come out of one replay:
features + ensemble inference, the same with a two-member ensemble (the trees and the tick
LSTM, the issue's goal configuration), and the whole decision. The replay runs three times
and each figure keeps its best run, as the throughput rows do.

The data is a SYNTHETIC generated ES morning: the bar LSTM needs an hour of minute bars,
which the real file (one thin hour) never gives it. Decisions made while a window filled
are not counted (the ensemble abstains without inference).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from esml.alpha.bundle import TREES, ServedBundle
from esml.alpha.ensemble import Ensemble, EnsembleConfig
from esml.alpha.ensemble_strategy import EnsembleStrategy
from esml.alpha.inputs import ModelInputs
from esml.alpha.strategy import Signal
from esml.config import EsmlConfig
from esml.decision.proposal import AccountState
from esml.engine.engine import Engine
from esml.engine.serving import serve
from esml.features.sequences import TICK
from esml.journal.sqlite import SQLiteJournal
from esml.market.calendar import trading_day
from esml.market.instruments import ES
from esml.sim.queue_reactive import generate_day

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
SEED, DATE, START, HOURS = 3, "2024-03-14", "07:30", 2.0
WARMUP = 20  # first timed decisions dropped: onnxruntime's first runs allocate
REPEATS = 3


@dataclass(frozen=True)
class Latency:
    name: str
    decisions: int
    p50_us: float
    p99_us: float
    notes: str

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class _Timed:
    """The strategy, timed; `features_ns` is set by the engine just before each call."""

    def __init__(self, inner: EnsembleStrategy) -> None:
        self.inner = inner
        self.inputs = inner.inputs
        self.features_ns = 0
        self.took: list[int] = []  # features + inference, per decision that inferred

    @property
    def name(self) -> str:
        return self.inner.name

    def on_decision(
        self, ts_ns: int, features: np.ndarray, mid: float, position: int
    ) -> Signal | None:
        warming = self.inner.warming
        t0 = time.perf_counter_ns()
        signal = self.inner.on_decision(ts_ns, features, mid, position)
        if self.inner.warming == warming:
            self.took.append(self.features_ns + time.perf_counter_ns() - t0)
        return signal


class _TimedEngine(Engine):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.decide_ns: list[int] = []

    def _compute_features(self, ts: int, bp: int, bs: int, ap: int, as_: int) -> None:
        t0 = time.perf_counter_ns()
        super()._compute_features(ts, bp, bs, ap, as_)
        assert isinstance(self.strategy, _Timed)
        self.strategy.features_ns = time.perf_counter_ns() - t0

    def _decide(self, ts: int) -> None:
        assert isinstance(self.strategy, _Timed)
        inferred = len(self.strategy.took)
        t0 = time.perf_counter_ns()
        super()._decide(ts)
        if len(self.strategy.took) > inferred:  # a decision the ensemble answered
            self.decide_ns.append(time.perf_counter_ns() - t0)


def _two_members(served: ServedBundle) -> ServedBundle:
    """The same bundle's trees and tick LSTM as a two-member ensemble (weights 2 / 1)."""
    keep = (TREES, "tick_lstm")
    cfg = EnsembleConfig(weights={TREES: 2.0, "tick_lstm": 1.0}, calibration="none")
    ensemble = Ensemble(cfg, [served.members[k] for k in keep], tick_size=ES.tick_size)
    return replace(served, ensemble=ensemble, windows={"tick_lstm": TICK})


def _replay(cfg: EsmlConfig, strategy: EnsembleStrategy, events: np.ndarray) -> _TimedEngine:
    timed = _Timed(strategy)
    account = AccountState(trading_day(int(events["ts_recv"][0])))
    engine = _TimedEngine(cfg, timed, SQLiteJournal(":memory:"), account)
    engine.on_events(events)
    engine.finish(int(events["ts_recv"][-1]))
    return engine


def _latency(name: str, took_ns: list[int], notes: str) -> Latency:
    took = np.array(took_ns[WARMUP:], np.float64) / 1e3
    if len(took) == 0:
        raise RuntimeError(f"{name}: no decision was timed (the windows never filled)")
    p50, p99 = np.percentile(took, [50, 99])
    return Latency(name, len(took), float(p50), float(p99), notes)


def decision_latencies() -> list[Latency]:
    """Each figure from the best of `REPEATS` replays (lowest p99), as the throughput rows
    keep their best run: on a shared machine the worst run measures the neighbours."""
    cfg = EsmlConfig()
    events = generate_day(SEED, DATE, start=START, hours=HOURS)  # SYNTHETIC
    served = serve(MODELS, cfg, hot_swap=False)
    data = f"SYNTHETIC ES {DATE} {START} CT, {HOURS:g} h"
    full_runs, two_runs = [], []
    for _ in range(REPEATS):
        full = served.make()
        assert isinstance(full, EnsembleStrategy)
        full_runs.append(_replay(cfg, full, events))
        two = EnsembleStrategy(_two_members(full.served), ModelInputs(ES.tick_fixed))
        two_runs.append(_replay(cfg, two, events))
    members = "+".join(full.served.members)
    return [
        _best(f"features + ensemble ({members})", [_took(e) for e in full_runs],
              f"{data}; 77 features, windows read, every member through onnxruntime"),
        _best("features + trees + tick LSTM (goal: p99 <= 200 us)", [_took(e) for e in two_runs],
              f"{data}; the bundle's trees and tick LSTM as a two-member ensemble"),
        _best("whole decision (features to journal)", [e.decide_ns for e in full_runs],
              f"{data}; the full ensemble, gates, sizing, position manager, SQLite journal"),
    ]  # fmt: skip


def _took(engine: _TimedEngine) -> list[int]:
    assert isinstance(engine.strategy, _Timed)
    return engine.strategy.took


def _best(name: str, runs: list[list[int]], notes: str) -> Latency:
    return min((_latency(name, took, notes) for took in runs), key=lambda lat: lat.p99_us)
