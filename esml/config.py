"""One validated config for everything a strategy needs (freqtrade-style).

Loaded from TOML; every field has a safe default, unknown keys are errors, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from esml.execution.rules import ExitRules
from esml.market.instruments import INSTRUMENTS, Instrument
from esml.sim.exchange_config import ExchangeConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SessionBudget(_Strict):
    """What one part of the Globex day allows: thin overnight sessions get tighter budgets."""

    stop_ticks: int = Field(ge=1)
    target_ticks: int = Field(ge=1)
    min_agreement: float = Field(ge=0.0, le=1.0)
    cooldown_s: float = Field(ge=0.0)
    max_spread_ticks: float = Field(ge=1.0)
    loss_limit: float = Field(gt=0)
    min_confidence: float | None = Field(None, ge=0.0, le=1.0)  # None: risk.min_confidence


def _budget(stop: int, target: int, agree: float, cool: float, spread: float, loss: float):
    return SessionBudget(stop_ticks=stop, target_ticks=target, min_agreement=agree,
                         cooldown_s=cool, max_spread_ticks=spread, loss_limit=loss)  # fmt: skip


SESSIONS = ("RTH", "PRE_MARKET", "POST", "ASIA", "EUROPE")
DEFAULT_BUDGETS: dict[str, SessionBudget] = {
    "RTH": _budget(10, 25, 0.25, 30, 1, 3000),
    "PRE_MARKET": _budget(10, 25, 0.25, 40, 2, 350),
    "POST": _budget(10, 16, 0.40, 60, 2, 350),
    "ASIA": _budget(12, 16, 0.40, 60, 4, 350),
    "EUROPE": _budget(10, 16, 0.40, 50, 3, 350),
}


class NewsConfig(_Strict):
    """Scheduled releases: a recurring time each weekday (US/Eastern) and one-off events."""

    recurring_et: tuple[str, ...] = ("08:30",)
    events_et: tuple[str, ...] = ()  # "2024-03-20T14:00" (FOMC and the like)
    before_min: float = Field(2.0, ge=0)
    after_min: float = Field(3.0, ge=0)

    @field_validator("recurring_et")
    @classmethod
    def _hhmm(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for t in v:
            _parse_hhmm(t)
        return v


class SizingConfig(_Strict):
    kelly_fraction: float = Field(0.25, gt=0, le=1.0)
    account_equity: float = Field(50_000.0, gt=0)
    max_lots: int = Field(10, ge=1, le=100)  # the hard maximum, whatever Kelly and tiers say
    turbo_pso: float = Field(0.5, gt=0, le=1)
    boost_pso: float = Field(0.25, gt=0, le=1)
    contra_pso: float = Field(-0.5, ge=-1, lt=0)


class RiskConfig(_Strict):
    min_confidence: float = Field(0.55, ge=0.0, le=1.0)
    max_position: int = Field(1, ge=1, le=100)
    max_daily_loss: float = Field(1500.0, gt=0)
    max_drawdown: float = Field(2000.0, gt=0)  # from today's peak: trips HALTED
    loss_streak: int = Field(3, ge=1)  # this many losses in a row...
    loss_streak_size: int = Field(1, ge=1)  # ...and size is capped to this
    max_data_age_s: float = Field(2.0, gt=0)
    max_volatility_ticks: float = Field(12.0, gt=0)  # 60-s realised volatility
    min_edge_over_costs: float = Field(1.5, ge=0)  # expected move value / round-trip cost
    blocked_ct: tuple[str, ...] = ("15:55-16:00", "17:00-17:05")  # "HH:MM-HH:MM" Chicago
    news: NewsConfig = NewsConfig()
    budgets: dict[str, SessionBudget] = DEFAULT_BUDGETS
    sizing: SizingConfig = SizingConfig()
    gates_off: tuple[str, ...] = ()  # gate names to leave out (ablation); a halt always holds

    @field_validator("blocked_ct")
    @classmethod
    def _windows(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for w in v:
            lo, sep, hi = w.partition("-")
            if not sep:
                raise ValueError(f"time window {w!r} is not HH:MM-HH:MM")
            _parse_hhmm(lo), _parse_hhmm(hi)
        return v

    @field_validator("budgets", mode="before")
    @classmethod
    def _all_sessions(cls, v: object) -> object:
        """A partial table overrides the defaults it names; an unknown session is an error."""
        if not isinstance(v, dict):
            return v
        unknown = set(v) - set(SESSIONS)
        if unknown:
            raise ValueError(f"unknown session(s) {sorted(unknown)}; choose from {SESSIONS}")
        merged: dict[str, object] = {k: b.model_dump() for k, b in DEFAULT_BUDGETS.items()}
        for k, b in v.items():
            base = merged[k]
            merged[k] = {**base, **b} if isinstance(b, dict) and isinstance(base, dict) else b
        return merged


def _parse_hhmm(text: str) -> tuple[int, int]:
    h, sep, m = text.strip().partition(":")
    if not (sep and h.isdigit() and m.isdigit() and int(h) < 24 and int(m) < 60):
        raise ValueError(f"{text!r} is not a HH:MM time")
    return int(h), int(m)


class ExecutionConfig(_Strict):
    contracts: int = Field(1, ge=1)
    stop_ticks: int = Field(8, ge=1)
    target_ticks: int = Field(12, ge=1)
    time_exit_s: float = Field(20.0, gt=0)
    commission_per_side: float = Field(2.25, ge=0)  # ES all-in per contract per side
    exits: ExitRules = ExitRules()


class FeatureConfig(_Strict):
    decision_interval_s: float = Field(1.0, gt=0, le=60)  # minute bars: one per chunk at most
    horizon_s: float = Field(20.0, gt=0)
    dead_zone_ticks: float = Field(0.5, ge=0.5)


class ModelConfig(_Strict):
    """Where the engine's models come from. `path` is a model root holding a `champion`
    pointer (what `make models` writes), one bundle, or one trees model directory."""

    path: Path = Path("models")
    hot_swap: bool = True  # follow the root's champion pointer while running
    check_every_s: float = Field(5.0, gt=0)  # market time between looks at the pointer


class EsmlConfig(_Strict):
    instrument: str = "ES"
    risk: RiskConfig = RiskConfig()
    execution: ExecutionConfig = ExecutionConfig()
    features: FeatureConfig = FeatureConfig()
    exchange: ExchangeConfig | None = None  # the paper exchange; None: defaults, our commission
    model: ModelConfig = ModelConfig()
    journal_path: Path = Path("runs/journal.sqlite")

    @field_validator("instrument")
    @classmethod
    def _known_instrument(cls, v: str) -> str:
        if v not in INSTRUMENTS:
            raise ValueError(f"unknown instrument {v!r}; choose one of {sorted(INSTRUMENTS)}")
        return v

    @model_validator(mode="after")
    def _one_commission(self) -> EsmlConfig:
        ex = self.exchange
        if ex is not None and ex.commission_per_side != self.execution.commission_per_side:
            raise ValueError(
                f"exchange.commission_per_side ({ex.commission_per_side}) differs from "
                f"execution.commission_per_side ({self.execution.commission_per_side}): "
                "the gates and sizing would price trades differently from the fills"
            )
        return self

    @property
    def paper_exchange(self) -> ExchangeConfig:
        fee = self.execution.commission_per_side
        return self.exchange or ExchangeConfig(commission_per_side=fee)

    @property
    def instrument_spec(self) -> Instrument:
        return INSTRUMENTS[self.instrument]


class ConfigError(ValueError):
    """The config file is missing, unreadable or invalid; the message says where."""


def load_config(path: Path | None = None, **overrides: object) -> EsmlConfig:
    data: dict[str, object] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"config file {path} not found") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    data.update(overrides)
    try:
        return EsmlConfig.model_validate(data)
    except ValidationError as e:
        where = f"config file {path}" if path else "config"
        raise ConfigError(f"{where} is invalid:\n{e}") from e
