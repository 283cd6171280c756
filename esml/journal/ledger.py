"""The tick engine's journal on AWS: the DynamoDB journal, with every fill written through
the shared account's ledger (`esml.decision.fills.FillLedger`).

A fill's row and the account item change in one transaction, keyed by the fill id, so a
fill the router already booked (it reads the same fills) is neither written nor counted
again, and a bracket leg that fills frees the position for the next entry, whoever's.
"""

from __future__ import annotations

from esml.decision.fills import FillLedger
from esml.execution.orders import Fill, Order
from esml.journal.base import DecisionRecord, SignalRecord
from esml.journal.dynamodb import DynamoDBJournal


class LedgerJournal:
    """`esml.journal.base.Journal`: orders, signals and decisions as `DynamoDBJournal`
    writes them; fills through `ledger` into `account`."""

    def __init__(self, journal: DynamoDBJournal, ledger: FillLedger, account: str) -> None:
        self.journal = journal
        self.ledger = ledger
        self.account = account

    def record_fill(self, f: Fill) -> bool:
        return self.ledger.apply(self.account, f)

    def record_order(self, o: Order) -> None:
        self.journal.record_order(o)

    def record_signal(self, s: SignalRecord) -> None:
        self.journal.record_signal(s)

    def record_decision(self, d: DecisionRecord) -> None:
        self.journal.record_decision(d)

    def orders(self) -> list[Order]:
        return self.journal.orders()

    def fills(self) -> list[Fill]:
        return self.journal.fills()

    def decisions(self) -> list[DecisionRecord]:
        return self.journal.decisions()

    def signals(self) -> list[SignalRecord]:
        return self.journal.signals()
