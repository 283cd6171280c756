"""The TradingView path end to end: webhook -> risk -> router -> loopback Tradovate.

The real handlers run against moto's DynamoDB and Secrets Manager; the Lambdas call each
other through LocalInvoker, and the broker peer is the loopback Tradovate simulator, so
every order crosses real HTTP (tests/alert_stack.py). Market prices are SYNTHETIC,
illustrative quotes near where ES traded in March 2025.
"""

from __future__ import annotations

import base64
import importlib
import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from esml.config import ConfigError
from esml.decision.account_store import AccountStore, ConcurrentUpdateError
from esml.decision.alerts import TradingViewAlert, front_month, parse_alert
from esml.decision.proposal import SharedAccount
from esml.market.calendar import trading_date
from esml.market.instruments import MES
from lambdas.messages import RiskRequest
from lambdas.risk import handler as risk_handler
from lambdas.webhook import handler as webhook_handler
from lambdas.wiring import config_from_env
from tests.alert_stack import ALERT_TIME, Stack
from tests.aws_fixtures import (
    IDEMPOTENCY_TABLE,
    ORDERS_TABLE,
    PASSPHRASE,
    RISK_STATE_TABLE,
    LocalContext,
    alert,
    api_event,
    create_tables,
)

# the three handlers share Powertools' metric buffer in one process: the innermost flushes it
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


@pytest.fixture
def stack(make_stack: Any) -> Stack:
    return make_stack()


def at(stack: Stack, seconds: float, **fields: Any) -> dict[str, Any]:
    """An alert `seconds` after the first one, arriving a second later by the server."""
    when = ALERT_TIME + timedelta(seconds=seconds)
    stack.clock.now = when + timedelta(seconds=1)
    return alert(time=when.isoformat().replace("+00:00", "Z"), **fields)


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
    (call,) = stack.sim.calls("/order/placeoso")
    assert call.body["isAutomated"] is True and call.body["clOrdId"] == cid
    assert call.body["bracket1"]["orderType"] == "Stop"
    assert call.body["bracket2"]["price"] == 5775.25
    assert stack.broker_position() == 1 and stack.position() == 1
    assert answer["position"] == 1 and answer["symbol"] == "ESH5"
    assert stack.account().reservations == {}  # the entry's fill consumed its reservation
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
    stack.post(alert(market_position="long"))
    request = RiskRequest(alert=parse_alert(json.dumps(alert(market_position="long"))).order())
    answer = risk_handler.lambda_handler(request.model_dump(mode="json"), LocalContext())
    assert answer["duplicate"] is True and answer["status"] == "placed", answer
    assert len(stack.sim.calls("/order/placeoso")) == 1
    assert len(stack.orders("entry")) == 1
    assert stack.position() == 1 and stack.account().reservations == {}


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


UNAUTHENTICATED = [
    alert(passphrase="kX9#mountain-ledger-43"),
    {k: v for k, v in alert().items() if k != "passphrase"},
    alert(passphrase=None),
    alert(passphrase=42),
    {"passphrase": "nope", "qty": "anything"},
    '{"passphrase": "kX9#mountain-ledger-42", "ticker": "ES1!",',  # cut short
    "[1, 2, 3]",
    "",
]


@pytest.mark.parametrize("payload", UNAUTHENTICATED)
def test_no_valid_passphrase_gets_401_before_any_detail(
    stack: Stack, payload: dict[str, Any] | str
) -> None:
    status, answer = stack.post(payload)
    assert status == 401
    assert answer == {"error": "unauthorized", "message": "missing or wrong passphrase"}
    assert_nothing_written(stack)


def test_a_body_that_is_not_utf8_gets_401(stack: Stack) -> None:
    event = api_event(base64.b64encode(b"\xff\xfe passphrase").decode())
    event["isBase64Encoded"] = True
    answer = webhook_handler.lambda_handler(event, LocalContext())
    assert answer["statusCode"] == 401
    assert_nothing_written(stack)


