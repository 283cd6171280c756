"""The crash-recovery promise, by killing the trading loop.

`tests/crash_runner.py` trades one scripted (SYNTHETIC) market on the loopback Tradovate
server hosted here, so the exchange outlives the process: entry with its OCO bracket,
breakeven, trail, tight trail, time exit. It is stopped with os._exit(137) right after
each of its journal writes in turn, and right after each broker command returns (before
the answer is journaled), then restarted. After every restart: the position the loop
believes is the broker's, a working stop covers any open position, and at the end no
client id was sent twice, every broker fill is in the journal exactly once, and nothing
is left open.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from esml.broker.tradovate import TradovateClient, TradovateCredentials
from esml.execution.orders import OrderIntent, OrderStatus, OrderType, Side
from esml.journal.sqlite import SQLiteJournal
from tests.aws_fixtures import ACCOUNT_SPEC, TRADOVATE_LOGIN
from tests.crash_runner import CRASH_EXIT, SCRIPT, run
from tests.execution_sim import SYMBOL, ExecutionSim

ROOT = Path(__file__).resolve().parents[1]
_FORK = multiprocessing.get_context("fork")  # a fresh process without re-importing esml


def _child(base_url: str, journal: str, env: dict[str, str]) -> None:
    os.environ.update(env)
    try:
        code = run(base_url, journal)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    os._exit(code)


def launch(sim: ExecutionSim, journal: Path, **env: str) -> int:
    p = _FORK.Process(target=_child, args=(sim.base_url, str(journal), env))
    p.start()
    p.join(60)
    if p.is_alive():
        p.kill()
        pytest.fail("the trading loop hung")
    assert p.exitcode is not None
    return p.exitcode


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """Where the many per-step journals go: memory-backed when the machine has it (a
    process crash, unlike a power loss, leaves its files intact either way)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm, prefix="esml-crash-") as d:
        yield Path(d)


