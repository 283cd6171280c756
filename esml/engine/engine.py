"""The engine: one path for every event, the same object in backtest, paper and live.

Events go through the compiled kernel (book, features) until a decision time, a time
exit or a possible fill is due; only then does Python run: the model, the gate stack,
execution and the journal. A replay hands the engine whole arrays, the live loop hands
it small chunks as they arrive; `on_events` cannot tell the difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from esml.alpha.model import AlphaModel
from esml.broker.base import OrderRejected
from esml.broker.paper import PaperBroker
from esml.config import EsmlConfig
from esml.data.book import BookState, l2_levels
from esml.decision.gates import GateStack
from esml.decision.proposal import AccountState, Proposal
from esml.execution.orders import BracketSpec, OrderIntent, Side, client_order_id
from esml.features.batch import decision_ok, next_decision
from esml.features.kernel import DECISION, END, ERROR, TRIGGER, advance, touch
from esml.features.streaming import DEPTH_LEVELS, N_FEATURES, FeatureState, compute, ready
from esml.journal.base import DecisionRecord, Journal, SignalRecord
from esml.market.calendar import trading_day
from esml.market.instruments import PRICE_SCALE


@dataclass
class EngineStats:
    events: int = 0
    decisions: int = 0
    signals: int = 0
    orders: int = 0
    fills: int = 0
    rejected_by_broker: int = 0
    mids: list[tuple[int, float]] = field(default_factory=list)  # (ts, mid) per decision


class Engine:
    def __init__(
        self,
        cfg: EsmlConfig,
        model: AlphaModel,
        journal: Journal,
        account: AccountState,
        *,
        symbol: str | None = None,
        source: str = "model",
    ) -> None:
        self.cfg = cfg
        self.instrument = cfg.instrument_spec
        self.symbol = symbol or cfg.instrument
        self.model = model
        self.journal = journal
        self.account = account
        self.source = source
        self.gates = GateStack.from_config(cfg.risk)
        self.book = BookState.new(self.instrument.tick_fixed)
        self.features = FeatureState()
        self.broker = PaperBroker(self.instrument, self.book, cfg.execution.commission_per_side)
        self.stats = EngineStats()
        self._interval_ns = round(cfg.features.decision_interval_s * 1e9)
        self._exit_after_ns = round(cfg.execution.time_exit_s * 1e9)
        self._until: int | None = None
        self._entry_ts: int | None = None
        self._cash = 0.0  # cash flow of today's fills and the open position's, net of costs
        self._row = np.zeros(N_FEATURES, np.float32)
        self._depth = np.zeros((DEPTH_LEVELS, 4), np.int64)

    # --- the event path --------------------------------------------------------------
    def on_events(self, ev: np.ndarray) -> None:
        """Feed a chunk of events (any size, in order)."""
        if len(ev) == 0:
            return
        if self._until is None:
            self._until = (int(ev["ts_recv"][0]) // self._interval_ns) * self._interval_ns
        i, n = 0, len(ev)
        arrays = self.book.arrays
        fs = self.features
        while i < n:
            lo, hi = self.broker.trigger_levels()
            due = self._until
            if self._entry_ts is not None:
                due = min(due, self._entry_ts + self._exit_after_ns)
            j, why = advance(ev, i, *arrays, fs.s, fs.ring, due, lo, hi)
            self.stats.events += j - i
            i = j
            if why == ERROR:
                self.book.check(f" at record {i} of this chunk")
            if why == TRIGGER:
                self.broker.now_ns = int(ev["ts_recv"][i - 1])
                self.broker.on_trade(int(ev["price"][i - 1]))
                self._journal_broker_updates()
            elif why == DECISION:
                self._decide(due)
                if due == self._until:
                    self._until = int(next_decision(due, int(ev["ts_recv"][i]), self._interval_ns))
            elif why == END:
                return

    # --- decision points -------------------------------------------------------------
    def _decide(self, ts: int) -> None:
        self.broker.now_ns = ts
        day = trading_day(ts)
        if day != self.account.trading_day:
            # what was realised belongs to the old day; an open position's flows carry over
            self._cash -= self.account.realized_pnl
            self.account.roll_to(day)
        pos = self.broker.position(self.symbol)
        if pos != 0 and self._entry_ts is not None and ts - self._entry_ts >= self._exit_after_ns:
            self.flatten(ts, "time exit")
            return
        if pos != 0 or ts != self._until:
            return
        meta, bid_qty, ask_qty = self.book.meta, self.book.bid_qty, self.book.ask_qty
        bp, bs, ap, as_ = touch(meta, bid_qty, ask_qty)
        fs = self.features
        if not (ready(fs.s, ts) and decision_ok(bp, bs, ap, as_)):
            return
        self.stats.decisions += 1
        self.stats.mids.append((ts, 0.5 * (bp + ap) / PRICE_SCALE))
        l2_levels(meta, bid_qty, ask_qty, self._depth)
        tick = self.instrument.tick_fixed
        compute(fs.s, fs.ring, ts, bp, ap, bs, as_, self._depth, tick, self._row)
        p_down, p_flat, p_up = self.model.predict_one(self._row)
        side = Side.BUY if p_up >= p_down else Side.SELL
        confidence = max(p_up, p_down)
        self.stats.signals += 1
        self.journal.record_signal(
            SignalRecord(
                ts, self.symbol, self.source, p_down, p_flat, p_up, confidence, self.model.name
            )
        )
        qty = self.cfg.execution.contracts
        proposal = Proposal(self.symbol, side, qty, self.source, ts, confidence)
        self.account.position = pos
        verdict = self.gates.evaluate(proposal, self.account)
        self.journal.record_decision(
            DecisionRecord(
                ts, self.symbol, self.source, side.value, qty, verdict.approved, verdict.gate,
                verdict.reason,
            )
        )
        if verdict.approved:
            self._enter(ts, side, qty)

    def _enter(self, ts: int, side: Side, qty: int) -> None:
        ex = self.cfg.execution
        intent = OrderIntent(
            client_id=client_order_id(self.source, self.symbol, ts, side.value),
            symbol=self.symbol,
            side=side,
            qty=qty,
            bracket=BracketSpec(ex.stop_ticks, ex.target_ticks),
            reason="model signal",
            ts_ns=ts,
        )
        try:
            self.broker.place(intent)
        except OrderRejected as e:
            self.stats.rejected_by_broker += 1
            self._journal_broker_updates()
            self.journal.record_decision(
                DecisionRecord(
                    ts, self.symbol, "broker", side.value, qty, False, "broker", e.reason
                )
            )
            return
        self.stats.orders += 1
        self._entry_ts = ts
        self._journal_broker_updates()

    def flatten(self, ts: int, reason: str) -> None:
        try:
            self.broker.flatten(self.symbol, client_order_id("exit", self.symbol, ts), reason)
        except OrderRejected as e:
            self.journal.record_decision(
                DecisionRecord(ts, self.symbol, "broker", "exit", 0, False, "broker", e.reason)
            )
        self._journal_broker_updates()

    def _journal_broker_updates(self) -> None:
        """Journal every order transition and fill the broker made, then update the account."""
        orders, fills = self.broker.take_updates()
        for o in orders:
            self.journal.record_order(o)
        pv = self.instrument.point_value
        for f in fills:
            if not self.journal.record_fill(f):
                continue
            self.stats.fills += 1
            self._cash += -f.side.sign * f.qty * f.price * pv - f.commission
        pos = self.broker.position(self.symbol)
        self.account.position = pos
        if pos == 0 and fills:
            self._entry_ts = None
            self.account.realized_pnl = self._cash
