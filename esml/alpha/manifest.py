"""The manifest beside every model: what it was trained on, how well it did, and the hash
that proves `model.onnx` is the file that was evaluated.

A model directory holds `model.onnx` and `manifest.json`; the manifest is written last, so
a directory with a manifest is a complete model, and loading refuses any onnx file whose
sha256 differs from the one recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# the serving contract of every model.onnx: one float32 input, one probability output
INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
CLASSES = ("down", "flat", "up")
"""Class index order of every direction model: 0 = down, 1 = flat, 2 = up."""

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ModelFileError(ValueError):
    """A model directory is incomplete, corrupt or tampered with; the message names the file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VerifiedManifest(_Strict):
    """What every model directory's manifest.json does, whatever the model: a timezone-aware
    `created_at` kept in UTC, and the sha256 of the model.onnx beside it, checked when the
    manifest is written and again when it is loaded.

    Subclasses declare `created_at` and `onnx_sha256` themselves, so each keeps its own
    field order in the JSON (bundles already written hash their manifest files).
    """

    if TYPE_CHECKING:
        created_at: datetime
        onnx_sha256: str

    @field_validator("created_at", check_fields=False)
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("created_at must carry a timezone (UTC)")
        return v.astimezone(UTC)

    def save(self, model_dir: Path) -> Path:
        """Write manifest.json atomically, after checking it describes the onnx file beside it."""
        model_dir = Path(model_dir)
        actual = file_sha256(model_dir / MODEL_FILE)
        if actual != self.onnx_sha256:
            raise ModelFileError(
                f"{model_dir / MODEL_FILE}: sha256 {actual} does not match the manifest's "
                f"onnx_sha256 {self.onnx_sha256}; refusing to write a manifest for another file"
            )
        path = model_dir / MANIFEST_FILE
        write_atomic(path, (self.model_dump_json(indent=2) + "\n").encode())
        return path

    @classmethod
    def load(cls, model_dir: Path) -> Self:
        """Read and validate manifest.json and verify the onnx file's sha256 against it."""
        path = Path(model_dir) / MANIFEST_FILE
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise ModelFileError(f"{path}: manifest not found") from e
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFileError(f"{path}: unreadable manifest: {e}") from e
        try:
            manifest = cls.model_validate(raw)
        except ValidationError as e:
            raise ModelFileError(f"{path}: invalid manifest:\n{e}") from e
        onnx_path = Path(model_dir) / MODEL_FILE
        actual = file_sha256(onnx_path)
        if actual != manifest.onnx_sha256:
            raise ModelFileError(
                f"{onnx_path}: sha256 {actual} differs from {manifest.onnx_sha256} recorded in "
                f"{path}; the model file was modified or replaced after training"
            )
        return manifest


class ClassificationMetrics(_Strict):
    """Out-of-sample scores of one evaluation block, beside the naive baselines they must beat.

    The baselines use the class frequencies of the *training* rows: the majority baseline
    predicts the training majority class for every row, the prior log loss predicts the
    training class frequencies as probabilities.
    """

    rows: int = Field(ge=1)
    first_ts_ns: int
    last_ts_ns: int
    accuracy: float = Field(ge=0.0, le=1.0)
    macro_f1: float = Field(ge=0.0, le=1.0)
    log_loss: float = Field(ge=0.0)
    class_counts: dict[str, int]
    majority_class: Literal["down", "flat", "up"]
    majority_baseline_accuracy: float = Field(ge=0.0, le=1.0)
    prior_log_loss: float = Field(ge=0.0)
    train_rows: int = Field(ge=1)


class ModelManifest(VerifiedManifest):
    name: str = Field(min_length=1)
    kind: Literal["xgboost"] = "xgboost"
    version: str = Field(min_length=1)
    created_at: datetime
    instrument: str
    feature_names: list[str] = Field(min_length=1)
    feature_version: str = Field(min_length=1)
    decision_interval_s: float = Field(gt=0)
    horizon_s: float = Field(gt=0)
    dead_zone_ticks: float = Field(gt=0)
    classes: tuple[Literal["down"], Literal["flat"], Literal["up"]] = CLASSES
    data_sha256: dict[str, Sha256] = Field(min_length=1)
    training_rows: int = Field(ge=1)
    n_trees: int = Field(ge=1)
    hyperparameters: dict[str, float | int | str]
    validation: ClassificationMetrics
    folds: list[ClassificationMetrics]
    training_time_s: float = Field(ge=0)
    onnx_sha256: Sha256
    synthetic_training_data: bool

    @field_validator("feature_names")
    @classmethod
    def _unique_features(cls, v: list[str]) -> list[str]:
        dupes = sorted({f for f in v if v.count(f) > 1})
        if dupes:
            raise ValueError(f"duplicate feature names: {dupes}")
        return v


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except FileNotFoundError as e:
        raise ModelFileError(f"{path}: model file not found") from e
    except OSError as e:
        raise ModelFileError(f"{path}: unreadable: {e}") from e
    return h.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file and rename, so a crash never leaves a half-written model file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it private; a model is for every reader
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
