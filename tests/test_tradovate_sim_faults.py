"""Every fault the Tradovate simulator injects, as a raw client sees it over real sockets,
and what the account holds afterwards: no order lost, none doubled."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from websockets.exceptions import ConnectionClosed

from esml.sim.tradovate_api import TradovateSim
from esml.sim.tradovate_faults import FaultError
from tests.aws_fixtures import ACCOUNT_SPEC, tradovate_sim
from tests.tradovate_sim_wire import Wire, login, order_body

PLACE = "/order/placeorder"


@pytest.fixture
def sim() -> Iterator[TradovateSim]:
    with tradovate_sim(heartbeat_s=0.1) as s:
        yield s


@pytest.fixture
def token(sim: TradovateSim) -> str:
    return login(sim.base_url)["accessToken"]


def order(qty: int = 1, **extra: Any) -> dict[str, Any]:
    return order_body("Buy", qty, **extra)


def place(
    sim: TradovateSim, token: str, body: dict[str, Any], timeout: float = 5
) -> requests.Response:
    return requests.post(
        f"{sim.base_url}{PLACE}",
        json=body,
        timeout=timeout,
        headers={"Authorization": f"Bearer {token}"},
    )


def test_p_ticket_holds_the_order_until_the_resend_carries_the_ticket(
    sim: TradovateSim, token: str
) -> None:
    sim.faults.rest("p-ticket", path=PLACE, p_time=0.3)
    first = place(sim, token, order()).json()
    assert set(first) == {"p-ticket", "p-time", "p-captcha"} and first["p-captcha"] is False
    assert sim.orders() == []
    early = place(sim, token, order(**{"p-ticket": first["p-ticket"]})).json()
    assert early["p-ticket"] == first["p-ticket"]  # too soon: wait longer
    assert "p-ticket" in place(sim, token, order()).json()  # no ticket: a new penalty
    time.sleep(0.35)
    done = place(sim, token, order(**{"p-ticket": first["p-ticket"]})).json()
    assert "orderId" in done and len(sim.orders()) == 1
    assert sim.net_position(ACCOUNT_SPEC, "ESH5") == 1
    assert sim.faults.counts["p-ticket"] == 2


def test_p_captcha_refuses_everything_until_a_person_clears_it(
    sim: TradovateSim, token: str
) -> None:
    sim.faults.rest("p-captcha", path=PLACE)
    assert place(sim, token, order()).json()["p-captcha"] is True
    r = requests.get(
        f"{sim.base_url}/position/list", timeout=5, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.json()["p-captcha"] is True
    sim.faults.clear()
    assert "orderId" in place(sim, token, order()).json() and len(sim.orders()) == 1


@pytest.mark.parametrize("status", ["429", "423", "500", "503"])
def test_refusing_statuses_carry_nothing_out(sim: TradovateSim, token: str, status: str) -> None:
    sim.faults.rest(status, path=PLACE, times=2)
    assert place(sim, token, order()).status_code == int(status)
    assert place(sim, token, order()).status_code == int(status)
    assert sim.orders() == []
    assert place(sim, token, order()).status_code == 200 and len(sim.orders()) == 1


def test_lost_answers_leave_the_order_in_place_findable_by_clordid(
    sim: TradovateSim, token: str
) -> None:
    sim.faults.rest("drop-after-accept", path=PLACE)
    with pytest.raises(requests.ConnectionError):
        place(sim, token, order(clOrdId="lost-1"))
    sim.faults.rest("timeout-after-accept", path=PLACE, delay_s=1.0)
    with pytest.raises(requests.Timeout):
        place(sim, token, order(clOrdId="lost-2"), timeout=0.3)
    sim.faults.rest("500-after-accept", path=PLACE)
    assert place(sim, token, order(clOrdId="lost-3")).status_code == 500
    commands = requests.get(
        f"{sim.base_url}/command/list", timeout=5, headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert sorted(c["clOrdId"] for c in commands) == ["lost-1", "lost-2", "lost-3"]
    assert sim.net_position(ACCOUNT_SPEC, "ESH5") == 3


def test_injected_reject_carries_its_reason(sim: TradovateSim, token: str) -> None:
    sim.faults.rest("reject", path=PLACE, reason="RiskCheck", text="margin")
    assert place(sim, token, order()).json() == {
        "failureReason": "RiskCheck",
        "failureText": "margin",
    }
    assert sim.orders() == []


def test_capped_fills_are_partial_fills_with_one_event_each(sim: TradovateSim, token: str) -> None:
    w = Wire(sim.ws_url)
    w.authorize(token)
    w.answer(w.send("user/syncrequest", {}))
    sim.faults.cap_fills(1)
    body = {**order(3), "orderType": "Limit", "price": 5770.0}
    oid = place(sim, token, body).json()["orderId"]
    for px in (5770.0, 5769.75, 5769.5):
        sim.set_price("ESH5", px)
    fills = w.events("props", lambda got: sum(p["d"]["entityType"] == "fill" for p in got) == 3)
    fills = [p["d"]["entity"] for p in fills if p["d"]["entityType"] == "fill"]
    assert [(f["orderId"], f["qty"], f["price"]) for f in fills] == [(oid, 1, 5770.0)] * 3
    reports = requests.get(
        f"{sim.base_url}/executionReport/deps",
        params={"masterid": oid},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    ).json()
    assert [(r["execType"], r["cumQty"]) for r in reports] == [
        ("New", 0),
        ("Trade", 1),
        ("Trade", 2),
        ("Trade", 3),
    ]


def test_socket_faults(sim: TradovateSim, token: str) -> None:
    w = Wire(sim.ws_url)
    w.authorize(token)
    sim.faults.freeze_sockets("user", 0.5)
    beats = w.heartbeats
    with pytest.raises(TimeoutError):
        while True:
            w.read(timeout=0.3)  # silent: no heartbeat while frozen
    assert w.heartbeats == beats
    w.read(timeout=1.0)  # back to life
    sim.faults.drop_sockets("user")
    with pytest.raises(ConnectionClosed):
        while True:
            w.read()
    assert w.closed is None  # cut, not closed: no c[...] frame

    again = Wire(sim.ws_url)
    again.authorize(token)
    sim.faults.expire_tokens()
    with pytest.raises(ConnectionClosed):
        while True:
            again.read()
    assert again.closed == [1008, "Token expired"]
    assert (
        requests.get(
            f"{sim.base_url}/account/list", timeout=5, headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 401
    )


def test_faults_are_armed_over_loopback_while_running(sim: TradovateSim, token: str) -> None:
    root = sim.base_url.removesuffix("/v1")
    r = requests.post(
        f"{root}/sim/fault", json={"fault": "rest", "kind": "429", "path": PLACE}, timeout=5
    )
    assert r.status_code == 200 and r.json()["armed"] == ["429"]
    assert place(sim, token, order()).status_code == 429
    bad = requests.post(f"{root}/sim/fault", json={"fault": "rest", "kind": "teapot"}, timeout=5)
    assert bad.status_code == 400 and "unknown request fault" in bad.json()["errorText"]
    with pytest.raises(FaultError):
        sim.faults.cap_fills(0)


def test_request_faults_hold_over_the_user_socket_too(sim: TradovateSim, token: str) -> None:
    w = Wire(sim.ws_url)
    w.authorize(token)
    sim.faults.rest("p-ticket", path=PLACE, p_time=0.2)
    penalty = w.answer(w.send("order/placeorder", order()))
    assert penalty["s"] == 200 and "p-ticket" in penalty["d"] and sim.orders() == []
    time.sleep(0.25)
    resent = w.answer(w.send("order/placeorder", order(**{"p-ticket": penalty["d"]["p-ticket"]})))
    assert "orderId" in resent["d"] and len(sim.orders()) == 1
    sim.faults.rest("timeout-after-accept", path=PLACE)
    rid = w.send("order/placeorder", order(clOrdId="silent"))
    with pytest.raises(TimeoutError):
        w.answer(rid, timeout=0.5)
    assert len(sim.orders()) == 2  # carried out, never answered
