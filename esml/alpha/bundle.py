"""A published bundle, loaded for serving: its ensemble over onnxruntime sessions.

Loading verifies everything before anything serves: the bundle's manifests and model files
against their recorded sha256 (`registry.load_bundle`), the trees' features against this
build's feature list and version, each net's window against this build's window spec, and
the bundle's decision grid against the engine's configuration. A bundle that fails any of
these raises `ModelFileError` and is never half-loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esml.alpha.bundle_manifest import BundleManifest, EnsembleManifest, load_json
from esml.alpha.ensemble import Ensemble
from esml.alpha.inputs import NET_WINDOWS
from esml.alpha.manifest import ModelFileError
from esml.alpha.model import OnnxAlphaModel
from esml.alpha.registry import load_bundle
from esml.alpha.sequence_model import OnnxSequenceModel
from esml.features.sequences import WindowSpec
from esml.features.streaming import FEATURE_NAMES, FEATURE_VERSION
from esml.market.instruments import INSTRUMENTS

TREES = "trees"


class ServedModel:
    """A served model under the name the ensemble knows it by (its kind, not its file)."""

    def __init__(self, name: str, model: OnnxAlphaModel | OnnxSequenceModel) -> None:
        self.name = name
        self.model = model

    def predict_one(self, x: np.ndarray) -> tuple[float, float, float]:
        return self.model.predict_one(x)


@dataclass(frozen=True)
class ServedBundle:
    path: Path
    manifest: BundleManifest
    ensemble_manifest: EnsembleManifest  # its config, calibrator and held-out scores
    ensemble: Ensemble
    members: dict[str, ServedModel]  # by the name the ensemble knows each by
    windows: dict[str, WindowSpec]  # member → the window it reads; the trees read the row

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def synthetic(self) -> bool:
        return self.manifest.synthetic_training_data


def load_served(
    path: Path, *, instrument: str, decision_interval_s: float, horizon_s: float
) -> ServedBundle:
    """Load the bundle at `path` for an engine trading `instrument` on the given grid."""
    path = Path(path)
    manifest = load_bundle(path)
    _check_grid(path, manifest, instrument, decision_interval_s, horizon_s)
    ensemble_member = next((m for m in manifest.members if m.kind == "ensemble"), None)
    if ensemble_member is None:
        raise ModelFileError(f"{path}: the bundle has no ensemble ({manifest.left_out})")
    em = load_json(EnsembleManifest, path / ensemble_member.directory / ensemble_member.manifest)
    members, windows = [], {}
    for m in em.members:
        directory = path / m.directory
        if m.name == TREES:
            model = OnnxAlphaModel.load(
                directory, feature_names=FEATURE_NAMES, feature_version=FEATURE_VERSION
            )
        elif m.name in NET_WINDOWS:
            spec = windows[m.name] = NET_WINDOWS[m.name]
            model = OnnxSequenceModel.load(
                directory,
                window_name=spec.name,
                window_version=spec.version,
                step_names=spec.step_names,
            )
        else:
            raise ModelFileError(f"{directory}: no way to serve an ensemble member {m.name!r}")
        members.append(ServedModel(m.name, model))
    tick_size = INSTRUMENTS[manifest.instrument].tick_size
    ensemble = Ensemble(em.config, members, tick_size=tick_size, calibrator=em.calibrator)
    return ServedBundle(path, manifest, em, ensemble, {m.name: m for m in members}, windows)


def _check_grid(
    path: Path,
    manifest: BundleManifest,
    instrument: str,
    decision_interval_s: float,
    horizon_s: float,
) -> None:
    """The models learnt one instrument's moves over one horizon on one decision grid."""
    wanted = {
        "instrument": (manifest.instrument, instrument),
        "decision_interval_s": (manifest.decision_interval_s, decision_interval_s),
        "horizon_s": (manifest.horizon_s, horizon_s),
    }
    wrong = [f"{k}: bundle {b!r}, engine {e!r}" for k, (b, e) in wanted.items() if b != e]
    if wrong:
        raise ModelFileError(f"{path}: trained for another setting ({'; '.join(wrong)})")
