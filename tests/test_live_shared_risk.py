"""The engine on the shared account (DynamoDB through moto): its entries pass the same
gates against the same item as the alerts and are reserved there; every fill is booked
once; the account follows the broker. On the real ES file."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from esml.alpha.rules import make_rule_strategy
from esml.broker.paper import PaperBroker
from esml.config import load_config
from esml.data.book import BookState
from esml.decision.account_store import AccountStore
from esml.decision.gates import GateStack
from esml.decision.proposal import AccountState, Reservation, ReservationStatus
from esml.engine.engine import Engine
from esml.engine.shared_risk import on_shared_account
from esml.evaluation.trades import round_trips
from esml.market.calendar import trading_day
from esml.market.instruments import ES
from tests.aws_fixtures import (
    FILLS_TABLE,
    ORDERS_TABLE,
    RISK_STATE_TABLE,
    all_items,
    aws,  # noqa: F401
    aws_session,  # noqa: F401
    create_tables,
)

ACCOUNT = "DEMO4417283"
CFG = load_config()


@pytest.fixture(scope="module")
def es(es_events) -> np.ndarray:
    from esml.data.dbn import main_instrument

    ev = es_events[es_events["instrument_id"] == main_instrument(es_events)]
    ts = ev["ts_recv"].astype(np.int64)
    return ev[: int(np.searchsorted(ts, ts[0] + (23 * 60 + 40) * 60 * 10**9))]  # to 23:40


def _engine(events: np.ndarray, tables: dict[str, Any]) -> Engine:
    gates = GateStack.from_config(CFG.risk, ES, CFG.execution.commission_per_side)
    paper = PaperBroker(ES, BookState.new(ES.tick_fixed), CFG.paper_exchange)
    broker, journal = on_shared_account(  # the paper exchange's clock is the server's
        paper, orders_table=tables[ORDERS_TABLE], fills_table=tables[FILLS_TABLE],
        risk_table=tables[RISK_STATE_TABLE], account=ACCOUNT, gates=gates, risk=CFG.risk,
    )  # fmt: skip
    strategy = make_rule_strategy("momentum", tick_size=ES.tick_size)
    account = AccountState(trading_day(int(events["ts_recv"][0])))
    return Engine(CFG, strategy, journal, account, broker=broker, mode="paper", lockout_s=0)


def test_fills_land_once_and_the_shared_account_follows_the_broker(aws, es) -> None:  # noqa: F811
    tables = create_tables(ORDERS_TABLE, FILLS_TABLE, RISK_STATE_TABLE)
    engine = _engine(es, tables)
    engine.on_events(es)
    engine.finish(int(es["ts_recv"][-1]))
    fills = engine.broker.fills()
    assert len(fills) >= 4, "momentum trades the real file"
    rows = all_items(tables[FILLS_TABLE])
    assert sorted(r["fill_id"] for r in rows) == sorted(f.fill_id for f in fills)
    orders = {i["client_id"]: i for i in all_items(tables[ORDERS_TABLE]) if i["kind"] == "order"}
    assert all(r["client_id"] in orders for r in rows), "each fill belongs to a journaled order"
    state = engine.broker.store.load(ACCOUNT)  # on the replay's clock, as it was written
    assert state.position("ES") == engine.broker.position("ES") == 0
    assert not state.reservations, "filled entries consumed their reservations"
    net = sum(rt.net_pnl for rt in round_trips(fills, ES))
    assert state.books["ES"].realized_pnl == pytest.approx(net)


def test_alerts_holding_the_last_contract_block_the_engines_entries(aws, es) -> None:  # noqa: F811
    tables = create_tables(ORDERS_TABLE, FILLS_TABLE, RISK_STATE_TABLE)
    store = AccountStore(tables[RISK_STATE_TABLE])

    def alert_reserves(state) -> None:  # what the risk Lambda writes for approved alerts
        for cid, signed in (("tv-buy", 1), ("tv-sell", -1)):  # the last contract, each way
            state.reservations[cid] = Reservation(
                cid, "ES", signed, 1, False, ReservationStatus.PLACED, 0
            )

    store.update(ACCOUNT, alert_reserves)
    ts = es["ts_recv"].astype(np.int64)
    first_signals = es[: int(np.searchsorted(ts, ts[0] + (23 * 60 + 12) * 60 * 10**9))]
    engine = _engine(first_signals, tables)
    engine.on_events(first_signals)
    engine.finish(int(first_signals["ts_recv"][-1]))
    assert engine.broker.fills() == [] and engine.stats.rejected_by_broker >= 1
    reasons = [d.reason for d in engine.journal.decisions()]
    assert any("shared risk, max_position" in r for r in reasons)
    assert set(store.load(ACCOUNT).reservations) == {"tv-buy", "tv-sell"}, "nothing reserved"
