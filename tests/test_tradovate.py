"""TradovateClient against the loopback Tradovate server: real HTTP, real JSON, no mocks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from esml.broker.base import Broker, BrokerError, OrderRejected
from esml.broker.tradovate import TradovateClient, TradovateCredentials, bracket_prices
from esml.execution.orders import (
    BracketSpec,
    OrderIntent,
    OrderRole,
    OrderStatus,
    OrderType,
    Side,
    client_order_id,
)
from esml.market.instruments import ES
from esml.sim.tradovate_api import TradovateSim
from tests.aws_fixtures import ACCOUNT_SPEC, TRADOVATE_LOGIN, tradovate_sim
from tests.tradovate_client_support import quick


@pytest.fixture
def sim() -> Iterator[TradovateSim]:
    with tradovate_sim() as s:
        yield quick(s)


def credentials(**overrides: object) -> TradovateCredentials:
    return TradovateCredentials.model_validate(
        {**TRADOVATE_LOGIN, "env": "demo", "accountSpec": ACCOUNT_SPEC, **overrides}
    )


def client_for(sim: TradovateSim, **kwargs: object) -> TradovateClient:
    return TradovateClient(credentials(), base_url=sim.base_url, **kwargs)  # type: ignore[arg-type]


def long_es(tag: str = "a", qty: int = 1, **kwargs: object) -> OrderIntent:
    return OrderIntent(
        client_id=client_order_id("test", tag),
        symbol="ESH5",
        side=Side.BUY,
        qty=qty,
        bracket=BracketSpec(stop_ticks=8, target_ticks=12),
        reason="test long",
        ts_ns=1_741_361_405_000_000_000,
        **kwargs,  # type: ignore[arg-type]
    )


def test_bracket_prices_sit_on_the_tick_grid_on_the_correct_sides() -> None:
    spec = BracketSpec(stop_ticks=8, target_ticks=12)
    assert bracket_prices(ES, Side.BUY, 5772.25, spec) == (5770.25, 5775.25)
    assert bracket_prices(ES, Side.SELL, 5772.25, spec) == (5774.25, 5769.25)
    # an off-grid reference (e.g. a mid price) is snapped before the ticks are added
    assert bracket_prices(ES, Side.BUY, 5772.3, spec) == (5770.25, 5775.25)


def test_client_satisfies_the_broker_protocol(sim: TradovateSim) -> None:
    assert isinstance(client_for(sim), Broker)


def test_place_sends_one_placeoso_with_an_automated_oco_bracket(sim: TradovateSim) -> None:
    client = client_for(sim)
    placement = client.place(long_es(), reference_price=5772.25)

    (call,) = sim.calls("/order/placeoso")
    body = call.body
    assert body["isAutomated"] is True
    assert (body["accountSpec"], body["action"], body["symbol"]) == (ACCOUNT_SPEC, "Buy", "ESH5")
    assert (body["orderQty"], body["orderType"]) == (1, "Market")
    assert body["bracket1"] == {
        "action": "Sell",
        "orderType": "Stop",
        "stopPrice": 5770.25,
        "timeInForce": "GTC",
        "clOrdId": f"{placement.entry.client_id}-stop",
    }
    assert body["bracket2"]["orderType"] == "Limit" and body["bracket2"]["price"] == 5775.25

    # the market entry filled at the simulator's price; the legs went live as an OCO pair
    assert placement.entry.status is OrderStatus.FILLED
    assert placement.entry.avg_fill_price == 5772.25 and placement.entry.filled_qty == 1
    assert placement.stop is not None and placement.target is not None
    assert placement.stop.status is placement.target.status is OrderStatus.WORKING
    assert placement.stop.oco_id == placement.target.order_id
    assert placement.target.parent_id == placement.entry.order_id
    assert client.position("ESH5") == 1 == sim.net_position(ACCOUNT_SPEC, "ESH5")


def test_place_is_idempotent_on_client_id(sim: TradovateSim) -> None:
    client = client_for(sim)
    first = client.place(long_es(), reference_price=5772.25)
    again = client.place(long_es(), reference_price=5772.25)
    assert again == first
    assert len(sim.calls("/order/placeoso")) == 1
    assert client.position("ESH5") == 1


def test_short_limit_entry_prices_its_bracket_from_the_limit(sim: TradovateSim) -> None:
    client = client_for(sim)
    intent = OrderIntent(
        client_id=client_order_id("test", "short-limit"),
        symbol="ESH5",
        side=Side.SELL,
        qty=2,
        order_type=OrderType.LIMIT,
        limit_price=5780.0,
        bracket=BracketSpec(stop_ticks=8, target_ticks=12),
    )
    placement = client.place(intent)  # no reference price needed: the limit prices it
    assert placement.entry.status is OrderStatus.WORKING  # 5780 is above the 5772.25 market
    assert placement.stop is not None and placement.stop.price == 5782.0
    assert placement.target is not None and placement.target.price == 5777.0
    assert client.position("ESH5") == 0

    sim.set_price("ESH5", 5780.0)  # the market reaches the limit: short 2, bracket live
    assert client.position("ESH5") == -2
    sim.set_price("ESH5", 5776.75)  # through the target: flat, the stop is cancelled
    assert client.position("ESH5") == 0
    fills = client.fills()
    assert [(f.role, f.side, f.qty, f.price) for f in fills] == [
        (OrderRole.ENTRY, Side.SELL, 2, 5780.0),
        (OrderRole.TARGET, Side.BUY, 2, 5777.0),
    ]
    assert {f.client_id for f in fills} == {intent.client_id, f"{intent.client_id}-target"}
    stop = next(o for o in sim.orders() if o["id"] == int(placement.stop.order_id))
    assert stop["ordStatus"] == "Canceled"


def test_market_entry_with_bracket_needs_a_reference_price(sim: TradovateSim) -> None:
    with pytest.raises(ValueError, match="reference_price"):
        client_for(sim).place(long_es())
    assert sim.calls("/order/placeoso") == []


def test_bracket_on_the_wrong_side_is_rejected_and_not_resent(sim: TradovateSim) -> None:
    client = client_for(sim)
    # an alert priced 60 points under the market: its target would sit below the market
    with pytest.raises(OrderRejected, match="InvalidPrice") as first:
        client.place(long_es("stale"), reference_price=5712.25)
    with pytest.raises(OrderRejected) as second:
        client.place(long_es("stale"), reference_price=5712.25)
    assert second.value is first.value
    assert len(sim.calls("/order/placeoso")) == 1
    assert client.position("ESH5") == 0


def test_refusal_by_a_risk_limit_carries_tradovates_reason(sim: TradovateSim) -> None:
    with pytest.raises(OrderRejected, match="MaxOrderQtyLimitReached"):
        client_for(sim).place(long_es("big", qty=60), reference_price=5772.25)


def test_unknown_contract_is_rejected(sim: TradovateSim) -> None:
    intent = OrderIntent(client_id="esml-nq", symbol="NQH5", side=Side.BUY, qty=1)
    with pytest.raises(OrderRejected, match="InvalidContract"):
        client_for(sim).place(intent)


def test_token_is_renewed_before_it_expires(sim: TradovateSim) -> None:
    now = [datetime.now(UTC)]
    client = client_for(sim, clock=lambda: now[0], renew_margin=timedelta(minutes=10))
    assert client.position("ESH5") == 0
    assert len(sim.calls("/auth/accesstokenrequest")) == 1

    now[0] += timedelta(minutes=65)  # 15 min left of 80: still fine
    client.position("ESH5")
    assert sim.calls("/auth/renewaccesstoken") == []

    now[0] += timedelta(minutes=6)  # 9 min left: renew, do not log in again
    client.position("ESH5")
    assert len(sim.calls("/auth/renewaccesstoken")) == 1
    assert len(sim.calls("/auth/accesstokenrequest")) == 1


def test_a_revoked_token_gets_one_fresh_login_and_the_call_succeeds(sim: TradovateSim) -> None:
    client = client_for(sim)
    client.place(long_es(), reference_price=5772.25)
    sim.revoke_tokens()
    order = client.flatten("ESH5", client_order_id("test", "flat"), "end of test")
    assert order is not None and order.role is OrderRole.EXIT and order.side is Side.SELL
    assert len(sim.calls("/auth/accesstokenrequest")) == 2
    assert client.position("ESH5") == 0


def test_wrong_credentials_fail_clearly_without_leaking_them(sim: TradovateSim) -> None:
    client = TradovateClient(credentials(password="hunter2-wrong"), base_url=sim.base_url)
    with pytest.raises(BrokerError, match="Incorrect username or password") as err:
        client.position("ESH5")
    assert "hunter2" not in str(err.value) and "hunter2" not in repr(client)
    assert TRADOVATE_LOGIN["sec"] not in repr(credentials())
    assert all(c.body["password"] == "***" for c in sim.calls("/auth/accesstokenrequest"))


def test_flatten_is_idempotent_and_none_when_flat(sim: TradovateSim) -> None:
    client = client_for(sim)
    client.place(long_es(), reference_price=5772.25)
    exit_id = client_order_id("test", "exit")
    closed = client.flatten("ESH5", exit_id, "exit alert")
    assert closed is not None and closed.qty == 1 and closed.status is OrderStatus.FILLED
    assert client.flatten("ESH5", exit_id, "exit alert") is closed
    assert len(sim.calls("/order/liquidateposition")) == 1
    # the bracket went with the position
    assert {o["ordStatus"] for o in sim.orders() if o.get("parentId")} == {"Canceled"}
    assert client.flatten("ESH5", client_order_id("test", "exit-2"), "again") is None


def test_cancel_a_working_entry_and_its_legs(sim: TradovateSim) -> None:
    client = client_for(sim)
    intent = OrderIntent(
        client_id=client_order_id("test", "resting"),
        symbol="ESH5",
        side=Side.BUY,
        qty=1,
        order_type=OrderType.LIMIT,
        limit_price=5760.0,
        bracket=BracketSpec(8, 12),
    )
    placement = client.place(intent)
    client.cancel(placement.entry.order_id)
    assert {o["ordStatus"] for o in sim.orders()} == {"Canceled"}
    with pytest.raises(BrokerError, match="TooLate"):
        client.cancel(placement.entry.order_id)


def test_an_unreachable_broker_is_a_broker_error() -> None:
    with tradovate_sim() as s:
        url = s.base_url
    client = TradovateClient(credentials(), base_url=url, timeout=(0.5, 0.5))
    with pytest.raises(BrokerError, match="unreachable"):
        client.position("ESH5")


def test_account_must_be_unambiguous() -> None:
    with tradovate_sim(accounts=["DEMO1", "DEMO2"]) as s:
        client = TradovateClient(credentials(accountSpec=None), base_url=s.base_url)
        with pytest.raises(BrokerError, match="cannot choose one Tradovate account"):
            client.position("ESH5")


# -- the simulator's own validation, through raw HTTP ---------------------------------


def _token(sim: TradovateSim) -> str:
    r = requests.post(f"{sim.base_url}/auth/accesstokenrequest", json=TRADOVATE_LOGIN, timeout=5)
    return r.json()["accessToken"]


def test_sim_refuses_a_bad_token(sim: TradovateSim) -> None:
    r = requests.get(
        f"{sim.base_url}/position/list", headers={"Authorization": "Bearer nope"}, timeout=5
    )
    assert r.status_code == 401


def test_sim_answers_missing_fields_with_error_text(sim: TradovateSim) -> None:
    headers = {"Authorization": f"Bearer {_token(sim)}"}
    order = {"accountSpec": ACCOUNT_SPEC, "action": "Buy", "symbol": "ESH5", "orderType": "Market"}
    r = requests.post(
        f"{sim.base_url}/order/placeOSO",
        json={**order, "isAutomated": True, "bracket1": {"action": "Sell"}},
        headers=headers,
        timeout=5,
    )
    assert r.status_code == 400 and "orderQty" in r.json()["errorText"]
    r = requests.post(
        f"{sim.base_url}/order/placeorder",
        json={**order, "orderQty": 1},
        headers=headers,
        timeout=5,
    )
    assert r.status_code == 400 and "isAutomated" in r.json()["errorText"]
    assert sim.orders() == []


def test_sim_bounds_request_bodies(sim: TradovateSim) -> None:
    r = requests.post(
        f"{sim.base_url}/auth/accesstokenrequest",
        data=b"{" + b" " * (sim.max_body_bytes + 1) + b"}",
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert r.status_code == 413 and sim.requests == []


def test_the_rest_client_loads_neither_numpy_nor_websockets() -> None:
    """The router Lambda imports the client for REST only: its package has no numpy and no
    websockets (they load when sockets or market data are asked for)."""
    probe = (
        "import sys, esml.broker.tradovate; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'websockets'}))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True,
                         text=True, check=True, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert out.stdout.strip() == "[]"
