"""Distinct alerts racing for the last contracts of `max_position`, through the whole path
(webhook, risk, router, the loopback Tradovate simulator), from 12 threads at once.

DynamoDB applies each request atomically; moto under threads does not (a conditional
check and its write can interleave with another thread's), so `atomic_aws` makes each
AWS call atomic, as DynamoDB is, and leaves every race between calls in place: the
account item's optimistic lock is what must hold the limit.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.alert_stack import ALERT_TIME, Stack
from tests.aws_fixtures import alert

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

MAX_POSITION = 3
ALERTS = 12


def test_concurrent_distinct_alerts_never_exceed_max_position(
    make_stack: Any, atomic_aws: None
) -> None:
    stack: Stack = make_stack(
        {"risk": {"max_position": MAX_POSITION, "budgets": {"RTH": {"cooldown_s": 0}}}}
    )
    stamp = ALERT_TIME.isoformat().replace("+00:00", "Z")
    bodies = [
        alert(price=5772.25 - 0.25 * i, market_position="long", time=stamp) for i in range(ALERTS)
    ]  # distinct alerts: each its own client order id
    answers: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()
    start = threading.Barrier(ALERTS)

    def send(body: dict[str, Any]) -> None:
        start.wait()
        answer = stack.post(body)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=send, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    statuses = [a[1].get("status") for a in answers]
    assert all(code == 200 for code, _ in answers), answers
    assert stack.broker_position() <= MAX_POSITION
    assert statuses.count("placed") == stack.broker_position() == MAX_POSITION, statuses
    gates = {a[1].get("gate") for a in answers if a[1].get("status") == "risk_rejected"}
    assert gates <= {"max_position", "position_open"}
    stack.sync()
    assert stack.position() == MAX_POSITION and stack.account().reservations == {}
