"""One validated config for everything a strategy needs (freqtrade-style).

Loaded from TOML; every field has a safe default, unknown keys are errors, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from esml.market.instruments import INSTRUMENTS, Instrument


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RiskConfig(_Strict):
    min_confidence: float = Field(0.55, ge=0.0, le=1.0)
    max_position: int = Field(1, ge=1, le=100)
    max_daily_loss: float = Field(1500.0, gt=0)


class ExecutionConfig(_Strict):
    contracts: int = Field(1, ge=1)
    stop_ticks: int = Field(8, ge=1)
    target_ticks: int = Field(12, ge=1)
    time_exit_s: float = Field(20.0, gt=0)
    commission_per_side: float = Field(2.25, ge=0)  # ES all-in per contract per side


class FeatureConfig(_Strict):
    decision_interval_s: float = Field(1.0, gt=0)
    horizon_s: float = Field(20.0, gt=0)
    dead_zone_ticks: float = Field(0.5, ge=0.5)


class EsmlConfig(_Strict):
    instrument: str = "ES"
    risk: RiskConfig = RiskConfig()
    execution: ExecutionConfig = ExecutionConfig()
    features: FeatureConfig = FeatureConfig()
    model_dir: Path = Path("models/es_direction_20s")
    journal_path: Path = Path("runs/journal.sqlite")

    @field_validator("instrument")
    @classmethod
    def _known_instrument(cls, v: str) -> str:
        if v not in INSTRUMENTS:
            raise ValueError(f"unknown instrument {v!r}; choose one of {sorted(INSTRUMENTS)}")
        return v

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
