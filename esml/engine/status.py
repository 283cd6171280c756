"""What a running engine shows a person (the status line) and CloudWatch (the metrics):
one snapshot, read at most every second, never on the per-event path."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from esml.engine.engine import Engine
from esml.features.kernel import touch
from esml.market.instruments import PRICE_SCALE


@dataclass(frozen=True)
class Snapshot:
    mode: str
    market_ns: int
    last_price: float | None  # the mid of the touch, None before a two-sided book
    position: int
    open_pnl: float  # the open round trip, marked at the mid, net of its costs so far
    realized_pnl: float  # today's, net of costs
    working_orders: int
    orders: int
    fills: int
    decisions: int
    signals: int
    rejects: int
    warming: tuple[str, ...]  # what still fills ("features", model windows); empty: warm
    locked_out: bool  # the start-up lockout still holds entries back
    data_age_s: float  # wall seconds since the last market data arrived

    def line(self) -> str:
        t = datetime.fromtimestamp(self.market_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
        px = f"{self.last_price:.2f}" if self.last_price is not None else "-"
        warm = "warm" if not self.warming else "warming: " + ", ".join(self.warming)
        lock = " | start-up lockout" if self.locked_out else ""
        return (
            f"{self.mode} {t} UTC | last {px} | pos {self.position:+d} | open "
            f"${self.open_pnl:,.2f} | day ${self.realized_pnl:,.2f} | orders "
            f"{self.orders} ({self.working_orders} working) | fills {self.fills} | {warm}"
            f"{lock} | data age {self.data_age_s:.1f} s"
        )

    def metrics(self) -> dict[str, float]:
        """The figures the service publishes (CloudWatch EMF), by metric name."""
        return {
            "Decisions": self.decisions,
            "Signals": self.signals,
            "Orders": self.orders,
            "Fills": self.fills,
            "Rejects": self.rejects,
            "Position": self.position,
            "OpenPnL": self.open_pnl,
            "RealizedPnL": self.realized_pnl,
            "DataAge": self.data_age_s,
            "Warming": float(bool(self.warming)),
        }


def snapshot(engine: Engine, data_age_s: float) -> Snapshot:
    bp, _, ap, _ = touch(engine.book.meta, engine.book.bid_qty, engine.book.ask_qty)
    mid = 0.5 * (bp + ap) / PRICE_SCALE if bp > 0 and ap > 0 else None
    pos = engine.manager.position
    pv = engine.instrument.point_value
    open_pnl = engine.trip_cash + pos * mid * pv if mid is not None and pos else 0.0
    st = engine.stats
    start = engine.entries_from_ns
    return Snapshot(
        mode=engine.mode,
        market_ns=engine.last_event_ns,
        last_price=mid,
        position=pos,
        open_pnl=open_pnl,
        realized_pnl=engine.account.realized_pnl,
        working_orders=len(engine.manager.tracker.live()),
        orders=st.orders,
        fills=st.fills,
        decisions=st.decisions,
        signals=st.signals,
        rejects=st.rejected_by_broker,
        warming=tuple(engine.warming()),
        locked_out=start is not None and engine.last_event_ns < start,
        data_age_s=data_age_s,
    )