WRONG_FIELDS = [
    ({"contracts": "2"}, "contracts"),  # a quoted number from a template typo
    ({"qty": 1}, "qty"),  # an unknown field
    ({"action": "long"}, "action"),
    ({"ticker": "ESF6"}, "ticker"),  # ES has no January contract
    ({"ticker": "ESZ699999999999999999999"}, "ticker"),
    ({"ticker": "ESH2020"}, "body"),  # expired years ago
    ({"time": "2025-03-07 15:30:05"}, "time"),  # no time zone
    ({"time": "99999-03-07T15:30:05Z"}, "time"),
    ({"price": -5772.25}, "price"),
    ({"confidence": 1.2}, "confidence"),
    ({"stop": {"ticks": 8, "points": 2}}, "stop"),  # two units
    ({"stop": {"price": 5780.0}}, "body"),  # a buy's stop above the entry
    ({"targets": [{"ticks": 8, "contracts": 1}, {"ticks": 16, "contracts": 2}]}, "body"),
]


def test_a_wrong_field_gets_422_naming_it_and_writes_nothing(stack: Stack) -> None:
    for change, field in WRONG_FIELDS:
        status, answer = stack.post(alert(**change))
        assert status == 422 and answer["error"] == "invalid_alert", change
        assert any(d.startswith(f"{field}") for d in answer["fields"]), answer
        assert PASSPHRASE not in json.dumps(answer)
        assert_nothing_written(stack)


@pytest.mark.parametrize(
    ("offset_s", "code"), [(-61, "stale_alert"), (-2 * 365 * 86400, "stale_alert"),
                           (6, "future_alert"), (13 * 365 * 86400, "future_alert")],
)  # fmt: skip
def test_alert_times_are_checked_against_the_server_clock(
    stack: Stack, offset_s: int, code: str
) -> None:
    when = stack.clock.now + timedelta(seconds=offset_s)
    status, answer = stack.post(alert(time=when.isoformat()))
    assert (status, answer["error"]) == (422, code)
    assert_nothing_written(stack)


@pytest.mark.parametrize(
    "when", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59+14:00", "2038-01-19T03:14:08Z"]
)
def test_out_of_range_alert_times_are_a_4xx(stack: Stack, when: str) -> None:
    status, answer = stack.post(alert(time=when))
    assert status == 422 and answer["error"] in ("invalid_alert", "future_alert")
    assert_nothing_written(stack)


def test_alerts_arriving_out_of_order_are_judged_by_arrival(make_stack: Any) -> None:
    """With the cooldown at 0, alerts whose own times run backwards all trade: no alert's
    time moves the cooldown's reference."""
    stack = make_stack({"risk": {"max_position": 4, "budgets": {"RTH": {"cooldown_s": 0}}}})
    stamps = [ALERT_TIME - timedelta(seconds=s) for s in (0, 20, 10, 30)]
    for i, when in enumerate(stamps):
        body = alert(time=when.isoformat(), price=5772.25 - 0.25 * i, market_position="long")
        assert stack.post(body)[1]["status"] == "placed"
    assert stack.position() == 4 == stack.broker_position()


def test_a_secret_without_its_passphrase_is_a_clear_500(stack: Stack) -> None:
    import boto3

    boto3.client("secretsmanager").put_secret_value(
        SecretId=stack.env["SECRET_ARN"], SecretString=json.dumps({"pass": "x"})
    )
    webhook_handler.use(
        webhook_handler.Webhook.from_env(stack.env, risk=lambda p: {}, clock=stack.clock)
    )
    status, answer = stack.post(alert())
    assert (status, answer["error"]) == (500, "misconfigured")
    assert stack.sim.requests == [] and stack.items(ORDERS_TABLE) == []


