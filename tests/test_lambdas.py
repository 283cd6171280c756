"""The TradingView path end to end: webhook -> risk -> router -> loopback Tradovate.

The real handlers run against moto's DynamoDB and Secrets Manager; the Lambdas call each
other through LocalInvoker (moto cannot run Lambda code without Docker), and the broker
peer is the loopback Tradovate server, so every order crosses real HTTP.
"""

from __future__ import annotations

import base64
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from esml.config import DEFAULT_BUDGETS, ConfigError
from esml.decision.account_store import AccountStore, ConcurrentUpdateError
from esml.decision.alerts import NothingToExit, TradingViewAlert, front_month, parse_alert
from esml.decision.gates import MaxPositionGate
from esml.decision.proposal import AccountState
from esml.execution.orders import Side
from esml.market.calendar import trading_date
from esml.market.instruments import MES
from esml.sim.tradovate_api import TradovateSim
from lambdas.invoker import LocalInvoker
from lambdas.messages import RiskRequest, RouteRequest
from lambdas.risk import handler as risk_handler
from lambdas.router import handler as router_handler
from lambdas.webhook import handler as webhook_handler
from tests.aws_fixtures import (
    ACCOUNT_SPEC,
    IDEMPOTENCY_TABLE,
    ORDERS_TABLE,
    PASSPHRASE,
    RISK_STATE_TABLE,
    TRADOVATE_LOGIN,
    LocalContext,
    alert,
    all_items,
    api_event,
    aws,
    aws_session,
    create_secret,
    create_tables,
    tradovate_sim,
)

__all__ = ["aws", "aws_session"]

# the three handlers share Powertools' metric buffer in one process: the innermost flushes it
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


@dataclass
class Stack:
    tables: dict[str, Any]
    sim: TradovateSim
    env: dict[str, str]

    def post(self, payload: dict[str, Any] | str) -> tuple[int, dict[str, Any]]:
        body = payload if isinstance(payload, str) else json.dumps(payload)
        answer = webhook_handler.lambda_handler(api_event(body), LocalContext())
        return answer["statusCode"], json.loads(answer["body"])

    def items(self, table: str) -> list[dict[str, Any]]:
        return all_items(self.tables[table])

    def orders(self, role: str | None = None) -> list[dict[str, Any]]:
        items = [i for i in self.items(ORDERS_TABLE) if i["kind"] == "order"]
        return [i for i in items if role is None or i["role"] == role]

    def position(self) -> int | None:
        state = self.items(RISK_STATE_TABLE)
        return int(state[0]["position"]) if state else None


def wire(env: dict[str, str]) -> None:
    """Build the three Lambdas as a cold start would, chained through LocalInvoker."""
    router_handler.use(router_handler.Router.from_env(env))
    to_router = LocalInvoker(router_handler.lambda_handler, LocalContext("esml-router"))
    risk_handler.use(risk_handler.Risk.from_env(env, router=to_router))
    to_risk = LocalInvoker(risk_handler.lambda_handler, LocalContext("esml-risk"))
    webhook_handler.use(webhook_handler.Webhook.from_env(env, risk=to_risk))


@pytest.fixture
def make_stack(aws: None) -> Iterator[Any]:
    sims: list[TradovateSim] = []

    def make(esml_config: dict[str, Any] | None = None, broker_url: str | None = None) -> Stack:
        tables = create_tables()
        sim = tradovate_sim().__enter__()
        sims.append(sim)
        env = {
            "SECRET_ARN": create_secret("esml/webhook", {"passphrase": PASSPHRASE}),
            "IDEMPOTENCY_TABLE": IDEMPOTENCY_TABLE,
            "RISK_FUNCTION_NAME": "esml-risk",
            "RISK_STATE_TABLE": RISK_STATE_TABLE,
            "ROUTER_FUNCTION_NAME": "esml-router",
            "ORDERS_TABLE": ORDERS_TABLE,
            "FILLS_TABLE": "esml-fills",
            "TRADOVATE_SECRET_ARN": create_secret(
                "esml/tradovate", {**TRADOVATE_LOGIN, "env": "demo", "accountSpec": ACCOUNT_SPEC}
            ),
            "TRADOVATE_BASE_URL": broker_url or sim.base_url,
            "ESML_CONFIG": json.dumps(esml_config or {}),
        }
        wire(env)
        return Stack(tables, sim, env)

    yield make
    for module in (webhook_handler, risk_handler, router_handler):
        module.use(None)
    for sim in sims:
        sim.__exit__(None, None, None)


