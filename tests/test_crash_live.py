"""The crash matrix of issue 11 item 5, at the container level: the tick-engine container's
process (`containers/tick_engine/main.py`, a real process) trades the Tradovate simulator
replaying the real ES file over real sockets, with its journal and the shared account in
DynamoDB (moto's server, over HTTP, as the container reaches AWS). It is killed with
SIGKILL at a named point of a trade, or stopped by ECS's SIGTERM leaving the bracket, and
restarted on the same tables while the market waits:

- mid-entry: the entry reached the simulator and filled there, its answer held back
  (the simulator's `timeout-after-accept` fault): nothing of it is journaled yet but the
  intent;
- mid-bracket: a position open under its exchange-held bracket;
- mid-trail: a stop move (break-even or trail) carried out at the simulator, its answer
  held back;
- mid-exit: the liquidation carried out (the simulator is flat, its bracket cancelled), its
  answer and fills not yet journaled;
- SIGTERM with `ESML_ON_STOP=leave`: the process exits cleanly, the position stays under
  its exchange-held bracket.

The kill points need no hook in the process: the simulator carries the request out and
holds its answer back (`Held`), and the test kills the process while it waits. After the
restart's start-up reconciliation (the market still paused) journal and broker agree:
the same fills, the same position in the shared account, the same working orders; an open
position has its stop. The run then goes on and ends flat, no client order id sent twice,
every fill journaled once. The table of what each restart finds is in docs/live.md."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from moto.server import ThreadedMotoServer

from esml.decision.account_store import AccountStore
from esml.engine.shared_risk import exchange_clock
from esml.journal.dynamodb import DynamoDBJournal
from esml.sim.tradovate_api import TradovateSim
from esml.sim.tradovate_faults import Verdict
from esml.sim.tradovate_market import ReplayMarket
from tests.aws_fixtures import ACCOUNT_SPEC, KEYS, REGION, TRADOVATE_LOGIN, sim_arguments
from tests.test_live_tradovate import SYMBOL, es  # noqa: F401  (the re-stamped real file)

ROOT = Path(__file__).resolve().parents[1]
STEP_EVENTS, STEP_S = 20, 0.02  # ~100 s of this quiet market a second: the engine keeps up
OPEN_NS = 1_703_545_200 * 10**9  # the session's open in the file, 17:00 CT
HELD = "timeout-after-accept"  # carried out, the answer held back
# Trades long enough to trail (break-even at 0.1R, no minimum hold) before the time exit.
CONFIG = {
    "execution": {"exits": {"min_hold_s": 0, "breakeven_r": 0.1, "trail_r": 0.3,
                            "trail_distance_r": 0.25, "tight_trail_distance_r": 0.2}},
    "features": {"horizon_s": 400},
}  # fmt: skip
# The container's entry point, its imports done before it is let go: the restart is
# launched while the first process still runs (as a standby task would be) and starts the
# moment the first is dead, its seconds of imports not on the test's clock.
GATED = "import sys; from containers.tick_engine import main; sys.stdin.readline(); main.main()"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}  # fmt: skip


def _open(sim: TradovateSim) -> bool:
    return sim.net_position(ACCOUNT_SPEC, SYMBOL) != 0


def _bracketed(sim: TradovateSim) -> bool:
    """A position open with its stop working at the exchange."""
    working = [o for o in sim.orders() if o["ordStatus"] == "Working"]
    return _open(sim) and any(o["orderType"] == "Stop" for o in working)


class Held:
    """Holds back the answer to the next request to `path` once it has been carried out
    (the simulator's `timeout-after-accept`). A request the simulator refused (a bracket
    priced off a market that has moved on) is answered as usual and the fault re-armed."""

    def __init__(self, sim: TradovateSim, path: str) -> None:
        self.sim, self.path, self.done = sim, path, False
        self._dispatch = sim.dispatch
        sim.dispatch = self.dispatch  # type: ignore[method-assign]
        sim.faults.rest(HELD, path=path, delay_s=60)

    def dispatch(self, method: str, path: str, query: dict[str, str], token: str | None,
                 body: Any) -> tuple[int, Any, Verdict]:  # fmt: skip
        status, answer, verdict = self._dispatch(method, path, query, token, body)
        if verdict.kind != HELD:
            return status, answer, verdict
        if status == 200 and not (isinstance(answer, dict) and answer.get("failureReason")):
            self.done = True  # under the simulator's lock: carried out when this shows
            return status, answer, verdict
        self.sim.faults.rest(HELD, path=self.path, delay_s=60)
        return status, answer, Verdict()

    def __call__(self, sim: TradovateSim) -> bool:
        return self.done


def _journaled(sim: TradovateSim, journal: DynamoDBJournal) -> bool:
    """Every fill the broker made is in the journal (the engine has heard of its entry)."""
    return len(journal.fills()) == len(sim._fills)


# kill point -> (the request whose answer is held back, else kill once a bracketed position
# is journaled; where the replay starts: seconds after the open, a little before the trade
# it needs: the first entry comes at +361 s, the first stop move in the trade of +1786 s)
KILL_POINTS: dict[str, tuple[str | None, int]] = {
    "mid-entry": ("/order/placeoso", 240),
    "mid-bracket": (None, 240),
    "mid-trail": ("/order/modifyorder", 1690),
    "mid-exit": ("/order/liquidateposition", 240),
    "SIGTERM, leave the bracket": (None, 240),
}


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """One moto server for the module, reached over HTTP by the container's process."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def tables(moto_url: str, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The orders, fills and risk-state tables of one case (names of its own)."""
    dynamodb = boto3.resource("dynamodb", endpoint_url=moto_url, region_name=REGION,
                              aws_access_key_id="testing",
                              aws_secret_access_key="testing")  # fmt: skip
    suffix = str(abs(hash(request.node.name)))
    made = {}
    for role, base in (("orders", "esml-orders"), ("fills", "esml-fills"),
                       ("risk", "esml-risk-state")):  # fmt: skip
        made[role] = dynamodb.create_table(
            TableName=f"{base}-{suffix}",
            KeySchema=[{"AttributeName": KEYS[base], "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": KEYS[base], "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    yield made
    for t in made.values():
        t.delete()


def _launch(sim: TradovateSim, tmp_path: Path, moto_url: str, tables: dict[str, Any],
            run_for: str, **more: str) -> subprocess.Popen:  # fmt: skip
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({**TRADOVATE_LOGIN, "accountSpec": ACCOUNT_SPEC}))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ESML_"))},
        **AWS_ENV, "AWS_ENDPOINT_URL": moto_url, "PYTHONPATH": str(ROOT),
        "ESML_SOURCE": "tradovate", "ESML_BROKER": "tradovate", "ESML_SYMBOL": SYMBOL,
        "ESML_STRATEGY": "momentum", "ESML_LOCKOUT_S": "0", "ESML_FOR": run_for,
        "ESML_ACCOUNT_CLOCK": "market",  # the simulator replays 2023-12-25
        "ESML_CONFIG": json.dumps(CONFIG), "ESML_HEALTH_FILE": str(tmp_path / "health"),
        "ESML_TRADOVATE_CREDENTIALS": str(creds), "ESML_TRADOVATE_REST": sim.base_url,
        "ESML_TRADOVATE_WS": sim.ws_url, "ESML_TRADOVATE_MD": sim.md_url,
        "ORDERS_TABLE": tables["orders"].name, "FILLS_TABLE": tables["fills"].name,
        "RISK_STATE_TABLE": tables["risk"].name, **more,
    }  # fmt: skip
    env.pop("TRADOVATE_SECRET_ARN", None)
    return subprocess.Popen([sys.executable, "-c", GATED], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _go(p: subprocess.Popen) -> subprocess.Popen:
    """Let a launched process run the entry point."""
    assert p.stdin is not None
    p.stdin.write("go\n")
    p.stdin.flush()
    return p


def _until(done: Callable[[], bool], p: subprocess.Popen, what: str, timeout_s: float = 120,
           detail: Callable[[], object] = lambda: "") -> None:  # fmt: skip
    end = time.monotonic() + timeout_s
    while not done() and p.poll() is None and time.monotonic() < end:
        time.sleep(0.05)  # a DynamoDB scan per look: moto is pure Python
    if not done() and p.poll() is not None:
        print(p.stderr.read()[-5000:])  # type: ignore[union-attr]
    assert done(), f"{what} (the process: {p.poll()}) {detail()}"


def _reconciliations(journal: DynamoDBJournal) -> list[str]:
    return [d.reason for d in journal.decisions() if "start-up reconciliation" in d.reason]


def _disagreements(sim: TradovateSim, journal: DynamoDBJournal,
                   store: AccountStore) -> list[str]:  # fmt: skip
    """What still differs between the journal, the shared account and the broker: the
    journal must hold the broker's fills, the account its position, the orders open in the
    journal must be the ones working at the broker, and an open position must have working
    stops covering it on the closing side."""
    held = sim.net_position(ACCOUNT_SPEC, SYMBOL)
    working = {o["clOrdId"]: o for o in sim.orders() if o["ordStatus"] == "Working"}
    stops = [o for o in working.values() if o["orderType"] == "Stop"]
    journaled = {f.fill_id for f in journal.fills()}
    booked = {str(f["id"]) for f in sim._fills}
    account = store.load(ACCOUNT_SPEC).position(SYMBOL)
    open_ = {o.client_id: o.status.value for o in journal.orders() if not o.status.is_final}
    covered = sum(o["orderQty"] - o["filledQty"] for o in stops)
    checks = {
        f"fills: journal {sorted(journaled)}, broker {sorted(booked)}": journaled == booked,
        f"position: account {account}, broker {held}": account == held,
        f"open orders: journal {open_}, broker working {sorted(working)}": set(open_)
        == set(working),
        f"stops cover {covered} of {abs(held)}": covered == abs(held),
        "stops on the closing side": all((o["action"] == "Buy") == (held < 0) for o in stops),
    }
    return [what for what, ok in checks.items() if not ok]


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_anywhere_in_a_trade_the_restart_reconciles_and_nothing_is_lost_or_doubled(
    es,  # noqa: F811
    tmp_path: Path,
    moto_url: str,
    tables: dict[str, Any],
    point: str,
) -> None:
    path, start_s = KILL_POINTS[point]
    kill = point != "SIGTERM, leave the bracket"
    journal = DynamoDBJournal(tables["orders"], tables["fills"])
    market = ReplayMarket(es, SYMBOL, speed=None)
    store = AccountStore(tables["risk"], exchange_clock(market))
    with TradovateSim(**sim_arguments(prices=None, market=market)) as sim:
        stop, down = threading.Event(), threading.Event()

        def pace() -> None:  # the market waits while the engine restarts (a quick restart)
            while not stop.is_set() and market.i < len(market.events):
                if not down.is_set():
                    market.step(STEP_EVENTS)
                stop.wait(STEP_S)

        start = int(np.searchsorted(es["ts_recv"], OPEN_NS + start_s * 10**9))
        market.step(start - market.i)
        ready = Held(sim, path) if path else lambda s: _bracketed(s) and _journaled(s, journal)
        first = _go(_launch(sim, tmp_path, moto_url, tables, "120s",
                            ESML_ON_STOP="flatten" if kill else "leave"))  # fmt: skip
        second = _launch(sim, tmp_path, moto_url, tables, "3s")
        procs = [first, second]
        pacer = threading.Thread(target=pace, daemon=True)
        try:
            _until(lambda: (tmp_path / "health").exists(), first, "the engine started")
            pacer.start()
            _until(lambda: ready(sim), first, f"the trade reached {point}")
            down.set()
            first.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            assert first.wait(60) == (-signal.SIGKILL if kill else 0)
            held = sim.net_position(ACCOUNT_SPEC, SYMBOL)
            at_kill = Counter(o.status.value for o in journal.orders())
            print(f"{point}: at the kill the journal holds {dict(at_kill)}, "
                  f"{len(journal.fills())} of the broker's {len(sim._fills)} fills")  # fmt: skip
            (tmp_path / "health").unlink()
            _go(second)
            _until(lambda: (tmp_path / "health").exists(), second, "the engine restarted")

            def reconciled() -> bool:  # at its first decision point: a second of market
                market.step(5)
                return len(_reconciliations(journal)) == 2

            _until(reconciled, second, "the restart reconciled")
            differ = partial(_disagreements, sim, journal, store)
            _until(lambda: not differ(), second, "journal and broker agree", 30, differ)
            down.clear()
            _, err = second.communicate(timeout=180)
            assert second.returncode == 0, err[-3000:]
        finally:
            stop.set()
            for p in procs:
                if p.poll() is None:
                    p.kill()
        found = _reconciliations(journal)[1]
        print(f"{point}: held {held:+d} at the kill; the restart: {found}")
        assert sim.net_position(ACCOUNT_SPEC, SYMBOL) == 0, "the restarted run ended flat"
        sent = Counter(o["clOrdId"] for o in sim.orders() if o.get("clOrdId"))
        assert sent and max(sent.values()) == 1, "no client order id was sent twice"
        fills, orders = journal.fills(), {o.client_id for o in journal.orders()}
        assert len(fills) == len({f.fill_id for f in fills}) == len(sim._fills), "each once"
        assert {f.order_id for f in fills} <= orders, "each fill journaled with its order"
        open_ = [(o.client_id, o.status.value) for o in journal.orders() if not o.status.is_final]
        assert not open_, f"every order journaled to its end: {open_}"
        state = store.load(ACCOUNT_SPEC)
        assert state.position(SYMBOL) == 0 and not state.reservations
        reasons = [d.reason for d in journal.decisions()]
        if kill:
            assert held != 0 or point == "mid-exit", "kill -9 leaves the position open"
            assert "found 0," not in found, "the restart found what the killed one sent"
        else:
            assert any("left under its exchange-held bracket" in r for r in reasons)
            assert not any("stopped by a signal" in r for r in reasons), "no flatten on SIGTERM"
