"""The Tradovate simulator on a replayed real ES book (CME MBO, ESH4 2023-12-25): market
data as Tradovate documents it (conformance stage 5: quotes, DOM, tick and minute charts,
unsubscribes) and orders matched by the compiled exchange simulator, over real sockets."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from typer.testing import CliRunner

from esml.cli import sim_cmd
from esml.sim.tradovate_api import TradovateSim
from esml.sim.tradovate_market import ReplayMarket
from tests.aws_fixtures import ACCOUNT_SPEC, sim_arguments
from tests.conftest import ES_FILE
from tests.tradovate_sim_wire import Wire, login, order_body, rest_caller

SYMBOL = "ESH4"  # the contract of conftest's ES_FILE, whose events `es_events` holds


@pytest.fixture
def sim(es_events: np.ndarray) -> Iterator[TradovateSim]:
    market = ReplayMarket(es_events, SYMBOL, speed=None)  # step mode: the test drives it
    with TradovateSim(**sim_arguments(prices=None, market=market)) as s:
        yield s


@pytest.fixture
def rest(sim: TradovateSim) -> Any:
    call = rest_caller(sim.base_url)

    def ok(path: str, body: Any = None, **params: Any) -> Any:
        status, answer = call(path, body, **params)
        assert status == 200, answer
        return answer

    return ok


def order(action: str, qty: int, kind: str = "Market", **extra: Any) -> dict[str, Any]:
    return order_body(action, qty, kind, symbol=SYMBOL, **extra)


def md_wire(sim: TradovateSim) -> Wire:
    w = Wire(sim.md_url)
    assert w.authorize(login(sim.base_url)["mdAccessToken"])["s"] == 200
    return w


def status_of(sim: TradovateSim, oid: int) -> tuple[str, int]:
    o = next(o for o in sim.orders() if o["id"] == oid)
    return o["ordStatus"], o["filledQty"]


# -- stage 5: market data ---------------------------------------------------------------


def test_stage5_quote_and_dom_are_the_replayed_book(sim: TradovateSim) -> None:
    assert sim.market is not None
    w = md_wire(sim)
    assert w.answer(w.send("md/subscribeQuote", {"symbol": SYMBOL}))["s"] == 200
    assert w.answer(w.send("md/subscribeDOM", {"symbol": SYMBOL}))["s"] == 200
    first = w.events("md", lambda got: len(got) >= 2)
    quote = next(m["d"]["quotes"][0] for m in first if "quotes" in m["d"])
    dom = next(m["d"]["doms"][0] for m in first if "doms" in m["d"])
    bid, bid_size, ask, ask_size = sim.market.touch()
    assert quote["entries"]["Bid"] == {"price": bid, "size": bid_size}
    assert quote["entries"]["Offer"] == {"price": ask, "size": ask_size}
    assert len(dom["bids"]) == len(dom["offers"]) == 10
    assert dom["bids"][0]["price"] == bid and dom["offers"][0]["price"] == ask
    assert all(a["price"] > b["price"] for a, b in zip(dom["bids"], dom["bids"][1:], strict=False))

    sim.market.step(3_000)  # the open: trades print
    later = w.events("md", lambda got: len(got) >= 4)[2:]
    quote = next(m["d"]["quotes"][0] for m in later if "quotes" in m["d"])
    tape = sim.market.tape()
    assert quote["entries"]["Trade"]["price"] == tape["price"][-1]
    assert quote["entries"]["TotalTradeVolume"]["size"] == int(tape["size"].sum())

    assert w.answer(w.send("md/unsubscribeQuote", {"symbol": SYMBOL}))["s"] == 200
    assert w.answer(w.send("md/unsubscribeDOM", {"symbol": SYMBOL}))["s"] == 200
    sim.market.step(3_000)
    with pytest.raises(TimeoutError):
        while True:
            frame = w.read(timeout=0.3)
            assert frame == "h", "data after unsubscribing"


def test_stage5_tick_chart_history_then_every_live_trade(sim: TradovateSim) -> None:
    assert sim.market is not None
    sim.market.step(12_000)
    w = md_wire(sim)
    req = {
        "symbol": SYMBOL,
        "timeRange": {"asMuchAsElements": 50},
        "chartDescription": {
            "underlyingType": "Tick",
            "elementSize": 1,
            "elementSizeUnit": "UnderlyingUnits",
        },
    }
    ids = w.answer(w.send("md/getChart", req))["d"]
    hist = w.events("chart", lambda got: any(c.get("eoh") for m in got for c in m["d"]["charts"]))
    packets = [c for m in hist for c in m["d"]["charts"] if c["id"] == ids["historicalId"]]
    (history, end) = packets
    assert end == {"id": ids["historicalId"], "eoh": True}
    tape = sim.market.tape()
    assert len(history["tks"]) == 50 and history["ts"] == 0.25

    def prices(packet: dict[str, Any]) -> list[float]:
        return [(packet["bp"] + t["p"]) * packet["ts"] for t in packet["tks"]]

    assert prices(history) == list(tape["price"][-50:])
    seen = len(tape)
    sim.market.step(8_000)
    new = sim.market.tape()[seen:]
    assert len(new) > 0
    live = w.events(
        "chart",
        lambda got: (
            sum(
                len(c.get("tks", []))
                for m in got
                for c in m["d"]["charts"]
                if c["id"] == ids["realtimeId"]
            )
            >= len(new)
        ),
    )
    ticks = [
        p for m in live for c in m["d"]["charts"] if c["id"] == ids["realtimeId"] for p in prices(c)
    ]
    assert ticks == list(new["price"])  # every trade, once, in order
    sizes = [
        t["s"]
        for m in live
        for c in m["d"]["charts"]
        if c["id"] == ids["realtimeId"]
        for t in c["tks"]
    ]
    assert sizes == list(new["size"])
    assert w.answer(w.send("md/cancelChart", {"subscriptionId": ids["realtimeId"]}))["s"] == 200


def test_stage5_minute_bars_and_time_range(sim: TradovateSim) -> None:
    assert sim.market is not None
    sim.market.step(30_000)
    tape = sim.market.tape()
    t0 = int(tape["ts"][0])
    since = np.datetime64(t0 + 120 * 10**9, "ns").astype(str)[:23] + "Z"
    w = md_wire(sim)
    req = {
        "symbol": SYMBOL,
        "timeRange": {"asFarAsTimestamp": since},
        "chartDescription": {
            "underlyingType": "MinuteBar",
            "elementSize": 1,
            "elementSizeUnit": "UnderlyingUnits",
        },
    }
    ids = w.answer(w.send("md/getChart", req))["d"]
    got = w.events("chart", lambda got: any(c.get("eoh") for m in got for c in m["d"]["charts"]))
    (bars,) = [c["bars"] for m in got for c in m["d"]["charts"] if "bars" in c]
    kept = tape[tape["ts"] >= t0 + 120 * 10**9]
    assert sum(b["upVolume"] + b["downVolume"] for b in bars) <= int(kept["size"].sum())
    assert bars[0]["open"] == kept["price"][0] and bars[-1]["close"] == kept["price"][-1]
    assert min(b["low"] for b in bars) == kept["price"].min()
    assert all(b["bidVolume"] + b["offerVolume"] <= int(kept["size"].sum()) for b in bars)
    assert ids["realtimeId"] != ids["historicalId"]
    bad = w.answer(w.send("md/getChart", {**req, "chartDescription": {"underlyingType": "Nope"}}))
    assert bad["s"] == 400
    assert w.answer(w.send("md/subscribeQuote", {"symbol": "NQH4"}))["s"] == 404


# -- orders against the replayed book -----------------------------------------------------


def test_market_order_takes_the_displayed_offer(sim: TradovateSim, rest: Any) -> None:
    assert sim.market is not None
    _, _, ask, ask_size = sim.market.touch()
    oid = rest("/order/placeorder", order("Buy", 2))["orderId"]
    fills = rest("/fill/deps", masterid=oid)
    assert sum(f["qty"] for f in fills) == 2 and fills[0]["price"] == ask
    assert ask_size >= 2 and status_of(sim, oid) == ("Filled", 2)
    (pos,) = rest("/position/list")
    assert pos["netPos"] == 2 and pos["netPrice"] == ask


def test_resting_limit_waits_in_the_queue_then_fills(sim: TradovateSim, rest: Any) -> None:
    assert sim.market is not None
    ask = sim.market.touch()[2]
    oid = rest("/order/placeorder", order("Sell", 1, "Limit", price=ask + 1.0))["orderId"]
    assert status_of(sim, oid) == ("Working", 0)
    while status_of(sim, oid)[0] == "Working" and sim.market.i < len(sim.market.events):
        sim.market.step(2_000)
    assert status_of(sim, oid) == ("Filled", 1)  # the market rose through it
    (fill,) = rest("/fill/deps", masterid=oid)
    assert fill["price"] == ask + 1.0  # a resting limit fills at its price
    reports = rest("/executionReport/deps", masterid=oid)
    assert [r["execType"] for r in reports] == ["New", "Trade"]


def test_oso_bracket_stop_and_target_one_cancels_other(sim: TradovateSim, rest: Any) -> None:
    assert sim.market is not None
    ask = sim.market.touch()[2]
    body = {
        **order("Buy", 1),
        "bracket1": {"action": "Sell", "orderType": "Stop", "stopPrice": ask - 2.0},
        "bracket2": {"action": "Sell", "orderType": "Limit", "price": ask + 2.0},
    }
    ids = rest("/order/placeoso", body)
    assert status_of(sim, ids["oso1Id"]) == status_of(sim, ids["oso2Id"]) == ("Working", 0)
    while sim.net_position(ACCOUNT_SPEC, SYMBOL) != 0 and sim.market.i < len(sim.market.events):
        sim.market.step(2_000)
    legs = {status_of(sim, ids["oso1Id"])[0], status_of(sim, ids["oso2Id"])[0]}
    assert legs == {"Filled", "Canceled"}  # one leg closed the position, the other went
    assert sim.net_position(ACCOUNT_SPEC, SYMBOL) == 0


def test_oco_modify_chain_cancel_and_liquidate(sim: TradovateSim, rest: Any) -> None:
    assert sim.market is not None
    bid, _, ask, _ = sim.market.touch()
    pair = rest(
        "/order/placeoco",
        {
            **order("Buy", 1, "Limit", price=bid - 5.0),
            "other": {"action": "Sell", "orderType": "Limit", "price": ask + 5.0},
        },
    )
    first = pair["orderId"]
    for px in (bid - 4.0, bid - 3.0):  # a modify chain: each a new order version
        rest(
            "/order/modifyorder",
            {
                "orderId": first,
                "orderQty": 2,
                "orderType": "Limit",
                "price": px,
                "isAutomated": True,
            },
        )
    versions = rest("/orderVersion/deps", masterid=first)
    assert [(v["orderQty"], v["price"]) for v in versions] == [
        (1, bid - 5.0),
        (2, bid - 4.0),
        (2, bid - 3.0),
    ]
    rest("/order/cancelorder", {"orderId": first})
    assert status_of(sim, first)[0] == "Canceled"
    assert status_of(sim, pair["ocoId"])[0] == "Working"  # cancelling is not filling
    rest("/order/placeorder", order("Sell", 3))
    assert sim.net_position(ACCOUNT_SPEC, SYMBOL) == -3
    rest("/order/liquidateposition", {"accountId": 1000, "contractId": 2000, "admin": False})
    assert sim.net_position(ACCOUNT_SPEC, SYMBOL) == 0
    assert status_of(sim, pair["ocoId"])[0] == "Canceled"
    snapshot = rest("/cashBalance/getcashbalancesnapshot", {"accountId": 1000})
    assert snapshot["openPnL"] == 0 and snapshot["realizedPnL"] < 0  # crossed the spread


def test_too_large_and_off_grid_orders_are_refused(sim: TradovateSim, rest: Any) -> None:
    assert rest("/order/placeorder", order("Buy", 51))["failureReason"] == (
        "MaxOrderQtyLimitReached"
    )
    off = rest("/order/placeorder", order("Buy", 1, "Limit", price=4700.1))
    assert off["failureReason"] == "InvalidPrice" and sim.orders() == []


def test_product_lookup_gives_tick_size_and_value(sim: TradovateSim, rest: Any) -> None:
    contract = rest("/contract/find", name=SYMBOL)
    maturity = rest("/contractMaturity/item", id=contract["contractMaturityId"])
    product = rest("/product/item", id=maturity["productId"])
    assert (product["name"], product["tickSize"], product["valuePerPoint"]) == ("ES", 0.25, 50.0)
    assert rest("/product/find", name="ES") == product


# -- the command ------------------------------------------------------------------------


def test_esml_sim_tradovate_serves_until_interrupted(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    cmd = [  # the sim commands alone (`esml sim tradovate` loads every command first)
        sys.executable,
        "-m",
        "esml.cli.sim_cmd",
        "tradovate",
        "--data",
        str(ES_FILE),
        "--speed",
        "inf",
        "--user",
        "u1",
        "--password",
        "pw",
        "--cid",
        "7",
        "--sec",
        "s3",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        urls = json.loads(proc.stdout.readline())
        assert set(urls) == {"rest", "ws", "md"}
        login_body = {
            "name": "u1",
            "password": "pw",
            "appId": "x",
            "appVersion": "1",
            "cid": 7,
            "sec": "s3",
        }
        auth = requests.post(
            f"{urls['rest']}/auth/accesstokenrequest", json=login_body, timeout=5
        ).json()
        w = Wire(urls["md"])
        assert w.authorize(auth["mdAccessToken"])["s"] == 200
        assert w.answer(w.send("md/subscribeQuote", {"symbol": SYMBOL}))["s"] == 200
        wrong = requests.post(
            f"{urls['rest']}/auth/accesstokenrequest",
            json={**login_body, "password": "no"},
            timeout=5,
        ).json()
        assert "accessToken" not in wrong
        w.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()


def test_esml_sim_tradovate_refuses_a_missing_file(tmp_path: Path) -> None:
    done = CliRunner().invoke(sim_cmd.app, ["tradovate", "--data", str(tmp_path / "none.dbn")])
    assert done.exit_code == 2 and "no such file" in done.output


def test_fast_replay_tick_chart_holds_every_trade_exactly_once(es_events: np.ndarray) -> None:
    """History and live packets meet without a gap or a double while the replay runs."""
    market = ReplayMarket(es_events, SYMBOL, speed=math.inf)
    with TradovateSim(**sim_arguments(prices=None, market=market)) as sim:
        w = md_wire(sim)
        req = {
            "symbol": SYMBOL,
            "chartDescription": {"underlyingType": "Tick", "elementSize": 1},
            "timeRange": {"asFarAsTimestamp": "2023-12-25T00:00:00Z"},
        }
        ids = w.answer(w.send("md/getChart", req))["d"]
        assert market.done.wait(30)
        total = len(market.tape())
        assert total == int((es_events["action"] == ord("T")).sum())

        def ticks(got: list[dict[str, Any]]) -> list[int]:
            wanted = (ids["historicalId"], ids["realtimeId"])
            return [
                t["id"] for m in got for c in m["d"]["charts"] if c["id"] in wanted
                for t in c.get("tks", [])
            ]  # fmt: skip

        got = w.events("chart", lambda got: len(ticks(got)) >= total, timeout=30)
        assert ticks(got) == list(range(total))


def test_waiting_bracket_leg_moves_and_goes_with_its_cancelled_entry(
    sim: TradovateSim, rest: Any
) -> None:
    assert sim.market is not None
    bid = sim.market.touch()[0]
    entry_px = bid - 5.0
    body = {
        **order("Buy", 2, "Limit", price=entry_px),
        "bracket1": {"action": "Sell", "orderType": "Stop", "stopPrice": entry_px - 2.0},
        "bracket2": {"action": "Sell", "orderType": "Limit", "price": entry_px + 3.0},
    }
    ids = rest("/order/placeoso", body)
    stop = ids["oso1Id"]
    assert status_of(sim, stop) == ("Suspended", 0)
    rest("/order/modifyorder", {"orderId": stop, "orderQty": 2, "orderType": "Stop",
                                "stopPrice": entry_px - 1.0, "isAutomated": True})  # fmt: skip
    versions = rest("/orderVersion/deps", masterid=stop)
    assert [v["stopPrice"] for v in versions] == [entry_px - 2.0, entry_px - 1.0]
    assert next(o for o in sim.orders() if o["id"] == stop)["orderQty"] == 2
    rest("/order/cancelorder", {"orderId": ids["orderId"]})
    assert {status_of(sim, i)[0] for i in ids.values()} == {"Canceled"}


def test_a_limit_outside_the_price_band_is_rejected_by_the_exchange(
    sim: TradovateSim, rest: Any
) -> None:
    assert sim.market is not None
    ask = sim.market.touch()[2]
    oid = rest("/order/placeorder", order("Buy", 1, "Limit", price=ask + 50.0))["orderId"]
    assert status_of(sim, oid)[0] == "Rejected"
    (report,) = [
        r for r in rest("/executionReport/deps", masterid=oid) if r["execType"] == "Rejected"
    ]
    assert "band" in report["text"]
    assert sim.net_position(ACCOUNT_SPEC, SYMBOL) == 0


def test_step_mode_is_driven_over_loopback(sim: TradovateSim) -> None:
    assert sim.market is not None
    root = sim.base_url.removesuffix("/v1")
    before = sim.market.i
    r = requests.post(f"{root}/sim/step", json={"events": 1_000}, timeout=5)
    assert r.status_code == 200 and r.json()["ts_ns"] == sim.market.now_ns
    assert sim.market.i >= before + 1_000
    bad = requests.post(f"{root}/sim/step", json={"events": 0}, timeout=5)
    assert bad.status_code == 400 and sim.market.i >= before + 1_000
