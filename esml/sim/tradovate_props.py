"""The simulator's user data as Tradovate entities, and the `props` events that keep a
synced client current.

Why a diff: every change the simulator makes (an order placed, a fill, a cancel, a
position moved, cash booked) happens under its lock; when the lock is released the
entities are compared with what was last published, and each difference becomes one
`props` event (Created, Updated, Deleted). A change therefore yields exactly one event,
whichever code path made it, and a client that applies the events in order holds exactly
what `user/syncrequest` would answer.

Execution reports and order versions are history, not state: the diff records one
execution report per change of an order's status or filled quantity (execType New,
Trade, Canceled, Rejected, Replaced...) and one order version per change of its terms.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# the order of entity types in a snapshot and within one batch of events
ENTITY_TYPES = (
    ("accounts", "account"),
    ("positions", "position"),
    ("orders", "order"),
    ("orderVersions", "orderVersion"),
    ("fills", "fill"),
    ("executionReports", "executionReport"),
    ("cashBalances", "cashBalance"),
)
_RANK = {singular: i for i, (_, singular) in enumerate(ENTITY_TYPES)}
_EXEC_TYPE = {"Working": "New", "Suspended": "New", "Canceled": "Canceled",
              "Rejected": "Rejected", "Expired": "Expired"}  # fmt: skip


@dataclass(frozen=True)
class OrderState:
    """What the diff needs to know of one order to write its history."""

    entity: dict[str, Any]
    terms: tuple[Any, ...]  # (orderQty, orderType, price, stopPrice, timeInForce, peg)
    filled: int
    avg_px: float | None
    last_fill: tuple[int, float] | None  # (qty, price) of its newest fill
    text: str = ""


@dataclass
class PropsJournal:
    """Publishes the difference between the entities now and when last published."""

    published: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    versions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # order id ->
    reports: list[dict[str, Any]] = field(default_factory=list)
    _seen: dict[int, tuple[str, int, tuple[Any, ...]]] = field(default_factory=dict)
    _next_id: int = 900_000_000

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def record_history(self, orders: Iterable[OrderState], stamp: str) -> None:
        """New order versions and execution reports for what changed since last time."""
        for o in orders:
            e = o.entity
            oid, status = e["id"], e["ordStatus"]
            before = self._seen.get(oid)
            if before is None:  # first seen (perhaps already filled): it was new first
                self._new_version(oid, o.terms)
                opened = "Suspended" if status == "Suspended" else "Working"
                self._report(o, "New", stamp, opened)
                before = (opened, 0, o.terms)
            was_status, was_filled, was_terms = before
            if was_terms != o.terms:
                self._new_version(oid, o.terms)
                self._report(o, "Replaced", stamp)
            if o.filled > was_filled:
                self._report(o, "Trade", stamp)
            if status != was_status and status in _EXEC_TYPE:  # Filled: the Trade said it
                self._report(o, _EXEC_TYPE[status], stamp)  # Working: a leg released
            self._seen[oid] = (status, o.filled, o.terms)

    def _new_version(self, oid: int, terms: tuple[Any, ...]) -> None:
        qty, kind, price, stop, tif, peg = terms
        v: dict[str, Any] = {"id": self._id(), "orderId": oid, "orderQty": qty,
                             "orderType": kind, "timeInForce": tif}  # fmt: skip
        if price is not None:
            v["price"] = price
        if stop is not None:
            v["stopPrice"] = stop
        if peg is not None:  # a TrailingStop: each move of its stop is a new version
            v["pegDifference"] = peg
        self.versions.setdefault(oid, []).append(v)

    def _report(self, o: OrderState, exec_type: str, stamp: str,
                status: str | None = None) -> None:  # fmt: skip
        e = o.entity
        qty = o.terms[0]
        status = status or e["ordStatus"]
        r: dict[str, Any] = {
            "id": self._id(), "commandId": e["id"], "name": "Order", "accountId": e["accountId"],
            "contractId": e["contractId"], "timestamp": stamp, "tradeDate": e.get("tradeDate"),
            "orderId": e["id"], "execType": exec_type, "ordStatus": status,
            "action": e["action"], "cumQty": o.filled, "avgPx": o.avg_px,
            "orderQty": qty, "leavesQty": max(qty - o.filled, 0) if status in
            ("Working", "Suspended") else 0,
        }  # fmt: skip
        if exec_type == "New":  # as it was when it arrived
            r["cumQty"], r["avgPx"], r["leavesQty"] = 0, None, qty
        if exec_type == "Trade" and o.last_fill is not None:
            r["lastQty"], r["lastPx"] = o.last_fill
        if exec_type == "Rejected" and o.text:
            r["rejectReason"], r["text"] = "ExchangeRejected", o.text
        self.reports.append(r)

    def all_versions(self) -> list[dict[str, Any]]:
        return [v for vs in self.versions.values() for v in vs]

    def diff(self, now: dict[tuple[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
        """`props` events turning the last published entities into `now`, oldest type first."""
        events = []
        for key, entity in now.items():
            old = self.published.get(key)
            if old is not entity and old != entity:  # fills and reports: the same object
                kind = "Created" if old is None else "Updated"
                events.append({"entityType": key[0], "eventType": kind, "entity": entity})
        for key in self.published.keys() - now.keys():
            events.append({"entityType": key[0], "eventType": "Deleted",
                           "entity": self.published[key]})  # fmt: skip
        events.sort(key=lambda ev: _RANK[ev["entityType"]])
        self.published = now
        return [{"e": "props", "d": ev} for ev in events]


def keyed(parts: list[tuple[str, list[dict[str, Any]]]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Snapshot parts -> {(entityType, id): entity}."""
    singular = dict(ENTITY_TYPES)
    return {(singular[name], row["id"]): row for name, rows in parts for row in rows}
