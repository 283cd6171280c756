"""The engine: one path for every event, the same object in backtest, paper and live.

Events go through the compiled kernel (book, features, the exchange simulator's matching)
until a decision time or an exchange report the strategy must see is due; only then does
Python run: the strategy, the gate stack and sizing (`Trader`), the position manager
(entries with their OCO brackets, trailing, time and flip exits) and the journal. A replay
hands the engine whole arrays, the live loop hands it small chunks as they arrive;
`on_events` cannot tell the difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from esml.alpha.ensemble_strategy import exit_outcomes_of
from esml.alpha.inputs import ModelInputs, ReadsWindows
from esml.alpha.model import AlphaModel
from esml.alpha.strategy import ModelStrategy, Strategy
from esml.broker.paper import PaperBroker
from esml.config import EsmlConfig
from esml.data.book import BookState, l2_levels
from esml.decision.gates import GateStack
from esml.decision.proposal import AccountState
from esml.decision.protections import note_entry, record_round_trip
from esml.engine.champion_watch import ChampionWatch
from esml.engine.trader import Decision, Trader
from esml.execution.manager import PositionManager
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
from esml.sim.exchange import ExchangeConfig

SETTLE_ATTEMPTS = 3  # end of data: flatten, settle, and again if a fill was still on its way


@dataclass
class EngineStats:
    events: int = 0
    decisions: int = 0
    signals: int = 0
    orders: int = 0
    fills: int = 0
    rejected_by_broker: int = 0
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
    ) -> None:
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
        self.book = BookState.new(self.instrument.tick_fixed)
        self.features = FeatureState()
        self.broker = PaperBroker(self.instrument, self.book, exchange or cfg.paper_exchange)
        self.manager = PositionManager(
            self.symbol, self.broker, journal, cfg.execution.exits,
            instrument=self.instrument, source=source,
        )  # fmt: skip
        self.stats = EngineStats()
        self._interval_ns = round(cfg.features.decision_interval_s * 1e9)
        self._until: int | None = None
        self.last_event_ns = 0
        self._trip_cash = 0.0  # cash flow of the open round trip, net of costs
        self._row = np.zeros(N_FEATURES, np.float32)
        self._depth = np.zeros((DEPTH_LEVELS, 4), np.int64)

    # --- the event path --------------------------------------------------------------
    def on_events(self, ev: np.ndarray) -> None:
        """Feed a chunk of events (any size, in order)."""
        if len(ev) == 0:
            return
        self.broker.observe(ev)
        if self._until is None:
            self._until = (int(ev["ts_recv"][0]) // self._interval_ns) * self._interval_ns
        i, n = 0, len(ev)
        book, fs = self.book, self.features
        while i < n:
            due = self._until
            j, why = advance_exchange(ev, i, *book.arrays, book.o_seq, fs.s, fs.ring,
                                      PER_EVENT_FEATURES, due,
                                      *self.broker.exchange.arrays)  # fmt: skip
            self.stats.events += j - i
            if j > i:
                self.last_event_ns = int(ev["ts_recv"][j - 1])
                if self.inputs is not None:
                    self.inputs.on_events(ev, i, j, fs)
            i = j
            if why == UPDATE:
                self.broker.now_ns = self.broker.next_update_ns
                self._take_broker_updates()
            elif why == DECISION:
                self._decide(due)
                self._until = int(next_decision(due, int(ev["ts_recv"][i]), self._interval_ns))
            elif why == FULL:
                self.broker.exchange.make_room()
            elif why == ERROR:
                self.book.check(f" at record {i} of this chunk")
            elif why == END:
                return

    def finish(self, ts: int, reason: str = "end of data") -> None:
        """The data has ended at `ts`: close what is open at the last book, carry out every
        request still on its way and journal it all, so nothing is left hanging."""
        self.broker.now_ns = max(self.broker.now_ns, ts)
        for _ in range(SETTLE_ATTEMPTS):
            self.broker.settle()
            self._take_broker_updates()
            if not self._exposed():
                return
            self.flatten(ts, reason)
        self.broker.settle()
        self._take_broker_updates()

    def flatten(self, ts: int, reason: str) -> None:
        """Close everything at market now (end of data, a halt), through the manager, so
        every order it sends is journaled like any other."""
        self.broker.now_ns = max(self.broker.now_ns, ts)
        self.manager.now_ns = max(self.manager.now_ns, ts)
        self.manager.close(reason)
        self._take_broker_updates()

    # --- decision points -------------------------------------------------------------
    def _decide(self, ts: int) -> None:
        self.broker.now_ns = ts
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
        self.manager.on_market(ts, bid, ask, mid)  # trailing, time exits, timeouts
        self._take_broker_updates()
        if not ready(self.features.s, ts):
            return
        self.stats.decisions += 1
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

    def _exposed(self) -> bool:
        return self.broker.position(self.symbol) != 0 or bool(
            self.broker.working_orders(self.symbol)
        )

    def _take_broker_updates(self) -> None:
        """Hand the broker's news to the position manager (which journals every order
        transition and each fill once), then book closed round trips into the account."""
        orders, fills = self.broker.take_updates()
        if not orders and not fills:
            return
        pv = self.instrument.point_value
        for f in self.manager.on_updates(orders, fills):
            self.stats.fills += 1
            self._trip_cash += -f.side.sign * f.qty * f.price * pv - f.commission
        self.account.position = self.manager.position
        if self.manager.position == 0 and self._trip_cash != 0.0:
            record_round_trip(self.account, self._trip_cash, self.broker.now_ns, self.cfg.risk)
            self._trip_cash = 0.0


def _inputs_of(strategy: Strategy) -> ModelInputs | None:
    return strategy.inputs if isinstance(strategy, ReadsWindows) else None
