"""The client's WebSocket side against the loopback simulator over real sockets: authorise,
sync, heartbeats, `props` events turned into order and fill updates (each fill once,
partial fills included), and every socket fault — a dropped connection, a silent peer,
expired tokens — ending with nothing lost or doubled; tokens renewed before expiry; a
clean log-off."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from esml.broker.tradovate import OrderSpec, TradovateClient
from esml.execution.orders import OrderRole, OrderStatus, Side
from esml.sim.tradovate_api import TradovateSim
from tests.tradovate_client_support import (
    DEAD_AFTER_S,
    PRICE,
    SYMBOL,
    Heard,
    a_connected_client,
    a_running_sim,
    bracket_long,
    client_for,
    eventually,
    running_sim,
)

sim = pytest.fixture(name="sim")(a_running_sim)
client = pytest.fixture(name="client")(a_connected_client)


def sim_fill_ids(sim: TradovateSim) -> list[str]:
    return sorted(str(f["id"]) for f in sim._fills)


def test_connect_authorises_syncs_and_logs_off_cleanly(sim: TradovateSim) -> None:
    client = client_for(sim)
    client.connect()
    assert client.counters["ws_connects"] == 1
    assert client.sync is not None and [a["name"] for a in client.sync.entities("account")]
    client.close()
    assert eventually(lambda: ("user", "logged off") in sim.sockets.log)
    assert ("user", "connection lost") not in sim.sockets.log


def test_fills_arrive_over_the_socket_each_exactly_once(
    sim: TradovateSim, client: TradovateClient
) -> None:
    heard = Heard(client)
    placement = client.place(bracket_long("ws-once"), reference_price=PRICE)
    assert placement.stop is not None and placement.target is not None
    assert heard.until(lambda: len(heard.fills) == 1)
    time.sleep(0.2)
    heard.take()
    assert not client.wait_for_updates(0.3), "nothing new until the market moves"
    sim.set_price(SYMBOL, PRICE + 3.0)  # through the target
    assert client.wait_for_updates(5), "woken by the socket, not by polling"
    assert heard.until(lambda: len(heard.fills) == 2)
    assert heard.until(lambda: heard.status(placement.stop.order_id) is OrderStatus.CANCELLED)
    time.sleep(0.3)
    heard.take()
    assert [(f.role, f.side, f.price) for f in heard.fills] == [
        (OrderRole.ENTRY, Side.BUY, PRICE),
        (OrderRole.TARGET, Side.SELL, PRICE + 3.0),
    ]
    assert sorted(f.fill_id for f in heard.fills) == sim_fill_ids(sim)
    assert heard.status(placement.target.order_id) is OrderStatus.FILLED


def test_partial_fills_are_reported_as_partial_and_each_fill_once(
    sim: TradovateSim, client: TradovateClient
) -> None:
    heard = Heard(client)
    sim.faults.cap_fills(1)
    order = client.place_order(
        OrderSpec("partial-3", SYMBOL, Side.BUY, 3, "Limit", price=PRICE - 1)
    )
    for k in (1, 2, 3):
        sim.set_price(SYMBOL, PRICE - 1 - 0.25 * k)  # each step takes one lot of the limit
        assert heard.until(lambda k=k: sum(f.qty for f in heard.fills) == k)
        view = heard.last(order.order_id)
        assert view.filled_qty == k
        assert view.status is (OrderStatus.FILLED if k == 3 else OrderStatus.PARTIALLY_FILLED)
    assert [f.qty for f in heard.fills] == [1, 1, 1]
    assert len({f.fill_id for f in heard.fills}) == 3 == len(sim_fill_ids(sim))


def test_a_dropped_socket_resyncs_without_losing_or_doubling(
    sim: TradovateSim, client: TradovateClient
) -> None:
    heard = Heard(client)
    placement = client.place(bracket_long("ws-drop"), reference_price=PRICE)
    assert heard.until(lambda: len(heard.fills) == 1)
    assert client.user_socket is not None
    sim.faults.drop_sockets("user")
    sim.set_price(SYMBOL, PRICE - 2.5)  # the stop fills while the socket is down
    assert client.wait_for_sync(5)
    assert heard.until(lambda: len(heard.fills) == 2)
    assert client.user_socket.connections == 2
    assert client.counters["ws_fills_recovered_by_resync"] == 1, "its event was lost: resync"
    assert placement.target is not None
    assert heard.until(lambda: heard.status(placement.target.order_id) is OrderStatus.CANCELLED)
    time.sleep(0.3)
    heard.take()
    assert sorted(f.fill_id for f in heard.fills) == sim_fill_ids(sim), "none lost, none doubled"
    assert [f.role for f in heard.fills] == [OrderRole.ENTRY, OrderRole.STOP]


def test_a_silent_peer_is_declared_dead_within_seconds_and_resynced(
    sim: TradovateSim, client: TradovateClient
) -> None:
    heard = Heard(client)
    client.place(bracket_long("ws-freeze"), reference_price=PRICE)
    assert heard.until(lambda: len(heard.fills) == 1)
    started = time.monotonic()
    sim.faults.freeze_sockets("user", seconds=DEAD_AFTER_S * 4)
    sim.set_price(SYMBOL, PRICE + 3.0)  # the target fills while the peer is silent
    assert eventually(lambda: client.counters["ws_dead_detected"] == 1, DEAD_AFTER_S + 1.5)
    assert time.monotonic() - started < DEAD_AFTER_S + 1.5
    assert heard.until(lambda: len(heard.fills) == 2)
    assert client.counters["ws_fills_recovered_by_resync"] == 1
    assert sorted(f.fill_id for f in heard.fills) == sim_fill_ids(sim)


def test_expired_tokens_bring_a_fresh_login_on_both_sockets(
    sim: TradovateSim, client: TradovateClient
) -> None:
    md = client.market_data()
    md.subscribe_quote(SYMBOL)
    heard = Heard(client)
    sim.faults.expire_tokens()
    assert user_socket_reconnected(client)
    assert eventually(lambda: md.socket.connections == 2 and md.socket.ready.is_set())
    assert len(sim.calls("/auth/accesstokenrequest")) == 2  # one fresh login for both sockets
    client.place(bracket_long("ws-expired"), reference_price=PRICE)  # REST on the new token
    assert heard.until(lambda: len(heard.fills) == 1)
    sim.set_price(SYMBOL, PRICE + 0.25)
    assert eventually(lambda: len(md.take_events(SYMBOL)) > 0), "quotes resubscribed"


def user_socket_reconnected(client: TradovateClient) -> bool:
    socket = client.user_socket
    return socket is not None and eventually(
        lambda: socket.connections == 2 and socket.ready.is_set()
    )


def test_tokens_are_renewed_before_expiry_on_both_open_sockets() -> None:
    with running_sim(token_ttl=timedelta(seconds=1.5)) as sim:
        client = client_for(sim, renew_margin=timedelta(seconds=1.2))
        client.connect()
        md = client.market_data()
        try:
            time.sleep(2.0)  # past the first token's expiry, idle but for heartbeats
            assert client.counters["ws_token_renewals"] >= 2
            assert client.counters["ws_reconnects"] == 0, "renewed in place, never dropped"
            assert client.user_socket is not None and client.user_socket.connections == 1
            assert md.socket.connections == 1
            assert len(sim.calls("/auth/accesstokenrequest")) == 1
            heard = Heard(client)
            client.place(bracket_long("ws-renewed"), reference_price=PRICE)
            assert heard.until(lambda: len(heard.fills) == 1)
        finally:
            client.close()


def test_rate_limits_on_socket_requests_are_met_as_over_rest(
    sim: TradovateSim, client: TradovateClient
) -> None:
    """An order sent over the user socket itself (Tradovate takes REST paths there too):
    a 429 backed off, a p-ticket waited out and the order resent with it; one order."""
    socket = client.user_socket
    assert socket is not None
    order = {"accountSpec": "DEMO4417283", "action": "Buy", "symbol": SYMBOL, "orderQty": 1,
             "orderType": "Limit", "price": PRICE - 5, "clOrdId": "ws-limited",
             "isAutomated": True}  # fmt: skip
    sim.faults.rest("429", path="/order/placeorder")  # first the 429, then the ticket
    sim.faults.rest("p-ticket", path="/order/placeorder", p_time=1.0)
    answer = client.loop.run(socket.request("order/placeorder", order))
    assert isinstance(answer["orderId"], int)
    assert (client.counters["ws_p_ticket"], client.counters["ws_429"]) == (1, 1)
    assert [o["id"] for o in sim.orders() if o.get("clOrdId") == "ws-limited"] == [
        answer["orderId"]
    ]
