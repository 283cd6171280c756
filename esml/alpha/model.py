"""Alpha models behind one interface, and the onnxruntime-served direction model.

Every alpha model answers `predict_proba` with columns (p_down, p_flat, p_up). The served
model is loaded from a verified model directory (see `manifest`), refuses a feature list
other than the one it was trained on, and keeps a pre-allocated input row so the per-event
`predict_one` call allocates nothing but its result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import onnxruntime as ort

from esml.alpha.manifest import (
    CLASSES,
    INPUT_NAME,
    MODEL_FILE,
    OUTPUT_NAME,
    ModelFileError,
    ModelManifest,
)


@runtime_checkable
class AlphaModel(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def feature_names(self) -> list[str]: ...

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """float32 [n, f] → probabilities [n, 3] in class order down, flat, up."""
        ...

    def predict_one(self, row: np.ndarray) -> tuple[float, float, float]:
        """(p_down, p_flat, p_up) of one float32 row: the per-decision hot path."""
        ...


class FeatureMismatchError(ValueError):
    """The caller's features are not the ones the model was trained on."""


class OnnxAlphaModel:
    """A trained model directory served by one single-threaded onnxruntime session.

    Not thread-safe: `predict_one` reuses one input buffer. The engine's event loop owns
    one instance; another thread loads its own.
    """

    def __init__(self, session: ort.InferenceSession, manifest: ModelManifest) -> None:
        self._session = session
        self.manifest = manifest
        self._n_features = len(manifest.feature_names)
        self._row = np.zeros((1, self._n_features), dtype=np.float32)
        self._outputs = [OUTPUT_NAME]

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        *,
        feature_names: Sequence[str] | None = None,
        feature_version: str | None = None,
    ) -> OnnxAlphaModel:
        """Load and verify `model.onnx` + `manifest.json`; with `feature_names` (and
        `feature_version`), also require the caller's feature pipeline to match the model's."""
        model_dir = Path(model_dir)
        manifest = ModelManifest.load(model_dir)
        if feature_names is not None:
            check_features(manifest, feature_names, feature_version)
        elif feature_version is not None and feature_version != manifest.feature_version:
            raise FeatureMismatchError(
                f"{model_dir}: model features are version {manifest.feature_version!r}, "
                f"the caller's are {feature_version!r}"
            )
        session = open_session(model_dir / MODEL_FILE, (len(manifest.feature_names),))
        return cls(session, manifest)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def feature_names(self) -> list[str]:
        return list(self.manifest.feature_names)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self._n_features:
            raise ValueError(
                f"{self.name}: expected features of shape [n, {self._n_features}], got {x.shape}"
            )
        return self._session.run(self._outputs, {INPUT_NAME: x})[0]

    def predict_one(self, row: np.ndarray) -> tuple[float, float, float]:
        """(p_down, p_flat, p_up) of one feature row: the per-decision hot path."""
        if row.shape != (self._n_features,):
            raise ValueError(
                f"{self.name}: expected one row of {self._n_features} features, got {row.shape}"
            )
        self._row[0] = row
        p = self._session.run(self._outputs, {INPUT_NAME: self._row})[0][0]
        return float(p[0]), float(p[1]), float(p[2])


def check_features(
    manifest: ModelManifest, feature_names: Sequence[str], feature_version: str | None = None
) -> None:
    """Raise naming the first difference between the model's features and the caller's."""
    want, got = list(manifest.feature_names), list(feature_names)
    if got != want:
        missing = [f for f in want if f not in got]
        extra = [f for f in got if f not in want]
        detail = (
            f"missing {missing}, unexpected {extra}"
            if missing or extra
            else f"same names in a different order; the model expects {want}"
        )
        raise FeatureMismatchError(f"model {manifest.name!r} feature list differs: {detail}")
    if feature_version is not None and feature_version != manifest.feature_version:
        raise FeatureMismatchError(
            f"model {manifest.name!r} was trained on features version "
            f"{manifest.feature_version!r}, the caller's are {feature_version!r}"
        )


def open_session(path: Path, input_shape: tuple[int, ...]) -> ort.InferenceSession:
    """One single-threaded onnxruntime session (the engine's loop is the only caller), its
    input [N, *input_shape] and its 3-class output checked before anything is served."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelFileError(f"{path}: not a loadable ONNX model: {e}") from e
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = ", ".join(str(d) for d in input_shape)
    ok = len(inputs) == 1 and inputs[0].name == INPUT_NAME
    if not ok or tuple(inputs[0].shape[1:]) != input_shape:
        raise ModelFileError(
            f"{path}: expected one input {INPUT_NAME!r} of shape [N, {shape}], got "
            f"{[(i.name, i.shape) for i in inputs]}"
        )
    out = {o.name: o.shape for o in outputs}
    if OUTPUT_NAME not in out or out[OUTPUT_NAME][-1] != len(CLASSES):
        raise ModelFileError(
            f"{path}: expected output {OUTPUT_NAME!r} of shape [N, {len(CLASSES)}], got {out}"
        )
    return session
