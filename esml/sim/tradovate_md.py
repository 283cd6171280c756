"""The md socket's requests and data, as Tradovate documents them, built from the simulator's
market: a replayed book (`esml.sim.tradovate_market.ReplayMarket`) or set prices (`PriceTape`).

- `md/subscribeQuote` -> `{"e": "md", "d": {"quotes": [{"timestamp", "contractId",
  "entries": {"Bid", "Offer", "Trade", "TotalTradeVolume", "OpeningPrice", "HighPrice",
  "LowPrice"}}]}}` now and after each market step that changed it.
- `md/subscribeDOM` -> `{"e": "md", "d": {"doms": [{"contractId", "timestamp", "bids":
  [{"price", "size"}] * 10, "offers": [...]}]}}` (the best 10 levels per side).
- `md/getChart` with `chartDescription.underlyingType` "Tick" (every trade) or
  "MinuteBar" (`elementSize` minutes) and a `timeRange` (`asFarAsTimestamp`,
  `closestTimestamp`, `asMuchAsElements`): answers `{"historicalId", "realtimeId"}`,
  sends the history as `{"e": "chart", "d": {"charts": [{"id": historicalId, ...}]}}`
  then `{"id": historicalId, "eoh": true}`, then live packets under `realtimeId`. Tick
  packets: `{"id", "s", "td", "bp", "bt", "ts", "tks": [{"t", "p", "s", "b", "a", "bs",
  "as", "id"}]}` (prices in ticks from `bp`, times in ms from `bt`).
- `md/unsubscribeQuote`, `md/unsubscribeDOM`, `md/cancelChart` (`{"subscriptionId":
  realtimeId}`) stop them.

Quotes and DOM are aggregated levels (L2), not orders: a client of this socket cannot see
queue position or single orders, whatever the source of the simulator's book.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from esml.market.instruments import instrument_for

if TYPE_CHECKING:
    from esml.sim.tradovate_api import TradovateSim
    from esml.sim.tradovate_ws import Session

DOM_LEVELS = 10
TAPE_DTYPE = np.dtype(
    [
        ("ts", "<i8"),
        ("price", "<f8"),
        ("size", "<i8"),
        ("aggressor", "<i1"),  # +1 buy, -1 sell, 0 unknown
        ("bid", "<f8"),
        ("ask", "<f8"),
        ("bid_size", "<i8"),
        ("ask_size", "<i8"),
    ]
)
_chart_ids = itertools.count(1)


class MdSource(Protocol):
    """One contract's market, as the md socket sees it."""

    def touch(self) -> tuple[float, int, float, int]: ...  # bid, bid size, ask, ask size

    def dom(self, levels: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]: ...

    def tape(self) -> np.ndarray: ...  # TAPE_DTYPE rows, oldest first

    def clock_ns(self) -> int: ...


