"""The regime classifier's section of the configuration, apart from the classifier itself
so that reading a bundle's manifest needs pydantic only, not the libraries that fit it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RegimeConfig(BaseModel):
    """The regime section of the configuration: the label's rule and the six models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    horizon_s: float = Field(300.0, gt=0)
    min_path_ticks: float = Field(8.0, ge=0)
    trend_efficiency: float = Field(0.3, gt=0, le=1)
    range_efficiency: float = Field(0.1, ge=0, lt=1)
    range_sigma: float = Field(1.25, gt=0)
    tree_count: int = Field(150, ge=1)
    tree_depth: int = Field(3, ge=1, le=8)
    tree_learning_rate: float = Field(0.1, gt=0, le=1)
    logistic_c: float = Field(1.0, gt=0)
    mlp_hidden: int = Field(16, ge=1, le=256)
    mlp_max_iter: int = Field(300, ge=10)
    mlp_alpha: float = Field(1e-3, ge=0)
    random_state: int = 7
    n_jobs: int = Field(1, ge=1, le=2)  # two threads on a shared two-core machine run slower

    @model_validator(mode="after")
    def _ordered_efficiencies(self) -> RegimeConfig:
        if not self.range_efficiency < self.trend_efficiency:
            raise ValueError(
                f"range_efficiency ({self.range_efficiency}) must be below trend_efficiency "
                f"({self.trend_efficiency})"
            )
        return self

    def label_kwargs(self) -> dict[str, float]:
        """Keyword arguments of `regime_labels` for this configuration."""
        return self.model_dump(
            include={
                "horizon_s", "min_path_ticks", "trend_efficiency", "range_efficiency",
                "range_sigma",
            }
        )  # fmt: skip