@pytest.fixture
def stack(make_stack: Any) -> Stack:
    return make_stack()


def client_id_of(payload: dict[str, Any]) -> str:
    return TradingViewAlert.model_validate(payload).client_order_id()


# -- the happy path and de-duplication ------------------------------------------------


def test_a_good_alert_places_exactly_one_bracketed_order(stack: Stack) -> None:
    status, answer = stack.post(alert())
    assert status == 200 and answer["status"] == "placed", answer
    cid = client_id_of(alert())

    (entry,) = stack.orders("entry")
    assert entry["client_id"] == cid and entry["symbol"] == "ESH5"
    assert entry["status"] == "Filled" and entry["avg_fill_price"] == Decimal("5772.25")
    legs = {o["role"]: o for o in stack.orders() if o["role"] != "entry"}
    assert {o["client_id"] for o in legs.values()} == {f"{cid}-stop", f"{cid}-target"}
    assert (legs["stop"]["price"], legs["target"]["price"]) == (
        Decimal("5770.25"),
        Decimal("5775.25"),
    )
    assert legs["stop"]["oco_id"] == legs["target"]["order_id"]

    (call,) = stack.sim.calls("/order/placeoso")
    assert call.body["isAutomated"] is True and call.body["clOrdId"] == cid
    assert (
        call.body["bracket1"]["orderType"] == "Stop" and call.body["bracket1"]["action"] == "Sell"
    )
    assert (
        call.body["bracket2"]["orderType"] == "Limit" and call.body["bracket2"]["price"] == 5775.25
    )
    assert stack.sim.net_position(ACCOUNT_SPEC, "ESH5") == 1
    assert stack.position() == 1
    (record,) = stack.items(IDEMPOTENCY_TABLE)
    assert record["status"] == "COMPLETED" and PASSPHRASE not in json.dumps(record, default=str)


def test_the_same_alert_again_places_nothing(stack: Stack) -> None:
    first = stack.post(alert())
    items_after_first = stack.items(ORDERS_TABLE)
    again = stack.post(alert())
    assert again == first
    assert stack.items(ORDERS_TABLE) == items_after_first
    assert len(stack.sim.calls("/order/placeoso")) == 1
    assert stack.position() == 1


def test_an_alert_reaching_risk_again_is_not_sent_twice(make_stack: Any) -> None:
    """Past the idempotency window the orders table's claim still holds the line (room
    for a second contract, so the replay passes the gates and reaches the router)."""
    stack = make_stack({"risk": {"max_position": 2, "budgets": {"RTH": {"cooldown_s": 0}}}})
    stack.post(alert())
    request = RiskRequest(alert=parse_alert(json.dumps(alert())).order())
    answer = risk_handler.lambda_handler(request.model_dump(mode="json"), LocalContext())
    assert answer["duplicate"] is True and answer["status"] == "placed"
    assert len(stack.sim.calls("/order/placeoso")) == 1
    assert len(stack.orders("entry")) == 1
    assert stack.position() == 1  # the second reservation was taken back


def test_a_base64_body_is_decoded(stack: Stack) -> None:
    event = api_event(base64.b64encode(json.dumps(alert()).encode()).decode())
    event["isBase64Encoded"] = True
    answer = webhook_handler.lambda_handler(event, LocalContext())
    assert answer["statusCode"] == 200 and json.loads(answer["body"])["status"] == "placed"


# -- refusals that must write nothing ------------------------------------------------------


def assert_nothing_written(stack: Stack) -> None:
    assert stack.items(ORDERS_TABLE) == []
    assert stack.items(IDEMPOTENCY_TABLE) == []
    assert stack.items(RISK_STATE_TABLE) == []
    assert stack.sim.requests == []


def test_a_wrong_passphrase_gets_401_and_writes_nothing(stack: Stack) -> None:
    status, answer = stack.post(alert(passphrase="kX9#mountain-ledger-43"))
    assert status == 401 and answer == {"error": "unauthorized"}
    assert_nothing_written(stack)


def test_malformed_json_gets_422_and_writes_nothing(stack: Stack) -> None:
    status, answer = stack.post('{"passphrase": "kX9#mountain-ledger-42", "ticker": "ES1!",')
    assert status == 422 and "Invalid JSON" in answer["details"][0]
    event = api_event(base64.b64encode(b"\xff\xfe passphrase").decode())
    event["isBase64Encoded"] = True
    answer = webhook_handler.lambda_handler(event, LocalContext())
    assert answer["statusCode"] == 422
    assert_nothing_written(stack)


