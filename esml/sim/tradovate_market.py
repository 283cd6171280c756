"""The Tradovate simulator's replayed market: a recorded or SYNTHETIC day of MBO events
rebuilt into an order book, our orders matched against it by the compiled exchange
simulator (`esml.sim.exchange`, the paper broker's), and the md socket fed from it.

Speed: `speed=1.0` replays in real time, `speed=10` ten times faster, `speed=inf` (or 0)
as fast as the machine goes (in chunks, so requests interleave), `speed=None` only when
told (`step(n)`, or `POST /sim/step {"events": n}`): what tests drive; or in lockstep with
an engine replaying the same file (`step_to(ts)`, `POST /sim/step {"until_ns": ts}`).

The exchange runs with no latency of its own (the sockets are the latency) and, unless
configured otherwise, open whenever the data trades. An order reaches the book as it
stands when the request arrives; its fills, cancels and rejects become the simulator's
orders, fills and positions, and so `props` events, the moment the matching makes them.
Bracket legs (OSO) wait for their entry and are sized by its fills, as the exchange
simulator does; OCO pairs cancel each other, in part for partial fills.

A `TrailingStop` is a stop at the exchange whose price this layer moves: while one is
working the replay stops after each trade's timestamp and moves the stop by the trades
since (`esml.sim.tradovate_trail`), so a stop is always where the trades before it put
it when the next trade arrives (trades sharing one timestamp count together).
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from esml.data.book import BookState, replay_l1, snapshot_end
from esml.features.kernel import END, ERROR, FULL, PER_EVENT_NOTHING, UPDATE, advance_exchange
from esml.features.streaming import FeatureState
from esml.market.events import ASK, BID, TRADE, UNDEF_PRICE
from esml.market.instruments import PRICE_SCALE, instrument_for
from esml.sim.exchange import Exchange, ExchangeConfig, LatencyConfig, OrderKind, Report
from esml.sim.exchange import ReportKind as K
from esml.sim.tradovate_md import TAPE_DTYPE, publish_market
from esml.sim.tradovate_trail import trailed_stop

if TYPE_CHECKING:
    from esml.sim.tradovate_api import TradovateSim, _Order

NEVER = np.iinfo(np.int64).max
_KIND = {"Market": OrderKind.MARKET, "Limit": OrderKind.LIMIT, "Stop": OrderKind.STOP,
         "TrailingStop": OrderKind.STOP}  # fmt: skip
CHUNK_EVENTS = 5_000  # events per lock hold when replaying as fast as possible
PACE_S = 0.02  # how often a paced replay catches up with the wall clock


def instant_exchange(**overrides: Any) -> ExchangeConfig:
    """No latency inside the exchange, open whenever the data trades."""
    zero = LatencyConfig(feed_us=0.0, order_entry_us=0.0, response_us=0.0)
    return ExchangeConfig(**{"latency": zero, "market_hours": "always_open", **overrides})


class ReplayMarket:
    """One contract's replayed book and our orders at its exchange."""

    def __init__(self, events: np.ndarray, symbol: str, *, speed: float | None = math.inf,
                 config: ExchangeConfig | None = None, lockstep: bool = False) -> None:  # fmt: skip
        if not len(events):
            raise ValueError("the replay has no events")
        if speed is not None and (speed < 0 or math.isnan(speed)):
            raise ValueError(f"speed must be positive, 0 or inf (fastest), or None, got {speed}")
        self.events = events
        self.symbol = symbol
        self.instrument = instrument_for(symbol)
        self.speed = math.inf if speed == 0 else speed
        # lockstep: moved only by `step_to` (an engine's clock), requests reach the book
        # when the config's latency says, as on the paper exchange (else: at once)
        self.lockstep = lockstep
        if lockstep and speed is not None:
            raise ValueError("a lockstep replay moves only when stepped: speed must be None")
        tick = self.instrument.tick_fixed
        self.book = BookState.new(tick)
        self.exchange = Exchange(config or instant_exchange(), tick)
        self.exchange.observe(events)
        self._scratch = FeatureState()
        self._tape = _tape(events, tick)
        self._trade_at = np.flatnonzero(_is_trade(events))
        self.i = 0
        self.now_ns = 0
        self._slot_of: dict[int, int] = {}
        self._order_of: list[int] = []
        self._sim: TradovateSim | None = None
        self._contract = 0
        self._trailing: set[int] = set()  # our TrailingStop orders still at the exchange
        self._trailed_to = 0  # trades up to this tape index have moved the stops
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.done = threading.Event()  # set when every event has been replayed

    # -- wiring ----------------------------------------------------------------------------
    def attach(self, sim: TradovateSim, contract: int) -> None:
        self._sim, self._contract = sim, contract
        first = max(snapshot_end(self.events), 1)  # the opening book, before anyone trades
        self._run_until(int(self.events["ts_recv"][first - 1]))

    def start(self) -> None:
        if self.speed is None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._replay, name="tradovate-sim-market",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._thread = None

    def step(self, n: int) -> None:
        """Replay the next `n` events (and any at the same instant as the last)."""
        assert self._sim is not None
        with self._sim._lock:
            last = min(self.i + n, len(self.events)) - 1
            if last >= self.i:
                self._run_until(int(self.events["ts_recv"][last]))

    def step_to(self, until_ns: int) -> None:
        """Replay every event stamped at or before `until_ns` (lockstep: the engine's
        decision time), so the book is the one the engine decides on."""
        assert self._sim is not None
        with self._sim._lock:
            if until_ns > self.now_ns:
                self._run_until(until_ns)

    def _replay(self) -> None:
        assert self._sim is not None and self.speed is not None
        n = len(self.events)
        start_wall = time.monotonic()  # the clock starts at the next event: no dead gap
        start_ns = int(self.events["ts_recv"][self.i]) - 1 if self.i < n else self.now_ns
        while self.i < n and not self._stop.is_set():
            if math.isinf(self.speed):
                until = int(self.events["ts_recv"][min(self.i + CHUNK_EVENTS, n) - 1])
            else:
                elapsed = time.monotonic() - start_wall
                until = start_ns + int(elapsed * self.speed * 1e9)
            with self._sim._lock:
                self._run_until(until)
            if not math.isinf(self.speed):
                self._stop.wait(PACE_S)
        if self.i >= n:
            self.done.set()

    # -- orders (the simulator's lock is held) ----------------------------------------------
    def submit(self, o: _Order) -> None:
        """Send one order to the exchange (a bracket leg after its entry)."""
        side = 1 if o.action == "Buy" else -1
        px = o.price if o.order_type == "Limit" else o.stop_price
        price = self.instrument.to_fixed(px) if px is not None else 0
        parent = self._slot_of[o.parent_id] if o.parent_id is not None else -1
        qty = 0 if parent >= 0 else o.qty - o.filled
        slot = self.exchange.submit(self.now_ns, side, _KIND[o.order_type], qty, price,
                                    parent=parent)  # fmt: skip
        self._slot_of[o.id] = slot
        self._order_of.append(o.id)
        if o.peg is not None:  # it trails from the next trade on
            self._trailing.add(o.id)
            self._trailed_to = int(np.searchsorted(self._trade_at, self.i))
        if o.oco_id is not None and o.oco_id in self._slot_of:
            self.exchange.pair_oco(slot, self._slot_of[o.oco_id])

    def cancel(self, order_id: int) -> None:
        self.exchange.cancel(self.now_ns, self._slot_of[order_id])

    def modify(self, order_id: int, *, price: float | None, qty: int) -> None:
        fixed = self.instrument.to_fixed(price) if price is not None else 0
        self.exchange.modify(self.now_ns, self._slot_of[order_id], price=fixed, qty=qty)
        self.settle()
        tape = self.tape()
        if order_id in self._trailing and len(tape):  # a new peg trails from the last trade
            self._trail(tape["price"][-1:])

    def settle(self) -> None:
        """Carry out every request now, against the book as it stands (in lockstep they
        wait for the replay to reach their arrival time)."""
        if self.lockstep:
            return
        b = self.book
        self.exchange.run_requests(b.meta, b.bid_qty, b.ask_qty)
        self._deliver(NEVER)

    # -- the md socket's view (esml.sim.tradovate_md.MdSource) -----------------------------
    def touch(self) -> tuple[float, int, float, int]:
        bid, bid_size, ask, ask_size = self.book.touch()
        return (bid / PRICE_SCALE if bid_size else math.nan, bid_size,
                ask / PRICE_SCALE if ask_size else math.nan, ask_size)  # fmt: skip

    def dom(self, levels: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rows = self.book.depth(levels)
        bids = [{"price": p / PRICE_SCALE, "size": int(s)} for p, s in rows[:, :2] if s]
        offers = [{"price": p / PRICE_SCALE, "size": int(s)} for p, s in rows[:, 2:] if s]
        return bids, offers

    def tape(self) -> np.ndarray:
        """Every trade replayed so far, oldest first."""
        return self._tape[: int(np.searchsorted(self._trade_at, self.i))]

    def clock_ns(self) -> int:
        return self.now_ns

    def last_price(self) -> float:
        tape = self.tape()
        if len(tape):
            return float(tape["price"][-1])
        bid, _, ask, _ = self.touch()
        return (bid + ask) / 2

    # -- the replay ---------------------------------------------------------------------
    def _run_until(self, until_ns: int) -> None:
        """Replay the events up to `until_ns`, delivering what the matching reports; while
        a trailing stop works, one trade timestamp at a time, trailing it after each."""
        ev, n, start = self.events, len(self.events), self.i
        while True:
            bound = until_ns
            if self._live_trailing():
                j = int(np.searchsorted(self._trade_at, self.i))
                if j < len(self._trade_at):
                    bound = min(until_ns, int(ev["ts_recv"][self._trade_at[j]]))
            self._advance(bound)
            last = int(ev["ts_recv"][self.i - 1]) if self.i else 0
            self.now_ns = max(self.now_ns, bound if self.i < n else last)
            self._deliver(self.now_ns)  # what the trades did first, then the stops move
            if self._trailing:
                traded = int(np.searchsorted(self._trade_at, self.i))
                self._trail(self._tape["price"][self._trailed_to : traded])
                self._trailed_to = traded
            if bound >= until_ns or self.i >= n:
                break
        if self.i != start and self._sim is not None:
            publish_market(self._sim, {self._contract})

    def _live_trailing(self) -> bool:
        assert self._sim is not None
        orders = self._sim._orders
        self._trailing = {i for i in self._trailing if orders[i].status in ("Working", "Suspended")}
        return bool(self._trailing)

    def _trail(self, prices: np.ndarray) -> None:
        """Move each working trailing stop by the trades at `prices`."""
        assert self._sim is not None
        if not len(prices):
            return
        for oid in sorted(self._trailing):
            o = self._sim._orders[oid]
            if o.status != "Working" or o.peg is None or o.stop_price is None:
                continue  # a waiting bracket leg trails once its entry filled
            best = float(prices.max() if o.action == "Sell" else prices.min())
            stop = trailed_stop(o.action, o.stop_price, o.peg, best, self.symbol)
            if stop != o.stop_price:
                self.exchange.modify(self.now_ns, self._slot_of[oid],
                                     price=self.instrument.to_fixed(stop))  # fmt: skip
                self.settle()

    def _advance(self, until_ns: int) -> None:
        ev, n = self.events, len(self.events)
        b, s = self.book, self._scratch
        while self.i < n:
            self.i, why = advance_exchange(
                ev, self.i, *b.arrays, b.o_seq, s.s, s.ring, PER_EVENT_NOTHING,
                np.int64(until_ns), *self.exchange.arrays,
            )  # fmt: skip
            if why == UPDATE:
                self.now_ns = max(self.now_ns, self.exchange.next_visible_ns)
                self._deliver(self.now_ns)
            elif why == FULL:
                self.exchange.make_room()
            elif why == ERROR:
                b.check(f" at record {self.i}")
            elif why == END or self.i >= n or int(ev["ts_recv"][self.i]) > until_ns:
                break

    def _deliver(self, now_ns: int) -> None:
        for r in self.exchange.take_reports(now_ns):
            self._apply(r)

    def _apply(self, r: Report) -> None:
        """One exchange report becomes the simulator's order state, fill and position."""
        assert self._sim is not None
        o = self._sim._orders[self._order_of[r.slot]]
        px = r.price / PRICE_SCALE if r.price else None
        if r.kind is K.FILL:
            assert px is not None
            o.filled += r.qty
            o.fill_value += r.qty * px
            o.last_fill = (r.qty, px)
            self._sim._book_fill(o, px, r.qty, r.ts_ns)
            if o.filled >= o.qty:
                o.status = "Filled"
        elif r.kind is K.ACCEPTED:
            if o.parent_id is not None:  # a bracket leg released, sized by the entry's fills
                o.qty = r.qty
            if o.status == "Suspended":
                o.status = "Working"
        elif r.kind is K.MODIFIED:
            if r.qty:  # a waiting bracket leg has no size of its own yet
                o.qty = r.qty
            if o.order_type == "Limit" and px is not None:
                o.price = px
            elif o.order_type in ("Stop", "TrailingStop") and px is not None:
                o.stop_price = px
        elif r.kind is K.CANCELLED:
            o.status = "Canceled" if o.filled < o.qty else "Filled"
        elif r.kind is K.REJECTED:
            o.status, o.text = "Rejected", r.reason


def _is_trade(events: np.ndarray) -> np.ndarray:
    return (events["action"] == TRADE) & (events["price"] != UNDEF_PRICE)


def _tape(events: np.ndarray, tick_fixed: int) -> np.ndarray:
    """Every trade of the day with the touch as it stood: the tick chart's rows."""
    l1 = replay_l1(events, tick_fixed)
    idx = np.flatnonzero(_is_trade(events))
    t = events[idx]
    tape = np.zeros(len(idx), TAPE_DTYPE)
    tape["ts"] = t["ts_recv"].astype(np.int64)
    tape["price"] = t["price"] / PRICE_SCALE
    tape["size"] = t["size"]
    tape["aggressor"] = np.where(t["side"] == BID, 1, np.where(t["side"] == ASK, -1, 0))
    touch = l1[idx]
    tape["bid"] = np.where(touch[:, 1] > 0, touch[:, 0] / PRICE_SCALE, np.nan)
    tape["ask"] = np.where(touch[:, 3] > 0, touch[:, 2] / PRICE_SCALE, np.nan)
    tape["bid_size"], tape["ask_size"] = touch[:, 1], touch[:, 3]
    return tape
