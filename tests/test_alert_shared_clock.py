"""The engine's entries on the shared account (`SharedRiskBroker`) are stamped with the
server's clock, as the alert path's are: a reservation's age and the cooldown are
server-clock concepts, whatever market time the engine's intent carries (moto)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from esml.broker.paper import PaperBroker
from esml.config import load_config
from esml.data.book import BookState
from esml.decision.gates import GateStack
from esml.engine.shared_risk import on_shared_account
from esml.execution.orders import OrderIntent
from esml.market.instruments import ES
from esml.market.side import Side
from tests.aws_fixtures import (
    FILLS_TABLE,
    ORDERS_TABLE,
    RISK_STATE_TABLE,
    aws,  # noqa: F401
    aws_session,  # noqa: F401
    create_tables,
)

CFG = load_config()
MARKET_NS = 1_703_541_600 * 10**9  # the intent's market time: 2023-12-25, a replayed day


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * 10**9 + t.microsecond * 1_000


def test_reservations_and_cooldown_follow_the_server_clock(aws) -> None:  # noqa: F811
    tables = create_tables(ORDERS_TABLE, FILLS_TABLE, RISK_STATE_TABLE)
    now = [datetime(2025, 3, 7, 15, 30, 5, 250_000, tzinfo=UTC)]  # Friday, RTH
    broker, _ = on_shared_account(
        PaperBroker(ES, BookState.new(ES.tick_fixed), CFG.paper_exchange),
        orders_table=tables[ORDERS_TABLE], fills_table=tables[FILLS_TABLE],
        risk_table=tables[RISK_STATE_TABLE], account="DEMO1", risk=CFG.risk,
        gates=GateStack.from_config(CFG.risk, ES, CFG.execution.commission_per_side),
        clock=lambda: now[0],
    )  # fmt: skip
    buy = OrderIntent("eng-1", "ESH5", Side.BUY, 1, ts_ns=MARKET_NS)
    assert broker.reserve(buy).approved
    state = broker.store.load("DEMO1")
    assert state.reservations["eng-1"].ts_ns == _ns(now[0]) != MARKET_NS
    assert state.risk.last_entry_ns == _ns(now[0])
    # ten market minutes later but one server second later: the cooldown still holds
    sell = OrderIntent("eng-2", "ESH5", Side.SELL, 1, ts_ns=MARKET_NS + 600 * 10**9)
    now[0] += timedelta(seconds=1)
    refused = broker.reserve(sell)
    assert not refused.approved and refused.gate == "cooldown"
    assert set(broker.store.load("DEMO1").reservations) == {"eng-1"}, "a refusal writes nothing"
    now[0] += timedelta(seconds=CFG.risk.budgets["RTH"].cooldown_s)
    assert broker.reserve(sell).approved
