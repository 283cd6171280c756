"""TradingView alerts: validated strictly, with a deterministic client order id.

An alert is JSON the user types into TradingView's alert message box (docs/alerts.md has
the full language and docs/pine/ a strategy template producing it), e.g.

    {"passphrase": "...", "ticker": "{{ticker}}", "action": "{{strategy.order.action}}",
     "contracts": {{strategy.order.contracts}}, "price": {{close}}, "time": "{{timenow}}",
     "market_position": "{{strategy.market_position}}",
     "stop": {"ticks": 8}, "targets": [{"ticks": 8, "contracts": 1},
     {"ticks": 16, "contracts": 1}], "breakeven_after_tp1": true, "confidence": 0.91}

`trail` makes the protective stop a trailing stop (Tradovate's `TrailingStop`): it
follows the market at that distance, never back. Alone it starts `trail` from the entry
(it replaces the fixed stop); with `stop` it starts at the stop, which must then be no
further from the entry than the trail, and trails once the market has moved far enough.

Every field is typed and anything unknown is refused, because a typo in an alert
template must never become a trade. The same alert content always yields the same
client order id, so a repeated delivery can never place a second order. The alert's
`time` only identifies it and is checked against the server's clock by the webhook;
every time gate measures from the server's clock.
"""

from __future__ import annotations

import calendar
import json
import re
from datetime import date, datetime
from typing import ClassVar, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from esml.execution.orders import client_order_id
from esml.market.calendar import trading_date
from esml.market.contracts import Contract, front_contract, parse_contract
from esml.market.instruments import INSTRUMENTS, Instrument, instrument_for
from esml.market.side import Side

MAX_ALERT_CONTRACTS = 100
"""A sanity bound on one alert; the risk gates enforce the real position limit."""

MAX_TARGETS = 3
MAX_CANCEL_AFTER_S = 24 * 3600

_ROOTS = "|".join(sorted(INSTRUMENTS, key=len, reverse=True))  # MES before ES
_TICKER = re.compile(
    rf"^(?:[A-Z][A-Z0-9_]{{0,19}}:)?(?P<root>{_ROOTS})"
    r"(?:(?P<continuous>1!)|(?P<month>[FGHJKMNQUVXZ])(?P<year>\d{1,2}|20\d\d))$"
)
Number = StrictFloat | StrictInt


def front_month(root: str, trading_day: date) -> str:
    """The quarterly contract that is front on `trading_day`, in Tradovate's spelling
    ("ESZ5"): it rolls eight days before the third-Friday expiry."""
    return front_contract(root, trading_day).symbol


