"""The Tradovate simulator against Tradovate's documented behaviour (conformance stages 1
and 2: authentication; WebSocket login, heartbeats, syncrequest, props events, log-off),
and its faults, raw over real sockets (tests/tradovate_sim_wire.py), no client of ours."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from esml.sim.tradovate_api import TradovateSim
from tests.aws_fixtures import ACCOUNT_SPEC, TRADOVATE_LOGIN, tradovate_sim
from tests.tradovate_sim_wire import Wire, login, order_body


@pytest.fixture
def sim() -> Iterator[TradovateSim]:
    with tradovate_sim(heartbeat_s=0.2, client_timeout_s=1.0) as s:
        yield s


def post(sim: TradovateSim, path: str, body: Any, token: str, **kw: Any) -> requests.Response:
    return requests.post(
        f"{sim.base_url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=kw.get("timeout", 5),
    )


def get(sim: TradovateSim, path: str, token: str, **params: Any) -> Any:
    r = requests.get(
        f"{sim.base_url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert r.status_code == 200, r.text
    return r.json()


def market_buy(qty: int = 1, **extra: Any) -> dict[str, Any]:
    return order_body("Buy", qty, **extra)


def synced(sim: TradovateSim, token: str) -> Wire:
    w = Wire(sim.ws_url)
    assert w.authorize(token)["s"] == 200
    w.answers_of(w.send("user/syncrequest", {"splitResponses": True, "accounts": [1000]}), 7)
    return w


# -- stage 1: authentication ---------------------------------------------------------------


def test_stage1_access_token_carries_both_tokens_and_renews(sim: TradovateSim) -> None:
    auth = login(sim.base_url)
    assert {"accessToken", "mdAccessToken", "expirationTime", "userId", "name"} <= set(auth)
    renewed = get(sim, "/auth/renewaccesstoken", auth["accessToken"])
    assert renewed["accessToken"] != auth["accessToken"]
    assert get(sim, "/account/list", renewed["accessToken"])[0]["name"] == ACCOUNT_SPEC
    wrong = requests.post(
        f"{sim.base_url}/auth/accesstokenrequest",
        json={**TRADOVATE_LOGIN, "password": "nope"},
        timeout=5,
    )
    assert "accessToken" not in wrong.json() and "Incorrect" in wrong.json()["errorText"]


# -- stage 2: WebSocket ---------------------------------------------------------------------


def test_stage2_login_needs_the_right_token_on_each_socket(sim: TradovateSim) -> None:
    auth = login(sim.base_url)
    user = Wire(sim.ws_url)
    assert user.authorize("not-a-token") == {"i": 1, "s": 401, "d": "Access is denied"}
    assert user.authorize(auth["mdAccessToken"])["s"] == 401  # the md token is not the user's
    assert user.answer(user.send("account/list"))["s"] == 401  # nothing before authorize
    assert user.authorize(auth["accessToken"])["s"] == 200
    accounts = user.answer(user.send("account/list"))
    assert accounts["s"] == 200 and accounts["d"][0]["name"] == ACCOUNT_SPEC
    md = Wire(sim.md_url)
    assert md.authorize(auth["accessToken"])["s"] == 401
    assert md.authorize(auth["mdAccessToken"])["s"] == 200
    user.close()
    md.close()


def test_stage2_server_heartbeats_and_a_silent_client_is_closed(sim: TradovateSim) -> None:
    w = Wire(sim.ws_url)
    w.authorize(login(sim.base_url)["accessToken"])
    started = time.monotonic()
    while w.heartbeats < 3:  # `h` every 0.2 s here (2.5 s by default)
        w.ws.send("[]")  # the client's heartbeat keeps it alive past the 1 s timeout
        w.read()
    assert time.monotonic() - started < 1.5
    kept = time.monotonic()
    while w.closed is None:  # now silent: closed after client_timeout_s
        w.read()
    assert w.closed[0] == 4000 and 0.6 < time.monotonic() - kept < 2.5
    assert ("user", "client silent: closed") in sim.sockets.log


def test_stage2_syncrequest_split_answers_every_entity_type(sim: TradovateSim) -> None:
    token = login(sim.base_url)["accessToken"]
    post(sim, "/order/placeorder", market_buy(), token)
    w = Wire(sim.ws_url)
    w.authorize(token)
    parts = w.answers_of(w.send("user/syncrequest", {"splitResponses": True}), 7)
    names = [next(iter(p["d"])) for p in parts]
    assert names == [
        "accounts",
        "positions",
        "orders",
        "orderVersions",
        "fills",
        "executionReports",
        "cashBalances",
    ]
    snap = {k: v for p in parts for k, v in p["d"].items()}
    (order,) = snap["orders"]
    assert order["ordStatus"] == "Filled" and snap["positions"][0]["netPos"] == 1
    assert [r["execType"] for r in snap["executionReports"]] == ["New", "Trade"]
    assert snap["fills"][0]["orderId"] == order["id"]
    whole = w.answer(w.send("user/syncrequest", {"accounts": [1000]}))
    assert whole["d"] == snap


def test_stage2_props_events_follow_every_change_exactly_once(sim: TradovateSim) -> None:
    token = login(sim.base_url)["accessToken"]
    w = synced(sim, token)
    oso = {
        **market_buy(),
        "bracket1": {"action": "Sell", "orderType": "Stop", "stopPrice": 5770.0},
        "bracket2": {"action": "Sell", "orderType": "Limit", "price": 5775.0},
    }
    ids = post(sim, "/order/placeoso", oso, token).json()
    sim.set_price("ESH5", 5775.0)  # the target fills, the stop is cancelled
    props = w.events(
        "props",
        lambda got: (
            any(
                p["d"]["entityType"] == "fill" and p["d"]["entity"]["orderId"] == ids["oso2Id"]
                for p in got
            )
            and any(p["d"]["entity"].get("ordStatus") == "Canceled" for p in got)
        ),
    )
    seen: dict[tuple[str, int], list[str]] = {}
    for p in props:
        d = p["d"]
        seen.setdefault((d["entityType"], d["entity"]["id"]), []).append(d["eventType"])
    entry, stop, target = ids["orderId"], ids["oso1Id"], ids["oso2Id"]
    assert seen[("order", entry)][0] == "Created"
    assert [t for (kind, _), t in seen.items() if kind == "fill"] == [["Created"], ["Created"]]
    final = {
        d["entity"]["id"]: d["entity"]["ordStatus"]
        for d in (p["d"] for p in props)
        if d["entityType"] == "order"
    }
    assert final == {entry: "Filled", stop: "Canceled", target: "Filled"}
    pos = [p["d"]["entity"]["netPos"] for p in props if p["d"]["entityType"] == "position"]
    assert pos[0] == 1 and pos[-1] == 0
    cash = [p["d"]["entity"] for p in props if p["d"]["entityType"] == "cashBalance"]
    assert cash[-1]["realizedPnL"] == pytest.approx((5775.0 - 5772.25) * 50)
    # what the events built is what a fresh snapshot says
    fresh = Wire(sim.ws_url)
    fresh.authorize(token)
    snap = fresh.answer(fresh.send("user/syncrequest", {}))["d"]
    assert {o["id"]: o["ordStatus"] for o in snap["orders"]} == final


def test_stage2_log_off_is_a_clean_close(sim: TradovateSim) -> None:
    w = synced(sim, login(sim.base_url)["accessToken"])
    w.close()
    deadline = time.monotonic() + 2
    while ("user", "logged off") not in sim.sockets.log and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ("user", "logged off") in sim.sockets.log
    assert not sim.sockets.sessions


def test_rest_calls_over_the_user_socket(sim: TradovateSim) -> None:
    w = synced(sim, login(sim.base_url)["accessToken"])
    placed = w.answer(w.send("order/placeorder", market_buy(clOrdId="abc-1")))
    assert placed["s"] == 200 and "orderId" in placed["d"]
    commands = w.answer(w.send("command/deps", query=f"masterid={placed['d']['orderId']}"))["d"]
    assert commands[0]["clOrdId"] == "abc-1" and commands[0]["isAutomated"] is True


def test_malformed_frames_get_a_400_and_the_socket_lives_on(sim: TradovateSim) -> None:
    w = Wire(sim.ws_url)
    w.ws.send("authorize")  # no id line
    w.ws.send("order/placeorder\nnot-a-number\n\n{}")
    w.ws.send("order/placeorder\n7\n\n{not json")
    assert [m["s"] for m in w.answers_of(None, 3)] == [400, 400, 400]
    assert w.authorize(login(sim.base_url)["accessToken"])["s"] == 200
    assert sim.orders() == []
