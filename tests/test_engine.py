"""The engine end to end: events → features → model → gates → bracket → paper fills → journal."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from esml.alpha.model import OnnxAlphaModel
from esml.alpha.strategy import Signal
from esml.config import load_config
from esml.decision.proposal import AccountState
from esml.engine.engine import Engine
from esml.engine.session import run_session
from esml.evaluation.trades import round_trips
from esml.execution.manager import leg_id
from esml.execution.orders import OrderRole, Side
from esml.features.batch import batch_features
from esml.journal.sqlite import SQLiteJournal
from esml.market.instruments import ES
from esml.sim.synthetic import generate_session


@pytest.fixture(scope="module")
def session_events() -> np.ndarray:
    return generate_session(42, duration_s=1800)  # synthetic, unseen by the model


def _run(events, model_dir, journal, quantile: float = 0.8, **risk):
    """Trade when the model is in its top (1 - quantile) of confidence on these events."""
    model = OnnxAlphaModel.load(model_dir)
    x = batch_features(events, ES.tick_fixed, 1.0).X
    p = model.predict_proba(x)
    conf = float(np.quantile(np.maximum(p[:, 0], p[:, 2]), quantile))
    cfg = load_config(risk={"min_confidence": conf, **risk})
    return run_session("synthetic", events, cfg, model, journal)


class AlwaysLong:
    """A confident long at every decision: trades whenever the gates let it."""

    name = "always-long"

    def on_decision(self, ts_ns, features, mid, position):
        return Signal(ts_ns, "model", Side.BUY, 0.7, p_down=0.1, p_flat=0.2, p_up=0.7)


def _gate_decisions(journal: SQLiteJournal) -> list:
    """The gate stack's verdicts (the position manager logs its own steps beside them)."""
    return [d for d in journal.decisions() if d.source != "execution"]


def test_every_entry_is_bracketed_and_every_fill_journaled_once(
    session_events, demo_model_dir
) -> None:
    journal = SQLiteJournal(":memory:")
    r = _run(session_events, demo_model_dir, journal)
    assert r.synthetic
    assert r.stats.orders > 5, "the low threshold should let the model trade"
    orders = journal.orders()
    by_client = Counter((o.client_id, o.role) for o in orders)
    entries = [o for o in orders if o.role is OrderRole.ENTRY]
    assert len(entries) == r.stats.orders
    for e in entries:  # each leg journaled under its own client id, once
        assert by_client[(leg_id(e.client_id, OrderRole.STOP), OrderRole.STOP)] == 1
        assert by_client[(leg_id(e.client_id, OrderRole.TARGET), OrderRole.TARGET)] == 1
    fills = journal.fills()
    assert len(fills) == len({f.fill_id for f in fills}) == r.stats.fills
    assert sum(f.side.sign * f.qty for f in fills) == 0  # flat at the end
    # every round trip leaves by its stop, its target or the time exit, never by two
    assert {rt.exit_role for rt in r.round_trips} <= {OrderRole.STOP, OrderRole.TARGET,
                                                      OrderRole.EXIT}  # fmt: skip
    # market exits: the time exit at the 20-s horizon, or earlier on a strong opposite signal
    market_exits = [rt for rt in r.round_trips if rt.exit_role is OrderRole.EXIT]
    assert all(rt.duration_ns <= 21.5e9 for rt in market_exits[:-1])  # last: end of data
    assert any(rt.duration_ns >= 20e9 for rt in market_exits)
    assert r.metrics.net_pnl == pytest.approx(sum(rt.net_pnl for rt in r.round_trips))
    assert r.metrics.costs == pytest.approx(2.25 * sum(f.qty for f in fills))


