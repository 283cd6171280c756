"""The Tradovate round trip over loopback: a market order sent to the simulator, until its
fill event arrives over the user WebSocket (p50 / p99, milliseconds).

Two ways of sending, both Tradovate's: REST (`POST /order/placeorder` over HTTP, as the
client does) and the same request sent over the user socket itself. The clock starts just
before the request is sent and stops when the `props` event of the order's fill reaches
the socket's reader (esml's transport: `esml.broker.tradovate.transport`). The simulator
runs in this process on its own threads (`esml.sim.tradovate_api`), with a price-set
market: a market order fills at once. Run: `python -m bench.tradovate`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from esml.broker.tradovate.credentials import TradovateCredentials
from esml.broker.tradovate.rest import Token, TradovateRest
from esml.broker.tradovate.transport import LoopThread, TradovateSocket
from esml.sim.tradovate_api import TradovateSim

LOGIN = {"name": "bench", "password": "bench-password", "cid": 1, "sec": "bench-secret"}
ACCOUNT = "BENCH1"
SYMBOL = "ESH5"
WARMUP = 20
ORDERS = 300


@dataclass(frozen=True)
class RoundTrip:
    name: str
    orders: int
    p50_ms: float
    p99_ms: float
    notes: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class _Fills:
    """When each order's first fill event arrived (perf_counter seconds)."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self.arrived = threading.Condition()

    def on_event(self, event: str, data: Any) -> None:
        if event == "props" and isinstance(data, dict) and data.get("entityType") == "fill":
            now = time.perf_counter()
            with self.arrived:
                self.at.setdefault(int(data["entity"]["orderId"]), now)
                self.arrived.notify_all()

    def wait(self, order_id: int, timeout_s: float = 5.0) -> float:
        with self.arrived:
            if not self.arrived.wait_for(lambda: order_id in self.at, timeout_s):
                raise TimeoutError(f"no fill event for order {order_id}")
            return self.at[order_id]


def _order(account_id: int, i: int) -> dict[str, Any]:
    return {"accountSpec": ACCOUNT, "accountId": account_id, "clOrdId": f"bench-{i}",
            "action": "Buy" if i % 2 == 0 else "Sell", "symbol": SYMBOL, "orderQty": 1,
            "orderType": "Market", "isAutomated": True}  # fmt: skip


API_KEY = {"appId": "esml-bench", "appVersion": "1", "deviceId": "bench", "env": "demo"}
CREDENTIALS = TradovateCredentials.model_validate({**LOGIN, **API_KEY, "accountSpec": ACCOUNT})


def round_trips(orders: int = ORDERS) -> list[RoundTrip]:
    """Both rows, each on a fresh simulator (its state grows with every order)."""
    return [
        _row("order over REST -> fill event over the user socket", _run(orders, "rest"),
             "HTTP POST /order/placeorder; the clock stops at the fill event, which may "
             "come before the HTTP answer"),
        _row("order over the user socket -> fill event over it", _run(orders, "socket"),
             "the same request as a socket frame"),
    ]  # fmt: skip


def _run(orders: int, via: str) -> np.ndarray:
    with TradovateSim(**LOGIN, accounts=[ACCOUNT], prices={SYMBOL: 5000.0}) as sim:
        rest = TradovateRest(CREDENTIALS, sim.base_url)
        account_id = int(rest.get("/account/list")[0]["id"])
        fills = _Fills()
        session = rest.session()

        async def sync(socket: TradovateSocket) -> None:
            await socket.request("user/syncrequest", {"accounts": [account_id]})

        socket = TradovateSocket(sim.ws_url, name="user",
                                 token=lambda _: Token(session.access_token, session.expires),
                                 on_event=fills.on_event, on_open=sync)  # fmt: skip
        loop = LoopThread("bench-sockets")
        running = loop.submit(socket.run())
        loop.wait_until(socket.ready, 10)

        def send(i: int) -> Any:
            if via == "rest":
                return rest.post("/order/placeorder", _order(account_id, i))
            return loop.run(socket.request("order/placeorder", _order(account_id, i)))

        try:
            return _measure(orders, send, fills)
        finally:
            loop.run(socket.close())
            running.result(10)
            loop.stop()


def _measure(orders: int, send: Any, fills: _Fills) -> np.ndarray:
    ms = []
    for i in range(WARMUP + orders):
        start = time.perf_counter()
        answer = send(i)
        arrived = fills.wait(int(answer["orderId"]))
        if i >= WARMUP:
            ms.append((arrived - start) * 1000.0)
    return np.array(ms)


def _row(name: str, ms: np.ndarray, notes: str) -> RoundTrip:
    return RoundTrip(name, len(ms), float(np.percentile(ms, 50)), float(np.percentile(ms, 99)),
                     f"loopback, in-process simulator; {notes}")  # fmt: skip


def tradovate_round_trips(console: Any) -> list[dict[str, object]]:
    """`make bench`'s rows (bench/run.py), printed as they come."""
    rows = round_trips()
    for r in rows:
        console.print(f"  Tradovate {r.name}: p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms")
    return [r.as_dict() for r in rows]


if __name__ == "__main__":
    for r in round_trips():
        print(f"{r.name}: {r.orders} orders, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms")