@dataclass
class PriceTape:
    """The md side of a price-set market: each `set_price` is a one-lot trade; no book."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    last_ns: int = 0

    def trade(self, ts_ns: int, price: float) -> None:
        self.last_ns = ts_ns
        self.rows.append((ts_ns, price, 1, 0, np.nan, np.nan, 0, 0))

    def touch(self) -> tuple[float, int, float, int]:
        return (np.nan, 0, np.nan, 0)

    def dom(self, levels: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return [], []

    def tape(self) -> np.ndarray:
        return np.array(self.rows, dtype=TAPE_DTYPE)

    def clock_ns(self) -> int:
        return self.last_ns


def _iso(ts_ns: int) -> str:
    return (
        datetime.fromtimestamp(ts_ns / 1e9, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _ns(text: Any, where: str) -> int:
    try:
        ts = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{where} must be an ISO timestamp, got {text!r}") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return int(ts.timestamp() * 1e9)


def quote(contract: int, src: MdSource) -> dict[str, Any]:
    tape = src.tape()
    bid, bid_size, ask, ask_size = src.touch()
    entries: dict[str, Any] = {"TotalTradeVolume": {"size": int(tape["size"].sum())}}
    if not np.isnan(bid):
        entries["Bid"] = {"price": bid, "size": bid_size}
    if not np.isnan(ask):
        entries["Offer"] = {"price": ask, "size": ask_size}
    if len(tape):
        last = tape[-1]
        entries["Trade"] = {"price": float(last["price"]), "size": int(last["size"])}
        entries["OpeningPrice"] = {"price": float(tape["price"][0])}
        entries["HighPrice"] = {"price": float(tape["price"].max())}
        entries["LowPrice"] = {"price": float(tape["price"].min())}
    return {"timestamp": _iso(src.clock_ns()), "contractId": contract, "entries": entries}


def dom(contract: int, src: MdSource) -> dict[str, Any]:
    bids, offers = src.dom(DOM_LEVELS)
    return {"contractId": contract, "timestamp": _iso(src.clock_ns()), "bids": bids,
            "offers": offers}  # fmt: skip


def _tick_packet(sub_id: int, rows: np.ndarray, first_id: int, tick: float,
                 source: str) -> dict[str, Any]:  # fmt: skip
    bp = round(float(rows["price"][0]) / tick)
    bt = int(rows["ts"][0]) // 1_000_000
    day = datetime.fromtimestamp(bt / 1000, UTC)
    tks = []
    for k, r in enumerate(rows):
        t: dict[str, Any] = {"t": int(r["ts"]) // 1_000_000 - bt,
                             "p": round(float(r["price"]) / tick) - bp, "s": int(r["size"]),
                             "id": first_id + k}  # fmt: skip
        if not np.isnan(r["bid"]):
            t["b"], t["bs"] = round(float(r["bid"]) / tick) - bp, int(r["bid_size"])
        if not np.isnan(r["ask"]):
            t["a"], t["as"] = round(float(r["ask"]) / tick) - bp, int(r["ask_size"])
        tks.append(t)
    return {"id": sub_id, "s": source, "td": int(day.strftime("%Y%m%d")), "bp": bp, "bt": bt,
            "ts": tick, "tks": tks}  # fmt: skip


def minute_bars(rows: np.ndarray, minutes: int) -> list[dict[str, Any]]:
    """Trade bars of `minutes` minutes, as Tradovate's chart `bars`. Every trade's volume is
    up or down by the tick test (an unchanged price keeps the last move's side; before any
    move, up), so upVolume + downVolume is the bar's volume."""
    if not len(rows):
        return []
    width = 60_000_000_000 * minutes
    starts = rows["ts"] // width * width
    moves = np.sign(np.diff(rows["price"], prepend=rows["price"][0]))
    at = np.where(moves != 0, np.arange(len(moves)), 0)
    np.maximum.accumulate(at, out=at)
    up = np.where(moves[at] != 0, moves[at], 1) > 0
    bars = []
    for start in np.unique(starts):
        of = starts == start
        r, is_up, move = rows[of], up[of], moves[of]
        px, size, side = r["price"], r["size"], r["aggressor"]
        bars.append({"timestamp": _iso(int(start)), "open": float(px[0]),
                     "high": float(px.max()), "low": float(px.min()), "close": float(px[-1]),
                     "upVolume": int(size[is_up].sum()),
                     "downVolume": int(size[~is_up].sum()),
                     "upTicks": int((move > 0).sum()), "downTicks": int((move < 0).sum()),
                     "bidVolume": int(size[side < 0].sum()),
                     "offerVolume": int(size[side > 0].sum())})  # fmt: skip
    return bars


@dataclass
class ChartSub:
    contract: int
    kind: str  # "Tick" or "MinuteBar"
    minutes: int
    sent: int  # tape rows already sent
    bar_from: int = 0  # first tape row of the bar being built


def md_request(sim: TradovateSim, url: str, body: Any, session: Session) -> tuple[int, Any]:
    """Answer one md socket request (the simulator's lock is held)."""
    url = url.lower()
    if url == "md/cancelchart":
        sub = body.get("subscriptionId") if isinstance(body, dict) else None
        if session.charts.pop(sub, None) is None:
            return 404, f"no chart subscription {sub!r}"
        return 200, None
    if not isinstance(body, dict) or "symbol" not in body:
        return 400, "the body must name a symbol (contract name or id)"
    contract = _contract_of(sim, body["symbol"])
    if contract is None:
        return 404, f"unknown symbol {body['symbol']!r}"
    src = sim.md_source(contract)
    feeds = {"quote": (session.quotes, "quotes", quote), "dom": (session.doms, "doms", dom)}
    for name, (subscribed, key, build) in feeds.items():
        if url == f"md/subscribe{name}":
            subscribed.add(contract)
            now = build(contract, src)  # at once, then after each change
            sim.sockets.publish_each("md", lambda s, k=key, n=now: _once(s, session, k, n))
            return 200, None
        if url == f"md/unsubscribe{name}":
            subscribed.discard(contract)
            return 200, None
    if url == "md/getchart":
        return _get_chart(sim, contract, body, session, src)
    return 404, f"no md endpoint {url}"


def _once(s: Session, target: Session, key: str, item: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"e": "md", "d": {key: [item]}}] if s is target else []


def _contract_of(sim: TradovateSim, symbol: Any) -> int | None:
    if isinstance(symbol, int) and symbol in sim._contracts.values():
        return symbol
    return sim._contracts.get(symbol) if isinstance(symbol, str) else None