WRONG_FIELDS = [
    ({"contracts": "2"}, "contracts"),  # a quoted number from a template typo
    ({"qty": 1}, "qty"),  # an unknown field
    ({"action": "long"}, "action"),
    ({"ticker": "ESF6"}, "ticker"),  # ES has no January contract
    ({"time": "2025-03-07 15:30:05"}, "time"),  # no time zone
    ({"price": -5772.25}, "price"),
]


def test_a_wrong_field_gets_422_naming_it_and_writes_nothing(stack: Stack) -> None:
    for change, field in WRONG_FIELDS:
        status, answer = stack.post(alert(**change))
        assert status == 422, change
        assert any(d.startswith(f"{field}:") for d in answer["details"]), answer
        assert PASSPHRASE not in json.dumps(answer)
        assert_nothing_written(stack)


def test_a_missing_field_gets_422(stack: Stack) -> None:
    payload = alert()
    del payload["price"]
    status, answer = stack.post(payload)
    assert status == 422 and answer["details"] == ["price: Field required"]
    assert_nothing_written(stack)


# -- risk and broker decisions ----------------------------------------------------------


def test_a_risk_rejection_places_nothing_and_names_the_gate(stack: Stack) -> None:
    stack.post(alert())
    status, answer = stack.post(alert(time="2025-03-07T15:30:15Z", price=5774.0))
    assert status == 200 and answer["status"] == "risk_rejected"
    assert (answer["gate"], answer["reason"]) == (
        "cooldown", "10.0 s since the last entry, cooldown 30 s"
    )
    status, answer = stack.post(alert(time="2025-03-07T15:36:10Z", price=5774.0))
    assert (answer["gate"], answer["reason"]) == ("max_position", "position +1 is at the limit 1")
    assert len(stack.sim.calls("/order/placeoso")) == 1
    assert len(stack.orders("entry")) == 1 and stack.position() == 1


def test_config_from_the_environment_sets_limits_and_brackets(make_stack: Any) -> None:
    stack = make_stack(
        {
            "risk": {"max_position": 2, "budgets": {"RTH": {"cooldown_s": 0}}},
            "execution": {"stop_ticks": 6, "target_ticks": 10},
        }
    )
    assert stack.post(alert())[1]["status"] == "placed"
    answer = stack.post(alert(time="2025-03-07T15:35:10Z", price=5773.5))[1]
    assert answer["status"] == "placed" and stack.position() == 2
    second = stack.sim.calls("/order/placeoso")[1].body
    assert (second["bracket1"]["stopPrice"], second["bracket2"]["price"]) == (5772.0, 5776.0)


def test_a_tradovate_reject_is_recorded_and_not_retried(stack: Stack) -> None:
    stale = alert(price=5712.25)  # 60 points under the market: the target is below it
    status, answer = stack.post(stale)
    assert status == 200 and answer["status"] == "broker_rejected"
    assert answer["reason"].startswith("InvalidPrice")
    (entry,) = stack.orders()
    assert entry["status"] == "Rejected" and entry["reject_reason"].startswith("InvalidPrice")
    assert stack.position() == 0  # the reservation was released

    assert stack.post(stale) == (status, answer)  # the same alert: the recorded answer
    route = RouteRequest(
        client_id=client_id_of(stale),
        symbol="ESH5",
        side=Side.BUY,
        qty=1,
        is_exit=False,
        reference_price=5712.25,
        stop_ticks=8,
        target_ticks=12,
        reason="a retry after the idempotency window",
        ts_ns=0,
    )
    again = router_handler.lambda_handler(route.model_dump(mode="json"), LocalContext())
    assert again["duplicate"] is True and again["status"] == "rejected"
    assert len(stack.sim.calls("/order/placeoso")) == 1


def test_an_exit_alert_flattens_the_position(stack: Stack) -> None:
    stack.post(alert())
    status, answer = stack.post(alert(action="exit", time="2025-03-07T16:02:41Z", price=5776.5))
    assert status == 200 and answer["status"] == "placed"
    assert len(stack.sim.calls("/order/liquidateposition")) == 1
    assert stack.sim.net_position(ACCOUNT_SPEC, "ESH5") == 0
    assert stack.position() == 0
    (exit_order,) = stack.orders("exit")
    assert exit_order["side"] == "Sell" and exit_order["status"] == "Filled"


