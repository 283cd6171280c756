"""What the monitor page shows, computed from a journal read: one JSON-ready dict.

Round trips, equity and drawdown come from the fills through `esml.evaluation.trades`, the
same accounting as every report; the position is the fills' signed sum, marked at the
engine's last price when its status record gives one, else at the last fill (and the page
says which).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from esml.evaluation.trades import round_trips
from esml.execution.orders import Fill, OrderRole, OrderStatus
from esml.market.instruments import instrument_for
from esml.monitor.source import JournalData

WORKING = (OrderStatus.PENDING, OrderStatus.WORKING, OrderStatus.PARTIALLY_FILLED,
           OrderStatus.CANCEL_PENDING)  # fmt: skip
NOT_RECORDED = "not recorded"


def monitor_state(
    data: JournalData,
    source: str,
    now_s: float | None = None,
    prices: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """`prices`: (UTC ns, price) of the market the engine trades, from the file it replays;
    the page gets the part up to the journal's latest record (never what comes after)."""
    now_s = time.time() if now_s is None else now_s
    symbol = _symbol(data)
    point_value = instrument_for(symbol).point_value if symbol else 0.0
    trips = round_trips(data.fills, instrument_for(symbol)) if symbol else []
    equity, peak, curve = 0.0, 0.0, []
    for rt in trips:
        equity += rt.net_pnl
        peak = max(peak, equity)
        curve.append({"ts_ns": rt.exit_ts_ns, "equity": equity, "drawdown": equity - peak})
    position, cash = _position(data.fills, point_value)
    last_fill = data.fills[-1].price if data.fills else None
    mark = data.status.get("last_price") or last_fill
    open_pnl = cash + position * mark * point_value if position and mark else 0.0
    health = _health(data, now_s)
    return {
        "source": source,
        "symbol": symbol,
        "prices": _prices_until(prices, health["last_event_ns"]),
        "fills": [_fill(f) for f in data.fills],
        "trades": [
            {"entry_ts_ns": rt.entry_ts_ns, "exit_ts_ns": rt.exit_ts_ns, "side": rt.side.value,
             "qty": rt.qty, "entry": rt.entry_price, "exit": rt.exit_price,
             "exit_by": rt.exit_role.value, "net_pnl": rt.net_pnl}
            for rt in trips
        ],
        "working": [
            {"role": o.role.value, "side": o.side.value, "qty": o.remaining, "price": o.price,
             "type": o.order_type.value, "ts_ns": o.ts_ns}
            for o in data.orders if o.status in WORKING and o.price is not None
        ],
        "position": {
            "qty": position,
            "mark": mark,
            "marked_at": "the engine's last price" if data.status.get("last_price")
            else ("the last fill" if mark is not None else NOT_RECORDED),
            "open_pnl": open_pnl,
            "closed_pnl": equity,
            "max_drawdown": min((p["drawdown"] for p in curve), default=0.0),
        },
        "account": data.account,
        "equity": curve,
        "funnel": _funnel(data),
        "signals": [
            {"ts_ns": s.ts_ns, "p_up": s.p_up, "p_flat": s.p_flat, "p_down": s.p_down,
             "confidence": s.confidence, "model": s.model, "source": s.source}
            for s in reversed(data.signals)
        ],
        "decisions": [
            {"ts_ns": d.ts_ns, "side": d.side, "qty": d.qty, "approved": d.approved,
             "gate": d.gate, "reason": d.reason}
            for d in reversed(data.decisions)
        ],
        "model": _model(data),
        "health": health,
    }


def _prices_until(prices: tuple[np.ndarray, np.ndarray] | None, until_ns: int | None) -> dict:
    if prices is None or until_ns is None:
        return {"ts_ns": [], "price": []}
    ts, px = prices
    n = int(np.searchsorted(ts, until_ns, side="right"))
    return {"ts_ns": ts[:n].tolist(), "price": px[:n].tolist()}


def _symbol(data: JournalData) -> str:
    for rows in (data.fills, data.orders, data.signals):
        if rows:
            return rows[-1].symbol
    return ""


def _position(fills: list[Fill], point_value: float) -> tuple[int, float]:
    """Signed contracts held and the cash paid for them (net of commissions), so that
    cash + qty * price * point_value is the open P&L at `price`."""
    qty, cash = 0, 0.0
    for f in fills:
        signed = f.qty * f.side.sign
        qty += signed
        cash -= signed * f.price * point_value + f.commission
        if qty == 0:
            cash = 0.0  # flat: what was made is closed P&L, counted in the equity curve
    return qty, cash


def _fill(f: Fill) -> dict[str, Any]:
    kind = "entry" if f.role is OrderRole.ENTRY else "exit"
    return {"ts_ns": f.ts_ns, "price": f.price, "side": f.side.value, "qty": f.qty,
            "role": f.role.value, "kind": kind}  # fmt: skip


def _funnel(data: JournalData) -> list[dict[str, Any]]:
    """Signals, then each verdict on the decisions: approved, or rejected by which gate."""
    rows = [{"stage": "signals", "count": data.signal_count}]
    rows.append({"stage": "approved", "count": data.verdicts.get("approved", 0)})
    rejected = sorted(((g, n) for g, n in data.verdicts.items() if g != "approved"),
                      key=lambda gn: -gn[1])  # fmt: skip
    rows += [{"stage": f"rejected by {g}", "count": n} for g, n in rejected]
    return rows


def _model(data: JournalData) -> dict[str, Any]:
    st = data.status
    latest = data.signals[-1].model if data.signals else None
    warming = st.get("warming")
    return {
        "champion": st.get("champion") or latest or NOT_RECORDED,
        "champion_from": "status" if st.get("champion") else "the latest signal",
        "warming": (", ".join(warming) or "warm") if warming is not None else NOT_RECORDED,
        "last_swap": st.get("last_swap") or NOT_RECORDED,
    }


def _health(data: JournalData, now_s: float) -> dict[str, Any]:
    st = data.status
    last_event = max([r.ts_ns for r in (*data.fills, *data.orders, *data.signals)], default=0)
    return {
        "mode": st.get("mode", NOT_RECORDED),
        "data_age_s": st.get("data_age_s"),
        "broker": st.get("broker", NOT_RECORDED),
        "last_event_ns": st.get("market_ns") or last_event or None,
        "journal_written_s_ago": None if data.written_s is None else now_s - data.written_s,
    }
