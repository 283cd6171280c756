"""The live loop: the engine on a broker handed to it, `esml live`, the start-up
reconciliation and lockout, the warm-up, credentials. On the real ES file."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from esml.alpha.rules import make_rule_strategy
from esml.broker.paper import PaperBroker
from esml.cli.app import app
from esml.config import load_config
from esml.data.book import BookState
from esml.data.dbn import write_mbo_dbn
from esml.decision.proposal import AccountState
from esml.engine.engine import Engine
from esml.engine.live import TIME_UP, paced, run_live
from esml.engine.live_run import (
    BROKERS,
    SOURCES,
    Endpoints,
    LiveSettings,
    LiveSetupError,
    credentials_from_file,
    parse_duration,
    run,
    tradovate_client,
)
from esml.engine.status import snapshot
from esml.evaluation.trades import round_trips
from esml.execution.orders import Order, OrderRole, OrderStatus, OrderType, Side
from esml.journal.sqlite import SQLiteJournal
from esml.market.calendar import trading_day
from esml.market.events import F_SNAPSHOT
from esml.market.instruments import ES

ES_FILE = Path(__file__).resolve().parents[1] / "data/samples/esh4-glbx-mdp3-20231225.mbo.dbn.zst"
CFG = load_config()


@pytest.fixture(scope="module")
def es(es_events) -> np.ndarray:
    from esml.data.dbn import main_instrument

    return es_events[es_events["instrument_id"] == main_instrument(es_events)]


def _engine(events, journal, **kw) -> Engine:
    strategy = make_rule_strategy("momentum", tick_size=ES.tick_size)
    account = AccountState(trading_day(int(events["ts_recv"][0])))
    return Engine(CFG, strategy, journal, account, **kw)


def _trades(engine: Engine) -> list[tuple]:
    return [(rt.entry_ts_ns, rt.side, rt.entry_price, rt.exit_price, rt.qty)
            for rt in round_trips(engine.broker.fills(), ES)]  # fmt: skip


def test_a_broker_handed_in_trades_exactly_as_the_engines_own(es) -> None:
    own = _engine(es, SQLiteJournal(":memory:"))
    own.on_events(es)
    own.finish(int(es["ts_recv"][-1]))
    paper = PaperBroker(ES, BookState.new(ES.tick_fixed), CFG.paper_exchange)
    handed = _engine(es, SQLiteJournal(":memory:"), broker=paper, mode="paper", lockout_s=0)
    asyncio.run(run_live(handed, paced(es)))
    handed.finish(int(es["ts_recv"][-1]))
    assert len(_trades(own)) >= 3, "momentum trades the real file a few times"
    assert _trades(handed) == _trades(own)
    assert handed.recovery is not None and handed.recovery.broker_position == 0


def test_mode_and_broker_must_agree(es) -> None:
    with pytest.raises(ValueError, match="mode 'live' does not trade through the paper"):
        _engine(es, SQLiteJournal(":memory:"), mode="live")
    with pytest.raises(ValueError, match="mode must be one of"):
        _engine(es, SQLiteJournal(":memory:"), mode="dry")


def test_the_lockout_holds_entries_back_and_recovery_closes_what_never_left(es) -> None:
    journal = SQLiteJournal(":memory:")
    ts0 = int(es["ts_recv"][0])
    ghost = Order("model-ESH4-ghost", "model-ESH4-ghost", "ES", Side.BUY, 1, OrderType.MARKET,
                  OrderRole.ENTRY, ts_ns=ts0)  # fmt: skip
    journal.record_order(ghost)  # journaled PENDING, the process died before sending it
    engine = _engine(es, journal, broker=PaperBroker(ES, BookState.new(ES.tick_fixed)),
                     mode="paper", lockout_s=24 * 3600)  # fmt: skip
    engine.on_events(es)
    assert engine.recovery is not None and engine.recovery.never_sent == ("model-ESH4-ghost",)
    status = {o.order_id: o.status for o in journal.orders()}
    assert status == {"model-ESH4-ghost": OrderStatus.CANCELLED}, "no entry inside the lockout"
    assert any("start-up reconciliation" in d.reason for d in journal.decisions())
    assert snapshot(engine, 0.0).locked_out


def test_warm_up_fills_the_windows_without_trading(es) -> None:
    ts = es["ts_recv"].astype(np.int64)
    cut = int(np.searchsorted(ts, ts[0] + (23 * 60 + 20) * 60 * 10**9))  # 20 min after the open
    engine = _engine(es, SQLiteJournal(":memory:"), broker=PaperBroker(ES, BookState.new(
        ES.tick_fixed)), mode="paper", lockout_s=0)  # fmt: skip
    assert engine.warming() == ["features"]
    engine.warm(es[:cut])
    assert engine.warming() == [] and engine.stats.decisions == 0 and engine.stats.orders == 0
    assert engine.entries_from_ns is None, "the start-up check waits for the live data"
    engine.on_events(es[cut:])
    assert engine.stats.decisions > 0 and engine.recovery is not None


def test_the_run_stops_when_its_time_is_up_and_shows_a_silent_feeds_age(es) -> None:
    async def silent():
        await asyncio.sleep(60)
        yield es[:1]

    engine = _engine(es, SQLiteJournal(":memory:"), broker=PaperBroker(ES, BookState.new(
        ES.tick_fixed)), mode="paper")  # fmt: skip
    seen = []
    assert asyncio.run(run_live(engine, silent(), stop_after_s=0.3, on_status=seen.append,
                                status_every_s=0.1)) == TIME_UP  # fmt: skip
    assert len(seen) >= 2 and seen[-1].data_age_s >= 0.25, "a silent feed shows its age"


def test_esml_live_replays_with_a_status_line_and_ends_flat(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite"
    r = CliRunner().invoke(app, ["live", "--source", "replay", "--broker", "paper",
                                 "--data", str(ES_FILE), "--strategy", "momentum",
                                 "--journal", str(journal), "--lockout", "0"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "paper 2023-12-25" in r.output and "| pos " in r.output and "data age" in r.output
    assert "position +0" in r.output
    with SQLiteJournal(journal) as j:
        orders = j.orders()
        assert orders and all(o.status.is_final for o in orders)
        ids = [f.fill_id for f in j.fills()]
        assert len(ids) == len(set(ids)) > 0


def test_bad_settings_are_refused_before_anything_starts(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(LiveSetupError, match="needs --data"):
        LiveSettings(source="replay", broker="paper")
    with pytest.raises(LiveSetupError, match="--strategy 'nope'"):
        LiveSettings(source="sim", broker="paper", strategy="nope")
    assert parse_duration("15m") == 900 and parse_duration("2h") == 7200
    with pytest.raises(LiveSetupError):
        parse_duration("soon")
    monkeypatch.delenv("ESML_TRADOVATE_CREDENTIALS", raising=False)
    with pytest.raises(LiveSetupError, match="ESML_TRADOVATE_CREDENTIALS"):
        credentials_from_file()
    secret = tmp_path / "creds.json"
    secret.write_text(json.dumps({"name": "u", "password": "hunter2", "appId": "a"}))
    monkeypatch.setenv("ESML_TRADOVATE_CREDENTIALS", str(secret))
    with pytest.raises(LiveSetupError) as e:
        tradovate_client(credentials_from_file(), Endpoints(), 2.25, orders=True)
    assert "sec" in str(e.value) and "hunter2" not in str(e.value)
    r = CliRunner().invoke(app, ["live", "--broker", "tradovate", "--data", str(ES_FILE)])
    assert r.exit_code == 2 and "hunter2" not in r.output


def test_recorded_history_warms_the_windows_before_the_live_data(es, tmp_path: Path) -> None:
    ts = es["ts_recv"].astype(np.int64)
    cut = int(np.searchsorted(ts, ts[0] + (23 * 60 + 20) * 60 * 10**9))  # history to 23:20
    ids = {"ESH4": int(es["instrument_id"][0])}
    history = write_mbo_dbn(tmp_path / "history.mbo.dbn.zst", es[:cut], symbols=ids)
    live_part = write_mbo_dbn(tmp_path / "live.mbo.dbn.zst", es[cut:], symbols=ids)
    s = LiveSettings(source="replay", broker="paper", data=live_part, strategy="momentum",
                     lockout_s=0, warm_from=(history,))  # fmt: skip
    seen: list = []
    journal = SQLiteJournal(":memory:")
    engine = asyncio.run(run(s, CFG, make_rule_strategy("momentum", tick_size=ES.tick_size),
                             journal, on_status=seen.append))  # fmt: skip
    start = int(ts[cut])
    assert engine.stats.mids[0][0] - start < 2 * 10**9, "deciding from the first live second"
    assert all(o.ts_ns >= start for o in journal.orders()), "nothing traded on the history"
    assert seen and not seen[-1].warming


def test_a_paced_replay_starts_its_clock_after_the_snapshot(es) -> None:
    """The file's snapshot is stamped 22 h before the first live event: at 600x that gap
    would be a 132 s wait before anything trades."""

    async def first_live_chunk() -> np.ndarray:
        async for chunk in paced(es, speed=600.0):
            if not np.all(chunk["flags"] & F_SNAPSHOT):
                return chunk
        raise AssertionError("no live events")

    t0 = time.monotonic()
    chunk = asyncio.run(first_live_chunk())
    assert time.monotonic() - t0 < 5 and len(chunk)


def test_live_help_names_every_source_and_broker() -> None:
    out = CliRunner().invoke(app, ["live", "--help"], terminal_width=200).output
    for name in (*SOURCES, *BROKERS):
        assert name in out, f"`esml live --help` does not name {name!r}"