def test_an_exit_alert_while_flat_sends_nothing(stack: Stack) -> None:
    status, answer = stack.post(alert(action="exit"))
    assert status == 200 and answer["status"] == "nothing_to_exit"
    assert stack.sim.requests == [] and stack.orders() == []


def test_an_unreachable_broker_releases_the_reservation_and_never_doubles(
    make_stack: Any,
) -> None:
    with tradovate_sim() as gone:
        dead_url = gone.base_url
    stack = make_stack(broker_url=dead_url)
    status, answer = stack.post(alert())
    assert status == 502
    (entry,) = stack.orders()
    assert entry["status"] == "Pending" and "outcome unknown" in entry["reject_reason"]
    assert stack.position() == 0
    assert stack.items(IDEMPOTENCY_TABLE) == []  # a failure keeps no idempotency record

    status, answer = stack.post(alert())  # the retry finds the claimed, unresolved order
    assert status == 200 and answer["status"] == "unknown" and answer["duplicate"] is True
    assert len(stack.orders()) == 1 and stack.position() == 0


# -- the account state's optimistic lock ----------------------------------------------------


def test_a_conflicting_write_is_retried_and_the_gate_decides_on_fresh_state(
    aws: None,
) -> None:
    table = create_tables(RISK_STATE_TABLE)[RISK_STATE_TABLE]
    clock = lambda: datetime(2025, 11, 14, 14, 30, 5, tzinfo=UTC)  # noqa: E731
    ours, theirs = AccountStore(table, clock), AccountStore(table, clock)
    gate = MaxPositionGate(max_contracts=1)
    proposal = parse_alert(json.dumps(alert())).to_proposal(position=0)
    attempts: list[int] = []

    def reserve(state: AccountState) -> str | None:
        attempts.append(state.position)
        if len(attempts) == 1:  # another Lambda takes the last contract meanwhile
            theirs.update("primary", lambda s: setattr(s, "position", s.position + 1))
        reason = gate.check(proposal, state, DEFAULT_BUDGETS["RTH"])
        if reason is None:
            state.position += proposal.signed_qty
        return reason

    state, reason = ours.update("primary", reserve)
    assert attempts == [0, 1]
    assert reason == "position +1 is at the limit 1"
    assert state.position == 1 and ours.load("primary").version == 1


def test_endless_conflicts_give_up_without_writing(aws: None) -> None:
    table = create_tables(RISK_STATE_TABLE)[RISK_STATE_TABLE]
    ours, theirs = AccountStore(table, max_attempts=3), AccountStore(table)

    def always_raced(state: AccountState) -> None:
        theirs.update("primary", lambda s: setattr(s, "realized_pnl", s.realized_pnl - 12.5))
        state.position += 1

    with pytest.raises(ConcurrentUpdateError):
        ours.update("primary", always_raced)
    stored = ours.load("primary")
    assert stored.position == 0 and stored.realized_pnl == -37.5


def test_a_new_trading_day_restores_the_loss_budget(aws: None) -> None:
    table = create_tables(RISK_STATE_TABLE)[RISK_STATE_TABLE]
    thursday_night = AccountStore(table, lambda: datetime(2025, 11, 13, 21, 0, tzinfo=UTC))
    thursday_night.update("primary", lambda s: setattr(s, "realized_pnl", -812.5))
    # Thursday 17:30 Chicago is already Friday's session
    friday = AccountStore(table, lambda: datetime(2025, 11, 13, 23, 30, tzinfo=UTC))
    state = friday.load("primary")
    assert (state.trading_day, state.realized_pnl) == ("2025-11-14", 0.0)


@pytest.mark.parametrize(
    ("utc", "day"),
    [
        (datetime(2025, 11, 14, 22, 59, tzinfo=UTC), date(2025, 11, 14)),  # Fri 16:59 CST
        (datetime(2025, 11, 14, 23, 0, tzinfo=UTC), date(2025, 11, 17)),  # Fri 17:00 -> Mon
        (datetime(2025, 11, 16, 23, 0, tzinfo=UTC), date(2025, 11, 17)),  # Sun open -> Mon
        (datetime(2025, 11, 3, 23, 0, tzinfo=UTC), date(2025, 11, 4)),  # Mon 17:00 CST
        (datetime(2025, 7, 1, 21, 59, tzinfo=UTC), date(2025, 7, 1)),  # Tue 16:59 CDT
        (datetime(2025, 7, 1, 22, 0, tzinfo=UTC), date(2025, 7, 2)),  # Tue 17:00 CDT
    ],
)
def test_trading_date(utc: datetime, day: date) -> None:
    assert trading_date(utc) == day