def test_a_non_string_body_and_odd_events_never_escape(stack: Stack) -> None:
    for event in ({"body": {"passphrase": PASSPHRASE}}, {"body": 12}, {}, {"body": None}):
        answer = webhook_handler.lambda_handler(event, LocalContext())
        assert answer["statusCode"] == 401
    assert_nothing_written(stack)


# -- risk and broker decisions ----------------------------------------------------------


def test_time_gates_measure_from_the_server_clock(stack: Stack) -> None:
    """The cooldown counts server seconds, so alerts arriving out of order are judged by
    when they arrive, and an alert's own time never blocks a later one."""
    assert stack.post(alert())[1]["status"] == "placed"
    _, answer = stack.post(at(stack, 10, action="add", price=5774.0))
    assert (answer["gate"], answer["reason"]) == (
        "cooldown",
        "10.0 s since the last entry, cooldown 30 s",
    )
    _, answer = stack.post(at(stack, 400, action="add", price=5774.0))
    assert (answer["gate"], answer["reason"]) == ("max_position", "position +1 is at the limit 1")
    assert len(stack.sim.calls("/order/placeoso")) == 1 and stack.position() == 1


def test_config_from_the_environment_sets_limits_and_brackets(make_stack: Any) -> None:
    stack = make_stack(
        {
            "risk": {"max_position": 2, "budgets": {"RTH": {"cooldown_s": 0}}},
            "execution": {"stop_ticks": 6, "target_ticks": 10},
        }
    )
    assert stack.post(alert())[1]["status"] == "placed"
    answer = stack.post(at(stack, 5, action="add", price=5773.5))[1]
    assert answer["status"] == "placed" and stack.position() == 2
    second = stack.sim.calls("/order/placeoso")[1].body
    assert (second["bracket1"]["stopPrice"], second["bracket2"]["price"]) == (5772.0, 5776.0)


def test_a_tradovate_reject_is_recorded_released_and_not_retried(stack: Stack) -> None:
    stale = alert(price=5712.25)  # 60 points under the market: the target is below it
    status, answer = stack.post(stale)
    assert status == 200 and answer["status"] == "broker_rejected", answer
    (entry,) = stack.orders()
    assert entry["status"] == "Rejected"
    assert stack.position() == 0 and stack.account().reservations == {}
    assert stack.post(stale) == (status, answer)  # the same alert: the recorded answer
    assert len(stack.sim.calls("/order/placeoso")) == 1


def test_a_bracket_leg_fill_frees_the_position_and_closes_the_legs(stack: Stack) -> None:
    stack.post(alert())
    stack.sim.set_price("ESH5", 5775.25)  # the target fills at the exchange
    assert stack.position() == 1  # nothing has told the account yet...
    answer = stack.post(at(stack, 60, price=5775.25))[1]  # ...the next alert syncs first
    assert answer["status"] == "placed" and stack.position() == 1
    cid = client_id_of(alert())
    by_id = {o["client_id"]: o for o in stack.orders()}
    assert (by_id[f"{cid}-target"]["status"], by_id[f"{cid}-stop"]["status"]) == (
        "Filled",
        "Canceled",
    )
    book = stack.account().books["ESH5"]
    assert book.realized_pnl == pytest.approx(150.0)  # 3 points x $50, no commission
    assert stack.broker_position() == 1


def test_a_sell_while_long_reverses_with_its_own_bracket(stack: Stack) -> None:
    stack.post(alert())
    answer = stack.post(at(stack, 60, action="sell", price=5772.25))[1]
    assert answer["status"] == "placed" and stack.position() == -1
    assert stack.broker_position() == -1
    working = stack.working()
    assert len(working) == 2 and {o["action"] for o in working} == {"Buy"}  # the short's legs
    assert stack.account().reservations == {}


def test_close_only_and_flat_market_position_only_close(stack: Stack) -> None:
    stack.post(alert())
    answer = stack.post(at(stack, 60, action="sell", market_position="flat"))[1]
    assert answer["status"] == "placed" and stack.position() == 0 == stack.broker_position()
    assert stack.working() == []


