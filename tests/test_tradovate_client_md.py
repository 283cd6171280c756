"""The md socket client against the simulator replaying a real ES book (CME MBO, ESH4
2023-12-25): DOM and quotes turned into esml events rebuild the replayed book's levels in
esml's own book; tick charts give every trade once (history, then live); minute bars;
unsubscribes; a dropped md socket resubscribes. Plus the frame conversion on its own."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from esml.broker.tradovate import TradovateClient
from esml.broker.tradovate.market_data import MarketData
from esml.data.book import BookState, replay_l1
from esml.data.tradovate_frames import TradovateFrames
from esml.market.events import ADD, ASK, BID, CANCEL, F_MBP, MODIFY, TRADE
from esml.market.instruments import ES, PRICE_SCALE
from esml.sim.tradovate_api import TradovateSim
from esml.sim.tradovate_market import ReplayMarket
from tests.aws_fixtures import sim_arguments
from tests.tradovate_client_support import HEARTBEAT_S, client_for, eventually, quick

SYMBOL = "ESH4"  # the contract of conftest's ES_FILE, whose events `es_events` holds


@pytest.fixture
def sim(es_events: np.ndarray) -> Iterator[TradovateSim]:
    market = ReplayMarket(es_events, SYMBOL, speed=None)  # step mode: the test drives it
    args = sim_arguments(prices=None, market=market, heartbeat_s=HEARTBEAT_S)
    with TradovateSim(**args) as s:
        yield quick(s)


@pytest.fixture
def client(sim: TradovateSim) -> Iterator[TradovateClient]:
    c = client_for(sim)
    yield c
    c.close()


class Book:
    """esml's L3 book fed with what the md client hands out."""

    def __init__(self, md: MarketData) -> None:
        self.md = md
        self.book = BookState.new(ES.tick_fixed)
        self.events = 0

    def catch_up(self) -> None:
        ev = self.md.take_events(SYMBOL)
        assert np.all(ev["flags"] & F_MBP), "level data says so"
        replay_l1(ev[ev["action"] != TRADE], ES.tick_fixed, self.book)
        self.events += len(ev)

    def matches(self, truth: BookState, levels: int) -> bool:
        self.catch_up()
        return np.array_equal(self.book.depth(levels), truth.depth(levels))


def test_dom_rebuilds_the_replayed_books_ten_levels(
    sim: TradovateSim, client: TradovateClient
) -> None:
    assert sim.market is not None
    md = client.market_data(book="dom")
    md.subscribe_dom(SYMBOL)
    mine = Book(md)
    for _ in range(4):
        assert eventually(lambda: mine.matches(sim.market.book, 10)), "DOM = the book's 10 levels"
        sim.market.step(2_500)
    assert eventually(lambda: mine.matches(sim.market.book, 10))
    md.unsubscribe_dom(SYMBOL)
    seen = mine.events
    sim.market.step(2_500)
    eventually(lambda: False, 0.5)
    mine.catch_up()
    assert mine.events == seen, "nothing after unsubscribing"


def test_quotes_give_the_touch_and_the_traded_volume(
    sim: TradovateSim, client: TradovateClient
) -> None:
    assert sim.market is not None
    md = client.market_data(book="quote")
    md.subscribe_quote(SYMBOL)
    assert md.wait(5), "the first quote wakes the caller"
    mine = Book(md)
    traded: list[np.ndarray] = []

    def settled() -> bool:
        ev = md.take_events(SYMBOL)
        traded.append(ev[ev["action"] == TRADE])
        replay_l1(ev[ev["action"] != TRADE], ES.tick_fixed, mine.book)
        return mine.book.touch() == sim.market.book.touch()

    assert eventually(settled)
    start_volume = int(sim.market.tape()["size"].sum())
    for _ in range(3):
        sim.market.step(3_000)
        assert eventually(settled)
    trades = np.concatenate(traded)
    tape = sim.market.tape()
    assert int(trades["size"].sum()) == int(tape["size"].sum()) - start_volume
    assert set(trades["side"]) <= {BID, ASK, ord("N")}


