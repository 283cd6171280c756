"""What the Tradovate client tests share: the loopback simulator with quick heartbeats, a
client pointed at its three endpoints, and readings of the simulator's account (its own
records, over its test controls: the truth the client's view is checked against)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from esml.broker.tradovate import TradovateClient, TradovateCredentials
from esml.execution.orders import (
    BracketSpec,
    Fill,
    Order,
    OrderIntent,
    OrderStatus,
    Side,
    client_order_id,
)
from esml.sim.tradovate_api import TradovateSim
from tests.aws_fixtures import ACCOUNT_SPEC, TRADOVATE_LOGIN, tradovate_sim

SYMBOL = "ESH5"
PRICE = 5772.25  # the simulator's ESH5 price (tests.aws_fixtures.MARKET)
HEARTBEAT_S = 0.25
DEAD_AFTER_S = 1.0  # four missed heartbeats
SOCKETS = {"heartbeat_s": HEARTBEAT_S, "dead_after_s": DEAD_AFTER_S, "backoff_base_s": 0.05,
           "backoff_cap_s": 0.4, "request_timeout_s": 3.0}  # fmt: skip


def credentials(**overrides: object) -> TradovateCredentials:
    return TradovateCredentials.model_validate(
        {**TRADOVATE_LOGIN, "env": "demo", "accountSpec": ACCOUNT_SPEC, **overrides}
    )


@contextmanager
def running_sim(**overrides: Any) -> Iterator[TradovateSim]:
    with tradovate_sim(heartbeat_s=HEARTBEAT_S, client_timeout_s=2.0, **overrides) as sim:
        yield quick(sim)


def a_running_sim() -> Iterator[TradovateSim]:
    """The test modules' `sim` fixture."""
    with running_sim() as s:
        yield s


def a_connected_client(sim: TradovateSim) -> Iterator[TradovateClient]:
    """The test modules' `client` fixture: connected to the user socket, closed after."""
    c = client_for(sim)
    c.connect()
    yield c
    c.close()


def quick(sim: TradovateSim) -> TradovateSim:
    """The simulator's HTTP answers go out in two writes (headers, body): with Nagle on,
    each one waits out the client's delayed ACK (40 ms). Off, as tests.execution_sim does."""
    assert sim._server is not None
    sim._server.RequestHandlerClass.disable_nagle_algorithm = True  # type: ignore[attr-defined]
    return sim


def client_for(sim: TradovateSim, **kwargs: Any) -> TradovateClient:
    """A client of the simulator: short timeouts, so lost answers are found out quickly."""
    options = {"timeout": (1.0, 1.5), "lookup_grace_s": 0.2, "rate_limit_budget_s": 5.0,
               "socket_options": SOCKETS, **kwargs}  # fmt: skip
    return TradovateClient(credentials(), base_url=sim.base_url, ws_url=sim.ws_url,
                           md_url=sim.md_url, **options)  # fmt: skip


def bracket_long(tag: str, qty: int = 1, **kwargs: Any) -> OrderIntent:
    return OrderIntent(
        client_id=client_order_id("client-test", tag), symbol=SYMBOL, side=Side.BUY, qty=qty,
        bracket=BracketSpec(stop_ticks=8, target_ticks=12), reason="test", **kwargs,
    )  # fmt: skip


def orders_sent_as(sim: TradovateSim, client_id: str) -> list[dict[str, Any]]:
    """The simulator's orders that carry `client_id`: how many orders one intent became."""
    return [o for o in sim.orders() if o.get("clOrdId") == client_id]


def position(sim: TradovateSim) -> int:
    return sim.net_position(ACCOUNT_SPEC, SYMBOL)


def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll `check` until it holds (socket events arrive on their own thread)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return check()


class Heard:
    """Everything `take_updates` handed out, collected as the engine would."""

    def __init__(self, client: TradovateClient) -> None:
        self.client = client
        self.orders: list[Order] = []
        self.fills: list[Fill] = []

    def take(self) -> None:
        orders, fills = self.client.take_updates()
        self.orders += orders
        self.fills += fills

    def until(self, check: object, timeout_s: float = 5.0) -> bool:
        def done() -> bool:
            self.take()
            return bool(check())  # type: ignore[operator]

        return eventually(done, timeout_s)

    def last(self, order_id: str) -> Order:
        return [o for o in self.orders if o.order_id == order_id][-1]

    def status(self, order_id: str) -> OrderStatus | None:
        """The order's status as last reported, None before any report."""
        seen = [o for o in self.orders if o.order_id == order_id]
        return seen[-1].status if seen else None