def test_a_buy_while_long_is_refused_unless_pyramiding(make_stack: Any) -> None:
    stack = make_stack({"risk": {"max_position": 3, "budgets": {"RTH": {"cooldown_s": 0}}}})
    stack.post(alert())
    answer = stack.post(at(stack, 5, price=5772.5))[1]
    assert (answer["status"], answer["gate"]) == ("risk_rejected", "position_open")
    answer = stack.post(at(stack, 6, price=5772.5, market_position="long", contracts=2))[1]
    assert answer["status"] == "placed" and stack.position() == 3 == stack.broker_position()
    answer = stack.post(at(stack, 7, price=5772.5, action="add"))[1]
    assert (answer["gate"], answer["reason"]) == ("max_position", "position +3 is at the limit 3")


def test_exit_flattens_only_its_own_instrument(make_stack: Any) -> None:
    stack = make_stack({"risk": {"budgets": {"RTH": {"cooldown_s": 0}}}})
    stack.post(alert())
    assert stack.post(at(stack, 5, ticker="MES1!", contracts=1))[1]["status"] == "placed"
    answer = stack.post(at(stack, 60, ticker="MES1!", action="exit"))[1]
    assert answer["status"] == "placed"
    assert (stack.position("MESH5"), stack.position("ESH5")) == (0, 1)
    assert (stack.broker_position("MESH5"), stack.broker_position("ESH5")) == (0, 1)
    assert len(stack.working()) == 2  # ES keeps its bracket


def test_an_exit_alert_while_flat_sends_nothing(stack: Stack) -> None:
    status, answer = stack.post(alert(action="exit"))
    assert status == 200 and (answer["status"], answer["gate"]) == (
        "risk_rejected",
        "nothing_to_exit",
    )
    assert stack.sim.calls("/order/placeorder") == [] and stack.orders() == []


def test_a_limit_entry_is_cancelled_after_its_time(stack: Stack) -> None:
    entry = alert(order_type="limit", limit_price=5770.0, cancel_after_s=30)
    assert stack.post(entry)[1]["status"] == "placed"
    assert stack.position() == 0 and len(stack.account().reservations) == 1
    stack.clock.advance(31)
    stack.sync()  # the deadline passed: cancelled at the broker
    stack.sync()  # and, the broker saying it is over, released
    assert stack.account().reservations == {} and stack.working() == []


def test_a_cancel_alert_cancels_working_entries(stack: Stack) -> None:
    stack.post(alert(order_type="limit", limit_price=5770.0))
    answer = stack.post(at(stack, 60, action="cancel"))[1]
    assert answer["status"] in ("cancelled", "placed"), answer
    assert stack.working() == [] and stack.account().reservations == {}


def test_a_weak_confidence_is_refused_with_its_reason(stack: Stack) -> None:
    answer = stack.post(alert(confidence=0.8))[1]
    assert (answer["gate"], answer["reason"]) == ("confidence", "confidence 0.800 below 0.870")
    assert stack.post(at(stack, 1, confidence=0.91))[1]["status"] == "placed"


def test_targets_with_quantities_and_break_even(make_stack: Any) -> None:
    stack = make_stack({"risk": {"max_position": 2}})
    two = alert(
        contracts=2,
        stop={"points": 2},
        targets=[{"ticks": 4, "contracts": 1}, {"price": 5777.25, "contracts": 1}],
        breakeven_after_tp1=True,
    )
    assert stack.post(two)[1]["status"] == "placed"
    calls = stack.sim.calls("/order/placeoso")
    assert [c.body["orderQty"] for c in calls] == [1, 1]
    assert [c.body["bracket2"]["price"] for c in calls] == [5773.25, 5777.25]
    assert {c.body["bracket1"]["stopPrice"] for c in calls} == {5770.25}
    stack.sim.set_price("ESH5", 5773.25)  # TP1
    stack.sync()
    assert stack.position() == 1
    stops = [o for o in stack.working() if o["orderType"] == "Stop"]
    assert [s["stopPrice"] for s in stops] == [5772.25]  # moved to the entry


