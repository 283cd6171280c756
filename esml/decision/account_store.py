"""The shared risk state of an account in DynamoDB, changed only under an optimistic lock.

Several risk Lambdas (webhook alerts, the tick engine's signals) may decide at once; each
reads the item with its `version`, decides, and writes back only if nobody wrote in
between. A lost race is re-decided on the fresh state, so two approvals can never both
count against a limit that only one of them fits in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from esml.decision.proposal import AccountState, TradingState
from esml.market.calendar import trading_date

T = TypeVar("T")


class ConcurrentUpdateError(RuntimeError):
    """The account item kept changing under us; nothing was written."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AccountStore:
    """AccountState items in the risk state table (partition key `account`)."""

    def __init__(
        self,
        table: Any,
        clock: Callable[[], datetime] = _utc_now,
        max_attempts: int = 5,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._table = table
        # the table's own client names the exception: no botocore import, so the alert
        # model (which needs trading_date) stays importable without the AWS SDK
        self._lost_race = table.meta.client.exceptions.ConditionalCheckFailedException
        self._clock = clock
        self._max_attempts = max_attempts

    def trading_day(self) -> str:
        return trading_date(self._clock()).isoformat()

    def load(self, account: str) -> AccountState:
        """The account's state rolled to today's trading day; created flat when absent."""
        item = self._table.get_item(Key={"account": account}, ConsistentRead=True).get("Item")
        if item is None:
            fresh = AccountState(trading_day=self.trading_day())
            try:
                self._table.put_item(
                    Item=_to_item(account, fresh),
                    ConditionExpression="attribute_not_exists(account)",
                )
            except self._lost_race:
                return self.load(account)  # another writer created it first
            return fresh
        state = _from_item(item)
        state.roll_to(self.trading_day())
        return state

    def update(self, account: str, change: Callable[[AccountState], T]) -> tuple[AccountState, T]:
        """Apply `change` to a fresh copy and write it back if nobody wrote meanwhile.

        `change` may run several times (once per attempt), so it must only mutate the state
        it is given. When it leaves the state as loaded nothing is written. Returns the state
        as stored and what `change` returned on the attempt that won.
        """
        for _ in range(self._max_attempts):
            state = self.load(account)
            stored_version = state.version
            before = dataclasses.asdict(state)
            result = change(state)
            if dataclasses.asdict(state) == before:
                return state, result
            state.version = stored_version + 1
            try:
                self._table.put_item(
                    Item=_to_item(account, state),
                    ConditionExpression="#v = :expected",
                    ExpressionAttributeNames={"#v": "version"},
                    ExpressionAttributeValues={":expected": stored_version},
                )
            except self._lost_race:
                continue
            return state, result
        raise ConcurrentUpdateError(
            f"account {account!r} changed under {self._max_attempts} attempts in a row; "
            "nothing was written"
        )


def _to_item(account: str, s: AccountState) -> dict[str, Any]:
    return {
        "account": account,
        "trading_day": s.trading_day,
        "position": s.position,
        "realized_pnl": Decimal(str(s.realized_pnl)),
        "state": s.state.value,
        "version": s.version,
        "peak_pnl": Decimal(str(s.peak_pnl)),
        "loss_streak": s.loss_streak,
        "last_entry_ns": s.last_entry_ns,
        "segment": s.segment,
        "segment_pnl": Decimal(str(s.segment_pnl)),
        "halt_reason": s.halt_reason,
    }


def _from_item(item: dict[str, Any]) -> AccountState:
    return AccountState(
        trading_day=str(item["trading_day"]),
        position=int(item["position"]),
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
