"""TradingView alerts: validated strictly, turned into a Proposal and a deterministic order id.

An alert is JSON the user types into TradingView's alert message box, e.g.

    {"passphrase": "...", "ticker": "{{ticker}}", "action": "{{strategy.order.action}}",
     "contracts": {{strategy.order.contracts}}, "price": {{close}}, "time": "{{timenow}}"}

Every field is required and typed; anything unknown, missing or mistyped is refused with
pydantic's per-field message, because a typo in an alert template must never become a
trade. The same alert content always yields the same client order id, so a repeated
delivery can never place a second order.
"""

from __future__ import annotations

import calendar
from datetime import date, datetime
from typing import ClassVar, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

from esml.decision.proposal import Proposal
from esml.execution.orders import client_order_id
from esml.market.calendar import trading_date
from esml.market.contracts import MONTH_CODES, QUARTERLY_MONTHS, front_contract
from esml.market.instruments import Instrument, instrument_for
from esml.market.side import Side

MAX_ALERT_CONTRACTS = 100
"""A sanity bound on one alert; the risk gates enforce the real position limit."""

_QUARTERLY_CODES = frozenset(MONTH_CODES[m] for m in QUARTERLY_MONTHS)


class NothingToExit(ValueError):
    """An exit alert arrived while the account is flat."""


def front_month(root: str, trading_day: date) -> str:
    """The quarterly contract that is front on `trading_day`, in Tradovate's spelling
    ("ESZ5"): it rolls eight days before the third-Friday expiry."""
    return front_contract(root, trading_day).symbol


class _AlertFields(BaseModel):
    """What an alert asks for; shared by the alert as received and as forwarded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: ClassVar[str] = "tradingview"

    ticker: StrictStr = Field(min_length=2, max_length=32)
    action: Literal["buy", "sell", "exit"]
    contracts: StrictInt = Field(gt=0, le=MAX_ALERT_CONTRACTS)
    price: StrictFloat = Field(gt=0, allow_inf_nan=False)
    time: AwareDatetime

    @field_validator("ticker")
    @classmethod
    def _tradable_ticker(cls, v: str) -> str:
        symbol = v.strip().upper().rsplit(":", 1)[-1]  # "CME_MINI:ES1!" -> "ES1!"
        if symbol.endswith("!"):
            if not symbol.endswith("1!"):
                raise ValueError(
                    f"{v!r} is not the front month: only the continuous '1!' contract trades"
                )
            instrument_for(symbol[:-2])
            return symbol
        inst = instrument_for(symbol)  # raises ValueError naming the known roots
        if symbol == inst.root:
            raise ValueError(
                f"{v!r} names no contract: use '{inst.root}1!' or e.g. '{inst.root}Z5'"
            )
        if symbol[len(inst.root)] not in _QUARTERLY_CODES:
            raise ValueError(f"{v!r}: {inst.root} trades only the H, M, U and Z months")
        return symbol

    @field_validator("time", mode="before")
    @classmethod
    def _iso_text(cls, v: object) -> object:
        if not isinstance(v, str | datetime):
            raise ValueError("time must be an ISO-8601 string such as 2025-03-14T14:30:05Z")
        return v

    @property
    def instrument(self) -> Instrument:
        return instrument_for(self.root)

    @property
    def root(self) -> str:
        if self.ticker.endswith("1!"):
            return self.ticker[:-2]
        return instrument_for(self.ticker).root

    def contract_symbol(self) -> str:
        """The contract to order, as Tradovate names it: "ES1!" resolves to the front month
        on the alert's CME trading day; "ESH2025" becomes "ESH5"."""
        if self.ticker.endswith("1!"):
            return front_month(self.root, trading_date(self.time))
        month_code, year = self.ticker[len(self.root)], self.ticker[len(self.root) + 1 :]
        return f"{self.root}{month_code}{year[-1]}"

    def client_order_id(self) -> str:
        """Deterministic from everything the alert asks for, never from when it arrived."""
        return client_order_id(
            self.source,
            self.contract_symbol(),
            self.action,
            self.contracts,
            repr(self.price),
            self.time.isoformat(),
        )

    @property
    def ts_ns(self) -> int:
        seconds = calendar.timegm(self.time.utctimetuple())
        return seconds * 1_000_000_000 + self.time.microsecond * 1_000

    def to_proposal(self, position: int) -> Proposal:
        """The wish to trade, given the account's signed position (used by exits only:
        an exit closes the whole position whatever `contracts` says)."""
        if self.action == "exit":
            if position == 0:
                raise NothingToExit(f"exit alert for {self.ticker} but the account is flat")
            return Proposal(
                symbol=self.contract_symbol(),
                side=Side.of_position(-position),
                qty=abs(position),
                source=self.source,
                ts_ns=self.ts_ns,
                is_exit=True,
            )
        return Proposal(
            symbol=self.contract_symbol(),
            side=Side.BUY if self.action == "buy" else Side.SELL,
            qty=self.contracts,
            source=self.source,
            ts_ns=self.ts_ns,
        )


class AlertOrder(_AlertFields):
    """An authenticated alert without its passphrase: what is de-duplicated and forwarded."""


class TradingViewAlert(_AlertFields):
    """An alert as TradingView posts it."""

    passphrase: SecretStr = Field(min_length=1, max_length=256)

    def order(self) -> AlertOrder:
        return AlertOrder.model_validate(self.model_dump(exclude={"passphrase"}))


def parse_alert(body: str | bytes) -> TradingViewAlert:
    """Raises pydantic.ValidationError for bad JSON and for bad fields alike."""
    return TradingViewAlert.model_validate_json(body)
