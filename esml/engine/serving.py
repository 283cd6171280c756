"""What the engine serves, from whatever training left at a path.

`models/` (a root with a `champion` pointer) serves the champion bundle's ensemble and,
with hot swap on, follows the pointer; a bundle directory serves its ensemble; a single
trees model directory (`esml train` without `--stack`) serves that model alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from esml.alpha.bundle import load_served
from esml.alpha.bundle_manifest import BUNDLE_FILE
from esml.alpha.ensemble_strategy import EnsembleStrategy
from esml.alpha.inputs import ModelInputs
from esml.alpha.manifest import MANIFEST_FILE, ModelFileError
from esml.alpha.model import OnnxAlphaModel
from esml.alpha.registry import CHAMPION_FILE, champion
from esml.alpha.strategy import ModelStrategy, Strategy
from esml.config import EsmlConfig
from esml.engine.champion_watch import ChampionWatch
from esml.features.streaming import FEATURE_NAMES, FEATURE_VERSION


@dataclass
class Served:
    """A ready strategy; `make` builds a fresh one (own state) from the same files, and
    `watch`, for a model root with hot swap on, hands the engine each new champion."""

    strategy: Strategy
    make: Callable[[], Strategy]
    synthetic: bool
    watch: ChampionWatch | None = None

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()


def serve(
    path: Path, cfg: EsmlConfig, *, hot_swap: bool | None = None, background: bool = True
) -> Served:
    """The strategy for `path`; `hot_swap` None takes the configuration's choice, and
    `background` False loads a new champion at the decision that sees it (replays, tests)."""
    path = Path(path)
    if (path / CHAMPION_FILE).is_file():
        swap = cfg.model.hot_swap if hot_swap is None else hot_swap
        return _serve_root(path, cfg, swap, background)
    if (path / BUNDLE_FILE).is_file():
        return _serve_bundle(path, cfg)
    if (path / MANIFEST_FILE).is_file():
        model = OnnxAlphaModel.load(
            path, feature_names=FEATURE_NAMES, feature_version=FEATURE_VERSION
        )
        synthetic = model.manifest.synthetic_training_data
        return Served(ModelStrategy(model), lambda: ModelStrategy(model), synthetic)
    raise ModelFileError(
        f"{path}: no {CHAMPION_FILE} pointer, {BUNDLE_FILE} or {MANIFEST_FILE}; train with "
        f"`make models` or `esml train`"
    )


def _ensemble_builder(cfg: EsmlConfig, inputs: ModelInputs) -> Callable[[Path], EnsembleStrategy]:
    f = cfg.features

    def build(bundle: Path) -> EnsembleStrategy:
        served = load_served(
            bundle,
            instrument=cfg.instrument,
            decision_interval_s=f.decision_interval_s,
            horizon_s=f.horizon_s,
        )
        return EnsembleStrategy(served, inputs)

    return build


def _serve_bundle(bundle: Path, cfg: EsmlConfig) -> Served:
    tick = cfg.instrument_spec.tick_fixed
    first = _ensemble_builder(cfg, ModelInputs(tick))(bundle)
    return Served(
        first,
        lambda: _ensemble_builder(cfg, ModelInputs(tick))(bundle),
        first.served.synthetic,
    )


def _serve_root(root: Path, cfg: EsmlConfig, hot_swap: bool, background: bool) -> Served:
    served = _serve_bundle(champion(root), cfg)
    if hot_swap:
        strategy = served.strategy
        assert isinstance(strategy, EnsembleStrategy)
        served.watch = ChampionWatch(
            root,
            _ensemble_builder(cfg, strategy.inputs),
            serving=strategy.name,
            check_every_s=cfg.model.check_every_s,
            background=background,
        )
    return served
