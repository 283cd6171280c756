"""`make bench`'s live rows: the engine trading the loopback Tradovate simulator, which
replays the real ES file (md socket in, REST orders out, fills back on the user socket).

Measured per entry, with the risk step and without it:

* event in -> order sent: from the moment the compiled loop stops at the event that makes
  a decision due (in a live feed's small chunks, when that event arrives; a replay this
  fast hands several decisions' events at once, so the chunk's arrival is not it) to the
  moment the entry request leaves for the broker: the broker's news, features, strategy,
  gates, the position manager, the journal, and the shared-risk reservation when it runs;
* order sent -> fill event: from that moment to the engine taking the entry's fill from
  the broker's news (the user socket, read at every decision point and every 0.1 s).

The risk step runs in process on the shared account table (`esml.engine.shared_risk`):
a conditional write, here to DynamoDB through moto in this process, so what it adds is
the code and the SDK's request handling, not a network round trip. Calling the risk
Lambda instead would add an Invoke (an HTTPS round trip to Lambda, and cold starts) on
top of the same code and the same DynamoDB write: that is why the engine runs the code
in process. The risk step alone (gate + conditional write) is timed as well.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import boto3
import numpy as np
from moto import mock_aws

from esml.alpha.rules import make_rule_strategy
from esml.broker.tradovate import TradovateClient, TradovateCredentials
from esml.config import load_config
from esml.data.book import snapshot_end
from esml.data.dbn import main_instrument, read_mbo
from esml.decision.account_store import AccountStore
from esml.decision.gates import GateStack
from esml.decision.proposal import AccountState
from esml.engine.engine import Engine
from esml.engine.live import run_live
from esml.engine.live_run import close_out, tradovate_feed
from esml.engine.shared_risk import SharedRiskBroker, exchange_clock, on_shared_account
from esml.execution.orders import Fill, Order, OrderIntent, Side
from esml.journal.sqlite import SQLiteJournal
from esml.market.instruments import ES
from esml.sim.tradovate_api import TradovateSim
from esml.sim.tradovate_market import ReplayMarket

ES_FILE = Path(__file__).resolve().parents[1] / "data/samples/esh4-glbx-mdp3-20231225.mbo.dbn.zst"
SYMBOL = "ESH4"
ACCOUNT = "BENCH1"
LOGIN = {"name": "bench", "password": "bench-pw", "cid": 1, "sec": "bench-sec"}
CREDENTIALS = TradovateCredentials.model_validate(
    {**LOGIN, "appId": "esml-bench", "appVersion": "1", "deviceId": "bench", "env": "demo",
     "accountSpec": ACCOUNT})  # fmt: skip
STEP_EVENTS, STEP_S = 400, 0.02
RUN_S = 8.0
OPEN_NS = 1_709_650_800_000_000_000  # 2024-03-05 15:00 UTC, 09:00 CT: the market is open
TABLES = {"orders": "client_id", "fills": "fill_id", "risk": "account"}


class _Clocked(Engine):
    """The engine, noting when each decision falls due."""

    decision_in = 0.0

    def _decide(self, ts: int) -> None:
        self.decision_in = time.perf_counter()
        super()._decide(ts)


class _Timing:
    """The broker seen from the engine: when each entry leaves, when its first fill is
    taken."""

    def __init__(self, broker: TradovateClient) -> None:
        self.broker = broker
        self.engine: _Clocked | None = None
        self.sent: dict[str, float] = {}
        self.event_to_sent: list[float] = []
        self.sent_to_fill: list[float] = []

    def place(self, intent: OrderIntent, reference_price: float | None = None) -> Any:
        now = time.perf_counter()
        assert self.engine is not None
        self.event_to_sent.append((now - self.engine.decision_in) * 1e3)
        self.sent[intent.client_id] = now
        return self.broker.place(intent, reference_price=reference_price)

    def take_updates(self) -> tuple[list[Order], list[Fill]]:
        orders, fills = self.broker.take_updates()
        now = time.perf_counter()
        for f in fills:
            sent = self.sent.pop(f.client_id, None)
            if sent is not None:
                self.sent_to_fill.append((now - sent) * 1e3)
        return orders, fills

    def __getattr__(self, name: str) -> Any:
        return getattr(self.broker, name)


def _events() -> np.ndarray:
    """The real file with its snapshot re-stamped a second before the first live event."""
    ev = read_mbo(ES_FILE)
    ev = ev[ev["instrument_id"] == main_instrument(ev)].copy()
    k = snapshot_end(ev)
    ev["ts_recv"][:k] = ev["ts_recv"][k] - 10**9
    return ev


@contextmanager
def _moto_tables() -> Iterator[dict[str, Any]]:
    keys = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        with mock_aws():
            db = boto3.resource("dynamodb", region_name="us-east-1")
            yield {
                name: db.create_table(
                    TableName=f"bench-{name}", BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                )
                for name, key in TABLES.items()
            }
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _trade(events: np.ndarray, shared: bool) -> _Timing:
    cfg = load_config(risk={"max_daily_loss": 1e9, "max_drawdown": 1e9})
    market = ReplayMarket(events, SYMBOL, speed=None)
    with (_moto_tables() if shared else nullcontext({})) as tables, TradovateSim(
        **LOGIN, accounts=[ACCOUNT], market=market
    ) as sim:  # fmt: skip
        client = TradovateClient(CREDENTIALS, sim.base_url, ws_url=sim.ws_url,
                                 md_url=sim.md_url)  # fmt: skip
        client.connect()
        timing = _Timing(client)
        broker: Any = timing
        journal: Any = SQLiteJournal(":memory:")
        if shared:
            gates = GateStack.from_config(cfg.risk, ES, cfg.execution.commission_per_side)
            broker, journal = on_shared_account(
                timing, orders_table=tables["orders"], fills_table=tables["fills"],
                risk_table=tables["risk"], account=ACCOUNT, gates=gates, risk=cfg.risk,
                clock=exchange_clock(market),  # a replay of 2023-12-25: the server's time
            )  # fmt: skip
        strategy = make_rule_strategy("momentum", tick_size=ES.tick_size)
        engine = _Clocked(cfg, strategy, journal, AccountState("2023-12-26"), symbol=SYMBOL,
                          broker=broker, mode="live", lockout_s=0)  # fmt: skip
        timing.engine = engine
        stop = threading.Event()

        def pace() -> None:
            while not stop.is_set() and market.i < len(events):
                market.step(STEP_EVENTS)
                stop.wait(STEP_S)

        pacer = threading.Thread(target=pace, daemon=True)
        pacer.start()

        async def go() -> None:
            await run_live(engine, tradovate_feed(client, SYMBOL), stop_after_s=RUN_S,
                           poll_every_s=0.1)  # fmt: skip
            await close_out(engine, "bench over")

        try:
            asyncio.run(go())
        finally:
            stop.set()
            pacer.join(5)
            client.close()
    return timing


def reservation_ms(n: int = 200) -> dict[str, np.ndarray]:
    """The risk step alone, on moto: the engine's reserve (gate + conditional write) and
    the risk Lambda's `decide_alert` in the same conditional update."""
    cfg = load_config()
    gates = GateStack.from_config(cfg.risk, ES, cfg.execution.commission_per_side)
    with _moto_tables() as tables:
        store = AccountStore(tables["risk"])
        desk = SharedRiskBroker(_NoBroker(), store, ACCOUNT, gates)  # type: ignore[arg-type]
        ms = []
        for i in range(n):
            intent = OrderIntent(f"bench-{i}", SYMBOL, Side.BUY, 1, ts_ns=OPEN_NS)
            t = time.perf_counter()
            desk.reserve(intent)
            ms.append((time.perf_counter() - t) * 1e3)
            store.update(ACCOUNT, lambda s: s.reservations.clear())
    return {"in process: gate + conditional write (moto)": np.array(ms)}


class _NoBroker:
    def place(self, intent: OrderIntent) -> None: ...


def _pct(ms: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(ms)
    if not len(a):
        return {"n": 0}
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3),
            "max_ms": round(float(a.max()), 3)}  # fmt: skip


def live_latencies(console: Any) -> dict[str, object]:
    """The rows for bench/results.json, printed as they come."""
    events = _events()
    out: dict[str, object] = {}
    for label, shared in (("no risk step", False), ("risk step in process", True)):
        t = _trade(events, shared)
        row = {"event in -> order sent": _pct(t.event_to_sent),
               "order sent -> fill taken": _pct(t.sent_to_fill)}  # fmt: skip
        out[label] = row
        console.print(f"  live, {label}: {row}")
    for name, ms in reservation_ms().items():
        out[f"risk step alone, {name}"] = _pct(ms)
        console.print(f"  risk step alone, {name}: {_pct(ms)}")
    return out


if __name__ == "__main__":
    from rich.console import Console

    live_latencies(Console())
