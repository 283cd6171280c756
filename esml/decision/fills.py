"""Broker fills into the shared account state, each exactly once, whoever sees it first.

API (used by the router Lambda and by the tick engine alike):

    ledger = FillLedger(AccountStore(risk_state_table), fills_table, risk_config)
    ledger.apply(account, fill) -> bool        # True: applied now; False: it already was
    ledger.apply_all(account, fills) -> list[Fill]   # the ones applied by this call
    book_fill(state, fill, risk_config)        # the pure bookkeeping, on a SharedAccount

`apply` is one DynamoDB TransactWriteItems: the fill's row in the fills table (put only
if its `fill_id` is new, in the journal's format, so `DynamoDBJournal.fills()` reads it)
and the account item (put only over the version it was computed from). Either both are
written or neither: a fill can be neither lost nor counted twice, and two processes
racing on the same fill leave one row and one change of the account.

What a fill changes (`book_fill`): its contract's position and average price; the open
round trip's P&L (every commission, and the price P&L of each closing fill); when the
contract goes flat (or through flat) the round trip is closed into the contract's and
the account's realised P&L, the loss streak and the drawdown breaker
(`protections.record_round_trip`); and the reservation of the order it belongs to
(matched by client id) shrinks by the filled quantity, so a filled entry stops being
"open" and a bracket leg's fill frees the position for the next entry; the order is
noted as unsettled, so the next sync brings its record in the orders table level.

Where fills come from: Tradovate's fill list (`/fill/list`), read by the router before
every decision and after every order (`esml.decision.broker_sync.sync_account`), so a
bracket leg that filled at the exchange is counted before the next alert is decided;
and, when the tick engine runs, its user socket, through this same `apply`. Fills are
keyed by Tradovate's fill id, so both paths may see the same fill.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from esml.config import RiskConfig
from esml.decision.account_store import AccountStore
from esml.decision.proposal import Book, SharedAccount
from esml.decision.protections import record_round_trip
from esml.execution.orders import Fill
from esml.journal.dynamodb import _fill_item as fill_row  # the journal's own row format
from esml.market.instruments import instrument_for


def book_fill(state: SharedAccount, fill: Fill, risk: RiskConfig) -> None:
    """Apply one fill to `state` (in memory; `FillLedger.apply` stores it once)."""
    inst = instrument_for(fill.symbol)
    book = state.books.setdefault(fill.symbol, Book())
    signed = fill.qty * fill.side.sign
    book.trip_pnl -= fill.commission
    if book.position == 0 or (book.position > 0) == (signed > 0):
        held = abs(book.position)
        book.avg_price = (book.avg_price * held + fill.price * fill.qty) / (held + fill.qty)
        book.position += signed
    else:
        closing = min(fill.qty, abs(book.position))
        direction = 1 if book.position > 0 else -1
        book.trip_pnl += inst.pnl(book.avg_price, fill.price, closing * direction)
        book.position += signed
        if book.position == 0 or (book.position > 0) != (direction > 0):
            record_round_trip(state.risk, book.trip_pnl, fill.ts_ns, risk)
            book.realized_pnl += book.trip_pnl
            book.trip_pnl = 0.0
            book.avg_price = fill.price if book.position != 0 else 0.0
    state.unsettle(fill.client_id)
    reservation = state.reservations.get(fill.client_id)
    if reservation is not None and reservation.signed_qty * signed > 0:
        left = abs(reservation.signed_qty) - fill.qty
        if left <= 0:
            del state.reservations[fill.client_id]
        else:
            reservation.signed_qty = left * fill.side.sign


class FillLedger:
    """Fills into the account item and the fills table, atomically and once each."""

    def __init__(self, store: AccountStore, fills_table: Any, risk: RiskConfig) -> None:
        self.store = store
        self._fills = fills_table
        self._risk = risk
        client = store.table.meta.client  # a resource's client: plain Python values
        self._client = client
        self._cancelled = client.exceptions.TransactionCanceledException

    def apply(self, account: str, fill: Fill) -> bool:
        """True when this call applied `fill`; False when it had been applied before."""
        row = fill_row(fill)  # validates the fill before anything is read or written
        for _ in range(self.store.max_attempts):
            state = self.store.load(account)
            expected = state.risk.version
            book_fill(state, fill, self._risk)
            state.risk.version = expected + 1
            put = AccountStore.conditional_put(account, state, expected)
            try:
                self._client.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": self._fills.name,
                                "Item": row,
                                "ConditionExpression": "attribute_not_exists(fill_id)",
                            }
                        },
                        {"Put": {"TableName": self.store.table.name, **put}},
                    ]
                )
            except self._cancelled as e:
                codes = [r.get("Code") for r in e.response.get("CancellationReasons", [])]
                if codes and codes[0] == "ConditionalCheckFailed":
                    return False  # the fill's row exists: applied before
                continue  # the account changed meanwhile: book it on the fresh state
            return True
        raise RuntimeError(
            f"fill {fill.fill_id}: account {account!r} kept changing; nothing was written"
        )

    def apply_all(self, account: str, fills: Iterable[Fill]) -> list[Fill]:
        """Apply, oldest first, the fills not applied yet; returns those applied now."""
        todo = sorted(fills, key=lambda f: (f.ts_ns, f.fill_id))
        seen = self.recorded({f.fill_id for f in todo})
        return [f for f in todo if f.fill_id not in seen and self.apply(account, f)]

    def recorded(self, fill_ids: set[str]) -> set[str]:
        """Which of these fill ids have a row already (batched reads, 100 keys each)."""
        found: set[str] = set()
        ids = sorted(fill_ids)
        for start in range(0, len(ids), 100):
            request = {
                self._fills.name: {
                    "Keys": [{"fill_id": i} for i in ids[start : start + 100]],
                    "ConsistentRead": True,
                    "ProjectionExpression": "fill_id",
                }
            }
            while request:
                answer = self._client.batch_get_item(RequestItems=request)
                found.update(str(i["fill_id"]) for i in answer["Responses"][self._fills.name])
                request = answer.get("UnprocessedKeys") or {}
        return found