@pytest.fixture
def sim() -> Iterator[ExecutionSim]:
    with ExecutionSim(script=SCRIPT) as s:
        yield s


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The sequence without a crash: how many journal writes and broker commands it has."""
    with ExecutionSim(script=SCRIPT) as s:
        assert launch(s, tmp_path_factory.mktemp("clean") / "journal.sqlite") == 0
        end = s.checkpoints[-1]
        modifies = [r.body for r in s.calls("/order/modifyorder")]
        liquidations = s.calls("/order/liquidateposition")
    return {"end": end, "modifies": modifies, "liquidations": liquidations}


def test_the_clean_sequence_enters_trails_and_exits(clean_run: dict[str, Any]) -> None:
    assert [m["stopPrice"] for m in clean_run["modifies"]] == [5772.25, 5773.5, 5775.0]
    assert len(clean_run["liquidations"]) == 1  # the time exit
    end = clean_run["end"]
    assert end["broker_position"] == end["manager_position"] == 0
    assert end["journal"] > 30 and end["broker"] == 5  # place, 3 modifies, flatten


def check_restart(sim: ExecutionSim, journal_path: Path, label: str) -> None:
    """The promise, after a crash and a restart that ran to the end."""
    recovered = [c for c in sim.checkpoints if c["phase"] == "recovered"][-1]
    held = recovered["broker_position"]
    assert recovered["manager_position"] == held, f"{label}: position after restart"
    if held:
        assert recovered["stop_qty"] == abs(held), f"{label}: open without its stop"
    end = sim.checkpoints[-1]
    assert end["phase"] == "end" and end["broker_position"] == end["manager_position"] == 0
    assert sim.live_orders() == [], f"{label}: orders left working"

    orders = sim.orders()
    sent = Counter(o["clOrdId"] for o in orders if o["clOrdId"])
    assert max(sent.values(), default=0) <= 1, f"{label}: a client id was sent twice: {sent}"
    entries = [c for c in sent if not c.endswith(("-stop", "-target"))]
    assert len(entries) <= 1, f"{label}: more than one entry: {entries}"

    with SQLiteJournal(journal_path) as j:
        broker_fills = {str(f["id"]): f for f in sim.fill_rows()}
        fills = j.fills()
        assert sorted(f.fill_id for f in fills) == sorted(broker_fills), f"{label}: fills"
        for f in fills:
            b = broker_fills[f.fill_id]
            assert (f.qty, f.price, f.side.value) == (b["qty"], b["price"], b["action"])
        assert sum(f.side.sign * f.qty for f in fills) == 0
        journal_orders = {o.order_id: o for o in j.orders()}
        assert all(o.status.is_final for o in journal_orders.values()), label
        for cid in sent:
            assert cid in journal_orders, f"{label}: {cid} was sent but never journaled"
        for o in journal_orders.values():
            filled = sum(f.qty for f in fills if f.order_id == o.order_id)
            assert filled == o.filled_qty, f"{label}: {o.order_id} fills {filled}"
        last_said = {}
        for d in j.decisions():
            if d.source == "execution" and d.reason.startswith("order ") and " -> " in d.reason:
                oid, _, what = d.reason[len("order ") :].partition(": ")
                last_said[oid] = what.split(" -> ")[1].split(":")[0]
        for o in journal_orders.values():
            assert last_said.get(o.order_id) == o.status.value, f"{label}: {o.order_id}"


@pytest.mark.parametrize("kind", ["journal", "broker"])
def test_a_crash_at_every_step_is_recovered(
    kind: str, clean_run: dict[str, Any], scratch: Path
) -> None:
    steps = clean_run["end"][kind]
    for k in range(1, steps + 1):
        label = f"crash after {kind} step {k} of {steps}"
        with ExecutionSim(script=SCRIPT) as sim:
            journal = scratch / f"{kind}-{k}.sqlite"
            assert launch(sim, journal, ESML_CRASH_AT=f"{kind}:{k}") == CRASH_EXIT, label
            assert launch(sim, journal) == 0, label
            check_restart(sim, journal, label)


def _cancel_stop(sim: ExecutionSim) -> dict[str, Any]:
    (stop,) = [o for o in sim.live_orders() if o["orderType"] == "Stop"]
    sim.cancel_order(stop["id"])
    return stop


def test_a_stop_lost_while_down_is_replaced_at_the_journaled_level(
    sim: ExecutionSim, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite"
    assert launch(sim, journal, ESML_CRASH_AT="broker:2") == CRASH_EXIT  # after breakeven
    lost = _cancel_stop(sim)
    assert lost["stopPrice"] == 5772.25

    assert launch(sim, journal, ESML_STOP_AFTER_RECOVERY="1") == 0
    (stop,) = [o for o in sim.live_orders() if o["orderType"] == "Stop"]
    assert stop["clOrdId"] != lost["clOrdId"] and stop["clOrdId"].endswith("-stop")
    assert (stop["action"], stop["orderQty"], stop["stopPrice"]) == ("Sell", 1, 5772.25)
    assert sim.checkpoints[-1]["stop_qty"] == 1

    assert launch(sim, journal) == 0
    check_restart(sim, journal, "stop lost while down")


def test_a_stop_level_crossed_while_down_gets_an_emergency_stop(
    sim: ExecutionSim, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite"
    assert launch(sim, journal, ESML_CRASH_AT="broker:2") == CRASH_EXIT
    _cancel_stop(sim)
    sim.at(37, 5771.50)  # bid 5771.25: below the journaled stop at 5772.25

    assert launch(sim, journal, ESML_STOP_AFTER_RECOVERY="1") == 0
    (stop,) = [o for o in sim.live_orders() if o["orderType"] == "Stop"]
    assert stop["stopPrice"] == 5771.25 - 8 * 0.25  # emergency_stop_ticks from the bid
    assert sim.checkpoints[-1]["stop_qty"] == 1

    assert launch(sim, journal) == 0
    check_restart(sim, journal, "stop level crossed while down")


def test_an_order_the_journal_does_not_know_is_cancelled_as_an_orphan(
    sim: ExecutionSim, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite"
    assert launch(sim, journal, ESML_CRASH_AT="broker:1") == CRASH_EXIT
    credentials = TradovateCredentials.model_validate(
        {**TRADOVATE_LOGIN, "env": "demo", "accountSpec": ACCOUNT_SPEC}
    )
    stranger = TradovateClient(credentials, base_url=sim.base_url)
    foreign = stranger.place(
        OrderIntent("manual-1", SYMBOL, Side.BUY, 1, OrderType.LIMIT, limit_price=5760.0)
    ).entry

    assert launch(sim, journal, ESML_STOP_AFTER_RECOVERY="1") == 0
    status = {str(o["id"]): o["ordStatus"] for o in sim.orders()}
    assert status[foreign.order_id] == "Canceled"
    assert sim.checkpoints[-1]["broker_position"] == 1 and sim.checkpoints[-1]["stop_qty"] == 1
    with SQLiteJournal(journal) as j:
        assert any("orphan" in d.reason and foreign.order_id in d.reason for d in j.decisions())
        assert all(o.status is not OrderStatus.PENDING for o in j.orders())


def test_a_fresh_interpreter_recovers_a_killed_one(sim: ExecutionSim, tmp_path: Path) -> None:
    """The same promise without fork: two real interpreter processes."""
    journal = tmp_path / "journal.sqlite"
    cmd = [sys.executable, "-m", "tests.crash_runner", sim.base_url, str(journal)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESML_")}
    crashed = subprocess.run(
        cmd,
        cwd=ROOT,
        env={**env, "ESML_CRASH_AT": "journal:20"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crashed.returncode == CRASH_EXIT, crashed.stderr
    restarted = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert restarted.returncode == 0, restarted.stderr
    check_restart(sim, journal, "fresh interpreter")