class Distance(BaseModel):
    """A stop or target distance from the entry, in exactly one unit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ticks: StrictInt | None = Field(None, gt=0, le=4000)
    points: Number | None = Field(None, gt=0, le=1000, allow_inf_nan=False)
    price: Number | None = Field(None, gt=0, allow_inf_nan=False)
    percent: Number | None = Field(None, gt=0, le=20, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_unit(self) -> Distance:
        given = [k for k in ("ticks", "points", "price", "percent") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of ticks, points, price or percent")
        return self

    def to_ticks(self, inst: Instrument, side: Side, entry: float, kind: str) -> int:
        """Whole ticks from `entry`; a price must lie on the right side (a stop on the
        losing side, a target on the winning side). Raises ValueError otherwise."""
        if self.ticks is not None:
            return self.ticks
        if self.points is not None:
            distance = float(self.points)
        elif self.percent is not None:
            distance = entry * float(self.percent) / 100
        else:
            assert self.price is not None
            wanted = -1 if kind == "stop" else 1
            distance = (float(self.price) - entry) * side.sign * wanted
            if distance <= 0:
                where = "below" if side.sign * wanted < 0 else "above"
                raise ValueError(f"the {kind} price {self.price} must be {where} {entry}")
        ticks = round(distance / inst.tick_size)
        if ticks < 1:
            raise ValueError(f"the {kind} is less than one tick from the entry")
        return ticks


class Trail(Distance):
    """A trailing stop's distance from the market: ticks, points or a percent of the entry
    (a price is a place, not a distance)."""

    @model_validator(mode="after")
    def _a_distance(self) -> Trail:
        if self.price is not None:
            raise ValueError("a trail is a distance: give ticks, points or percent")
        return self


class Target(Distance):
    """One profit target; `contracts` is required when there are several."""

    contracts: StrictInt | None = Field(None, gt=0, le=MAX_ALERT_CONTRACTS)


Action = Literal["buy", "sell", "exit", "close", "cancel", "add"]
ENTRY_ACTIONS = ("buy", "sell", "add")


class _AlertFields(BaseModel):
    """What an alert asks for; shared by the alert as received and as forwarded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: ClassVar[str] = "tradingview"

    ticker: StrictStr = Field(min_length=2, max_length=40)
    action: Action
    contracts: StrictInt | None = Field(None, gt=0, le=MAX_ALERT_CONTRACTS)
    price: Number = Field(gt=0, le=1_000_000, allow_inf_nan=False)
    time: AwareDatetime
    market_position: Literal["long", "short", "flat"] | None = None
    close_only: StrictBool = False
    order_type: Literal["market", "limit"] = "market"
    limit_price: Number | None = Field(None, gt=0, le=1_000_000, allow_inf_nan=False)
    cancel_after_s: StrictInt | None = Field(None, gt=0, le=MAX_CANCEL_AFTER_S)
    stop: Distance | None = None
    trail: Trail | None = None
    targets: list[Target] | None = Field(None, min_length=1, max_length=MAX_TARGETS)
    breakeven_after_tp1: StrictBool = False
    confidence: Number | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    comment: StrictStr | None = Field(None, max_length=120)

    @field_validator("ticker")
    @classmethod
    def _ticker_grammar(cls, v: str) -> str:
        m = _TICKER.match(v.strip().upper())
        if m is None:
            raise ValueError(
                "a ticker is a root (ES, MES, NQ, MNQ), then a quarterly month code and a "
                "1, 2 or 4 digit year (ESZ5, ESZ25, ESZ2025) or the continuous 1! (ES1!), "
                "optionally after an exchange prefix (CME_MINI:ES1!)"
            )
        if m["continuous"]:
            return m["root"] + "1!"
        symbol = m["root"] + m["month"] + m["year"]
        parse_contract(symbol, as_of=date(2020, 1, 1))  # quarterly months only
        return symbol

    @field_validator("time", mode="before")
    @classmethod
    def _iso_text(cls, v: object) -> object:
        if not isinstance(v, str | datetime):
            raise ValueError("time must be an ISO-8601 string such as 2025-03-14T14:30:05Z")
        return v

    @field_validator("time")
    @classmethod
    def _plausible(cls, v: datetime) -> datetime:
        if not 2000 <= v.year <= 2199:
            raise ValueError("time is out of range")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> _AlertFields:
        entry = self.action in ENTRY_ACTIONS
        if entry and self.contracts is None:
            raise ValueError(f"a {self.action} alert needs contracts")
        if not entry and (self.stop or self.trail or self.targets or self.order_type != "market"):
            raise ValueError(f"a {self.action} alert takes no stop, trail, targets or order type")
        if (self.order_type == "limit") != (self.limit_price is not None):
            raise ValueError("limit_price goes with order_type limit, and only with it")
        if self.cancel_after_s is not None and self.order_type != "limit":
            raise ValueError("cancel_after_s applies to limit entries only")
        if self.targets and len(self.targets) > 1:
            sizes = [t.contracts for t in self.targets]
            total = sum(s or 0 for s in sizes)
            # with TradingView's market_position, a reversal's contracts include the close
            fits = (
                total <= (self.contracts or 0) if self.market_position else total == self.contracts
            )
            if None in sizes or not fits:
                raise ValueError("several targets need contracts adding up to the alert's")
        if self.breakeven_after_tp1 and (not self.targets or len(self.targets) < 2):
            raise ValueError("breakeven_after_tp1 needs at least two targets")
        if self.action in ("buy", "sell"):
            side = Side.BUY if self.action == "buy" else Side.SELL
            self.bracket_ticks(side)  # a stop or target price on the wrong side fails here
        self.contract()  # an expired contract fails here
        return self

    @property
    def root(self) -> str:
        m = _TICKER.match(self.ticker)
        assert m is not None
        return m["root"]

    @property
    def instrument(self) -> Instrument:
        return instrument_for(self.root)

    def contract(self) -> Contract:
        """The contract to order: "ES1!" is the front month on the alert's CME trading
        day; a dated one must not have expired by then."""
        day = trading_date(self.time)
        if self.ticker.endswith("1!"):
            return front_contract(self.root, day)
        contract = parse_contract(self.ticker, as_of=day)
        if contract.expiry < day:
            raise ValueError(f"{self.ticker} expired on {contract.expiry}")
        if contract.year > day.year + 5:
            raise ValueError(f"{self.ticker} is not listed yet")
        return contract

    def contract_symbol(self) -> str:
        """As Tradovate names it: "ESH5"."""
        return self.contract().symbol

    @property
    def entry_price(self) -> float:
        return float(self.limit_price if self.limit_price is not None else self.price)

    def bracket_ticks(
        self, side: Side, stop_ticks: int = 8, target_ticks: int = 12
    ) -> list[tuple[int, int, int]]:
        """(contracts, stop ticks, target ticks) per target of an entry on `side`; the
        defaults stand where the alert gives no stop or target. With a trail the stop
        ticks are where the trailing stop starts: the alert's stop, else the trail."""
        inst, entry = self.instrument, self.entry_price
        trail = self.trail_ticks(side)
        if self.stop:
            stop = self.stop.to_ticks(inst, side, entry, "stop")
            if trail is not None and stop > trail:
                raise ValueError(
                    f"the stop ({stop} ticks) must be no further from the entry than the "
                    f"trail ({trail} ticks): the trail would move it at once"
                )
        else:
            stop = trail if trail is not None else stop_ticks
        qty = self.contracts or 0
        if not self.targets:
            return [(qty, stop, target_ticks)]
        if len(self.targets) == 1:
            return [(qty, stop, self.targets[0].to_ticks(inst, side, entry, "target"))]
        return [
            (t.contracts or 0, stop, t.to_ticks(inst, side, entry, "target")) for t in self.targets
        ]

    def trail_ticks(self, side: Side) -> int | None:
        """The trailing stop's distance from the market in whole ticks; None: a fixed stop."""
        if self.trail is None:
            return None
        return self.trail.to_ticks(self.instrument, side, self.entry_price, "trail")

    def client_order_id(self) -> str:
        """Deterministic from everything the alert asks for, never from when it arrived;
        spellings of the same contract ("ES1!", "ESH5") give the same id."""
        fields = self.model_dump(mode="json", exclude={"passphrase", "ticker"})
        fields["contract"] = self.contract_symbol()
        return client_order_id(self.source, json.dumps(fields, sort_keys=True))

    @property
    def ts_ns(self) -> int:
        seconds = calendar.timegm(self.time.utctimetuple())
        return seconds * 1_000_000_000 + self.time.microsecond * 1_000


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
