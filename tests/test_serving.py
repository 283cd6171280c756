"""Serving the stack: the engine feeds the nets the windows they were trained on, trades the
ensemble of a published bundle, and swaps in a new champion while running, between two
decisions; a bad bundle changes nothing."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from esml.alpha import registry
from esml.alpha.ensemble import ensemble_batch
from esml.alpha.ensemble_strategy import EnsembleStrategy
from esml.alpha.inputs import ModelInputs
from esml.alpha.manifest import MANIFEST_FILE, ModelFileError, write_atomic
from esml.alpha.model import OnnxAlphaModel
from esml.alpha.sequence_model import OnnxSequenceModel
from esml.alpha.strategy import ModelStrategy, Signal
from esml.config import EsmlConfig, FeatureConfig
from esml.data.dbn import main_instrument
from esml.decision.proposal import AccountState
from esml.engine.engine import Engine
from esml.engine.serving import serve
from esml.features.batch import batch_features
from esml.features.sequences import (
    BAR,
    LOB,
    TICK,
    WindowSpec,
    bar_windows,
    lob_windows,
    tick_windows,
)
from esml.journal.sqlite import SQLiteJournal
from esml.market.calendar import trading_day
from esml.market.instruments import ES
from esml.sim.queue_reactive import generate_day
from tests.tiny_stack import session

CFG = EsmlConfig()


class WindowRecorder:
    """Reads every window at each decision, as a net would, and never trades."""

    name = "window-recorder"

    def __init__(self) -> None:
        self.inputs = ModelInputs(ES.tick_fixed)
        self.inputs.require([TICK, LOB, BAR])
        self.seen: list[tuple[int, dict[str, np.ndarray | None]]] = []

    def on_decision(
        self, ts_ns: int, features: np.ndarray, mid: float, position: int
    ) -> Signal | None:
        windows = {}
        for spec in (TICK, LOB, BAR):
            w = self.inputs.read(spec)
            windows[spec.name] = None if w is None else w.copy()
        self.seen.append((ts_ns, windows))
        return None


def _replay(events: np.ndarray, strategy, journal, *, chunks: int = 7, cfg=CFG, **kw) -> Engine:
    engine = Engine(cfg, strategy, journal, AccountState(trading_day(int(events["ts_recv"][0]))),
                    **kw)  # fmt: skip
    for part in np.array_split(events, chunks):  # chunk edges must not matter
        engine.on_events(part)
    engine.finish(int(events["ts_recv"][-1]))
    return engine


def _assert_live_equals_batch(events: np.ndarray, recorder: WindowRecorder) -> dict[str, int]:
    ts = np.array([t for t, _ in recorder.seen], np.int64)
    ready = {}
    for spec, build in ((TICK, tick_windows), (LOB, lob_windows), (BAR, bar_windows)):
        batch = build(events, ES.tick_fixed, ts)
        live = [w[spec.name] for _, w in recorder.seen]
        assert [w is not None for w in live] == batch.ready.tolist(), spec.name
        for k in np.flatnonzero(batch.ready):
            np.testing.assert_array_equal(live[k], batch.x[k], err_msg=f"{spec.name} at {k}")
        ready[spec.name] = int(batch.ready.sum())
    return ready


def test_the_engine_feeds_the_nets_the_windows_they_were_trained_on(es_events) -> None:
    ev = es_events[es_events["instrument_id"] == main_instrument(es_events)]
    recorder = WindowRecorder()
    _replay(ev, recorder, SQLiteJournal(":memory:"))
    ready = _assert_live_equals_batch(ev, recorder)
    assert len(recorder.seen) > 3_000
    assert ready[TICK.name] > 3_000 and ready[LOB.name] > 3_000


def test_minute_bar_windows_fill_after_an_hour_of_a_synthetic_day() -> None:
    ev = generate_day(21, "2024-03-12", start="08:00", hours=1.25)  # SYNTHETIC
    recorder = WindowRecorder()
    _replay(ev, recorder, SQLiteJournal(":memory:"))
    ready = _assert_live_equals_batch(ev, recorder)
    assert 0 < ready[BAR.name] < len(recorder.seen)  # an hour of bars first, then every time


def test_windows_the_build_does_not_keep_are_refused() -> None:
    inputs = ModelInputs(ES.tick_fixed)
    with pytest.raises(ValueError, match="not one this build keeps"):
        inputs.require([WindowSpec(TICK.name, TICK.steps, TICK.step_names, "tick-bars-0")])
    with pytest.raises(ValueError, match="never required"):
        inputs.read(LOB)


def test_the_engine_trades_the_bundles_ensemble_as_it_was_scored(stack) -> None:
    served = serve(stack.path.parent, CFG, hot_swap=False)
    strategy = served.strategy
    assert isinstance(strategy, EnsembleStrategy) and served.synthetic
    assert strategy.name == stack.path.name and served.watch is None
    events = session(3, 2)  # SYNTHETIC, a day after the training sessions
    journal = SQLiteJournal(":memory:")
    engine = _replay(events, strategy, journal)
    signals = journal.signals()
    assert len(signals) == engine.stats.decisions - strategy.warming > 1_000
    assert {s.model for s in signals} == {stack.path.name}
    assert {s.source for s in signals} == {"ensemble"}

    # the same decisions from the batch path: batch features and windows, the served
    # models over whole arrays, `ensemble_batch` from an empty meta-learner
    ts = np.array([s.ts_ns for s in signals], np.int64)
    mids = dict(engine.stats.mids)
    frame = batch_features(events, ES.tick_fixed, CFG.features.decision_interval_s)
    rows = np.searchsorted(frame.ts_ns, ts)
    assert np.array_equal(frame.ts_ns[rows], ts)
    trees = OnnxAlphaModel.load(stack.path / "trees")
    tick = OnnxSequenceModel.load(stack.path / "tick_lstm")
    windows = tick_windows(events, ES.tick_fixed, ts)
    assert windows.ready.all()
    ens = strategy.served.ensemble
    per_model = {
        "trees": trees.predict_proba(frame.X[rows]),
        "tick_lstm": tick.predict_proba(windows.x),
    }
    probas = np.stack([per_model[n] for n in ens.names], axis=1).astype(np.float64)
    batch = ensemble_batch(ens.cfg, ens.names, ts, np.array([mids[t] for t in ts]), probas,
                           ES.tick_size, ens.calibrator)  # fmt: skip
    live = np.array([[s.p_down, s.p_flat, s.p_up] for s in signals])
    np.testing.assert_allclose(live, batch.proba, atol=1e-5)
    np.testing.assert_allclose([s.confidence for s in signals], batch.confidence, atol=1e-5)


def _publish_copy(bundle: Path, root: Path, name: str) -> Path:
    staged = registry.staging_dir(root, name)
    shutil.rmtree(staged)
    shutil.copytree(bundle, staged)
    return registry.publish(staged, root, name, keep=5)


def test_a_new_champion_is_swapped_in_between_decisions(stack, tmp_path) -> None:
    root = tmp_path / "models"
    _publish_copy(stack.path, root, "b1")
    served = serve(root, CFG, background=False)
    assert served.strategy.name == "b1" and served.watch is not None
    events = session(3, 2)  # SYNTHETIC
    first, second = np.array_split(events, 2)
    journal = SQLiteJournal(":memory:")
    account = AccountState(trading_day(int(first["ts_recv"][0])))
    engine = Engine(CFG, served.strategy, journal, account, watch=served.watch)
    engine.on_events(first)
    published_at = engine.last_event_ns
    _publish_copy(stack.path, root, "b2")
    engine.on_events(second)
    engine.finish(int(second["ts_recv"][-1]))

    assert [name for _, name in engine.stats.swaps] == ["b2"]
    swap_ts = engine.stats.swaps[0][0]
    assert published_at < swap_ts <= published_at + round((CFG.model.check_every_s + 1) * 1e9)
    models = [(s.ts_ns, s.model) for s in journal.signals()]
    assert {m for t, m in models if t < swap_ts} == {"b1"}
    assert {m for t, m in models if t >= swap_ts} == {"b2"}
    new = engine.strategy
    assert isinstance(new, EnsembleStrategy) and new.name == "b2"
    assert new.warming == 0  # the windows ran on through the swap: no cold start
    assert new.inputs is served.strategy.inputs


def test_a_bad_champion_is_refused_and_the_old_one_serves_on(stack, tmp_path) -> None:
    root = tmp_path / "models"
    _publish_copy(stack.path, root, "b1")
    served = serve(root, CFG, background=False)
    # a bundle changed after training, pointed at by hand (publish itself would refuse it)
    bad = root / "b2"
    shutil.copytree(stack.path, bad)
    trees_manifest = bad / "trees" / MANIFEST_FILE
    trees_manifest.write_text(
        trees_manifest.read_text().replace(
            '"synthetic_training_data": true', '"synthetic_training_data": false'
        )
    )
    write_atomic(root / registry.CHAMPION_FILE, b"b2\n")
    events = session(3, 2)  # SYNTHETIC
    journal = SQLiteJournal(":memory:")
    engine = _replay(events, served.strategy, journal, watch=served.watch)
    assert engine.stats.swaps == []
    assert "modified after training" in served.watch.failed["b2"]
    assert {s.model for s in journal.signals()} == {"b1"}
    # a pointer at a bundle that is not there: refused just the same
    write_atomic(root / registry.CHAMPION_FILE, b"b3\n")
    assert served.watch.poll(engine.last_event_ns + 10**12) is None and "b3" in served.watch.failed


def test_a_champion_loads_off_the_event_thread(stack, tmp_path) -> None:
    root = tmp_path / "models"
    _publish_copy(stack.path, root, "b1")
    served = serve(root, CFG)
    watch = served.watch
    assert watch is not None
    _publish_copy(stack.path, root, "b2")
    ts, got = 0, None
    deadline = time.monotonic() + 60
    while got is None and time.monotonic() < deadline:
        ts += 10**10  # each poll 10 s of market time later
        got = watch.poll(ts)
        time.sleep(0.01)
    served.close()
    assert isinstance(got, EnsembleStrategy) and got.name == "b2" and watch.serving == "b2"
    assert watch.poll(ts + 10**10) is None  # handed over once


def test_serve_takes_what_training_leaves_and_refuses_the_rest(stack, demo_model_dir, tmp_path):
    assert isinstance(serve(demo_model_dir, CFG).strategy, ModelStrategy)
    assert isinstance(serve(stack.path, CFG).strategy, EnsembleStrategy)
    with pytest.raises(ModelFileError, match="no champion pointer"):
        serve(tmp_path, CFG)
    other = CFG.model_copy(update={"features": FeatureConfig(horizon_s=30.0)})
    with pytest.raises(ModelFileError, match=r"horizon_s: bundle 20\.0, engine 30\.0"):
        serve(stack.path, other)


def test_the_shipped_champion_serves_the_default_ensemble() -> None:
    served = serve(Path(__file__).resolve().parents[1] / "models", CFG, hot_swap=False)
    strategy = served.strategy
    assert isinstance(strategy, EnsembleStrategy)
    assert served.synthetic  # trained on SYNTHETIC days: `make models` says so and so do we
    ensemble = strategy.served.ensemble
    assert sorted(ensemble.names) == ["bar_lstm", "tick_lstm", "trees"]
    assert ensemble.cfg.weights == {"tick_lstm": 1.0, "trees": 2.0, "bar_lstm": 1.0}
    assert set(strategy.served.windows) == {"tick_lstm", "bar_lstm"}
