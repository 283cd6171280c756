"""The fault matrix: each fault the simulator can inject into a request, met by each kind
of order request, ends with the account exactly as intended — no lost order, no doubled
order, no orphaned bracket leg — and with the outcome the client is meant to reach
(counted in its `Counters`). Real HTTP against the loopback simulator; nothing mocked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from esml.broker.base import OrderRejected
from esml.broker.tradovate import (
    CaptchaRequired,
    OrderSpec,
    OutcomeUnknown,
    RateLimited,
    TradovateClient,
)
from esml.execution.orders import OrderType, Side
from esml.sim.tradovate_api import TradovateSim
from tests.tradovate_client_support import (
    PRICE,
    SYMBOL,
    bracket_long,
    client_for,
    orders_sent_as,
    position,
    running_sim,
)

# What a fault leaves the client to do, as its counters say.
RESENT_WITH_TICKET = "waited p-time, resent with the ticket"
BACKED_OFF = "backed off, resent"
FOUND = "answer lost; found by clOrdId, not resent"
ABSENT_RESENT = "answer lost; not at Tradovate, resent once"
READ_BACK = "answer lost; read back, done"
READ_BACK_RESENT = "answer lost; read back, not done, resent once"
REJECTED = "rejected, not resent"
CAPTCHA = "captcha: stopped for a person"

FAULTS_SEEN_ON_PLACE = {
    "p-ticket": RESENT_WITH_TICKET,
    "429": BACKED_OFF,
    "423": BACKED_OFF,
    "500": ABSENT_RESENT,
    "503": ABSENT_RESENT,
    "500-after-accept": FOUND,
    "drop-after-accept": FOUND,
    "timeout-after-accept": FOUND,
    "reject": REJECTED,
    "p-captcha": CAPTCHA,
}


@pytest.fixture(scope="module")
def sim() -> Iterator[TradovateSim]:
    with running_sim() as s:
        yield s


@pytest.fixture
def flat(sim: TradovateSim) -> Iterator[TradovateSim]:
    """The account flat and without working orders before and after each case."""
    sim.faults.clear()
    yield sim
    sim.faults.clear()
    client_for(sim).flatten(SYMBOL, f"cleanup-{len(sim.orders())}", "test cleanup")
    for o in sim.orders():
        assert o["ordStatus"] not in ("Working", "Suspended"), f"left working: {o}"
    assert position(sim) == 0


def outcome(client: TradovateClient) -> str:
    c = client.counters
    if c["rest_p_captcha"]:
        return CAPTCHA
    if c["rest_rejected"]:
        return REJECTED
    if c["rest_p_ticket"]:
        return RESENT_WITH_TICKET
    if c["rest_429"] or c["rest_423"]:
        return BACKED_OFF
    lost = c["rest_5xx"] + c["rest_timeout"] + c["rest_connection_lost"]
    assert lost, f"no fault met: {c.snapshot()}"
    if c["lookup_found"]:
        return FOUND
    if c["lookup_absent"]:
        return ABSENT_RESENT
    return READ_BACK_RESENT if c["resent_after_lookup"] else READ_BACK


def arm(sim: TradovateSim, fault: str, path: str) -> None:
    sim.faults.rest(fault, path=path, p_time=1.0, delay_s=2.5)


@pytest.mark.parametrize("fault", sorted(FAULTS_SEEN_ON_PLACE))
def test_a_bracket_entry_meets_each_fault(flat: TradovateSim, fault: str) -> None:
    sim, client = flat, client_for(flat)
    intent = bracket_long(f"bracket-{fault}")
    arm(sim, fault, "/order/placeoso")
    if fault == "reject":
        with pytest.raises(OrderRejected, match="RiskCheck"):
            client.place(intent, reference_price=PRICE)
    elif fault == "p-captcha":
        with pytest.raises(CaptchaRequired, match="captcha"):
            client.place(intent, reference_price=PRICE)
        sim.faults.clear()  # the person solved it
    else:
        placement = client.place(intent, reference_price=PRICE)
        entry = orders_sent_as(sim, intent.client_id)
        stop = orders_sent_as(sim, f"{intent.client_id}-stop")
        target = orders_sent_as(sim, f"{intent.client_id}-target")
        assert len(entry) == len(stop) == len(target) == 1, "one intent, one bracket"
        assert [o.order_id for o in placement.orders] == [
            str(entry[0]["id"]),
            str(stop[0]["id"]),
            str(target[0]["id"]),
        ]
        assert position(sim) == 1 == client.position(SYMBOL)
        assert {stop[0]["ordStatus"], target[0]["ordStatus"]} == {"Working"}
        assert stop[0]["ocoId"] == target[0]["id"], "the legs are one OCO pair"
    if fault in ("reject", "p-captcha"):
        assert orders_sent_as(sim, intent.client_id) == [] and position(sim) == 0
    assert outcome(client) == FAULTS_SEEN_ON_PLACE[fault]


def test_a_penalty_ticket_on_the_login_is_waited_out(flat: TradovateSim) -> None:
    client = client_for(flat)
    flat.faults.rest("p-ticket", path="/auth/accesstokenrequest", p_time=1.0)
    assert client.position(SYMBOL) == 0  # logged in after waiting p-time, with the ticket
    first, second = flat.calls("/auth/accesstokenrequest")[-2:]
    assert "p-ticket" not in first.body and second.body["p-ticket"]
    assert client.counters["rest_p_ticket"] == 1


def test_429_past_the_budget_is_rate_limited_never_rejected(flat: TradovateSim) -> None:
    client = client_for(flat, rate_limit_budget_s=0.6)
    flat.faults.rest("429", path="/order/placeorder", times=50)
    spec = OrderSpec("limited-1", SYMBOL, Side.BUY, 1, "Limit", price=PRICE - 5)
    with pytest.raises(RateLimited, match="not processed") as err:
        client.place_order(spec)
    assert not isinstance(err.value, OrderRejected)
    assert orders_sent_as(flat, "limited-1") == []
    flat.faults.clear()
    assert client.place_order(spec).status.value == "Working"  # and it may be sent later
    assert len(orders_sent_as(flat, "limited-1")) == 1


def test_a_lost_answer_whose_lookup_fails_stays_unknown_and_is_never_resent(
    flat: TradovateSim,
) -> None:
    client = client_for(flat)
    intent = bracket_long("lookup-fails")
    arm(flat, "drop-after-accept", "/order/placeoso")
    flat.faults.rest("503", path="/command/list", times=20)
    with pytest.raises(OutcomeUnknown, match="lookup failed"):
        client.place(intent, reference_price=PRICE)
    assert len(orders_sent_as(flat, intent.client_id)) == 1, "sent once, never again"
    flat.faults.clear()
    found = client.order_for_client(intent.client_id)  # what the execution layer asks next
    assert found is not None and found.order_type is OrderType.MARKET
    assert len(orders_sent_as(flat, intent.client_id)) == 1


@dataclass(frozen=True)
class Case:
    """An order request other than an entry, a fault met on its path, the outcome."""

    op: str
    fault: str
    expected: str


CASES = [
    Case("stop", "500-after-accept", FOUND),
    Case("stop", "drop-after-accept", FOUND),
    Case("stop", "500", ABSENT_RESENT),
    Case("oco", "drop-after-accept", FOUND),
    Case("cancel", "drop-after-accept", READ_BACK),
    Case("cancel", "500", READ_BACK_RESENT),
    Case("cancel", "429", BACKED_OFF),
    Case("modify", "drop-after-accept", FOUND),
    Case("modify", "500", ABSENT_RESENT),
    Case("modify", "p-ticket", RESENT_WITH_TICKET),
    Case("liquidate", "drop-after-accept", READ_BACK),
    Case("liquidate", "500-after-accept", READ_BACK),
    Case("liquidate", "503", READ_BACK_RESENT),
]
PATHS = {"stop": "/order/placeorder", "oco": "/order/placeoco", "cancel": "/order/cancelorder",
         "modify": "/order/modifyorder", "liquidate": "/order/liquidateposition"}  # fmt: skip


def _resting(client: TradovateClient, tag: str) -> str:
    spec = OrderSpec(tag, SYMBOL, Side.BUY, 1, "Limit", price=PRICE - 10)
    return client.place_order(spec).order_id


def _run(op: str, client: TradovateClient, sim: TradovateSim, arm_fault: Callable[[], None],
         tag: str) -> Callable[[], None]:  # fmt: skip
    """Set the case up, arm the fault, make the request; returns the check of the end state."""
    if op == "stop":
        arm_fault()
        client.place_order(OrderSpec(tag, SYMBOL, Side.SELL, 1, "Stop", stop_price=PRICE - 4))

        def check() -> None:
            (o,) = orders_sent_as(sim, tag)
            assert (o["ordStatus"], o["stopPrice"]) == ("Working", PRICE - 4)

        return check
    if op == "oco":
        arm_fault()
        client.place_oco(
            OrderSpec(tag, SYMBOL, Side.BUY, 1, "Limit", price=PRICE - 4),
            OrderSpec(f"{tag}-b", SYMBOL, Side.BUY, 1, "Stop", stop_price=PRICE + 4),
        )

        def check() -> None:
            (a,), (b,) = orders_sent_as(sim, tag), orders_sent_as(sim, f"{tag}-b")
            assert a["ocoId"] == b["id"] and b["ocoId"] == a["id"]

        return check
    if op == "liquidate":
        client.place(bracket_long(tag), reference_price=PRICE)
        arm_fault()
        closing = client.flatten(SYMBOL, f"{tag}-exit", "fault test")

        def check() -> None:
            assert position(sim) == 0
            assert closing is not None and closing.qty == 1
            legs = orders_sent_as(sim, f"{bracket_long(tag).client_id}-stop")
            assert legs[0]["ordStatus"] == "Canceled"

        return check
    order_id = _resting(client, tag)
    arm_fault()
    if op == "cancel":
        client.cancel(order_id)
        return lambda: _assert_status(sim, tag, "Canceled")
    client.modify(order_id, price=PRICE - 8)

    def check() -> None:
        (o,) = orders_sent_as(sim, tag)
        assert (o["ordStatus"], o["price"]) == ("Working", PRICE - 8)

    return check


def _assert_status(sim: TradovateSim, tag: str, status: str) -> None:
    (o,) = orders_sent_as(sim, tag)
    assert o["ordStatus"] == status


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.op}-{c.fault}")
def test_each_order_request_meets_its_faults(flat: TradovateSim, case: Case) -> None:
    client = client_for(flat)
    tag = f"{case.op}-{case.fault}"
    check = _run(case.op, client, flat, lambda: arm(flat, case.fault, PATHS[case.op]), tag)
    check()
    assert outcome(client) == case.expected


SOAK_FAULTS = ("none", "429", "423", "500", "503", "500-after-accept", "drop-after-accept")


def test_a_seeded_run_of_random_faults_and_socket_drops_loses_and_doubles_nothing(
    sim: TradovateSim,
) -> None:
    """24 bracket round trips, each entry meeting a random request fault, the user socket
    cut now and then, the market taking every position out through a leg: every intent is
    one entry with one OCO pair, every fill reaches the client once, the account is flat."""
    from collections import Counter

    from tests.tradovate_client_support import Heard, eventually

    rng = np.random.default_rng(10)
    client = client_for(sim)
    client.connect()
    heard = Heard(client)
    tally: Counter[tuple[str, str]] = Counter()
    try:
        for i in range(24):
            fault = str(rng.choice(SOAK_FAULTS))
            if fault != "none":
                arm(sim, fault, "/order/placeoso")
            before = client.counters.snapshot()
            intent = bracket_long(f"soak-{i}")
            client.place(intent, reference_price=PRICE)
            tally[(fault, _outcome_since(before, client))] += 1
            if rng.random() < 0.25:
                sim.faults.drop_sockets("user")
                tally[("user socket dropped", "resynced")] += 1
            exit_px = PRICE + 3.0 if rng.random() < 0.5 else PRICE - 2.0  # target or stop
            sim.set_price(SYMBOL, exit_px)
            sim.set_price(SYMBOL, PRICE)
            for suffix in ("", "-stop", "-target"):
                assert len(orders_sent_as(sim, intent.client_id + suffix)) == 1
            assert position(sim) == 0
        want = sorted(str(f["id"]) for f in sim._fills)
        assert eventually(lambda: (heard.take(), sorted(f.fill_id for f in heard.fills))[1] == want)
        assert not [o for o in sim.orders() if o["ordStatus"] in ("Working", "Suspended")]
    finally:
        client.close()
    for (fault, result), n in sorted(tally.items()):
        print(f"fault matrix: {fault:>18} -> {result}: {n}")
    assert {r for (f, r) in tally if f in ("500-after-accept", "drop-after-accept")} <= {FOUND}
    assert {r for (f, r) in tally if f in ("500", "503")} <= {ABSENT_RESENT}


def _outcome_since(before: dict[str, int], client: TradovateClient) -> str:
    now = client.counters.snapshot()
    moved = {k for k in now if now[k] != before[k]}
    if "lookup_found" in moved:
        return FOUND
    if "lookup_absent" in moved:
        return ABSENT_RESENT
    if moved & {"rest_429", "rest_423"}:
        return BACKED_OFF
    return "placed"
