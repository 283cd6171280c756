"""The trading loop the crash tests kill and restart: a PositionManager on a
TradovateClient, against the loopback server the test hosts (`tests.execution_sim`),
journaling to SQLite, stepping through the server's scripted (SYNTHETIC) market. Every
start goes through `esml.execution.recovery.recover`; with an empty journal it finds
nothing.

    python -m tests.crash_runner BASE_URL JOURNAL_PATH

ESML_CRASH_AT: `N` or `journal:N` stops the process with os._exit(137) right after its
N-th journal write (1-based); `broker:N` right after its N-th broker command (place,
modify, cancel, flatten, protect) returns, before the answer is journaled.
ESML_STOP_AFTER_RECOVERY=1: exit right after recovery. Either way the loop reports to the
server (`/sim/checkpoint`) right after recovery and at the end, so the test can compare
what it believes with what the broker holds at those moments.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import requests

from esml.alpha.strategy import Signal
from esml.broker.tradovate import TradovateClient, TradovateCredentials
from esml.execution.orders import Fill, Order, OrderIntent, Side
from esml.execution.recovery import recover
from esml.execution.rules import ExitRules
from esml.journal.base import DecisionRecord
from esml.journal.sqlite import SQLiteJournal
from tests.aws_fixtures import ACCOUNT_SPEC, TRADOVATE_LOGIN
from tests.execution_sim import SYMBOL, TICK, Tick

CRASH_EXIT = 137
SIGNAL_AT = 1  # the scripted tick that brings the buy signal
HORIZON_S = 75.0
RULES = ExitRules(min_hold_s=30.0)
# SYNTHETIC: entry, then breakeven (0.6R = 4.8 ticks), trail (1R), tight trail (1.5R), and
# the time exit at the horizon.
SCRIPT = [
    Tick(0, 5772.25),
    Tick(1, 5772.25),  # buy at market: fill 5772.25, stop 5770.25 (R = 8 ticks)
    Tick(32, 5773.25),  # the minimum hold is over
    Tick(36, 5774.00),  # bid 5773.75: +6 ticks, breakeven
    Tick(40, 5774.75),  # bid 5774.50: +9 ticks, trail 4 ticks behind
    Tick(45, 5775.75),  # bid 5775.50: +13 ticks, tight trail 2 ticks behind
    Tick(78, 5775.50),  # the horizon has passed: time exit at market
    Tick(80, 5775.25),
]


class Crash:
    def __init__(self, spec: str | None) -> None:
        kind, _, n = (spec or "").rpartition(":")
        self.kind = kind or "journal"
        self.at = int(n) if n else 0
        self.counts = {"journal": 0, "broker": 0}

    def step(self, kind: str) -> None:
        self.counts[kind] += 1
        if self.at and kind == self.kind and self.counts[kind] == self.at:
            sys.stdout.flush()
            os._exit(CRASH_EXIT)


class CrashingJournal:
    """The SQLite journal, counting its writes."""

    def __init__(self, inner: SQLiteJournal, crash: Crash) -> None:
        self.inner, self.crash = inner, crash

    def record_order(self, o: Order) -> None:
        self.inner.record_order(o)
        self.crash.step("journal")

    def record_fill(self, f: Fill) -> bool:
        new = self.inner.record_fill(f)
        self.crash.step("journal")
        return new

    def record_decision(self, d: DecisionRecord) -> None:
        self.inner.record_decision(d)
        self.crash.step("journal")

    def orders(self) -> list[Order]:
        return self.inner.orders()

    def fills(self) -> list[Fill]:
        return self.inner.fills()

    def decisions(self) -> list[DecisionRecord]:
        return self.inner.decisions()


class CrashingBroker:
    """The Tradovate client, counting the commands it carries out."""

    def __init__(self, inner: TradovateClient, crash: Crash) -> None:
        self.inner, self.crash = inner, crash

    def _done(self, answer: Any) -> Any:
        self.crash.step("broker")
        return answer

    def place(self, intent: OrderIntent, reference_price: float | None = None) -> Any:
        return self._done(self.inner.place(intent, reference_price=reference_price))

    def modify(self, order_id: str, *, price: float | None = None, qty: int | None = None) -> None:
        self._done(self.inner.modify(order_id, price=price, qty=qty))

    def cancel(self, order_id: str) -> None:
        self._done(self.inner.cancel(order_id))

    def flatten(self, symbol: str, client_id: str, reason: str) -> Order | None:
        return self._done(self.inner.flatten(symbol, client_id, reason))

    def protect(
        self, symbol: str, side: Side, qty: int, stop_price: float, client_id: str
    ) -> Order:
        return self._done(self.inner.protect(symbol, side, qty, stop_price, client_id))

    def position(self, symbol: str) -> int:
        return self.inner.position(symbol)

    def fills(self) -> list[Fill]:
        return self.inner.fills()

    def working_orders(self, symbol: str) -> list[Order]:
        return self.inner.working_orders(symbol)

    def order_for_client(self, client_id: str) -> Order | None:
        return self.inner.order_for_client(client_id)

    def take_updates(self) -> tuple[list[Order], list[Fill]]:
        return self.inner.take_updates()


def quote(price: float) -> tuple[float, float, float]:
    """(bid, ask, last): the scripted price trades at the ask, one tick over the bid."""
    return price - TICK, price, price


def run(base_url: str, journal_path: str) -> int:
    crash = Crash(os.environ.get("ESML_CRASH_AT"))
    credentials = TradovateCredentials.model_validate(
        {**TRADOVATE_LOGIN, "env": "demo", "accountSpec": ACCOUNT_SPEC}
    )
    client = TradovateClient(credentials, base_url=base_url)
    broker = CrashingBroker(client, crash)
    market = requests.Session()
    tick = market.get(f"{base_url}/sim/quote", timeout=10).json()
    if tick["index"] < 0:
        tick = market.post(f"{base_url}/sim/advance", timeout=10).json()
    with SQLiteJournal(journal_path) as sqlite:
        journal = CrashingJournal(sqlite, crash)
        bid, ask, last = quote(tick["price"])
        manager, _ = recover(
            SYMBOL, broker, journal, RULES, ts_ns=tick["ts_ns"], bid=bid, ask=ask, last=last
        )
        checkpoint = {"phase": "recovered", "manager_position": manager.position}
        market.post(f"{base_url}/sim/checkpoint", json=checkpoint, timeout=10)
        if os.environ.get("ESML_STOP_AFTER_RECOVERY") == "1":
            return 0
        while not tick["done"]:
            ts = tick["ts_ns"]
            manager.on_updates(*broker.take_updates())
            manager.on_market(ts, *quote(tick["price"]))
            if tick["index"] == SIGNAL_AT:
                signal = Signal(ts, "crash-test", Side.BUY, 0.8, reason="scripted")
                manager.on_signal(signal, 1, 8, 25, ts, horizon_s=HORIZON_S)
            tick = market.post(f"{base_url}/sim/advance", timeout=10).json()
        manager.on_updates(*broker.take_updates())
        checkpoint = {"phase": "end", "manager_position": manager.position, **crash.counts}
        market.post(f"{base_url}/sim/checkpoint", json=checkpoint, timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2]))
