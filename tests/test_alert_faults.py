"""The broker-fault matrix: every way Tradovate can fail an order request, on entries and on
exits, against the Tradovate simulator's fault injection over real HTTP
(`esml.sim.tradovate_faults`), with DynamoDB through moto.

For every case: a background sampler watches the simulator's position all along and it
never exceeds `max_position`; a second entry sent right after the faulted alert cannot
push it over either; and once the faults are lifted and the in-flight window has passed,
one sync leaves DynamoDB and the broker agreeing (position, no reservation without a
working order, no order item left Pending). Each row is printed for the closing note.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from esml.decision.broker_sync import IN_FLIGHT_S
from esml.market.side import Side
from tests.alert_stack import Stack
from tests.test_lambdas import at

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

MAX_POSITION = 1
ENTRY_PATH, EXIT_PATH = "/order/placeoso", "/order/placeorder"


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    times: int = 1
    lookup_fails: bool = False  # the clOrdId look-up fails too: the router cannot tell


CASES = [
    Case("refusal", "reject"),
    Case("4xx rate limit", "429", times=50),
    Case("5xx before acceptance", "500"),
    Case("5xx after acceptance", "500-after-accept"),
    Case("timeout before acceptance (504)", "504"),
    Case("timeout after acceptance", "timeout-after-accept"),
    Case("answer dropped after acceptance", "drop-after-accept"),
    Case("5xx after acceptance, look-up down", "500-after-accept", lookup_fails=True),
    Case("timeout before acceptance, look-up down", "504", lookup_fails=True),
]


class Sampler:
    """The broker's position every few milliseconds, while the case runs."""

    def __init__(self, stack: Stack) -> None:
        self.stack, self.worst = stack, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.worst = max(self.worst, abs(self.stack.broker_position()))
            self._stop.wait(0.005)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def arm(stack: Stack, case: Case, path: str) -> None:
    stack.sim.faults.rest(case.kind, path=path, times=case.times, delay_s=1.5)
    if case.lookup_fails:
        stack.sim.faults.rest("500", path="/command/list", times=1000)


def assert_agree(stack: Stack) -> None:
    account = stack.account()
    assert account.position("ESH5") == stack.broker_position()
    working = {o["clOrdId"] for o in stack.working()}
    assert set(account.reservations) <= working
    pending = [o["client_id"] for o in stack.orders() if o["status"] == "Pending"]
    assert pending == []
    held = stack.broker_position()
    for side in Side:  # the limits' worst case never undercounts what the broker holds
        assert account.worst_case("ESH5", side) >= held * side.sign


ROWS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def print_matrix() -> Iterator[None]:
    yield
    print("\nfault | on | answer | follow-up entry | max |broker pos| | DynamoDB = broker")
    for row in ROWS:
        print(row)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("on", ["entry", "exit"])
def test_broker_faults_never_break_a_limit_and_end_in_agreement(
    make_stack: Any, case: Case, on: str
) -> None:
    stack = make_stack(
        {"risk": {"max_position": MAX_POSITION, "budgets": {"RTH": {"cooldown_s": 0}}}}
    )
    with Sampler(stack) as sampler:
        if on == "exit":
            assert stack.post(at(stack, 0))[1]["status"] == "placed"
            arm(stack, case, EXIT_PATH)
            status, answer = stack.post(at(stack, 5, action="exit"))
        else:
            arm(stack, case, ENTRY_PATH)
            status, answer = stack.post(at(stack, 0))
        assert status in (200, 502), answer
        assert stack.sim.faults.counts[case.kind] >= 1
        follow = stack.post(at(stack, 10, price=5772.5, action="buy", market_position="long"))[1]
        stack.sim.faults.clear()
        stack.clock.advance(IN_FLIGHT_S + 1)
        stack.sync()
        assert_agree(stack)
        again = stack.post(at(stack, IN_FLIGHT_S + 20, price=5772.5, market_position="long"))[1]
        assert_agree(stack)
    assert sampler.worst <= MAX_POSITION
    ROWS.append(
        f"{case.name} | {on} | {answer.get('status', answer.get('error'))} | "
        f"{follow.get('status')}/{follow.get('gate')} | {sampler.worst} | "
        f"{stack.position()} = {stack.broker_position()} (then {again.get('status')})"
    )
