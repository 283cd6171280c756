"""The user's trading state as Tradovate's user socket tells it: a `user/syncrequest`
snapshot, then `props` events, and a fresh snapshot after every reconnect.

`UserSync` keeps the raw entities (orders, order versions, fills, positions, cash
balances, execution reports, commands, contracts, accounts) by id. It does no I/O and
knows nothing of esml's Order: the broker turns what `drain()` hands out into the Order
and Fill updates the position manager consumes. What it guarantees:

- every active fill is handed out exactly once, whether it arrived as an event, in the
  first snapshot, or only in a resync snapshot after events were lost with a socket;
- every order whose entity, latest version or fills changed is handed out (again) as
  dirty, so the broker can report its new state; a resync marks the orders whose
  snapshot differs from what was known, which is how changes missed while the socket was
  down come back;
- a final order status (Filled, Canceled, Rejected, Expired) is never undone by an older
  copy of the order arriving later.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from esml.broker.tradovate.counters import Counters

FINAL_STATUSES = frozenset({"Filled", "Canceled", "Rejected", "Expired", "Completed"})

# snapshot list names -> props entityType
_ENTITY_OF_LIST = {
    "accounts": "account",
    "orders": "order",
    "orderVersions": "orderVersion",
    "fills": "fill",
    "positions": "position",
    "cashBalances": "cashBalance",
    "executionReports": "executionReport",
    "commands": "command",
    "contracts": "contract",
}
ENTITY_TYPES = frozenset(_ENTITY_OF_LIST.values())


@dataclass
class Drained:
    """What changed since the last drain: raw order entities (with their latest version
    and fills) and the fills not handed out before."""

    orders: list[OrderSnapshot]
    fills: list[dict[str, Any]]


@dataclass
class OrderSnapshot:
    order: dict[str, Any]
    version: dict[str, Any] | None
    fills: list[dict[str, Any]]
    client_id: str | None  # from the order's New command, when Tradovate sent it


@dataclass
class _State:
    entities: dict[str, dict[int, dict[str, Any]]] = field(
        default_factory=lambda: {t: {} for t in ENTITY_TYPES}
    )


class UserSync:
    """Thread-safe: the socket's loop applies, the broker's thread drains."""

    def __init__(self, counters: Counters | None = None) -> None:
        self.counters = counters or Counters()
        self._lock = threading.Lock()
        self._news = threading.Condition(self._lock)  # something to drain
        self._state = _State()
        self._dirty: set[int] = set()
        self._handed_fills: set[int] = set()
        self._pending_fills: list[int] = []
        self.syncs = 0

    # -- what the socket delivers ---------------------------------------------------------

    def begin_sync(self) -> None:
        """A `user/syncrequest` is about to be sent (the first, or a resync)."""
        with self._lock:
            self.syncs += 1
            if self.syncs > 1:
                self.counters.add("ws_resyncs")

    def apply_snapshot(self, data: Any) -> None:
        """A `user/syncrequest` answer (or one part of a split answer): lists of entities
        by their plural name. In a resync, what differs from the known state is marked
        and counted as recovered."""
        if not isinstance(data, dict):
            raise ValueError(f"a sync snapshot is an object of entity lists, not {data!r:.200}")
        with self._lock:
            resync = self.syncs > 1
            dirty_before, fills_before = len(self._dirty), len(self._pending_fills)
            for name, rows in data.items():
                entity_type = _ENTITY_OF_LIST.get(name)
                if entity_type is None or not isinstance(rows, list):
                    continue
                for row in rows:
                    self._upsert(entity_type, row)
            if resync:
                self.counters.add("ws_orders_recovered_by_resync", len(self._dirty) - dirty_before)
                self.counters.add(
                    "ws_fills_recovered_by_resync", len(self._pending_fills) - fills_before
                )

    def apply_props(self, data: Any) -> None:
        """One `props` event: {entityType, eventType: Created|Updated|Deleted, entity}."""
        if not isinstance(data, dict) or not isinstance(data.get("entity"), dict):
            raise ValueError(f"a props event carries an entity: {data!r:.200}")
        entity_type = str(data.get("entityType"))
        if entity_type not in ENTITY_TYPES:
            return
        with self._lock:
            if data.get("eventType") == "Deleted":
                self._delete(entity_type, data["entity"])
            else:
                self._upsert(entity_type, data["entity"])

    # -- what the broker takes ------------------------------------------------------------------

    def wait(self, timeout_s: float) -> bool:
        """Block until there is something to drain (False after `timeout_s`): how a caller
        waits for the socket instead of polling it."""
        with self._news:
            return self._news.wait_for(lambda: self._dirty or self._pending_fills, timeout_s)

    def drain(self) -> Drained:
        with self._lock:
            orders = [self._snapshot(oid) for oid in sorted(self._dirty)]
            fills = [self._state.entities["fill"][fid] for fid in self._pending_fills]
            self._handed_fills.update(self._pending_fills)
            self._dirty.clear()
            self._pending_fills.clear()
        return Drained([o for o in orders if o is not None], fills)

    def entities(self, entity_type: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._state.entities[entity_type].values())

    # -- internals (lock held) --------------------------------------------------------------

    def _upsert(self, entity_type: str, row: dict[str, Any]) -> None:
        if not isinstance(row, dict) or not isinstance(row.get("id"), int):
            return
        table = self._state.entities[entity_type]
        known = table.get(row["id"])
        if (
            entity_type == "order"
            and known is not None
            and known.get("ordStatus") in FINAL_STATUSES
            and row.get("ordStatus") not in FINAL_STATUSES
        ):
            return  # an older copy: a final status is never undone
        if known == row:
            return
        table[row["id"]] = dict(row)
        self._news.notify_all()
        if entity_type == "order":
            self._dirty.add(row["id"])
        elif entity_type in ("orderVersion", "executionReport", "command") and isinstance(
            row.get("orderId"), int
        ):
            self._dirty.add(row["orderId"])
        elif entity_type == "fill":
            self._new_fill(row)

    def _new_fill(self, row: dict[str, Any]) -> None:
        fid = row["id"]
        if isinstance(row.get("orderId"), int):
            self._dirty.add(row["orderId"])
        fresh = fid not in self._handed_fills and fid not in self._pending_fills
        if row.get("active", True) and fresh:
            self._pending_fills.append(fid)

    def _delete(self, entity_type: str, row: dict[str, Any]) -> None:
        removed = self._state.entities[entity_type].pop(row.get("id"), None)  # type: ignore[arg-type]
        if removed is not None and isinstance(removed.get("orderId"), int):
            self._dirty.add(removed["orderId"])

    def _snapshot(self, order_id: int) -> OrderSnapshot | None:
        e = self._state.entities
        order = e["order"].get(order_id)
        if order is None:
            return None
        versions = [v for v in e["orderVersion"].values() if v.get("orderId") == order_id]
        fills = sorted(
            (
                f
                for f in e["fill"].values()
                if f.get("orderId") == order_id and f.get("active", True)
            ),
            key=lambda f: f["id"],
        )
        client_id = next(
            (
                str(c["clOrdId"])
                for c in e["command"].values()
                if c.get("orderId") == order_id
                and c.get("commandType") == "New"
                and c.get("clOrdId")
            ),
            None,
        )
        return OrderSnapshot(
            dict(order),
            dict(max(versions, key=lambda v: v["id"])) if versions else None,
            [dict(f) for f in fills],
            client_id,
        )


def is_snapshot_part(data: Any) -> bool:
    """Whether an answer's data is (part of) a sync snapshot: an object of entity lists."""
    return isinstance(data, dict) and any(k in _ENTITY_OF_LIST for k in data)