# -- the account state's optimistic lock ----------------------------------------------------


def test_a_conflicting_write_is_retried_on_fresh_state(aws: None) -> None:
    table = create_tables(RISK_STATE_TABLE)[RISK_STATE_TABLE]
    clock = lambda: datetime(2025, 11, 14, 14, 30, 5, tzinfo=UTC)  # noqa: E731
    ours, theirs = AccountStore(table, clock), AccountStore(table, clock)
    seen: list[float] = []

    def change(state: SharedAccount) -> None:
        seen.append(state.risk.realized_pnl)
        if len(seen) == 1:  # another writer changes the account meanwhile
            theirs.update("primary", lambda s: setattr(s.risk, "realized_pnl", -12.5))
        state.risk.loss_streak += 1

    state, _ = ours.update("primary", change)
    assert seen == [0.0, -12.5] and state.risk.loss_streak == 1
    assert ours.load("primary").risk.version == 2


def test_endless_conflicts_give_up_without_writing(aws: None) -> None:
    table = create_tables(RISK_STATE_TABLE)[RISK_STATE_TABLE]
    ours, theirs = AccountStore(table, max_attempts=3), AccountStore(table)

    def always_raced(state: SharedAccount) -> None:
        theirs.update("primary", lambda s: setattr(s.risk, "realized_pnl", s.risk.realized_pnl - 12.5))  # fmt: skip # noqa: E501
        state.risk.loss_streak += 1

    with pytest.raises(ConcurrentUpdateError):
        ours.update("primary", always_raced)
    stored = ours.load("primary")
    assert stored.risk.loss_streak == 0 and stored.risk.realized_pnl == -37.5


def test_a_new_trading_day_restores_the_loss_budget(aws: None) -> None:
    table = create_tables(RISK_STATE_TABLE)[RISK_STATE_TABLE]
    thursday_night = AccountStore(table, lambda: datetime(2025, 11, 13, 21, 0, tzinfo=UTC))
    thursday_night.update("primary", lambda s: setattr(s.risk, "realized_pnl", -812.5))
    # Thursday 17:30 Chicago is already Friday's session
    friday = AccountStore(table, lambda: datetime(2025, 11, 13, 23, 30, tzinfo=UTC))
    state = friday.load("primary")
    assert (state.risk.trading_day, state.risk.realized_pnl) == ("2025-11-14", 0.0)


@pytest.mark.parametrize(
    ("utc", "day"),
    [
        (datetime(2025, 11, 14, 22, 59, tzinfo=UTC), date(2025, 11, 14)),  # Fri 16:59 CST
        (datetime(2025, 11, 14, 23, 0, tzinfo=UTC), date(2025, 11, 17)),  # Fri 17:00 -> Mon
        (datetime(2025, 11, 16, 23, 0, tzinfo=UTC), date(2025, 11, 17)),  # Sun open -> Mon
        (datetime(2025, 7, 1, 21, 59, tzinfo=UTC), date(2025, 7, 1)),  # Tue 16:59 CDT
        (datetime(2025, 7, 1, 22, 0, tzinfo=UTC), date(2025, 7, 2)),  # Tue 17:00 CDT
    ],
)
def test_trading_date(utc: datetime, day: date) -> None:
    assert trading_date(utc) == day


# -- the alert model ---------------------------------------------------------------------


