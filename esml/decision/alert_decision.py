"""One alert decided against the shared account: planned, gated, reserved.

`decide_alert` runs inside `AccountStore.update`, so what it reserves is written only if
nobody changed the account meanwhile (else it runs again on the fresh state). Gates see
the contract's worst case (`SharedAccount.gate_view`): filled contracts plus every open
order that could add to them, so an order in flight or of unknown outcome still counts.
Exits and cancels pass no gate: reducing risk is never blocked by a limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from esml.decision.account_store import AccountStore
from esml.decision.alert_plan import NothingToDo, Plan, close_client_id, plan_alert
from esml.decision.alerts import AlertOrder
from esml.decision.broker_sync import mark, release
from esml.decision.gates import GateStack
from esml.decision.proposal import Proposal, Reservation, ReservationStatus, SharedAccount
from esml.decision.protections import note_entry

NS = 1_000_000_000


@dataclass(frozen=True)
class AlertDecision:
    client_id: str
    symbol: str
    plan: Plan | None = None  # None: refused (gate, reason) or a duplicate
    gate: str | None = None
    reason: str = ""
    duplicate: Literal["placed", "unknown"] | None = None
    reserved: tuple[str, ...] = field(default=())  # client ids of the reservations made

    @property
    def close_client_id(self) -> str:
        return close_client_id(self.client_id)


def decide_alert(
    alert: AlertOrder,
    state: SharedAccount,
    gates: GateStack,
    now_ns: int,
    min_confidence: float,
    stop_ticks: int,
    target_ticks: int,
) -> AlertDecision:
    """Mutates `state` only when the alert is approved (its reservations, the cooldown)."""
    cid, symbol = alert.client_order_id(), alert.contract_symbol()
    earlier = [r for k, r in state.reservations.items() if k == cid or k.startswith(f"{cid}-")]
    if earlier:
        placed = all(r.status is ReservationStatus.PLACED for r in earlier)
        return AlertDecision(cid, symbol, duplicate="placed" if placed else "unknown")
    try:
        plan = plan_alert(alert, state, stop_ticks, target_ticks)
    except NothingToDo as e:
        return AlertDecision(cid, symbol, gate=e.code, reason=e.reason)
    except ValueError as e:
        return AlertDecision(cid, symbol, gate="invalid_bracket", reason=str(e))
    if plan.entries:
        refused = _gate(alert, plan, state, gates, now_ns, min_confidence)
        if isinstance(refused, AlertDecision):
            return refused
        plan = refused
    reserved = []
    if plan.close_qty:
        close = close_client_id(cid)
        state.reservations[close] = Reservation(
            close, symbol, plan.side.sign * plan.close_qty, plan.close_qty, True,
            ReservationStatus.PENDING, now_ns,
        )  # fmt: skip
        reserved.append(close)
    if plan.entries:
        cancel_at = now_ns + alert.cancel_after_s * NS if alert.cancel_after_s else 0
        for leg in plan.entries:
            state.reservations[leg.client_id] = Reservation(
                leg.client_id, symbol, plan.side.sign * leg.qty, leg.qty, False,
                ReservationStatus.PENDING, now_ns, state.risk.last_entry_ns, cancel_at,
            )  # fmt: skip
            reserved.append(leg.client_id)
        note_entry(state.risk, now_ns)
    return AlertDecision(cid, symbol, plan, reserved=tuple(reserved))


def _gate(
    alert: AlertOrder,
    plan: Plan,
    state: SharedAccount,
    gates: GateStack,
    now_ns: int,
    min_confidence: float,
) -> Plan | AlertDecision:
    """The plan as the gates allow it (a cap shrinks a single entry), or the refusal."""
    cid, symbol = alert.client_order_id(), plan.symbol
    if state.unresolved(symbol):
        return AlertDecision(
            cid, symbol, gate="unresolved_order",
            reason=f"an earlier order on {symbol} has an unknown outcome; it is being "
            "looked up at the broker",
        )  # fmt: skip
    if alert.confidence is not None and alert.confidence < min_confidence:
        return AlertDecision(
            cid, symbol, gate="confidence",
            reason=f"confidence {alert.confidence:.3f} below {min_confidence:.3f}",
        )  # fmt: skip
    proposal = Proposal(
        symbol=symbol,
        side=plan.side,
        qty=plan.entry_qty,
        source=alert.source,
        ts_ns=now_ns,
        confidence=alert.confidence,
    )
    view = state.gate_view(symbol, plan.side)
    view.position += plan.side.sign * plan.close_qty  # the close, counted as filled
    verdict = gates.evaluate(proposal, view)
    if not verdict.approved:
        return AlertDecision(cid, symbol, gate=verdict.gate, reason=verdict.reason)
    if verdict.qty < plan.entry_qty:
        if len(plan.entries) > 1:
            gate, reason = verdict.caps[-1]
            return AlertDecision(cid, symbol, gate=gate, reason=f"{reason}: targets exceed it")
        (leg,) = plan.entries
        plan = replace(plan, entries=(replace(leg, qty=verdict.qty),))
    return plan


def settle(
    store: AccountStore,
    account: str,
    reserved: tuple[str, ...],
    outcomes: Mapping[str, str],
    duplicate: bool,
) -> None:
    """Each reservation after the router's answer: placed (kept, PLACED, until its fills
    consume it), rejected or not sent (released), unknown (kept, UNKNOWN, until a look-up
    tells). A duplicate's outcomes belong to the earlier attempt, whose reservations were
    settled then: ours go."""
    state = store.load(account)
    for cid in reserved:
        r = state.reservations.get(cid)
        if r is None:
            continue  # its fills arrived already
        outcome = "rejected" if duplicate else outcomes.get(cid, "not_sent")
        if outcome in ("rejected", "not_sent"):
            release(store, account, r)
        elif outcome == "unknown":
            mark(store, account, cid, ReservationStatus.UNKNOWN)
        else:
            mark(store, account, cid, ReservationStatus.PLACED)
