"""The paper exchange's rules as config: kept apart from the compiled simulator so the
one validated config (and the Lambdas that load it) need no numerical stack."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class LatencyConfig(_Strict):
    """Microseconds. Illustrative defaults for a retail API path to CME: measure yours."""

    feed_us: float = Field(1000.0, ge=0, le=10_000_000)
    order_entry_us: float = Field(2000.0, ge=0, le=10_000_000)
    response_us: float = Field(2000.0, ge=0, le=10_000_000)
    sigma: float = Field(0.0, ge=0, le=3)  # 0: constant; else lognormal with the mean above


class ExchangeConfig(_Strict):
    """The paper exchange's rules. CME publishes band and protection values per product;
    the defaults here are illustrative for ES."""

    commission_per_side: float = Field(2.25, ge=0)  # $ per contract; ES all-in by default
    exchange_fee_per_side: float = Field(0.0, ge=0)  # add when the commission excludes fees
    max_order_qty: int = Field(100, ge=1)
    price_band_ticks: int = Field(120, ge=1)  # limit prices this far past the last trade
    protection_ticks: int = Field(24, ge=0)  # how far a market order may sweep
    queue: Literal["auto", "fifo", "probabilistic"] = "auto"  # auto: by the data (F_MBP)
    market_hours: Literal["auto", "cme_globex", "always_open"] = "auto"
    latency: LatencyConfig = LatencyConfig()
    seed: int = Field(0, ge=0)

    @property
    def fee_per_side(self) -> float:
        return self.commission_per_side + self.exchange_fee_per_side
