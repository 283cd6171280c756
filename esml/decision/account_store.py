"""The shared account state in DynamoDB (one item per account), changed only under an
optimistic lock.

Several writers may act at once: risk Lambdas deciding alerts, the router applying fills,
the tick engine. Each reads the item with its `version`, changes a copy, and writes back
only if nobody wrote in between; a lost race is re-decided on the fresh state, so two
approvals can never both count against a limit that only one of them fits in.
`esml.decision.fills` writes the same item in one transaction with the fill's row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from esml.decision.proposal import (
    AccountState,
    Book,
    Reservation,
    ReservationStatus,
    SharedAccount,
    TradingState,
)
from esml.market.calendar import trading_date

T = TypeVar("T")


class ConcurrentUpdateError(RuntimeError):
    """The account item kept changing under us; nothing was written."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AccountStore:
    """SharedAccount items in the risk state table (partition key `account`)."""

    def __init__(
        self,
        table: Any,
        clock: Callable[[], datetime] = _utc_now,
        max_attempts: int = 8,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.table = table
        # the table's own client names the exception: no botocore import, so the alert
        # model (which needs trading_date) stays importable without the AWS SDK
        self._lost_race = table.meta.client.exceptions.ConditionalCheckFailedException
        self.clock = clock
        self.max_attempts = max_attempts

    def now_ns(self) -> int:
        """The server's clock: every time gate and the cooldown measure from it."""
        now = self.clock()
        return int(now.timestamp()) * 1_000_000_000 + now.microsecond * 1_000

    def trading_day(self) -> str:
        return trading_date(self.clock()).isoformat()

    def load(self, account: str) -> SharedAccount:
        """The account rolled to today's trading day; created flat when absent."""
        item = self.table.get_item(Key={"account": account}, ConsistentRead=True).get("Item")
        if item is None:
            fresh = SharedAccount(AccountState(trading_day=self.trading_day()))
            try:
                self.table.put_item(
                    Item=to_item(account, fresh),
                    ConditionExpression="attribute_not_exists(account)",
                )
            except self._lost_race:
                return self.load(account)  # another writer created it first
            return fresh
        state = from_item(item)
        state.roll_to(self.trading_day())
        return state

    def update(self, account: str, change: Callable[[SharedAccount], T]) -> tuple[SharedAccount, T]:
        """Apply `change` to a fresh copy and write it back if nobody wrote meanwhile.

        `change` may run several times (once per attempt), so it must only mutate the state
        it is given. When it leaves the state as loaded nothing is written. Returns the state
        as stored and what `change` returned on the attempt that won.
        """
        for _ in range(self.max_attempts):
            state = self.load(account)
            stored_version = state.risk.version
            before = dataclasses.asdict(state)
            result = change(state)
            if dataclasses.asdict(state) == before:
                return state, result
            state.risk.version = stored_version + 1
            try:
                self.table.put_item(**self.conditional_put(account, state, stored_version))
            except self._lost_race:
                continue
            return state, result
        raise ConcurrentUpdateError(
            f"account {account!r} changed under {self.max_attempts} attempts in a row; "
            "nothing was written"
        )

    @staticmethod
    def conditional_put(account: str, state: SharedAccount, expected: int) -> dict[str, Any]:
        """put_item arguments writing `state` only over version `expected` (or a missing
        item when `expected` is 0); also the Put of a transaction."""
        return {
            "Item": to_item(account, state),
            "ConditionExpression": "attribute_not_exists(account) OR #v = :expected",
            "ExpressionAttributeNames": {"#v": "version"},
            "ExpressionAttributeValues": {":expected": expected},
        }


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def to_item(account: str, state: SharedAccount) -> dict[str, Any]:
    s = state.risk
    return {
        "account": account,
        "trading_day": s.trading_day,
        "realized_pnl": _dec(s.realized_pnl),
        "state": s.state.value,
        "version": s.version,
        "peak_pnl": _dec(s.peak_pnl),
        "loss_streak": s.loss_streak,
        "last_entry_ns": s.last_entry_ns,
        "segment": s.segment,
        "segment_pnl": _dec(s.segment_pnl),
        "halt_reason": s.halt_reason,
        "books": {
            symbol: {
                "position": b.position,
                "avg_price": _dec(b.avg_price),
                "realized_pnl": _dec(b.realized_pnl),
                "trip_pnl": _dec(b.trip_pnl),
            }
            for symbol, b in state.books.items()
        },
        "unsettled": list(state.unsettled),
        "reservations": {
            cid: {
                "symbol": r.symbol,
                "signed_qty": r.signed_qty,
                "qty": r.qty,
                "is_exit": r.is_exit,
                "status": r.status.value,
                "ts_ns": r.ts_ns,
                "prior_entry_ns": r.prior_entry_ns,
                "cancel_at_ns": r.cancel_at_ns,
            }
            for cid, r in state.reservations.items()
        },
    }


def from_item(item: dict[str, Any]) -> SharedAccount:
    risk = AccountState(
        trading_day=str(item["trading_day"]),
        realized_pnl=float(item["realized_pnl"]),
        state=TradingState(item["state"]),
        version=int(item["version"]),
        peak_pnl=float(item.get("peak_pnl", 0)),  # items written before these fields existed
        loss_streak=int(item.get("loss_streak", 0)),
        last_entry_ns=int(item.get("last_entry_ns", 0)),
        segment=str(item.get("segment", "")),
        segment_pnl=float(item.get("segment_pnl", 0)),
        halt_reason=str(item.get("halt_reason", "")),
    )
    books = {
        str(symbol): Book(
            position=int(b["position"]),
            avg_price=float(b["avg_price"]),
            realized_pnl=float(b["realized_pnl"]),
            trip_pnl=float(b["trip_pnl"]),
        )
        for symbol, b in item.get("books", {}).items()
    }
    reservations = {
        str(cid): Reservation(
            client_id=str(cid),
            symbol=str(r["symbol"]),
            signed_qty=int(r["signed_qty"]),
            qty=int(r["qty"]),
            is_exit=bool(r["is_exit"]),
            status=ReservationStatus(r["status"]),
            ts_ns=int(r["ts_ns"]),
            prior_entry_ns=int(r.get("prior_entry_ns", 0)),
            cancel_at_ns=int(r.get("cancel_at_ns", 0)),
        )
        for cid, r in item.get("reservations", {}).items()
    }
    unsettled = [str(c) for c in item.get("unsettled", [])]
    return SharedAccount(risk, books, reservations, unsettled)
