"""Warm start on loopback: the Tradovate simulator replays a SYNTHETIC 70-minute ES session
(the market generator: the shipped real file has only one hour of trading, too little
for an hour of history plus live data) and has served 66 minutes of it when `esml live
--source tradovate` starts with the shipped champion (its ensemble votes with trees, the
tick LSTM, the bar LSTM and the regime). The md socket's chart history fills
the features, the bar LSTM's 60 minute bars and the tick window before the first live
event, so the ensemble votes within the run's first minutes of market time, where a cold
start would wait an hour of bars. Then: history from recorded hour
stores in S3 (moto, the real ES file's hours), and the status line and EMF record saying
what still fills."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
from moto import mock_aws

from esml.config import load_config
from esml.data.book import snapshot_end
from esml.decision.proposal import AccountState
from esml.engine.capture import Capture, s3_uploader
from esml.engine.emf import EmfReporter
from esml.engine.engine import Engine
from esml.engine.live_run import Endpoints, LiveSettings, run, tradovate_client, with_defaults
from esml.engine.serving import serve
from esml.engine.status import Snapshot, snapshot
from esml.engine.warm_start import download_recorded, recorded_events, warm_live, warm_start
from esml.features.sequences import BAR, bar_windows
from esml.journal.sqlite import SQLiteJournal
from esml.market.calendar import trading_day
from esml.market.instruments import ES
from esml.sim.synthetic import generate_session
from esml.sim.tradovate_api import TradovateSim
from esml.sim.tradovate_market import ReplayMarket
from tests.aws_fixtures import TRADOVATE_LOGIN, sim_arguments

ROOT = Path(__file__).resolve().parents[1]
SYMBOL = "ESH4"
MINUTE_NS = 60 * 10**9
SERVED_MIN = 66  # market minutes the simulator has replayed when the engine starts


@pytest.fixture
def sim() -> Iterator[TradovateSim]:
    ev = generate_session(7, duration_s=70 * 60)  # SYNTHETIC
    market = ReplayMarket(ev, SYMBOL, speed=None)
    with TradovateSim(**sim_arguments(prices=None, market=market)) as s:
        start = int(ev["ts_recv"][snapshot_end(ev)])
        market.step(int(np.searchsorted(ev["ts_recv"], start + SERVED_MIN * MINUTE_NS)) - market.i)
        yield s


def _pace(sim: TradovateSim, live: threading.Event, stop: threading.Event) -> None:
    """Replay the rest once the engine is live (its warm-up done, however long it took)."""
    assert sim.market is not None
    live.wait(60)
    while not stop.is_set() and sim.market.i < len(sim.market.events):
        sim.market.step(100)
        stop.wait(0.01)


def test_chart_history_lets_the_ensemble_vote_in_the_first_minutes(
    sim: TradovateSim, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config()
    served = serve(ROOT / "models", cfg, hot_swap=False)
    windows = served.strategy.served.windows  # type: ignore[attr-defined]
    assert {"tick_lstm", "bar_lstm"} <= set(windows)
    s = LiveSettings(source="tradovate", broker="paper", symbol=SYMBOL, lockout_s=0, for_s=6,
                     endpoints=Endpoints(sim.base_url, sim.ws_url, sim.md_url))  # fmt: skip
    client = tradovate_client(with_defaults(dict(TRADOVATE_LOGIN)), s.endpoints,
                              cfg.execution.commission_per_side, orders=False)  # fmt: skip
    assert sim.market is not None
    served_so_far = sim.market.events[: sim.market.i]
    # the chart history's minute bars equal the training path's (the batch builder over
    # every event served so far): same bars, same indicators, bit for bit
    probe = Engine(cfg, served.make(), SQLiteJournal(tmp_path / "probe.sqlite"),
                   AccountState(trading_day(int(served_so_far["ts_recv"][-1]))), symbol=SYMBOL,
                   mode="paper")  # fmt: skip
    md = client.market_data("dom")
    asyncio.run(warm_live(probe, md=md))
    md.close()
    assert probe.inputs is not None
    want = bar_windows(served_so_far, ES.tick_fixed, np.array([probe.last_event_ns]))
    assert want.ready[0]
    np.testing.assert_array_equal(probe.inputs.read(BAR), want.x[0])
    _, bid_size, _, ask_size = probe.book.touch()
    assert bid_size == ask_size == 0, "the touch rebuilt from the chart is off the book"
    seen: list[Snapshot] = []
    live_from = int(sim.market.events["ts_recv"][sim.market.i])  # the first live event
    live, stop = threading.Event(), threading.Event()
    pacer = threading.Thread(target=_pace, args=(sim, live, stop), daemon=True)

    def on_status(snap: Snapshot) -> None:
        seen.append(snap)
        live.set()

    journal = SQLiteJournal(tmp_path / "journal.sqlite")
    caplog.clear()  # the probe's warm-up logs its line too where an earlier `esml live` set INFO
    try:
        with caplog.at_level(logging.INFO, "esml.engine.warm_start"):
            pacer.start()
            engine = asyncio.run(run(s, cfg, served.strategy, journal, on_status=on_status,
                                     market=client))  # fmt: skip
    finally:
        stop.set()
        pacer.join(5)
        client.close()
    (line,) = [r.message for r in caplog.records if r.message.startswith("warm start:")]
    bars = int(line.split(" chart minute bars")[0].rsplit(" ", 1)[1])
    trades = int(line.split(" chart trades")[0].rsplit(" ", 1)[1])
    assert bars >= 50 and trades >= 140, line  # minute bars, then the last 10 minutes' ticks
    # the bar LSTM's 60 minute bars and the tick window full before any live event
    assert line.endswith("still warming: nothing: every window is full"), line
    signals = [r for r in journal.signals() if r.source == "ensemble"]
    assert signals, "the ensemble voted"
    live_span_min = (engine.last_event_ns - live_from) / MINUTE_NS
    assert live_span_min < 30, "less live data than the bar window's hour"
    assert (signals[0].ts_ns - live_from) / MINUTE_NS < 3, "a vote within the first minutes"
    # the status line says so from the first live second
    lines = [snap.line() for snap in seen]
    assert lines and all(" | warm | " in x for x in lines)


def test_recorded_hours_in_s3_warm_the_windows_and_the_metric_says_what_still_fills(
    es_events: np.ndarray, tmp_path: Path
) -> None:
    cfg = load_config()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="models")
        cap = Capture(tmp_path / "capture", SYMBOL, s3_uploader(s3, "models", "data/"))
        cap.add(es_events)  # one instrument: the real file's ESH4
        cap.close()
        now = int(es_events["ts_recv"][-1]) + MINUTE_NS
        assert len(cap.written) == 3  # 00 (the file's opening book), 22 and 23
        hours = download_recorded(s3, "models", "data/", SYMBOL, hours=2, now_ns=now,
                                  folder=tmp_path / "warm")  # fmt: skip
    assert [h.name for h in hours] == ["20231225-22", "20231225-23"]  # the last two hours
    served = serve(ROOT / "models", cfg, hot_swap=False)
    day = trading_day(now)
    cold = Engine(cfg, served.strategy, SQLiteJournal(tmp_path / "a.sqlite"), AccountState(day),
                  symbol=SYMBOL, mode="paper")  # fmt: skip
    emf = EmfReporter("esml", {"Service": "tick-engine", "Instrument": "ES"})
    record = emf.record(cold, snapshot(cold, 0.0), None)
    windows = served.strategy.served.windows  # type: ignore[attr-defined]
    assert record["WarmingWindows"] == len(cold.warming()) == 1 + len(windows)  # features too
    metrics = record["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    assert {"Name": "WarmingWindows", "Unit": "Count"} in metrics
    fresh = serve(ROOT / "models", cfg, hot_swap=False)
    warm = Engine(cfg, fresh.strategy, SQLiteJournal(tmp_path / "b.sqlite"), AccountState(day),
                  symbol=SYMBOL, mode="paper")  # fmt: skip
    report = warm_start(warm, recorded_events(hours))
    assert report.recorded_events > len(es_events) // 2
    # the market opened at 23:00 UTC: the two hours hold 59 closed minute bars, one short
    # of the bar LSTM's window; the features and the tick window are full
    assert report.warming == ("bar_lstm",)
    record = emf.record(warm, snapshot(warm, 0.0), None)
    assert record["WarmingWindows"] == 1 and "| warming: bar_lstm |" in record["status"]