def _get_chart(sim: TradovateSim, contract: int, body: dict[str, Any], session: Session,
               src: MdSource) -> tuple[int, Any]:  # fmt: skip
    desc = body.get("chartDescription") or {}
    kind = desc.get("underlyingType")
    size = desc.get("elementSize", 1)
    if kind not in ("Tick", "MinuteBar") or not isinstance(size, int) or size < 1:
        return 400, "chartDescription: underlyingType Tick or MinuteBar, elementSize >= 1"
    if kind == "Tick" and size != 1:
        return 400, "tick charts have elementSize 1"
    tr = body.get("timeRange") or {}
    tape = src.tape()
    try:
        lo = _ns(tr["asFarAsTimestamp"], "asFarAsTimestamp") if "asFarAsTimestamp" in tr else None
        hi = _ns(tr["closestTimestamp"], "closestTimestamp") if "closestTimestamp" in tr else None
    except ValueError as e:
        return 400, str(e)
    keep = np.ones(len(tape), bool)
    if lo is not None:
        keep &= tape["ts"] >= lo
    if hi is not None:
        keep &= tape["ts"] <= hi
    first = int(np.argmax(keep)) if keep.any() else len(tape)
    history = tape[keep]
    most = tr.get("asMuchAsElements")
    if isinstance(most, int) and most > 0 and kind == "Tick" and len(history) > most:
        first += len(history) - most
        history = history[-most:]
    hist_id, live_id = next(_chart_ids), next(_chart_ids)
    tick = instrument_for(sim._symbol_of(contract)).tick_size
    packets: list[dict[str, Any]] = []
    if kind == "Tick" and len(history):
        packets.append(_tick_packet(hist_id, history, first, tick, "db"))
    elif kind == "MinuteBar":
        bars = minute_bars(history, size)
        if isinstance(most, int) and most > 0:
            bars = bars[-most:]
        packets.append({"id": hist_id, "td": _trade_day(src.clock_ns()), "bars": bars})
    packets.append({"id": hist_id, "eoh": True})
    bar_from = len(tape) - len(minute_rows(tape, size)) if kind == "MinuteBar" else len(tape)
    session.charts[live_id] = ChartSub(contract, kind, size, len(tape), bar_from)
    msg = [{"e": "chart", "d": {"charts": packets}}]
    sim.sockets.publish_each("md", lambda s: msg if s is session else [])
    return 200, {"historicalId": hist_id, "realtimeId": live_id}


def minute_rows(tape: np.ndarray, minutes: int) -> np.ndarray:
    """The tape rows of the newest (still open) bar."""
    if not len(tape):
        return tape
    width = 60_000_000_000 * minutes
    start = tape["ts"][-1] // width * width
    return tape[tape["ts"] >= start]


def _trade_day(ts_ns: int) -> int:
    return int(datetime.fromtimestamp(ts_ns / 1e9, UTC).strftime("%Y%m%d"))


@dataclass(frozen=True)
class News:
    """One contract's market after a step, computed under the simulator's lock."""

    quote: dict[str, Any]
    dom: dict[str, Any]
    tape: np.ndarray
    tick: float


def live_messages(s: Session, news: dict[int, News]) -> list[dict[str, Any]]:
    """What one md socket gets after a market step (on the socket thread)."""
    out: list[dict[str, Any]] = []
    quotes = [news[c].quote for c in s.quotes if c in news]
    doms = [news[c].dom for c in s.doms if c in news]
    if quotes:
        out.append({"e": "md", "d": {"quotes": quotes}})
    if doms:
        out.append({"e": "md", "d": {"doms": doms}})
    charts = []
    for sub_id, sub in s.charts.items():
        n = news.get(sub.contract)
        if n is None or len(n.tape) <= sub.sent:
            continue
        if sub.kind == "Tick":
            charts.append(_tick_packet(sub_id, n.tape[sub.sent :], sub.sent, n.tick, "rt"))
        else:
            bar = minute_rows(n.tape, sub.minutes)
            charts.append({"id": sub_id, "td": _trade_day(int(n.tape["ts"][-1])),
                           "bars": minute_bars(bar, sub.minutes)})  # fmt: skip
        sub.sent = len(n.tape)
    if charts:
        out.append({"e": "chart", "d": {"charts": charts}})
    return out


def publish_market(sim: TradovateSim, changed: set[int]) -> None:
    """After a market step (lock held): each md socket gets its subscriptions' news."""
    news = {}
    for c in changed:
        src = sim.md_source(c)
        tick = instrument_for(sim._symbol_of(c)).tick_size
        news[c] = News(quote(c, src), dom(c, src), src.tape(), tick)
    if news:
        sim.sockets.publish_each("md", lambda s: live_messages(s, news))
