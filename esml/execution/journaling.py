"""What the execution layer writes to the journal besides orders and fills: the reason of
every order transition, and the position plan (bracket parameters, levels, deadlines).

Both go into the journal's append-only decision log with `source = "execution"`: the
orders table keeps only each order's latest state, the log keeps why it got there, and a
restart reads the latest plan back from it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from esml.execution.orders import Side
from esml.execution.ports import DecisionRecord

SOURCE = "execution"
PLAN_PREFIX = "plan "


@dataclass(frozen=True)
class PositionPlan:
    """What a restart needs to carry on managing a position: the intent the orders alone
    do not say. Prices are None until the broker has placed the bracket."""

    entry_id: str  # the client id of the position's first entry
    symbol: str
    side: Side
    stop_ticks: int  # R, in ticks
    target_ticks: int
    trail_ticks: int | None  # a fixed-distance trail instead of the R stages
    opened_ns: int  # the time of the first entry's signal
    exit_due_ns: int | None  # the time exit; None: none
    adds: int = 0
    stop_price: float | None = None  # the position's protective stop level, as it stands
    target_price: float | None = None
    exit_reason: str | None = None  # a limit exit under way since exit_since_ns
    exit_since_ns: int | None = None
    closed: bool = False

    def __post_init__(self) -> None:
        if self.stop_ticks <= 0 or self.target_ticks <= 0:
            raise ValueError("a plan needs positive stop and target tick distances")
        if self.trail_ticks is not None and self.trail_ticks <= 0:
            raise ValueError("a trailing distance must be a positive number of ticks")

    def note(self, ts_ns: int, qty: int, why: str) -> DecisionRecord:
        """The plan as a decision-log record; `why` travels with it."""
        body = asdict(self)
        body["side"] = self.side.value
        body["why"] = why
        return DecisionRecord(
            ts_ns,
            self.symbol,
            SOURCE,
            self.side.value,
            qty,
            True,
            None,
            PLAN_PREFIX + json.dumps(body, sort_keys=True),
        )

    @classmethod
    def from_note(cls, note: DecisionRecord) -> PositionPlan:
        try:
            body = json.loads(note.reason[len(PLAN_PREFIX) :])
            body["side"] = Side(body["side"])
            names = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in body.items() if k in names})
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"unreadable position plan in the journal: {note.reason!r}") from e


def is_plan(note: DecisionRecord) -> bool:
    return note.source == SOURCE and note.reason.startswith(PLAN_PREFIX)


def latest_plan(notes: list[DecisionRecord], symbol: str) -> PositionPlan | None:
    """The last plan journaled for `symbol` (notes come back in the order written)."""
    for note in reversed(notes):
        if note.symbol == symbol and is_plan(note):
            return PositionPlan.from_note(note)
    return None
