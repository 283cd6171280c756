"""The backtester: any event source through the live engine, measured after costs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from esml.config import load_config
from esml.engine.backtest import run_backtest
from esml.evaluation.trades import round_trips
from esml.features.streaming import FEATURE_NAMES
from esml.journal.sqlite import SQLiteJournal
from esml.market.events import ADD, BID, CLEAR, MBO_DTYPE
from esml.market.instruments import ES
from esml.sim.synthetic import DEFAULT_START_NS, generate_session
from tests.conftest import ES_FILE

DAY_NS = 86_400 * 10**9
IMB = FEATURE_NAMES.index("imbalance_l1")


class ImbalanceModel:
    """Leans with the touch's imbalance: a plain rule, so a test controls when it trades."""

    name = "l1-imbalance-rule"
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.array([self.predict_one(r) for r in x])

    def predict_one(self, row: np.ndarray) -> tuple[float, float, float]:
        lean = 0.45 * float(np.clip(row[IMB], -1.0, 1.0))
        return 0.5 - lean, 0.0, 0.5 + lean


@pytest.fixture(scope="module")
def cfg():
    return load_config(risk={"min_confidence": 0.7, "max_daily_loss": 1e9, "blocked_ct": []})


def test_a_dbn_file_and_its_array_give_the_same_trades(cfg, es_events) -> None:
    journal = SQLiteJournal(":memory:")
    from_file = run_backtest(ES_FILE, cfg, ImbalanceModel(), journal=journal)
    assert not from_file.synthetic and from_file.name == ES_FILE.name
    assert from_file.stats.events == len(es_events)  # one outright in the file
    assert from_file.metrics.trades > 5, "the rule should trade the real hour"
    fills = journal.fills()
    assert sum(f.side.sign * f.qty for f in fills) == 0  # flat at the end
    assert from_file.round_trips == round_trips(fills, ES)
    from_array = run_backtest(es_events, cfg, ImbalanceModel())
    assert [rt.net_pnl for rt in from_array.round_trips] == [
        rt.net_pnl for rt in from_file.round_trips
    ]


def test_the_metrics_are_the_round_trips_after_costs(cfg, es_events) -> None:
    r = run_backtest(es_events, cfg, ImbalanceModel())
    m, rts = r.metrics, r.round_trips
    nets = [rt.net_pnl for rt in rts]
    assert m.trades == len(rts) and m.wins == sum(p > 0 for p in nets)
    assert m.net_pnl == pytest.approx(sum(nets))
    assert m.costs == pytest.approx(2 * 2.25 * sum(rt.qty for rt in rts))
    assert m.net_pnl == pytest.approx(m.gross_pnl - m.costs)
    lo, hi = m.win_rate_ci95
    assert lo <= m.win_rate <= hi
    equity = np.cumsum([0.0, *nets])
    assert m.max_drawdown == pytest.approx(float(np.max(np.maximum.accumulate(equity) - equity)))
    assert m.avg_trade == pytest.approx(m.net_pnl / m.trades)
    held = sum(rt.duration_ns for rt in rts)
    span = int(es_events["ts_recv"][-1]) - int(es_events["ts_recv"][0])
    assert m.time_in_market == pytest.approx(held / span, rel=0.05)  # over the whole hour


def _day(k: int, seconds: float) -> np.ndarray:
    return generate_session(20 + k, start_ns=DEFAULT_START_NS + k * DAY_NS, duration_s=seconds)


def test_a_generator_of_days_runs_as_one_account_with_flat_days_counted(cfg) -> None:
    quiet = _day(0, 60)  # bids only all day: no two-sided book, no decision, no trade
    quiet = quiet[(quiet["action"] == CLEAR) | ((quiet["action"] == ADD) & (quiet["side"] == BID))]
    days = [quiet, _day(1, 900), _day(2, 900)]
    journal = SQLiteJournal(":memory:")
    r = run_backtest((d for d in days), cfg, ImbalanceModel(), journal=journal, name="3 days")
    assert r.synthetic and r.name == "3 days"
    assert r.stats.events == sum(len(d) for d in days)
    assert {rt.entry_ts_ns // DAY_NS for rt in r.round_trips} == {
        int(d["ts_recv"][0]) // DAY_NS for d in days[1:]
    }
    assert r.metrics.days == 3  # the flat day is a day of the Sharpe
    daily = [sum(rt.net_pnl for rt in r.round_trips if rt.exit_ts_ns // DAY_NS == k)
             for k in sorted({int(d["ts_recv"][0]) // DAY_NS for d in days})]  # fmt: skip
    assert daily[0] == 0.0
    expected = np.mean(daily) / np.std(daily, ddof=1) * math.sqrt(252)
    assert r.metrics.sharpe == pytest.approx(expected)
    assert sum(f.side.sign * f.qty for f in journal.fills()) == 0


def test_a_day_that_opens_with_a_snapshot_starts_a_fresh_book(cfg, es_events) -> None:
    """Real day files open with a snapshot and no clear: the next day must not stack its
    snapshot on the last day's orders."""
    next_day = es_events.copy()
    next_day["ts_recv"] += np.uint64(DAY_NS)
    next_day["ts_event"] += np.uint64(DAY_NS)
    r = run_backtest([es_events, next_day], cfg, ImbalanceModel())
    assert r.stats.events == 2 * len(es_events) + 1  # the clear put before the second
    ts, mids = r.prices
    first = dict(zip(ts.tolist(), mids.tolist(), strict=True))
    same = [(first[t - DAY_NS], m) for t, m in zip(ts.tolist(), mids.tolist(), strict=True)
            if t - DAY_NS in first]  # fmt: skip
    assert len(same) > 1000
    assert all(a == b for a, b in same)  # the same book, decision for decision


def test_bad_sources_are_refused_with_the_reason() -> None:
    cfg = load_config()
    model = ImbalanceModel()
    with pytest.raises(ValueError, match="no events"):
        run_backtest(np.zeros(0, MBO_DTYPE), cfg, model)
    with pytest.raises(ValueError, match="MBO_DTYPE"):
        run_backtest(np.zeros(3, np.int64), cfg, model)
    backwards = _day(0, 60)[::-1].copy()
    with pytest.raises(ValueError, match="goes back in time"):
        run_backtest(backwards, cfg, model)
    with pytest.raises(ValueError, match="item 1 is a list"):
        run_backtest(iter([_day(0, 60), [1, 2]]), cfg, model)
