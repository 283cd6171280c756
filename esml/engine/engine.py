"""The engine: one path for every event, the same object in backtest, paper and live.

Events go through the compiled kernel (book, features, the exchange simulator's matching)
until a decision time or an exchange report the strategy must see is due; only then does
Python run: the strategy, the gate stack and sizing (`Trader`), the position manager
(entries with their OCO brackets, trailing, time and flip exits) and the journal. A replay
hands the engine whole arrays, the live loop hands it small chunks as they arrive;
`on_events` cannot tell the difference.

The engine takes its broker from outside: the paper broker (its exchange simulator is
matched inside the compiled loop, on the engine's own book) or a remote one such as
Tradovate (its orders and fills arrive by `take_updates`, read at every decision point and
by `poll`). With a remote broker the kernel runs over an idle exchange, the same compiled
loop with nothing to match. The mode says what the combination is for: `backtest` (a
recording, paper fills, no clock), `paper` (live data, paper fills) or `live` (live data,
the broker's fills).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from esml.alpha.ensemble_strategy import exit_outcomes_of
from esml.alpha.inputs import ModelInputs, ReadsWindows
from esml.alpha.model import AlphaModel
from esml.alpha.strategy import ModelStrategy, Strategy
from esml.broker.base import Broker
from esml.broker.paper import PaperBroker
from esml.config import EsmlConfig
from esml.data.book import BookState, l2_levels
from esml.decision.gates import GateStack
from esml.decision.proposal import AccountState
from esml.decision.protections import note_entry, record_round_trip
from esml.engine.champion_watch import ChampionWatch
from esml.engine.lockstep import FollowsMarketTime
from esml.engine.trader import Decision, Trader
from esml.execution.manager import PositionManager
from esml.execution.orders import Fill, Order
from esml.execution.ports import BrokerFailure, ListsWorkingOrders, ReportsUpdates
from esml.execution.recovery import RecoveryReport, recover
from esml.features.batch import decision_ok, next_decision
from esml.features.kernel import (
    DECISION,
    END,
    ERROR,
    FULL,
    PER_EVENT_FEATURES,
    UPDATE,
    advance_exchange,
    touch,
)
from esml.features.streaming import DEPTH_LEVELS, N_FEATURES, FeatureState, compute, ready
from esml.journal.base import DecisionRecord, Journal, SignalRecord
from esml.market.calendar import trading_day
from esml.market.instruments import PRICE_SCALE
from esml.sim.exchange import Exchange, ExchangeConfig

SETTLE_ATTEMPTS = 3  # end of data: flatten, settle, and again if a fill was still on its way

Mode = Literal["backtest", "paper", "live"]


class EngineBroker(Broker, ReportsUpdates, ListsWorkingOrders, Protocol):
    """A broker the engine can trade through: the protocol, its news, its working orders."""


MODES: tuple[Mode, ...] = ("backtest", "paper", "live")


@dataclass
class EngineStats:
    events: int = 0
    decisions: int = 0
    signals: int = 0
    orders: int = 0
    fills: int = 0
    rejected_by_broker: int = 0
    broker_errors: int = 0  # the broker's news could not be read (it is read again later)
    decision_us: list[float] = field(default_factory=list)  # each decision's time (not backtests)
    mids: list[tuple[int, float]] = field(default_factory=list)  # (ts, mid) per decision
    swaps: list[tuple[int, str]] = field(default_factory=list)  # (ts, strategy now serving)


class Engine:
    def __init__(
        self,
        cfg: EsmlConfig,
        strategy: Strategy | AlphaModel,
        journal: Journal,
        account: AccountState,
        *,
        symbol: str | None = None,
        source: str = "model",
        exchange: ExchangeConfig | None = None,
        watch: ChampionWatch | None = None,
        broker: EngineBroker | None = None,
        mode: Mode = "backtest",
        lockout_s: float = 0.0,
    ) -> None:
        """`broker`: None for a paper broker on the engine's book; a `PaperBroker` made
        by the caller (its book is the engine's); or any other `Broker` (live).
        Outside a backtest the engine reconciles with the broker at its first quote
        (`esml.execution.recovery`) and then opens nothing for `lockout_s` of market time."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        paper = broker is None or _paper_of(broker) is not None
        if paper == (mode == "live"):
            kind = "the paper broker" if paper else type(broker).__name__
            raise ValueError(f"mode {mode!r} does not trade through {kind}")
        self.cfg = cfg
        self.instrument = cfg.instrument_spec
        self.symbol = symbol or cfg.instrument
        if isinstance(strategy, AlphaModel):
            strategy = ModelStrategy(strategy)
        self.strategy = strategy
        self.inputs = _inputs_of(strategy)
        self.watch = watch
        self.journal = journal
        self.account = account
        self.source = source
        fee = cfg.execution.commission_per_side
        self.gates = GateStack.from_config(
            cfg.risk, self.instrument, fee, exit_outcomes=exit_outcomes_of(strategy),
            time_exit_s=cfg.features.horizon_s if cfg.execution.exits.time_exit else None,
        )  # fmt: skip
        self.trader = Trader(cfg, strategy, self.gates)
        self.mode = mode
        self.features = FeatureState()
        if broker is None:
            book = BookState.new(self.instrument.tick_fixed)
            broker = PaperBroker(self.instrument, book, exchange or cfg.paper_exchange)
        self.broker: EngineBroker = broker
        self.paper = _paper_of(broker)
        if self.paper is not None:
            self.book, self._exchange = self.paper.book, self.paper.exchange
        else:  # the same compiled loop over an exchange that holds no order of ours
            self.book = BookState.new(self.instrument.tick_fixed)
            self._exchange = Exchange(ExchangeConfig(), self.instrument.tick_fixed)
        self.trading = True  # False while warming up on history: windows fill, no orders
        if not lockout_s >= 0:
            raise ValueError(f"the start-up lockout must be >= 0 s, got {lockout_s}")
        self._lockout_ns = round(lockout_s * 1e9)
        self.entries_from_ns: int | None = None  # set at the start-up reconciliation
        self.recovery: RecoveryReport | None = None
        self.manager = PositionManager(
            self.symbol, self.broker, journal, cfg.execution.exits,
            instrument=self.instrument, source=source,
        )  # fmt: skip
        self.stats = EngineStats()
        self._interval_ns = round(cfg.features.decision_interval_s * 1e9)
        self._until: int | None = None
        self.last_event_ns = 0
        self.trip_cash = 0.0  # cash flow of the open round trip, net of costs
        self._row = np.zeros(N_FEATURES, np.float32)
        self._depth = np.zeros((DEPTH_LEVELS, 4), np.int64)

    # --- the event path --------------------------------------------------------------
    def on_events(self, ev: np.ndarray) -> None:
        """Feed a chunk of events (any size, in order)."""
        if len(ev) == 0:
            return
        if self.paper is not None:
            self.paper.observe(ev)
        if self._until is None:
            self._until = (int(ev["ts_recv"][0]) // self._interval_ns) * self._interval_ns
        i, n = 0, len(ev)
        book, fs = self.book, self.features
        while i < n:
            due = self._until
            j, why = advance_exchange(ev, i, *book.arrays, book.o_seq, fs.s, fs.ring,
                                      PER_EVENT_FEATURES, due,
                                      *self._exchange.arrays)  # fmt: skip
            self.stats.events += j - i
            if j > i:
                self.last_event_ns = int(ev["ts_recv"][j - 1])
                if self.inputs is not None:
                    self.inputs.on_events(ev, i, j, fs)
            i = j
            if why == UPDATE:  # only a paper exchange has reports on their way
                self._clock(self._exchange.next_visible_ns)
                self._take_broker_updates()
            elif why == DECISION:
                self._decide(due)
                self._until = int(next_decision(due, int(ev["ts_recv"][i]), self._interval_ns))
            elif why == FULL:
                self._exchange.make_room()
            elif why == ERROR:
                self.book.check(f" at record {i} of this chunk")
            elif why == END:
                return

    def finish(self, ts: int, reason: str = "end of data") -> None:
        """The data has ended at `ts`: close what is open at the last book, carry out every
        request still on its way and journal it all, so nothing is left hanging."""
        self._clock(ts)
        for _ in range(SETTLE_ATTEMPTS):
            self._settle()
            if not self.exposed():
                return
            self.flatten(ts, reason)
        self._settle()

    def flatten(self, ts: int, reason: str) -> None:
        """Close everything at market now (end of data, a halt), through the manager, so
        every order it sends is journaled like any other."""
        self._clock(ts)
        self.manager.now_ns = max(self.manager.now_ns, ts)
        self.manager.close(reason)
        self._take_broker_updates()

    def warm(self, history: np.ndarray) -> None:
        """Fill the features and the models' windows from recorded history that ends
        before the live data: no decision, no order; the start-up reconciliation and its
        lockout come at the first live quote."""
        self.trading = False
        try:
            self.on_events(history)
        finally:
            self.trading = True
            self.entries_from_ns = None

    def poll(self) -> None:
        """Take a remote broker's news between market events (a quiet market). Not before
        the start-up reconciliation: it reads the broker's orders and fills itself, and a
        manager that knows no journaled order would book them as strangers'."""
        if self.entries_from_ns is not None:
            self._take_broker_updates()

    def warming(self) -> list[str]:
        """What is still filling before the strategy can vote: "features" (the kernel's
        warm-up) and each model window not yet full. Empty when warm."""
        out = [] if ready(self.features.s, self.last_event_ns) else ["features"]
        served = getattr(self.strategy, "served", None)
        if self.inputs is not None and served is not None:
            out += [m for m, spec in served.windows.items() if self.inputs.read(spec) is None]
        return out

    def _start_up(self, ts: int, bid: float, ask: float, mid: float) -> None:
        """Before the first entry: outside a backtest, reconcile the journal with the
        broker (adopt, cancel orphans, re-protect, journal the fills made while down)."""
        self.entries_from_ns = ts + self._lockout_ns
        if self.mode == "backtest" or not self.trading:
            return
        self.manager, self.recovery = recover(
            self.symbol, self.broker, self.journal, self.cfg.execution.exits, ts_ns=ts,
            bid=bid, ask=ask, last=mid, source=self.source, instrument=self.instrument,
        )  # fmt: skip
        r = self.recovery
        self.account.position = self.manager.position
        self.manager.tracker.note(
            ts, abs(r.broker_position), "none",
            f"start-up reconciliation: broker {r.broker_position:+d}, journal "
            f"{r.journal_position:+d}; found {len(r.found)}, never sent {len(r.never_sent)}, "
            f"orphans cancelled {len(r.orphans)}, fills while down {len(r.fills_added)}; "
            f"no entry for {self._lockout_ns / 1e9:g} s",
        )  # fmt: skip

    def _clock(self, ts: int) -> None:
        """The paper exchange runs on market time; a remote broker keeps its own."""
        if self.paper is not None:
            self.paper.now_ns = max(self.paper.now_ns, ts)

    def _settle(self) -> None:
        if self.paper is not None:
            self.paper.settle()
        self._take_broker_updates()

    # --- decision points -------------------------------------------------------------
    def _decide(self, ts: int) -> None:
        follows = self.paper is None and isinstance(self.broker, FollowsMarketTime)
        if self.paper is not None:
            self.paper.now_ns = ts
        elif follows:  # a simulator in lockstep: its book to ours, its news up to now
            self.broker.lockstep_to(ts)  # type: ignore[union-attr]
        if self.watch is not None:
            self._swap(ts, self.watch.poll(ts))
        day = trading_day(ts)
        if day != self.account.trading_day:
            self.account.roll_to(day)  # an open trip counts, whole, for the day it closes in
        meta, bid_qty, ask_qty = self.book.meta, self.book.bid_qty, self.book.ask_qty
        bp, bs, ap, as_ = touch(meta, bid_qty, ask_qty)
        if not decision_ok(bp, bs, ap, as_):
            return
        bid, ask = bp / PRICE_SCALE, ap / PRICE_SCALE
        mid = 0.5 * (bid + ask)
        if self.entries_from_ns is None:
            self._start_up(ts, bid, ask, mid)
        elif follows and self.trading:  # as the paper exchange's reports arrive before the decision
            self._take_broker_updates()
        if self.trading:  # not on history: what is held waits for live prices and reconciliation
            self.manager.on_market(ts, bid, ask, mid)  # trailing, time exits, timeouts
            self._take_broker_updates()
        if not ready(self.features.s, ts):
            return
        if not self.trading or ts < self.entries_from_ns:
            # warming up on history, or the start-up lockout: windows fill, no new entry
            self._compute_features(ts, bp, bs, ap, as_)
            return
        self.stats.decisions += 1
        if self.mode == "backtest":
            self._trade(ts, bp, bs, ap, as_, mid)
            return
        t0 = time.perf_counter()
        self._trade(ts, bp, bs, ap, as_, mid)
        self.stats.decision_us.append((time.perf_counter() - t0) * 1e6)

    def _trade(self, ts: int, bp: int, bs: int, ap: int, as_: int, mid: float) -> None:
        """Features, the strategy, the gates and the position manager at a decision."""
        self.stats.mids.append((ts, mid))
        self._compute_features(ts, bp, bs, ap, as_)
        self.account.position = self.manager.position
        d = self.trader.decide(ts, self._row, (bp, bs, ap, as_), self.account,
                               self.last_event_ns)  # fmt: skip
        if d.signal is None:
            return
        self._journal_decision(ts, d)
        if d.signal.side is None and not d.signal.exit_position:
            return
        outcome = self.manager.on_signal(
            d.signal,
            d.qty,
            d.stop_ticks,
            d.target_ticks,
            ts,
            horizon_s=self.cfg.features.horizon_s,
        )
        if outcome.action in ("entry", "add"):
            self.stats.orders += 1
            note_entry(self.account, ts)
        elif outcome.action == "rejected":
            self.stats.rejected_by_broker += 1
        self._take_broker_updates()

    def _compute_features(self, ts: int, bp: int, bs: int, ap: int, as_: int) -> None:
        """The feature row at `ts` from the kernel's state, and the bar it may close."""
        fs = self.features
        l2_levels(self.book.meta, self.book.bid_qty, self.book.ask_qty, self._depth)
        compute(fs.s, fs.ring, ts, bp, ap, bs, as_, self._depth, self.instrument.tick_fixed,
                self._row)  # fmt: skip
        if self.inputs is not None:
            self.inputs.on_decision(fs)  # `compute` may have closed a minute bar

    def _swap(self, ts: int, strategy: Strategy | None) -> None:
        """Serve a new strategy from this decision on; the position and its orders stay
        with the position manager, whoever's signal opened them."""
        if strategy is None:
            return
        inputs = _inputs_of(strategy)
        if inputs is not None and self.inputs is not None and inputs is not self.inputs:
            raise ValueError("a swapped-in strategy must read the engine's running windows")
        self.strategy = self.trader.strategy = strategy
        self.gates.use_exit_outcomes(exit_outcomes_of(strategy))
        self.inputs = inputs
        self.stats.swaps.append((ts, strategy.name))

    def _journal_decision(self, ts: int, d: Decision) -> None:
        s = d.signal
        assert s is not None
        self.stats.signals += 1
        record = SignalRecord(
            ts, self.symbol, s.source, s.p_down, s.p_flat, s.p_up, s.confidence, self.strategy.name
        )
        self.journal.record_signal(record)
        if d.verdict is None or s.side is None:
            return
        approved, gate, reason = d.verdict.approved, d.verdict.gate, d.verdict.reason
        if approved and d.qty == 0 and d.sizing is not None:
            approved, gate, reason = False, "sizing", d.sizing.reason
        decision = DecisionRecord(
            ts, self.symbol, s.source, s.side.value, d.qty, approved, gate, reason
        )
        self.journal.record_decision(decision)

    def exposed(self) -> bool:
        """The broker holds a position or a working order on the symbol."""
        return self.broker.position(self.symbol) != 0 or bool(
            self.broker.working_orders(self.symbol)
        )

    def _take_broker_updates(self) -> None:
        """Hand the broker's news to the position manager (which journals every order
        transition and each fill once), then book closed round trips into the account."""
        try:
            orders, fills = self.broker.take_updates()
        except BrokerFailure:  # a dropped socket or a lost answer: nothing taken, read later
            self.stats.broker_errors += 1
            return
        self._book(orders, fills)

    def sweep_fills(self) -> None:
        """At the end of a run: the fills the broker has booked whose events are still on
        their way (a last exit's), read from its fill list and each taken once, so the
        journal and the broker agree when the run stops."""
        known = {f.fill_id for f in self.journal.fills()}
        try:
            fills = [
                f for f in self.broker.fills() if f.symbol == self.symbol and f.fill_id not in known
            ]
        except BrokerFailure:
            self.stats.broker_errors += 1
            return
        self._book([], fills)

    def _book(self, orders: list[Order], fills: list[Fill]) -> None:
        if not orders and not fills:
            return
        pv = self.instrument.point_value
        for f in self.manager.on_updates(orders, fills):
            self.stats.fills += 1
            self.trip_cash += -f.side.sign * f.qty * f.price * pv - f.commission
        self.account.position = self.manager.position
        if self.manager.position == 0 and self.trip_cash != 0.0:
            now = self.paper.now_ns if self.paper is not None else self.manager.now_ns
            record_round_trip(self.account, self.trip_cash, now, self.cfg.risk)
            self.trip_cash = 0.0


def _paper_of(broker: object) -> PaperBroker | None:
    """The paper broker behind `broker`, which may wrap it (as `.broker`: shared risk)."""
    while broker is not None and not isinstance(broker, PaperBroker):
        broker = vars(broker).get("broker")
    return broker


def _inputs_of(strategy: Strategy) -> ModelInputs | None:
    return strategy.inputs if isinstance(strategy, ReadsWindows) else None
