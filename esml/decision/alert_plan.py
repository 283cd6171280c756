"""What an alert means for the account as it stands: the position semantics.

Per contract (never one position for the account):

* `buy` / `sell` while flat: enter in that direction, with the alert's bracket.
* `buy` while long (or `sell` while short): refused (`position_open`) unless the alert
  says TradingView's strategy is pyramiding (`market_position` in the same direction):
  then it is an `add`.
* `buy` while short (or `sell` while long): a reversal: cancel the old bracket, close the
  position, open the new one with its own bracket. With `close_only`, or
  `market_position: "flat"`, it only closes; with `market_position` still on the old
  side, it reduces the position by `contracts` (TradingView's partial close).
* `exit` / `close`: cancel every working order of the contract and flatten it.
* `cancel`: cancel the contract's working entry orders (an unfilled limit entry).
* `add`: pyramid in the open position's direction, within the limits.

Where the alert carries TradingView's strategy fields, `contracts` is TradingView's order
size (`{{strategy.order.contracts}}`), which for a reversal includes the contracts that
close the old position; without them, `contracts` is the size of the new position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from esml.decision.alerts import AlertOrder
from esml.decision.proposal import SharedAccount
from esml.market.side import Side

PlanKind = Literal["enter", "add", "reverse", "close", "reduce", "cancel"]


class NothingToDo(ValueError):
    """The alert asks for nothing the account can do; `code` says why, stably."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class EntryLeg:
    """One bracketed entry order: the whole entry, or one target's share of it."""

    client_id: str
    qty: int
    stop_ticks: int  # where the stop starts
    target_ticks: int
    trail_ticks: int | None = None  # the stop trails the market at this distance


@dataclass(frozen=True)
class Plan:
    kind: PlanKind
    symbol: str
    side: Side  # of the entry; for a pure close, of the closing order
    close_qty: int = 0  # contracts closed first, by a market order
    entries: tuple[EntryLeg, ...] = ()
    cancel_entries: bool = False  # cancel working entry orders (and nothing else)

    @property
    def entry_qty(self) -> int:
        return sum(leg.qty for leg in self.entries)


def close_client_id(client_id: str) -> str:
    """The market order that closes a position for alert `client_id`."""
    return f"{client_id}-close"


def entry_client_ids(client_id: str, n: int, breakeven: bool) -> list[str]:
    """One entry: the alert's id; several targets: one OSO per target, `-tp1`, `-tp2`...,
    or `-be1`, `-be2`... when the stops move to break-even after the first target fills
    (the id says so, so whoever applies that fill knows without another record)."""
    tag = "be" if breakeven else "tp"
    return [client_id] if n == 1 else [f"{client_id}-{tag}{i}" for i in range(1, n + 1)]


def plan_alert(alert: AlertOrder, state: SharedAccount, stop_ticks: int, target_ticks: int) -> Plan:
    """The orders `alert` asks for given `state`; raises NothingToDo or ValueError."""
    symbol = alert.contract_symbol()
    held = state.position(symbol)
    cid = alert.client_order_id()
    if alert.action in ("exit", "close"):
        if held == 0:
            raise NothingToDo("nothing_to_exit", f"{symbol} is flat")
        return Plan("close", symbol, Side.of_position(-held), abs(held), cancel_entries=True)
    if alert.action == "cancel":
        return Plan("cancel", symbol, Side.of_position(-held or 1), cancel_entries=True)
    qty = alert.contracts or 0
    if alert.action == "add":
        if held == 0:
            raise NothingToDo("nothing_to_add", f"{symbol} is flat: nothing to add to")
        side = Side.of_position(held)
    else:
        side = Side.BUY if alert.action == "buy" else Side.SELL
    said = alert.market_position
    same = held * side.sign > 0
    against = held * side.sign < 0
    if same and alert.action != "add" and said != side_word(side):
        raise NothingToDo(
            "position_open",
            f"{symbol} is already {side_word(side)} {abs(held)}: use add to pyramid",
        )
    if against and (alert.close_only or said in ("flat", side_word(side.opposite))):
        closing = min(abs(held), qty) if said == side_word(side.opposite) else abs(held)
        kind: PlanKind = "reduce" if closing < abs(held) else "close"
        return Plan(kind, symbol, side, closing, cancel_entries=kind == "close")
    if not against and alert.close_only:
        raise NothingToDo("nothing_to_exit", f"close_only alert but {symbol} holds {held:+d}")
    close_qty = abs(held) if against else 0
    new_qty = qty - close_qty if (against and said is not None) else qty
    if new_qty <= 0:
        return Plan("close", symbol, side, close_qty, cancel_entries=True)
    shares = alert.model_copy(update={"contracts": new_qty}).bracket_ticks(
        side, stop_ticks, target_ticks
    )
    if sum(q for q, _, _ in shares) != new_qty:
        raise NothingToDo(
            "targets_mismatch",
            f"targets' contracts must add up to the new position's size, {new_qty}",
        )
    ids = entry_client_ids(cid, len(shares), alert.breakeven_after_tp1)
    trail = alert.trail_ticks(side)
    legs = tuple(EntryLeg(i, q, s, t, trail) for i, (q, s, t) in zip(ids, shares, strict=True))
    kind = "reverse" if against else ("add" if same else "enter")
    return Plan(kind, symbol, side, close_qty, legs, cancel_entries=against)


def side_word(side: Side) -> str:
    return "long" if side is Side.BUY else "short"
