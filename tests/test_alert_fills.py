"""Fills into the shared account state: per contract, exactly once, reservations consumed.

SYNTHETIC fills at realistic ES prices; DynamoDB through moto (transactions included).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from esml.config import RiskConfig
from esml.decision.account_store import AccountStore
from esml.decision.fills import FillLedger, book_fill
from esml.decision.proposal import (
    AccountState,
    Reservation,
    ReservationStatus,
    SharedAccount,
    TradingState,
)
from esml.execution.orders import Fill, OrderRole
from esml.journal.dynamodb import DynamoDBJournal
from esml.market.side import Side
from tests.aws_fixtures import FILLS_TABLE, RISK_STATE_TABLE, create_tables

RISK = RiskConfig()
FRIDAY = datetime(2025, 3, 7, 15, 30, 5, tzinfo=UTC)


def fill(fid: str, symbol: str, side: Side, qty: int, price: float, cid: str = "",
         role: OrderRole = OrderRole.ENTRY, commission: float = 2.25) -> Fill:  # fmt: skip
    return Fill(fid, f"o{fid}", cid, symbol, side, qty, price, commission * qty,
                1_741_361_405_000_000_000 + int(fid) * 1_000_000, role)  # fmt: skip


def reserve(state: SharedAccount, cid: str, symbol: str, signed: int, exit_: bool = False) -> None:
    state.reservations[cid] = Reservation(
        cid, symbol, signed, abs(signed), exit_, ReservationStatus.PLACED, 0
    )


def test_positions_and_pnl_are_kept_per_contract() -> None:
    state = SharedAccount(AccountState("2025-03-07"))
    book_fill(state, fill("1", "ESH5", Side.BUY, 2, 5772.25), RISK)
    book_fill(state, fill("2", "MESH5", Side.SELL, 3, 5772.00), RISK)
    book_fill(state, fill("3", "ESH5", Side.BUY, 1, 5773.00), RISK)
    assert (state.position("ESH5"), state.position("MESH5")) == (3, -3)
    assert state.books["ESH5"].avg_price == pytest.approx((2 * 5772.25 + 5773.00) / 3)
    # closing MES at a 2-point loss: 3 x 2 x $5 + 6 commissions
    book_fill(state, fill("4", "MESH5", Side.BUY, 3, 5774.00, role=OrderRole.EXIT), RISK)
    assert state.position("MESH5") == 0 and state.position("ESH5") == 3
    assert state.books["MESH5"].realized_pnl == pytest.approx(-30.0 - 6 * 2.25)
    assert state.books["ESH5"].realized_pnl == 0.0  # ES is still open
    assert state.risk.realized_pnl == pytest.approx(-30.0 - 13.5)
    assert state.risk.loss_streak == 1


def test_a_fill_through_flat_closes_the_trip_and_opens_the_rest() -> None:
    state = SharedAccount(AccountState("2025-03-07"))
    book_fill(state, fill("1", "ESH5", Side.BUY, 1, 5772.25, commission=0), RISK)
    book_fill(state, fill("2", "ESH5", Side.SELL, 3, 5774.25, commission=0), RISK)
    assert state.position("ESH5") == -2 and state.books["ESH5"].avg_price == 5774.25
    assert state.risk.realized_pnl == pytest.approx(100.0)  # 2 points x $50


def test_fills_consume_their_order_s_reservation_and_leg_fills_free_the_position() -> None:
    state = SharedAccount(AccountState("2025-03-07"))
    reserve(state, "esml-a", "ESH5", +2)
    assert state.worst_case("ESH5", Side.BUY) == 2
    book_fill(state, fill("1", "ESH5", Side.BUY, 1, 5772.25, "esml-a"), RISK)
    assert state.reservations["esml-a"].signed_qty == 1 and state.worst_case("ESH5", Side.BUY) == 2
    book_fill(state, fill("2", "ESH5", Side.BUY, 1, 5772.50, "esml-a"), RISK)
    assert "esml-a" not in state.reservations and state.worst_case("ESH5", Side.BUY) == 2
    book_fill(state, fill("3", "ESH5", Side.SELL, 2, 5770.25, "esml-a-stop", OrderRole.STOP),
              RISK)  # fmt: skip
    assert state.worst_case("ESH5", Side.BUY) == 0 and state.position("ESH5") == 0
    assert state.gate_view("ESH5", Side.SELL).position == 0


def test_the_worst_case_counts_orders_that_add_not_those_that_reduce() -> None:
    state = SharedAccount(AccountState("2025-03-07"))
    book_fill(state, fill("1", "ESH5", Side.BUY, 1, 5772.25), RISK)
    reserve(state, "exit", "ESH5", -1, exit_=True)
    reserve(state, "rev", "ESH5", -1)
    assert state.worst_case("ESH5", Side.SELL) == 1  # -1 held, +1 exit, +1 reversal
    assert state.worst_case("ESH5", Side.BUY) == 1  # neither sell fills
    assert state.gate_view("ESH5", Side.SELL).position == -1
    assert state.worst_case("MESH5", Side.BUY) == 0


@pytest.fixture
def ledger(aws: None) -> FillLedger:
    tables = create_tables(RISK_STATE_TABLE, FILLS_TABLE)
    store = AccountStore(tables[RISK_STATE_TABLE], clock=lambda: FRIDAY)
    return FillLedger(store, tables[FILLS_TABLE], RISK)


def test_a_fill_is_applied_once_and_journaled_in_the_journal_s_format(ledger: FillLedger) -> None:
    f = fill("1", "ESH5", Side.BUY, 1, 5772.25, "esml-a")
    assert ledger.apply("primary", f) is True
    assert ledger.apply("primary", f) is False
    assert ledger.apply_all("primary", [f, f]) == []
    state = ledger.store.load("primary")
    assert state.position("ESH5") == 1 and state.risk.version == 1  # created at 0, one fill
    journal = DynamoDBJournal(create_orders_table(), ledger._fills)
    assert journal.fills() == [f]


def create_orders_table() -> Any:
    return create_tables("esml-orders")["esml-orders"]


def test_apply_all_books_each_new_fill_in_time_order(ledger: FillLedger) -> None:
    fills = [fill("2", "ESH5", Side.SELL, 1, 5775.25, "x-target", OrderRole.TARGET),
             fill("1", "ESH5", Side.BUY, 1, 5772.25, "x")]  # fmt: skip
    assert [f.fill_id for f in ledger.apply_all("primary", fills)] == ["1", "2"]
    state = ledger.store.load("primary")
    assert state.position("ESH5") == 0
    assert state.risk.realized_pnl == pytest.approx(150.0 - 4.5)
    assert ledger.recorded({"1", "2", "3"}) == {"1", "2"}


def test_racing_appliers_book_each_fill_once(ledger: FillLedger, atomic_aws: None) -> None:
    """Four threads apply the same 20 fills. Each AWS call is made atomic (`atomic_aws`),
    as DynamoDB applies each transaction atomically and moto under threads does not; the
    version and fill-id conditions must do the rest."""
    fills = [fill(str(i), "ESH5", Side.BUY if i % 2 else Side.SELL, 1, 5772.25 + i * 0.25)
             for i in range(1, 21)]  # fmt: skip
    applied: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for f in fills:
            if ledger.apply("primary", f):
                with lock:
                    applied.append(f.fill_id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(applied, key=int) == [f.fill_id for f in fills]
    state = ledger.store.load("primary")
    assert state.position("ESH5") == 0 and len(ledger.recorded({f.fill_id for f in fills})) == 20


def test_a_losing_day_halts_through_fills(ledger: FillLedger) -> None:
    losing = [fill("1", "ESH5", Side.BUY, 4, 5772.25, commission=0),
              fill("2", "ESH5", Side.SELL, 4, 5762.25, commission=0)]  # fmt: skip
    ledger.apply_all("primary", losing)
    state = ledger.store.load("primary")
    assert state.risk.realized_pnl == -2000.0 and state.risk.state is TradingState.HALTED
