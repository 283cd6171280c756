"""Tradovate's market-data socket: quotes, DOM and charts as esml event arrays.

`MarketData` opens the md socket (authorised with the md access token) on the client's
event-loop thread and keeps its subscriptions: `md/subscribeQuote`, `md/subscribeDOM`
and `md/getChart` (tick charts: every trade, history through `timeRange` then live;
minute bars), with the matching unsubscribes; `history` reads a chart's history alone
(a warm start, `esml.engine.warm_start`). After a reconnect it subscribes again; a
tick chart asks again from the last trade it saw, and trades already seen (by tick id)
are not repeated.

The socket's thread only files each frame, in arrival order, under its contract; the
caller's thread turns them into events (`take_events`) with one
`esml.data.tradovate_frames.TradovateFrames` per contract, so the same book, features
and engine run on them. Quotes and DOM are price levels, not orders: see that module for
what the L2 path can and cannot compute (no queue position, no per-order features).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from esml.broker.base import BrokerError
from esml.broker.tradovate.counters import Counters
from esml.broker.tradovate.rest import Token
from esml.broker.tradovate.transport import LoopThread, TradovateSocket
from esml.data.tradovate_frames import TradovateFrames, concat
from esml.market.instruments import instrument_for

ChartKind = Literal["Tick", "MinuteBar"]


@dataclass
class Chart:
    """One `md/getChart` subscription, as the caller holds it across reconnects."""

    symbol: str
    kind: ChartKind
    minutes: int
    historical_id: int = 0
    realtime_id: int = 0
    history_done: bool = False
    last_ns: int | None = None  # the newest trade or bar seen: where a resubscription starts
    held: list[dict[str, Any]] | None = None  # a history request: its packets, kept apart


@dataclass
class _Feed:
    """One contract: its converter and the frames not converted yet."""

    symbol: str
    frames: TradovateFrames
    inbox: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _iso(ts_ns: int) -> str:
    ts = datetime.fromtimestamp(ts_ns / 1e9, UTC)
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class MarketData:
    """The md socket of one login. Create with `TradovateClient.market_data()`."""

    def __init__(
        self,
        url: str,
        *,
        token: Callable[[str | None], Token],
        contract_id: Callable[[str], int],
        loop: LoopThread,
        counters: Counters | None = None,
        renew: Callable[[TradovateSocket], Any] | None = None,
        book: Literal["quote", "dom"] = "quote",
        socket_options: dict[str, float] | None = None,
    ) -> None:
        self._contract_id = contract_id
        self._loop = loop
        self._book = book
        self._lock = threading.Lock()
        self._news = threading.Condition(self._lock)  # a frame filed
        self._feeds: dict[int, _Feed] = {}  # contract id -> feed
        self._quotes: set[str] = set()
        self._doms: set[str] = set()
        self._charts: dict[int, Chart] = {}  # historical or realtime id -> chart
        self._early: dict[int, list[dict[str, Any]]] = {}  # packets before their ids
        self.socket = TradovateSocket(
            url, name="md", token=token, on_event=self._on_event, on_open=self._resubscribe,
            renew=renew, counters=counters, **(socket_options or {}),
        )  # fmt: skip
        self._run: concurrent.futures.Future[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout_s: float = 15.0) -> MarketData:
        self._run = self._loop.submit(self.socket.run())
        if not self._loop.wait_until(self.socket.ready, timeout_s):
            raise BrokerError(f"the md socket at {self.socket.url} did not open in {timeout_s:g} s")
        return self

    def close(self) -> None:
        """Log off the md socket."""
        if self._run is None:
            return
        self._loop.run(self.socket.close())
        self._run.result(10)
        self._run: concurrent.futures.Future[None] | None = None

    # -- subscriptions ----------------------------------------------------------------------

    def subscribe_quote(self, symbol: str) -> None:
        self._feed(symbol)
        self._request("md/subscribeQuote", {"symbol": symbol})
        self._quotes.add(symbol)

    def unsubscribe_quote(self, symbol: str) -> None:
        self._request("md/unsubscribeQuote", {"symbol": symbol})
        self._quotes.discard(symbol)

    def subscribe_dom(self, symbol: str) -> None:
        self._feed(symbol)
        self._request("md/subscribeDOM", {"symbol": symbol})
        self._doms.add(symbol)

    def unsubscribe_dom(self, symbol: str) -> None:
        self._request("md/unsubscribeDOM", {"symbol": symbol})
        self._doms.discard(symbol)

    def get_chart(
        self,
        symbol: str,
        kind: ChartKind = "Tick",
        *,
        minutes: int = 1,
        as_far_as_ns: int | None = None,
        closest_ns: int | None = None,
        as_much_as: int | None = None,
    ) -> Chart:
        """A chart: its history over the time range (`asFarAsTimestamp`,
        `closestTimestamp`, `asMuchAsElements`), then live updates until `cancel_chart`."""
        if kind == "Tick" and minutes != 1:
            raise ValueError("a tick chart has elementSize 1")
        self._feed(symbol)
        chart = Chart(symbol, kind, minutes, last_ns=as_far_as_ns)
        self._loop.run(self._open_chart(chart, closest_ns, as_much_as))
        return chart

    def history(
        self,
        symbol: str,
        kind: ChartKind = "Tick",
        *,
        minutes: int = 1,
        as_far_as_ns: int | None = None,
        as_much_as: int | None = None,
        timeout_s: float = 30.0,
    ) -> list[dict[str, Any]]:
        """A chart's history only (its packets up to the end-of-history mark), kept out of
        the live feed, then the chart is cancelled: what a warm start reads. The ticks it
        holds count as seen, so a live tick chart opened later does not repeat them."""
        if kind == "Tick" and minutes != 1:
            raise ValueError("a tick chart has elementSize 1")
        feed = self._feed(symbol)
        chart = Chart(symbol, kind, minutes, last_ns=as_far_as_ns, held=[])
        self._loop.run(self._open_chart(chart, None, as_much_as))
        with self._news:
            done = self._news.wait_for(lambda: chart.history_done, timeout_s)
        self.cancel_chart(chart)
        if not done:
            raise BrokerError(f"{kind} chart history for {symbol} did not end in {timeout_s:g} s")
        assert chart.held is not None
        if kind == "Tick":
            with self._lock:
                feed.frames.seen([t["id"] for p in chart.held for t in p.get("tks") or []
                                  if "id" in t])  # fmt: skip
        return chart.held

    def cancel_chart(self, chart: Chart) -> None:
        self._request("md/cancelChart", {"subscriptionId": chart.realtime_id})
        with self._lock:
            for key in (chart.historical_id, chart.realtime_id):
                self._charts.pop(key, None)

    def contract_id(self, symbol: str) -> int:
        """The contract id its events carry as `instrument_id`."""
        return self._contract_id(symbol)

    # -- what the caller takes ---------------------------------------------------------------

    def take_events(self, symbol: str) -> np.ndarray:
        """The contract's book and trade events (`MBO_DTYPE`, F_MBP) since the last call."""
        feed = self._feed(symbol)
        with self._lock:
            inbox, feed.inbox = feed.inbox, []
        parts = []
        for kind, payload in inbox:
            if kind == "quote":
                parts.append(feed.frames.quote(payload))
            elif kind == "dom":
                parts.append(feed.frames.dom(payload))
            elif kind == "ticks":
                parts.append(feed.frames.ticks(payload))
            else:
                feed.frames.minute_bars(payload)
        return concat(parts)

    def wait(self, timeout_s: float) -> bool:
        """Block until some contract has frames to take (False after `timeout_s`)."""
        with self._news:
            return self._news.wait_for(
                lambda: any(f.inbox for f in self._feeds.values()), timeout_s
            )

    def bars(self, symbol: str) -> np.ndarray:
        """Every minute bar received for the contract (OHLCV records), one per minute."""
        self.take_events(symbol)
        return self._feed(symbol).frames.bars()

    # -- the socket's side ------------------------------------------------------------------

    def _feed(self, symbol: str) -> _Feed:
        contract = self._contract_id(symbol)
        with self._lock:
            feed = self._feeds.get(contract)
            if feed is None:
                frames = TradovateFrames(
                    contract, instrument_for(symbol).tick_size, book=self._book,
                    trades="quote",
                )  # fmt: skip
                feed = self._feeds[contract] = _Feed(symbol, frames)
            return feed

    def _request(self, url: str, body: dict[str, Any]) -> Any:
        return self._loop.run(self.socket.request(url, body))

    async def _open_chart(self, chart: Chart, closest_ns: int | None, most: int | None) -> None:
        time_range: dict[str, Any] = {}
        if chart.last_ns is not None:
            time_range["asFarAsTimestamp"] = _iso(chart.last_ns)
        if closest_ns is not None:
            time_range["closestTimestamp"] = _iso(closest_ns)
        if most is not None:
            time_range["asMuchAsElements"] = most
        answer = await self.socket.request("md/getChart", {
            "symbol": chart.symbol,
            "chartDescription": {"underlyingType": chart.kind, "elementSize": chart.minutes,
                                 "elementSizeUnit": "UnderlyingUnits", "withHistogram": False},
            "timeRange": time_range,
        })  # fmt: skip
        with self._lock:
            for key in (chart.historical_id, chart.realtime_id):  # a resubscription's old ids
                self._charts.pop(key, None)
            chart.historical_id = int(answer["historicalId"])
            chart.realtime_id = int(answer["realtimeId"])
            chart.history_done = False
            self._charts[chart.historical_id] = self._charts[chart.realtime_id] = chart
            if chart.kind == "Tick" and chart.held is None:
                self._feeds[self._contract_id_of(chart)].frames.trades = "chart"
            early = self._early.pop(chart.historical_id, []) + self._early.pop(
                chart.realtime_id, []
            )
        for packet in early:
            self._file_chart(packet)

    async def _resubscribe(self, socket: TradovateSocket) -> None:
        for symbol in sorted(self._quotes):
            await socket.request("md/subscribeQuote", {"symbol": symbol})
        for symbol in sorted(self._doms):
            await socket.request("md/subscribeDOM", {"symbol": symbol})
        with self._lock:
            charts = list({id(c): c for c in self._charts.values()}.values())
        for chart in charts:
            await self._open_chart(chart, None, None)

    def _on_event(self, event: str, data: Any) -> None:
        if not isinstance(data, dict):
            return
        if event == "md":
            for q in data.get("quotes") or []:
                self._file(int(q["contractId"]), "quote", q)
            for d in data.get("doms") or []:
                self._file(int(d["contractId"]), "dom", d)
        elif event == "chart":
            for packet in data.get("charts") or []:
                self._file_chart(packet)

    def _file(self, contract: int, kind: str, payload: dict[str, Any]) -> None:
        with self._lock:
            feed = self._feeds.get(contract)
            if feed is not None:
                feed.inbox.append((kind, payload))
                self._news.notify_all()

    def _file_chart(self, packet: dict[str, Any]) -> None:
        with self._lock:
            chart = self._charts.get(int(packet.get("id", -1)))
            if chart is None:  # came before getChart's answer: filed when it comes
                self._early.setdefault(int(packet.get("id", -1)), []).append(packet)
                return
            if packet.get("eoh"):
                chart.history_done = True
                self._news.notify_all()
                return
            if chart.held is not None:  # a history request: its own packets, no live ones
                if int(packet["id"]) == chart.historical_id:
                    chart.held.append(packet)
                return
            feed = self._feeds[self._contract_id_of(chart)]
            self._news.notify_all()
            if "tks" in packet:
                feed.inbox.append(("ticks", packet))
                ticks = packet["tks"]
                if ticks:
                    newest = int(packet["bt"]) + max(int(t["t"]) for t in ticks)
                    chart.last_ns = max(chart.last_ns or 0, newest * 1_000_000)
            elif "bars" in packet:
                feed.inbox.append(("bars", packet))

    def _contract_id_of(self, chart: Chart) -> int:
        return next(c for c, f in self._feeds.items() if f.symbol == chart.symbol)