def test_tickers_resolve_to_the_same_contract_and_order_id() -> None:
    spellings = ["ES1!", "CME_MINI:ES1!", "ESH5", "ESH25", "ESH2025", "esh5"]
    alerts = [parse_alert(json.dumps(alert(ticker=t))) for t in spellings]
    assert {a.contract_symbol() for a in alerts} == {"ESH5"}
    assert len({a.client_order_id() for a in alerts}) == 1
    other_passphrase = parse_alert(json.dumps(alert(passphrase="something else")))
    assert other_passphrase.client_order_id() == alerts[0].client_order_id()
    later = parse_alert(json.dumps(alert(time="2025-03-07T15:30:06Z")))
    assert later.client_order_id() != alerts[0].client_order_id()


@pytest.mark.parametrize(
    "ticker", ["ES", "ES2!", "ESH", "ESH123", "ESZ699999999999999999999", "ES1!!", "XYZ1!",
               "ESF6", "CME MINI:ES1!", " ES1! x"],
)  # fmt: skip
def test_the_ticker_grammar_is_strict(ticker: str) -> None:
    with pytest.raises(ValueError):
        parse_alert(json.dumps(alert(ticker=ticker)))


def test_stops_and_targets_in_every_unit() -> None:
    from esml.market.side import Side

    def ticks(**fields: Any) -> list[tuple[int, int, int]]:
        return parse_alert(json.dumps(alert(**fields))).bracket_ticks(Side.BUY)

    assert ticks(stop={"ticks": 6}, targets=[{"points": 3}]) == [(1, 6, 12)]
    assert ticks(stop={"price": 5770.25}, targets=[{"price": 5776.25}]) == [(1, 8, 16)]
    assert ticks(stop={"percent": 0.05}) == [(1, 12, 12)]  # 2.886 points -> 12 ticks
    with pytest.raises(ValueError, match="target price"):
        ticks(targets=[{"price": 5770.0}])


def test_the_evening_before_the_roll_already_trades_the_next_contract() -> None:
    evening = parse_alert(json.dumps(alert(time="2025-03-12T23:30:00Z")))
    afternoon = parse_alert(json.dumps(alert(time="2025-03-12T20:30:00Z")))
    assert (afternoon.contract_symbol(), evening.contract_symbol()) == ("ESH5", "ESM5")


def test_micro_alerts_trade_the_micro() -> None:
    a = parse_alert(json.dumps(alert(ticker="MES1!", contracts=3)))
    assert a.instrument is MES and a.contract_symbol() == "MESH5"


def test_front_month_rolls_eight_days_before_expiry() -> None:
    assert front_month("ES", date(2025, 3, 12)) == "ESH5"  # expiry Fri 21 Mar
    assert front_month("ES", date(2025, 3, 13)) == "ESM5"  # roll Thursday
    assert front_month("ES", date(2025, 12, 11)) == "ESH6"


# -- cold start ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ['{"risk": {"max_position": 0}}', '{"risk": ', "[1, 2]", '{"instrument": "CL"}'],
)
def test_a_bad_esml_config_fails_loudly(raw: str) -> None:
    with pytest.raises(ConfigError):
        config_from_env({"ESML_CONFIG": raw})


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


def test_a_tradingview_reversal_counts_the_close_in_its_contracts(make_stack: Any) -> None:
    """As the Pine template sends it: {{strategy.order.contracts}} = 4 to go from long 2
    to short 2, with the new position's two targets."""
    stack = make_stack({"risk": {"max_position": 2, "budgets": {"RTH": {"cooldown_s": 0}}}})
    targets = [{"ticks": 8, "contracts": 1}, {"ticks": 16, "contracts": 1}]
    long_two = alert(contracts=2, market_position="long", targets=targets)
    assert stack.post(long_two)[1]["status"] == "placed"
    assert stack.position() == 2 and len(stack.working()) == 4
    short = at(stack, 60, action="sell", contracts=4, market_position="short", targets=targets)
    answer = stack.post(short)[1]
    assert answer["status"] == "placed", answer
    assert stack.position() == -2 == stack.broker_position()
    working = stack.working()
    assert len(working) == 4 and {o["action"] for o in working} == {"Buy"}