def test_trading_date_needs_a_time_zone() -> None:
    with pytest.raises(ValueError, match="timezone"):
        trading_date(datetime(2025, 11, 14, 14, 30))


# -- the alert model ---------------------------------------------------------------------


def test_tickers_resolve_to_the_same_contract_and_order_id() -> None:
    spellings = ["ES1!", "CME_MINI:ES1!", "ESH5", "ESH2025", "esh5"]
    alerts = [parse_alert(json.dumps(alert(ticker=t))) for t in spellings]
    assert {a.contract_symbol() for a in alerts} == {"ESH5"}
    assert len({a.client_order_id() for a in alerts}) == 1
    other_passphrase = parse_alert(json.dumps(alert(passphrase="something else")))
    assert other_passphrase.client_order_id() == alerts[0].client_order_id()
    later = parse_alert(json.dumps(alert(time="2025-03-07T15:30:06Z")))
    assert later.client_order_id() != alerts[0].client_order_id()


def test_the_evening_before_the_roll_already_trades_the_next_contract() -> None:
    # Wednesday 12 March 2025, 18:30 Chicago (CDT): Thursday's session, the roll date
    evening = parse_alert(json.dumps(alert(time="2025-03-12T23:30:00Z")))
    afternoon = parse_alert(json.dumps(alert(time="2025-03-12T20:30:00Z")))
    assert (afternoon.contract_symbol(), evening.contract_symbol()) == ("ESH5", "ESM5")


def test_micro_alerts_trade_the_micro() -> None:
    a = parse_alert(json.dumps(alert(ticker="MES1!", contracts=3)))
    assert a.instrument is MES and a.contract_symbol() == "MESH5"
    p = a.to_proposal(position=0)
    assert (p.symbol, p.side, p.qty, p.source, p.is_exit) == (
        "MESH5",
        Side.BUY,
        3,
        "tradingview",
        False,
    )


def test_front_month_rolls_eight_days_before_expiry() -> None:
    assert front_month("ES", date(2025, 3, 12)) == "ESH5"  # expiry Fri 21 Mar
    assert front_month("ES", date(2025, 3, 13)) == "ESM5"  # roll Thursday
    assert front_month("ES", date(2025, 12, 10)) == "ESZ5"  # expiry Fri 19 Dec
    assert front_month("ES", date(2025, 12, 11)) == "ESH6"  # roll Thursday
    assert front_month("ES", date(2026, 3, 11)) == "ESH6"
    assert front_month("ES", date(2026, 3, 12)) == "ESM6"


def test_exit_closes_the_whole_position() -> None:
    a = parse_alert(json.dumps(alert(action="exit", contracts=1)))
    p = a.to_proposal(position=-2)
    assert (p.side, p.qty, p.is_exit, p.signed_qty) == (Side.BUY, 2, True, 2)
    with pytest.raises(NothingToExit):
        a.to_proposal(position=0)


# -- cold start ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ['{"risk": {"max_position": 0}}', '{"risk": ', "[1, 2]", '{"instrument": "CL"}'],
)
def test_a_bad_esml_config_fails_loudly(raw: str) -> None:
    with pytest.raises(ConfigError):
        risk_handler.config_from_env({"ESML_CONFIG": raw})


def test_a_bad_esml_config_fails_the_cold_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESML_CONFIG", '{"risk": {"max_daily_loss": -1}}')
    try:
        with pytest.raises(ConfigError, match="max_daily_loss"):
            importlib.reload(risk_handler)
    finally:
        monkeypatch.delenv("ESML_CONFIG")
        importlib.reload(risk_handler)


def test_the_handlers_import_no_numerical_stack() -> None:
    """Lambda packages stay small and cold starts fast: no numpy/pandas/numba anywhere in
    the handlers' import chain (checked in a fresh interpreter)."""
    probe = (
        "import sys, lambdas.webhook.handler, lambdas.risk.handler, lambdas.router.handler; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'pandas', 'numba')))"
    )
    root = Path(__file__).resolve().parents[1]
    env = {"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
