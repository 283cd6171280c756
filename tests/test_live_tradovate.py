"""End to end on loopback: the tick-engine container's entry point against the Tradovate
simulator replaying the real ES file (market data over the md socket, orders over REST,
order and fill news over the user socket), DynamoDB through moto; both sockets are dropped
under the first open position, and nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from containers.tick_engine import main as tick_engine
from esml.data.book import snapshot_end
from esml.data.dbn import main_instrument, read_mbo
from esml.decision.account_store import AccountStore
from esml.engine.shared_risk import exchange_clock
from esml.evaluation.trades import round_trips
from esml.market.instruments import ES
from esml.sim.tradovate_api import TradovateSim
from esml.sim.tradovate_market import ReplayMarket
from tests.aws_fixtures import (
    ACCOUNT_SPEC,
    FILLS_TABLE,
    ORDERS_TABLE,
    RISK_STATE_TABLE,
    TRADOVATE_LOGIN,
    all_items,
    aws,  # noqa: F401
    aws_session,  # noqa: F401
    create_secret,
    create_tables,
    sim_arguments,
)

ES_FILE = Path(__file__).resolve().parents[1] / "data/samples/esh4-glbx-mdp3-20231225.mbo.dbn.zst"
SYMBOL = "ESH4"
STEP_EVENTS, STEP_S = 400, 0.02  # the replay's pace: the file's ~60k events in ~3 s


@pytest.fixture(scope="module")
def es() -> np.ndarray:
    """The real file, its snapshot re-stamped to a second before the first live event (so
    the replay does not wait out the closed market)."""
    ev = read_mbo(ES_FILE)
    ev = ev[ev["instrument_id"] == main_instrument(ev)].copy()
    k = snapshot_end(ev)
    ev["ts_recv"][:k] = ev["ts_recv"][k] - 10**9
    return ev


@pytest.fixture
def sim(es: np.ndarray) -> Iterator[TradovateSim]:
    market = ReplayMarket(es, SYMBOL, speed=None)  # stepped below, as a feed would arrive
    with TradovateSim(**sim_arguments(prices=None, market=market)) as s:
        s._server.RequestHandlerClass.disable_nagle_algorithm = True  # type: ignore[union-attr]
        yield s


def _pace(sim: TradovateSim, stop: threading.Event, drops: list[int]) -> None:
    """Step the replay; the first time a position is open, drop both sockets under it (the
    engine may still be trading after the last event has been replayed)."""
    assert sim.market is not None
    while not stop.is_set():
        if sim.market.i < len(sim.market.events):
            sim.market.step(STEP_EVENTS)
        held = sim.net_position(ACCOUNT_SPEC, SYMBOL)
        if held and not drops:
            sim.faults.drop_sockets("all")
            drops.append(held)
        stop.wait(STEP_S)


def test_the_container_trades_the_simulator_through_a_socket_drop_and_dynamodb_agrees(
    aws,  # noqa: F811
    sim: TradovateSim,
    tmp_path: Path,
) -> None:
    assert sim.market is not None
    market = sim.market  # the server here replays 2023-12-25: its clock is the replay's
    tables = create_tables(ORDERS_TABLE, FILLS_TABLE, RISK_STATE_TABLE)
    arn = create_secret("tradovate", {**TRADOVATE_LOGIN, "env": "demo",
                                      "accountSpec": ACCOUNT_SPEC})  # fmt: skip
    env = {
        "ESML_SOURCE": "tradovate", "ESML_BROKER": "tradovate", "ESML_SYMBOL": SYMBOL,
        "ESML_STRATEGY": "momentum", "ESML_LOCKOUT_S": "0", "ESML_FOR": "6s",
        "ESML_ACCOUNT_CLOCK": "market",
        "ESML_METRICS_S": "1", "ESML_HEALTH_FILE": str(tmp_path / "health"),
        "TRADOVATE_SECRET_ARN": arn, "ESML_TRADOVATE_REST": sim.base_url,
        "ESML_TRADOVATE_WS": sim.ws_url, "ESML_TRADOVATE_MD": sim.md_url,
        "ORDERS_TABLE": ORDERS_TABLE, "FILLS_TABLE": FILLS_TABLE,
        "RISK_STATE_TABLE": RISK_STATE_TABLE,
    }  # fmt: skip
    stop, drops = threading.Event(), []
    pacer = threading.Thread(target=_pace, args=(sim, stop, drops), daemon=True)
    pacer.start()
    try:
        engine = asyncio.run(tick_engine.run_service(env))
    finally:
        stop.set()
        pacer.join(5)
    assert engine.mode == "live" and engine.stats.events > 1_000
    assert drops, "both sockets were dropped while a position was open"
    assert sim.net_position(ACCOUNT_SPEC, SYMBOL) == 0, "--for ends flat"
    orders = {i["client_id"]: i for i in all_items(tables[ORDERS_TABLE]) if i["kind"] == "order"}
    entries = [c for c, i in orders.items() if i["role"] == "entry"]
    assert entries, "signals became orders at the simulator"
    for cid in entries:  # every entry went out with its exchange-held bracket
        assert {f"{cid}-stop", f"{cid}-target"} <= set(orders)
    fills = engine.broker.fills()
    rows = all_items(tables[FILLS_TABLE])
    assert len(rows) == len({r["fill_id"] for r in rows}) == len(fills) > 0
    state = AccountStore(tables[RISK_STATE_TABLE], exchange_clock(market)).load(ACCOUNT_SPEC)
    assert state.position(SYMBOL) == 0 and not state.reservations
    net = sum(rt.net_pnl for rt in round_trips(fills, ES))
    assert state.books[SYMBOL].realized_pnl == pytest.approx(net)
