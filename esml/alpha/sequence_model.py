"""The neural models served by onnxruntime: one window [steps, fields] in, (p_down, p_flat,
p_up) out, behind the same `AlphaModel` interface as the trees.

Serving needs onnxruntime only, never torch. The manifest records what the window is (the
sequence builder's name and version, its step fields) and `load` refuses a caller whose
builder differs, as the tree model refuses another feature list.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from pydantic import Field, field_validator

from esml.alpha.manifest import (
    CLASSES,
    INPUT_NAME,
    MODEL_FILE,
    OUTPUT_NAME,
    ClassificationMetrics,
    Sha256,
    VerifiedManifest,
)
from esml.alpha.model import FeatureMismatchError, open_session


class SequenceManifest(VerifiedManifest):
    """manifest.json of a neural model; written last, after model.onnx, like the trees'."""

    name: str = Field(min_length=1)
    kind: Literal["tick_lstm", "deeplob", "bar_lstm"]
    version: str = Field(min_length=1)
    created_at: datetime
    instrument: str
    window_name: str = Field(min_length=1)
    window_version: str = Field(min_length=1)
    window_steps: int = Field(ge=1)
    step_names: list[str] = Field(min_length=1)
    decision_interval_s: float = Field(gt=0)
    horizon_s: float = Field(gt=0)
    dead_zone_ticks: float = Field(gt=0)
    classes: tuple[Literal["down"], Literal["flat"], Literal["up"]] = CLASSES
    data_sha256: dict[str, Sha256] = Field(min_length=1)
    training_rows: int = Field(ge=1)
    architecture: dict[str, int | float]
    n_parameters: int = Field(ge=1)
    hyperparameters: dict[str, float | int | str | None]
    epochs_run: int = Field(ge=1)
    best_epoch: int = Field(ge=1)
    validation: ClassificationMetrics
    folds: list[ClassificationMetrics]
    training_time_s: float = Field(ge=0)
    onnx_opset: int = Field(ge=1)
    onnx_parity_max_abs: float = Field(ge=0, le=1e-5)
    onnx_sha256: Sha256
    synthetic_training_data: bool

    @field_validator("step_names")
    @classmethod
    def _unique_steps(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate step field names in {v}")
        return v

    @property
    def window_shape(self) -> tuple[int, int]:
        return self.window_steps, len(self.step_names)


class OnnxSequenceModel:
    """A neural model directory served by one single-threaded onnxruntime session.

    Not thread-safe: `predict_one` reuses one input buffer; each thread loads its own.
    """

    def __init__(self, session: ort.InferenceSession, manifest: SequenceManifest) -> None:
        self._session = session
        self.manifest = manifest
        self._shape = manifest.window_shape
        self._window = np.zeros((1, *self._shape), dtype=np.float32)
        self._outputs = [OUTPUT_NAME]

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        *,
        window_name: str | None = None,
        window_version: str | None = None,
        step_names: Sequence[str] | None = None,
    ) -> OnnxSequenceModel:
        """Load and verify `model.onnx` + `manifest.json`; the optional arguments describe the
        caller's sequence builder and must match the one the model was trained on."""
        model_dir = Path(model_dir)
        manifest = SequenceManifest.load(model_dir)
        _check_window(manifest, window_name, window_version, step_names)
        path = model_dir / MODEL_FILE
        session = open_session(path, manifest.window_shape)
        return cls(session, manifest)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def feature_names(self) -> list[str]:
        """The fields of one window step, in column order."""
        return list(self.manifest.step_names)

    @property
    def window_shape(self) -> tuple[int, int]:
        return self._shape

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """float32 windows [n, steps, fields] → probabilities [n, 3] (down, flat, up)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != self._shape:
            raise ValueError(
                f"{self.name}: expected windows of shape [n, {self._shape[0]}, "
                f"{self._shape[1]}], got {x.shape}"
            )
        return self._session.run(self._outputs, {INPUT_NAME: x})[0]

    def predict_one(self, window: np.ndarray) -> tuple[float, float, float]:
        """(p_down, p_flat, p_up) of one window: the per-decision hot path."""
        if window.shape != self._shape:
            raise ValueError(
                f"{self.name}: expected one window of shape {self._shape}, got {window.shape}"
            )
        self._window[0] = window
        p = self._session.run(self._outputs, {INPUT_NAME: self._window})[0][0]
        return float(p[0]), float(p[1]), float(p[2])


def single_window_latency_us(
    model: OnnxSequenceModel, windows: np.ndarray, *, warmup: int = 20
) -> tuple[float, float]:
    """(p50, p99) in µs of `predict_one` over `windows` [n, steps, fields], after a warm-up:
    what one decision costs the engine for this model."""
    if windows.ndim != 3 or len(windows) == 0:
        raise ValueError(
            f"windows must be a non-empty [n, steps, fields] array, got {windows.shape}"
        )
    for k in range(warmup):
        model.predict_one(windows[k % len(windows)])
    took = np.empty(len(windows))
    for k, w in enumerate(windows):
        t0 = time.perf_counter_ns()
        model.predict_one(w)
        took[k] = time.perf_counter_ns() - t0
    p50, p99 = np.percentile(took, [50, 99]) / 1e3
    return float(p50), float(p99)


def _check_window(
    manifest: SequenceManifest,
    window_name: str | None,
    window_version: str | None,
    step_names: Sequence[str] | None,
) -> None:
    if window_name is not None and window_name != manifest.window_name:
        raise FeatureMismatchError(
            f"model {manifest.name!r} reads {manifest.window_name!r} "
            f"windows, the caller builds {window_name!r}"
        )
    if window_version is not None and window_version != manifest.window_version:
        raise FeatureMismatchError(
            f"model {manifest.name!r} was trained on {manifest.window_name!r} version "
            f"{manifest.window_version!r}, the caller's are {window_version!r}"
        )
    if step_names is not None and list(step_names) != manifest.step_names:
        raise FeatureMismatchError(
            f"model {manifest.name!r} window fields are {manifest.step_names}, "
            f"the caller's {list(step_names)}"
        )
