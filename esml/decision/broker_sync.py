"""Bring the shared account state level with the broker before anything is decided.

1. Every fill the broker reports that the account has not seen is applied once
   (`FillLedger.apply_all`): bracket legs that filled at the exchange free the position.
2. Every open reservation is looked up at the broker by its client order id, oldest
   first, except those still in flight (reserved less than `in_flight_s` ago by a
   router that may still be talking to the broker):
   * the broker never received it, and the order was reserved longer than
     `in_flight_s` ago (no router can still be sending it): it cannot fill; released;
   * it is working: it stays, as PLACED (a limit entry past its cancel-after time is
     cancelled now, and released at a later sync once the broker says it is over);
   * it is over (filled, cancelled, rejected) and all its fills are applied: released.
   Nothing is released on a guess: a broker that cannot be asked leaves every
   reservation as it is, and the caller refuses new entries on a contract while one
   of its reservations is UNKNOWN.
3. The orders table follows: each order noted unsettled in the account (a fill applied,
   a reservation released: noted in the same write, so it cannot be forgotten) and its
   bracket siblings get the broker's status (a leg that filled: Filled; its OCO partner:
   Canceled); one the broker never received: Rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Protocol

from esml.decision.account_store import AccountStore
from esml.decision.alerts import MAX_TARGETS
from esml.decision.fills import FillLedger
from esml.decision.proposal import Reservation, ReservationStatus, SharedAccount
from esml.execution.orders import Fill, Order, OrderStatus

NS = 1_000_000_000
IN_FLIGHT_S = 120.0
"""Longer than any router invocation may run (its Lambda timeout)."""


class SyncBroker(Protocol):
    def fills(self) -> list[Fill]: ...

    def order_for_client(self, client_id: str) -> Order | None: ...

    def cancel(self, order_id: str) -> None: ...

    def modify(self, order_id: str, *, price: float | None = None) -> None: ...


class OrderJournal(Protocol):
    def order(self, client_id: str) -> Order | None: ...

    def record_order(self, o: Order) -> None: ...


@dataclass
class SyncReport:
    applied: list[Fill] = field(default_factory=list)
    released: list[str] = field(default_factory=list)  # client ids
    placed: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)  # limit entries cancelled now


def release(store: AccountStore, account: str, r: Reservation) -> SharedAccount:
    """Take back what is left of `r` (and the cooldown start of an entry that never
    filled). Idempotent: a reservation already gone is left alone."""

    def undo(state: SharedAccount) -> None:
        current = state.reservations.get(r.client_id)
        if current is None:
            return
        del state.reservations[r.client_id]
        state.unsettle(r.client_id)
        never_filled = current.filled == 0 and not current.is_exit
        if never_filled and state.risk.last_entry_ns == current.ts_ns:
            state.risk.last_entry_ns = current.prior_entry_ns

    state, _ = store.update(account, undo)
    return state


def mark(store: AccountStore, account: str, client_id: str, status: ReservationStatus) -> None:
    def change(state: SharedAccount) -> None:
        r = state.reservations.get(client_id)
        if r is not None:
            r.status = status

    store.update(account, change)


def sync_account(
    account: str,
    broker: SyncBroker,
    ledger: FillLedger,
    journal: OrderJournal | None = None,
    in_flight_s: float = IN_FLIGHT_S,
) -> SyncReport:
    """One pass of the steps above. Raises the broker's error when it
    cannot be asked (nothing is released then)."""
    store = ledger.store
    report = SyncReport(applied=ledger.apply_all(account, broker.fills()))
    now = store.now_ns()
    state = store.load(account)
    for r in sorted(state.reservations.values(), key=lambda r: (r.ts_ns, r.client_id)):
        young = now - r.ts_ns < in_flight_s * NS
        if r.status is ReservationStatus.PENDING and young:
            continue
        view = broker.order_for_client(r.client_id)
        if view is None:
            if not young:  # a router still in flight may yet send it
                release(store, account, r)
                report.released.append(r.client_id)
        elif not view.status.is_final:
            if r.status is not ReservationStatus.PLACED:
                mark(store, account, r.client_id, ReservationStatus.PLACED)
                report.placed.append(r.client_id)
            if r.cancel_at_ns and now >= r.cancel_at_ns:
                broker.cancel(view.order_id)
                report.expired.append(r.client_id)
        elif view.filled_qty == r.filled:
            release(store, account, r)
            report.released.append(r.client_id)
    if journal is not None:
        unsettled = store.load(account).unsettled
        follow_orders(broker, journal, set(unsettled))

        def settled(state: SharedAccount) -> None:
            state.unsettled = [c for c in state.unsettled if c not in unsettled]

        store.update(account, settled)
    return report


def follow_orders(broker: SyncBroker, journal: OrderJournal, client_ids: set[str]) -> None:
    """The broker's status for these orders and their bracket siblings, into the
    orders table (only orders it already holds: it keeps what esml sent)."""
    family: set[str] = set()
    for cid in client_ids:
        base = cid.removesuffix("-stop").removesuffix("-target")
        family.update({base, f"{base}-stop", f"{base}-target"})
    for cid in sorted(family):
        stored = journal.order(cid)
        if stored is None or stored.status.is_final:
            continue
        view = broker.order_for_client(cid)
        if view is not None:
            journal.record_order(_as_stored(view, stored))
        elif stored.status is OrderStatus.PENDING:
            stored.status = OrderStatus.REJECTED
            stored.reject_reason = "never reached the broker (looked up by client id)"
            journal.record_order(stored)


def _as_stored(view: Order, stored: Order) -> Order:
    """The broker's state under the identity the journal recorded."""
    return replace(view, client_id=stored.client_id, role=stored.role, ts_ns=stored.ts_ns)


_FIRST_TARGET = re.compile(r"^(?P<base>.+)-be1-target$")


def move_stops_to_breakeven(
    broker: SyncBroker, journal: OrderJournal, applied: list[Fill]
) -> list[str]:
    """After the first target of a break-even alert fills (its legs are `X-be1`,
    `X-be2`...), the other shares' working stops move to the first share's entry price.
    Returns the client ids of the stops moved."""
    moved = []
    for f in applied:
        m = _FIRST_TARGET.match(f.client_id)
        if m is None:
            continue
        entry = journal.order(f"{m['base']}-be1")
        if entry is None or not entry.avg_fill_price:
            continue
        for i in range(2, 1 + MAX_TARGETS):
            stop = broker.order_for_client(f"{m['base']}-be{i}-stop")
            if stop is None:
                break
            # never loosened: a trailing stop may already be past the entry
            past = (
                stop.price is not None and (stop.price - entry.avg_fill_price) * stop.side.sign < 0
            )
            if not stop.status.is_final and not past:
                broker.modify(stop.order_id, price=entry.avg_fill_price)
                moved.append(f"{m['base']}-be{i}-stop")
    return moved