def test_every_model_signal_has_a_decision_with_its_reason(session_events,
                                                            demo_model_dir) -> None:  # fmt: skip
    journal = SQLiteJournal(":memory:")
    r = _run(session_events, demo_model_dir, journal, quantile=0.95)
    decisions = _gate_decisions(journal)
    assert len(journal.signals()) == r.stats.signals == len(decisions)
    rejected = [d for d in decisions if not d.approved]
    assert rejected and all(d.gate and d.reason for d in rejected)
    assert Counter(d.gate for d in rejected) == Counter(r.gate_rejections)
    # an approval while a position is open adds nothing (no adds by default)
    assert sum(d.approved for d in decisions) >= r.stats.orders > 0


def test_replay_is_deterministic_and_a_rerun_doubles_nothing(session_events, demo_model_dir,
                                                             tmp_path) -> None:  # fmt: skip
    path = tmp_path / "journal.sqlite"
    with SQLiteJournal(path) as j:
        first = _run(session_events, demo_model_dir, j)
        n_fills = len(j.fills())
    with SQLiteJournal(path) as j:
        _run(session_events, demo_model_dir, j)  # the journal already holds every client id
        assert len(j.fills()) == n_fills  # nothing placed twice, nothing doubled
    with SQLiteJournal(tmp_path / "again.sqlite") as j:
        second = _run(session_events, demo_model_dir, j)
    assert first.round_trips and [rt.net_pnl for rt in first.round_trips] == [
        rt.net_pnl for rt in second.round_trips
    ]


def test_real_es_file_runs_through_the_same_engine(es_events, demo_model_dir) -> None:
    journal = SQLiteJournal(":memory:")
    r = _run(es_events, demo_model_dir, journal, quantile=0.99)
    assert not r.synthetic
    assert r.stats.events == len(es_events)
    assert r.stats.decisions > 3_000  # about one a second over two hours of trading
    assert sum(f.side.sign * f.qty for f in journal.fills()) == 0


def test_daily_loss_limit_stops_new_entries(session_events, demo_model_dir) -> None:
    journal = SQLiteJournal(":memory:")
    r = _run(session_events, demo_model_dir, journal, quantile=0.5, max_daily_loss=1.0)
    decisions = _gate_decisions(journal)
    blocked = [k for k, d in enumerate(decisions) if d.gate == "daily_loss"]
    assert blocked, "the first net loss should exhaust a $1 budget"
    first = blocked[0]
    # once the day's realised loss reaches the limit, every later entry is refused
    assert not any(d.approved for d in decisions[first:])
    closed_before = [rt for rt in r.round_trips if rt.exit_ts_ns <= decisions[first].ts_ns]
    assert sum(rt.net_pnl for rt in closed_before) <= -1.0


def test_the_daily_loss_budget_rolls_at_17_00_chicago_with_the_open_position(
    demo_model_dir,
) -> None:
    """Realised P&L restarts at the CME day boundary; a trade open across it counts, whole,
    for the day it closes in."""
    boundary = 1_709_593_200_000_000_000  # 2024-03-04 23:00 UTC = 17:00 CST
    # the last ten minutes before the 16:00 CT close, then the first ten after the reopen
    events = np.concatenate([
        generate_session(7, start_ns=boundary - 4200 * 10**9, duration_s=600),
        generate_session(8, start_ns=boundary, duration_s=600),
    ])  # fmt: skip
    cfg = load_config(risk={"max_daily_loss": 1e9, "blocked_ct": []})
    journal = SQLiteJournal(":memory:")
    engine = Engine(cfg, AlwaysLong(), journal, AccountState("2024-03-04"))
    engine.on_events(events)
    engine.flatten(int(events["ts_recv"][-1]), "end of data")
    rts = round_trips(journal.fills(), ES)
    assert any(rt.exit_ts_ns < boundary for rt in rts), "no trade closed on the first day"
    assert engine.account.trading_day == "2024-03-05"
    new_day = sum(rt.net_pnl for rt in rts if rt.exit_ts_ns >= boundary)
    assert engine.account.realized_pnl == pytest.approx(new_day)
