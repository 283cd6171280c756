"""The AWS journal: orders, signals and decisions in the orders table, fills in the fills table.

Key layout (the CDK creates the tables with exactly these partition keys):

* orders table, `client_id` (S): one item per order, keyed by its client id (bracket legs
  have their own, see `esml.broker.tradovate.leg_client_id`), `kind = "order"`. Signals
  and decisions live in the same table under `client_id = "signal#<ts_ns>#<digest>"` and
  `"decision#<ts_ns>#<digest>"` (`kind` says which); the digest is of the whole record,
  so recording the same record twice leaves one item and two different records at the
  same instant both stay.
* fills table, `fill_id` (S): written with a conditional put, so a fill is never doubled.

An order item may carry more attributes than `Order` has (the router adds the account
and the request that caused it); `record_order` updates only the order's own fields.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError

from esml.execution.orders import Fill, Order, OrderRole, OrderStatus, OrderType, Side
from esml.journal.base import DecisionRecord, JournalConflict, SignalRecord

_FINAL = [s.value for s in OrderStatus if s.is_final]


def _is_conditional_failure(e: ClientError) -> bool:
    return e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _number(value: float, what: str) -> Decimal:
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value}")
    return Decimal(str(value))


def _digest(record: SignalRecord | DecisionRecord) -> str:
    text = json.dumps(asdict(record), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _scan(table: Any, kind: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"FilterExpression": Attr("kind").eq(kind), "ConsistentRead": True}
    while True:
        page = table.scan(**kwargs)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class DynamoDBJournal:
    """`esml.journal.base.Journal` over the orders and fills tables (boto3 Table resources)."""

    def __init__(self, orders_table: Any, fills_table: Any) -> None:
        self._orders = orders_table
        self._fills = fills_table

    # -- orders ---------------------------------------------------------------------

    def claim(self, o: Order, **context: str) -> Order | None:
        """Create the order's item unless its client id already has one: None when this
        call created it, else the order recorded before (and nothing is written). This is
        what makes one client id one order, across processes and retries."""
        item = {**_order_item(o), **context}
        try:
            self._orders.put_item(Item=item, ConditionExpression=Attr("client_id").not_exists())
        except ClientError as e:
            if not _is_conditional_failure(e):
                raise
            existing = self.order(o.client_id)
            if existing is None:
                raise JournalConflict(f"{o.client_id} is taken by a non-order item") from None
            return existing
        return None

    def order(self, client_id: str) -> Order | None:
        item = self._orders.get_item(Key={"client_id": client_id}, ConsistentRead=True).get("Item")
        if item is None or item.get("kind") != "order":
            return None
        return _order_from_item(item)

    def record_order(self, o: Order) -> None:
        """Insert, or update the state of, the order with this client id.

        Refuses (JournalConflict) to overwrite a different order under the same client id;
        ignores a stale non-final status arriving after a final one, so a late 'Working'
        can never resurrect a filled or cancelled order.
        """
        item = _order_item(o)
        del item["client_id"]
        names = {f"#{k}": k for k in item}
        values = {f":{k}": v for k, v in item.items()}
        sets = ", ".join(f"#{k} = :{k}" for k in item)
        removes = [k for k in ("price", "parent_id", "oco_id") if k not in item]
        update = f"SET {sets}" + (
            f" REMOVE {', '.join(f'#{k}' for k in removes)}" if removes else ""
        )
        names.update({f"#{k}": k for k in removes})
        condition = (
            "attribute_not_exists(client_id) OR "
            "(#symbol = :symbol AND #side = :side AND #role = :role "
            "AND (#order_id = :blank OR #order_id = :order_id))"
        )
        if not o.status.is_final:
            condition = f"({condition}) AND NOT (#status IN (:f0, :f1, :f2))"
            values.update({f":f{i}": s for i, s in enumerate(_FINAL)})
        values[":blank"] = ""
        try:
            self._orders.update_item(
                Key={"client_id": o.client_id},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as e:
            if not _is_conditional_failure(e):
                raise
            stored = self.order(o.client_id)
            if stored is not None and _same_order(stored, o):
                return  # a stale status after a final one: the final one stands
            raise JournalConflict(
                f"{o.client_id} is recorded as {stored}; refusing to overwrite it with {o}"
            ) from None

    def orders(self) -> list[Order]:
        found = [_order_from_item(i) for i in _scan(self._orders, "order")]
        return sorted(found, key=lambda o: (o.ts_ns, o.client_id))

    # -- fills ----------------------------------------------------------------------

    def record_fill(self, f: Fill) -> bool:
        """True when new, False when this fill was already recorded. A different fill
        under a recorded id raises JournalConflict: one of the two would be lost."""
        item = _fill_item(f)
        try:
            self._fills.put_item(Item=item, ConditionExpression=Attr("fill_id").not_exists())
        except ClientError as e:
            if not _is_conditional_failure(e):
                raise
            stored = self._fills.get_item(Key={"fill_id": f.fill_id}, ConsistentRead=True)
            old = _fill_from_item(stored["Item"])
            if old != _fill_from_item(item):
                raise JournalConflict(
                    f"fill {f.fill_id} is recorded as {old}; refusing {f}"
                ) from None
            return False
        return True

    def fills(self) -> list[Fill]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"ConsistentRead": True}
        while True:
            page = self._fills.scan(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted((_fill_from_item(i) for i in items), key=lambda f: (f.ts_ns, f.fill_id))

    # -- signals and decisions ------------------------------------------------------

    def record_signal(self, s: SignalRecord) -> None:
        self._orders.put_item(
            Item={
                "client_id": f"signal#{s.ts_ns}#{_digest(s)}",
                "kind": "signal",
                "ts_ns": s.ts_ns,
                "symbol": s.symbol,
                "source": s.source,
                "p_down": _number(s.p_down, "p_down"),
                "p_flat": _number(s.p_flat, "p_flat"),
                "p_up": _number(s.p_up, "p_up"),
                "confidence": _number(s.confidence, "confidence"),
                "model": s.model,
            }
        )

    def record_decision(self, d: DecisionRecord) -> None:
        if not d.approved and not d.gate:
            raise ValueError("a rejected decision must name the gate that rejected it")
        item: dict[str, Any] = {
            "client_id": f"decision#{d.ts_ns}#{_digest(d)}",
            "kind": "decision",
            "ts_ns": d.ts_ns,
            "symbol": d.symbol,
            "source": d.source,
            "side": str(d.side),
            "qty": d.qty,
            "approved": d.approved,
            "reason": d.reason,
        }
        if d.gate is not None:
            item["gate"] = d.gate
        self._orders.put_item(Item=item)

    def signals(self) -> list[SignalRecord]:
        rows = sorted(
            _scan(self._orders, "signal"), key=lambda i: (int(i["ts_ns"]), i["client_id"])
        )
        return [
            SignalRecord(
                ts_ns=int(i["ts_ns"]),
                symbol=i["symbol"],
                source=i["source"],
                p_down=float(i["p_down"]),
                p_flat=float(i["p_flat"]),
                p_up=float(i["p_up"]),
                confidence=float(i["confidence"]),
                model=i["model"],
            )
            for i in rows
        ]

    def decisions(self) -> list[DecisionRecord]:
        rows = sorted(
            _scan(self._orders, "decision"), key=lambda i: (int(i["ts_ns"]), i["client_id"])
        )
        return [
            DecisionRecord(
                ts_ns=int(i["ts_ns"]),
                symbol=i["symbol"],
                source=i["source"],
                side=i["side"],
                qty=int(i["qty"]),
                approved=bool(i["approved"]),
                gate=i.get("gate"),
                reason=i["reason"],
            )
            for i in rows
        ]


def _same_order(a: Order, b: Order) -> bool:
    return (a.symbol, a.side, a.role) == (b.symbol, b.side, b.role) and (
        not a.order_id or a.order_id == b.order_id
    )


def _order_item(o: Order) -> dict[str, Any]:
    """Validated before anything is written: a bad order raises here."""
    if o.qty <= 0 or not 0 <= o.filled_qty <= o.qty:
        raise ValueError(f"order {o.client_id}: qty {o.qty}, filled {o.filled_qty} is impossible")
    item: dict[str, Any] = {
        "client_id": o.client_id,
        "kind": "order",
        "order_id": o.order_id,
        "symbol": o.symbol,
        "side": Side(o.side).value,
        "qty": o.qty,
        "order_type": OrderType(o.order_type).value,
        "role": OrderRole(o.role).value,
        "status": OrderStatus(o.status).value,
        "filled_qty": o.filled_qty,
        "avg_fill_price": _number(o.avg_fill_price, "avg_fill_price"),
        "ts_ns": o.ts_ns,
        "reject_reason": o.reject_reason,
    }
    if o.price is not None:
        item["price"] = _number(o.price, "price")
    if o.parent_id is not None:
        item["parent_id"] = o.parent_id
    if o.oco_id is not None:
        item["oco_id"] = o.oco_id
    return item


def _order_from_item(i: dict[str, Any]) -> Order:
    return Order(
        order_id=str(i["order_id"]),
        client_id=str(i["client_id"]),
        symbol=str(i["symbol"]),
        side=Side(i["side"]),
        qty=int(i["qty"]),
        order_type=OrderType(i["order_type"]),
        role=OrderRole(i["role"]),
        price=float(i["price"]) if "price" in i else None,
        status=OrderStatus(i["status"]),
        filled_qty=int(i["filled_qty"]),
        avg_fill_price=float(i["avg_fill_price"]),
        parent_id=i.get("parent_id"),
        oco_id=i.get("oco_id"),
        ts_ns=int(i["ts_ns"]),
        reject_reason=str(i.get("reject_reason", "")),
    )


def _fill_item(f: Fill) -> dict[str, Any]:
    if f.qty <= 0:
        raise ValueError(f"fill {f.fill_id}: quantity must be positive, got {f.qty}")
    if f.commission < 0:
        raise ValueError(f"fill {f.fill_id}: commission cannot be negative ({f.commission})")
    return {
        "fill_id": f.fill_id,
        "order_id": f.order_id,
        "client_id": f.client_id,
        "symbol": f.symbol,
        "side": Side(f.side).value,
        "qty": f.qty,
        "price": _number(f.price, "fill price"),
        "commission": _number(f.commission, "commission"),
        "ts_ns": f.ts_ns,
        "role": OrderRole(f.role).value,
    }


def _fill_from_item(i: dict[str, Any]) -> Fill:
    return Fill(
        fill_id=str(i["fill_id"]),
        order_id=str(i["order_id"]),
        client_id=str(i["client_id"]),
        symbol=str(i["symbol"]),
        side=Side(i["side"]),
        qty=int(i["qty"]),
        price=float(i["price"]),
        commission=float(i["commission"]),
        ts_ns=int(i["ts_ns"]),
        role=OrderRole(i["role"]),
    )