def test_tick_chart_history_then_live_each_trade_once_across_a_reconnect(
    sim: TradovateSim, client: TradovateClient
) -> None:
    assert sim.market is not None
    sim.market.step(12_000)
    md = client.market_data()
    first_ns = int(sim.market.tape()["ts"][0])
    chart = md.get_chart(SYMBOL, "Tick", as_far_as_ns=first_ns)
    assert eventually(lambda: chart.history_done)
    got: list[np.ndarray] = []

    def have(n: int) -> bool:
        got.append(md.take_events(SYMBOL))
        return sum(len(g) for g in got) >= n

    assert eventually(lambda: have(len(sim.market.tape())))
    sim.faults.drop_sockets("md")  # the chart is asked again from its last trade
    sim.market.step(8_000)
    assert eventually(lambda: md.socket.connections == 2 and md.socket.ready.is_set())
    tape = sim.market.tape()
    assert eventually(lambda: have(len(tape)))
    trades = np.concatenate(got)
    assert len(trades) == len(tape), "every trade once, none doubled by the resubscription"
    assert np.array_equal(trades["price"], np.round(tape["price"] * PRICE_SCALE).astype(np.int64))
    assert np.array_equal(trades["size"], tape["size"])
    md.cancel_chart(chart)


def test_minute_bars_cover_the_traded_volume(sim: TradovateSim, client: TradovateClient) -> None:
    assert sim.market is not None
    sim.market.step(20_000)
    md = client.market_data()
    md.get_chart(SYMBOL, "MinuteBar", as_far_as_ns=int(sim.market.tape()["ts"][0]))
    tape = sim.market.tape()
    assert eventually(lambda: int(md.bars(SYMBOL)["volume"].sum()) > 0)
    bars = md.bars(SYMBOL)
    assert np.all(np.diff(bars["ts_event"].astype(np.int64)) == 60_000_000_000 * np.diff(
        bars["ts_event"].astype(np.int64) // 60_000_000_000))  # fmt: skip
    assert bars["high"].max() == round(float(tape["price"].max()) * PRICE_SCALE)
    assert bars["low"].min() == round(float(tape["price"].min()) * PRICE_SCALE)


# -- the conversion on its own: hand-written frames in Tradovate's documented shapes ---------


def test_dom_frames_become_level_adds_resizes_and_cancels() -> None:
    f = TradovateFrames(7, 0.25, book="dom")
    first = f.dom({"timestamp": "2024-03-05T14:30:00.000Z",
                   "bids": [{"price": 5000.0, "size": 5}, {"price": 4999.75, "size": 3}],
                   "offers": [{"price": 5000.25, "size": 4}]})  # fmt: skip
    assert list(first["action"]) == [ADD, ADD, ADD]
    then = f.dom({"timestamp": "2024-03-05T14:30:00.250Z",
                  "bids": [{"price": 5000.0, "size": 2}],
                  "offers": [{"price": 5000.25, "size": 4},
                             {"price": 5000.5, "size": 9}]})  # fmt: skip
    assert [(e["action"], e["side"], e["size"]) for e in then] == [
        (CANCEL, BID, 3), (MODIFY, BID, 2), (ADD, ASK, 9),
    ]  # fmt: skip
    book = BookState.new(ES.tick_fixed)
    replay_l1(np.concatenate([first, then]), ES.tick_fixed, book)
    assert book.touch() == (5000 * PRICE_SCALE, 2, int(5000.25 * PRICE_SCALE), 4)


def test_trade_sides_come_from_the_touch_before_the_trade() -> None:
    f = TradovateFrames(7, 0.25)
    stamp = "2024-03-05T14:30:00.000Z"
    touch = {"Bid": {"price": 5000.0, "size": 5}, "Offer": {"price": 5000.25, "size": 1}}
    f.quote({"timestamp": stamp, "entries": {**touch, "TotalTradeVolume": {"size": 100}}})
    lifted = f.quote({"timestamp": stamp, "entries": {
        "Bid": {"price": 5000.0, "size": 5}, "Offer": {"price": 5000.5, "size": 7},
        "Trade": {"price": 5000.25, "size": 1}, "TotalTradeVolume": {"size": 101}}})  # fmt: skip
    trade = lifted[lifted["action"] == TRADE]
    assert (trade["side"][0], trade["size"][0]) == (BID, 1), "a buyer took the offer"
    ticks = f.ticks({"id": 1, "bp": 20000, "bt": 1_709_649_000_000, "ts": 0.25, "tks": [
        {"t": 0, "p": 0, "s": 2, "b": 0, "a": 1, "id": 10},
        {"t": 5, "p": 1, "s": 1, "b": 0, "a": 1, "id": 11},
        {"t": 5, "p": 1, "s": 1, "b": 0, "a": 1, "id": 11},  # repeated: taken once
    ]})  # fmt: skip
    assert [(e["side"], e["size"]) for e in ticks] == [(ASK, 2), (BID, 1)]
    assert int(ticks["ts_event"][1] - ticks["ts_event"][0]) == 5_000_000
