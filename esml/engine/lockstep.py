"""Paper and live on the same recording give the same trades.

A live run (`--source replay --broker tradovate`) against `esml sim tradovate` replaying
the engine's own recording, in lockstep: the simulator's replay moves only when the engine
says (`POST /sim/step {"until_ns": t}`), to the engine's decision time, before it decides,
and the engine then hears every fill the simulator made by then. The simulator's exchange
is the paper broker's (the same compiled `esml.sim.exchange`, with the config's latency and
market hours) and its requests wait for the replay to reach their arrival time, so an
order meets the book the engine decided on, at the engine's time, and fills at the price
and time the paper exchange gives it. While nothing of ours is open at the simulator its
book is moved only when a request is about to be sent (nothing there can change before).
"""

from __future__ import annotations

import functools
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from esml.execution.orders import Fill, Order

REQUESTS = frozenset({"place", "place_order", "place_oco", "modify", "cancel", "flatten",
                      "protect"})  # fmt: skip
Step = Callable[[int], tuple[int, bool]]


@runtime_checkable
class FollowsMarketTime(Protocol):
    """A broker whose market is moved by the engine's clock (a simulator in lockstep)."""

    def lockstep_to(self, ts_ns: int) -> None: ...


def sim_stepper(root: str, timeout_s: float = 30.0) -> Step:
    """`POST {root}/sim/step {"until_ns": t}` to the Tradovate simulator: its replay moves
    to `t`; returns how many fills it has made and whether anything is open there."""

    def step(until_ns: int) -> tuple[int, bool]:
        req = urllib.request.Request(
            f"{root.rstrip('/')}/sim/step", json.dumps({"until_ns": until_ns}).encode(),
            {"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=timeout_s) as answer:
            body = json.load(answer)
        return int(body["fills"]), bool(body["open"])

    return step


class LockstepBroker:
    """`broker` (the Tradovate client) whose simulator follows the engine's clock:
    `lockstep_to(t)` steps it (now, or before the next request while nothing is open) and
    waits until every fill it made by `t` has been heard."""

    def __init__(self, broker: Any, step: Step, wait_s: float = 10.0) -> None:
        self.broker = broker
        self.step = step
        self.wait_s = wait_s
        self._due: int | None = None  # the engine's clock
        self._at: int | None = None  # where the simulator was last moved to
        self._open = True  # until the simulator says otherwise
        self._base: int | None = None  # the simulator's fills before this run
        self._heard = 0
        self._orders: list[Order] = []
        self._fills: list[Fill] = []

    def lockstep_to(self, ts_ns: int) -> None:
        self._due = ts_ns
        if self._open:
            self._catch_up()

    def take_updates(self) -> tuple[list[Order], list[Fill]]:
        self._listen()
        out = self._orders, self._fills
        self._orders, self._fills = [], []
        return out

    def _catch_up(self) -> None:
        if self._due is None or self._due == self._at:
            return
        made, self._open = self.step(self._due)
        self._at = self._due
        if self._base is None:
            self._base = made
        end = time.monotonic() + self.wait_s
        while self._heard < made - self._base:
            if time.monotonic() > end:
                raise TimeoutError(f"the simulator's fills up to {self._due} did not arrive")
            time.sleep(0.0005)
            self._listen()

    def _listen(self) -> None:
        orders, fills = self.broker.take_updates()
        self._orders += orders
        self._fills += fills
        self._heard += len(fills)

    def __getattr__(self, name: str) -> Any:  # the rest of the broker; requests catch up
        attr = getattr(self.broker, name)
        if name not in REQUESTS:
            return attr

        @functools.wraps(attr)
        def request(*args: Any, **kwargs: Any) -> Any:
            self._catch_up()
            self._open = True
            return attr(*args, **kwargs)

        return request
