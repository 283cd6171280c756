"""Manifests of what the stack trainer writes beyond the trees' and nets' own manifests: the
regime classifier, the ensemble, and the bundle that ties one model directory together.

Every manifest is strict (unknown keys are errors) and names the files it vouches for by
sha256, so a bundle that loads is the bundle that was trained and scored.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from esml.alpha.calibration import MulticlassCalibrator
from esml.alpha.ensemble import EnsembleConfig
from esml.alpha.manifest import ModelFileError, Sha256, write_atomic
from esml.alpha.regime_config import RegimeConfig

BUNDLE_FILE = "bundle.json"
ENSEMBLE_FILE = "ensemble.json"
M = TypeVar("M", bound=BaseModel)
MemberKind = Literal["trees", "tick_lstm", "bar_lstm", "deeplob", "regime", "ensemble"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricInterval(_Strict):
    value: float
    low: float
    high: float


class HeldOutScores(_Strict):
    """Scores on rows no part of the model saw, with 95% block-bootstrap intervals."""

    rows: int = Field(ge=1)
    first_ts_ns: int
    last_ts_ns: int
    metrics: dict[str, MetricInterval]
    baselines: dict[str, dict[str, MetricInterval]]
    verdicts: list[str]  # plain-language: beats / does not beat each baseline


class RegimeFold(_Strict):
    """One walk-forward block of the regime classifier, beside its majority baseline."""

    rows: int = Field(ge=1)
    train_rows: int = Field(ge=1)
    first_ts_ns: int
    last_ts_ns: int
    accuracy: float
    macro_f1: float
    log_loss: float
    brier: float
    class_counts: dict[str, int]
    majority_baseline_accuracy: float


class _Timed(_Strict):
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    created_at: datetime
    training_time_s: float = Field(ge=0)
    synthetic_training_data: bool
    data_sha256: Annotated[dict[str, Sha256], Field(min_length=1)]

    @field_validator("created_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("created_at must carry a timezone (UTC)")
        return v.astimezone(UTC)


class RegimeManifest(_Timed):
    kind: Literal["regime"] = "regime"
    instrument: str
    feature_names: list[str] = Field(min_length=1)
    feature_version: str = Field(min_length=1)
    classes: list[str]
    config: RegimeConfig
    members: list[str]
    training_rows: int = Field(ge=1)
    folds: list[RegimeFold]
    onnx_sha256: Sha256


class EnsembleMember(_Strict):
    name: str
    directory: str  # relative to the bundle
    version: str
    onnx_sha256: Sha256


class EnsembleManifest(_Timed):
    kind: Literal["ensemble"] = "ensemble"
    instrument: str
    config: EnsembleConfig
    calibrator: MulticlassCalibrator | None
    members: list[EnsembleMember] = Field(min_length=1)
    calibration_rows: int = Field(ge=1)
    calibration_first_ts_ns: int
    calibration_last_ts_ns: int
    held_out: HeldOutScores


class BundleMember(_Strict):
    kind: MemberKind
    directory: str  # relative to the bundle
    manifest: str  # file name inside `directory`
    manifest_sha256: Sha256
    version: str


class BundleManifest(_Timed):
    """bundle.json: written last, so a directory holding one is complete."""

    kind: Literal["bundle"] = "bundle"
    instrument: str
    feature_names: list[str] = Field(min_length=1)
    feature_version: str = Field(min_length=1)
    horizon_s: float = Field(gt=0)
    decision_interval_s: float = Field(gt=0)
    dead_zone_ticks: float = Field(gt=0)
    cutoff_ns: int
    """The components trained on events before this time; the ensemble was calibrated and
    scored on decision rows after it (plus the embargo)."""
    seed: int
    members: list[BundleMember] = Field(min_length=1)
    left_out: dict[str, str]  # model → why this bundle has none
    parameters: dict[str, object]


def save_json(model: BaseModel, path: Path) -> Path:
    write_atomic(path, (model.model_dump_json(indent=2) + "\n").encode())
    return path


def load_json(cls: type[M], path: Path) -> M:
    """Read and validate a manifest; any problem is a ModelFileError naming the file."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise ModelFileError(f"{path}: not found") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: unreadable: {e}") from e
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        raise ModelFileError(f"{path}: invalid:\n{e}") from e
