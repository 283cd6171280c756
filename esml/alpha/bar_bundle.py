"""The shipped bar-level models: trees, bar LSTM, bar Transformer and the regime
classifier, trained on the real ES 5-minute bars, as ONNX files and one manifest.

    models/es-bars-5m-<version>/
        manifest.json   what each file is, its sha256, the features and windows it reads,
                        the labels, the data it was trained on (file, sha256, years, rows)
                        and the years it was not (held out for out-of-sample scoring),
                        each model's purged-holdout scores, and synthetic_training_data: false
        trees.onnx  bar_lstm.onnx  bar_transformer.onnx  regime.onnx

Every ONNX graph is checked against the library that trained it before it is written
(`esml.alpha.onnx_export`, `esml.alpha.torch_onnx`, `RegimeClassifier.export_onnx`), the
manifest is written last, and `load_bar_bundle` refuses a directory whose files do not
match the manifest's digests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import Progress

from esml.alpha.bar_features import (
    DEAD_ZONE_TICKS,
    DIRECTION_HORIZON_BARS,
    FEATURE_NAMES,
    REGIME_HORIZON_BARS,
    REGIME_MIN_PATH_TICKS,
    BarFrame,
    bar_features,
    windows,
)
from esml.alpha.bar_models import ENSEMBLE, BarBudget, BarModels, fit_bar_models
from esml.alpha.manifest import (
    INPUT_NAME,
    OUTPUT_NAME,
    ClassificationMetrics,
    ModelFileError,
    file_sha256,
    write_atomic,
)
from esml.alpha.onnx_export import export_onnx
from esml.alpha.regime import REGIME_OUTPUT
from esml.alpha.torch_onnx import export_net
from esml.data.continuous import chain_bars, roll_table
from esml.data.sierra import SHIPPED_BARS, read_shipped_bars, sha256_of
from esml.evaluation.bar_walkforward import year_split
from esml.features.labels import CLASSES, REGIMES
from esml.features.technicals import BAR_FEATURE_NAMES

MANIFEST = "manifest.json"
WINDOW_STEPS = 60


class BarMember(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    reads: str  # "features [n, 30]" or "windows [n, 60, 11]"
    outputs: str
    validation: ClassificationMetrics | None = None


class BarTrainingData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str
    sha256: str
    source: str
    contracts: int
    bars: int
    years: list[int]  # the years the models trained on
    held_out_years: list[int] = Field(default_factory=list)  # never seen: out-of-sample tests
    direction_rows: int
    regime_rows: int


class BarBundleManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "es_bars_5m"
    version: str
    created_at: datetime
    instrument: str = "ES"
    bar_interval_s: float = 300.0
    feature_names: list[str]
    window_features: list[str]
    window_steps: int
    direction_horizon_s: float
    dead_zone_ticks: float
    classes: list[str]
    regime_horizon_s: float
    regime_min_path_ticks: float
    regimes: list[str]
    ensemble: str = "mean of the direction members' probabilities"
    members: dict[str, BarMember]
    data: BarTrainingData
    synthetic_training_data: bool = False
    budget: dict[str, float | int]
    training_time_s: float
    evaluation: str = "docs/bar-model-evaluation.md (walk-forward by year, esml bars evaluate)"


def write_bar_bundle(
    models: BarModels,
    frame: BarFrame,
    check_rows: np.ndarray,
    out_root: Path,
    data: BarTrainingData,
    budget: BarBudget,
    started: float,
) -> Path:
    """Export every member (each checked against its trainer on `check_rows`, rows it did
    not train on) into a new versioned directory under `out_root`; the manifest last."""
    created = datetime.now(UTC)
    version = f"{created:%Y%m%dT%H%M%SZ}"
    out = Path(out_root) / f"es-bars-5m-{version}"
    x = frame.x[check_rows]
    win = windows(frame.x, check_rows, WINDOW_STEPS)
    exports = {"trees": export_onnx(models.trees, x.shape[1], x)}
    for name, net in models.nets.items():
        exports[name] = export_net(net, win)[0]
    exports["regime"] = models.regime.export_onnx(x)
    members = {}
    for name, data_bytes in exports.items():
        path = out / f"{name}.onnx"
        write_atomic(path, data_bytes)
        seq = name in models.nets
        members[name] = BarMember(
            file=path.name,
            sha256=file_sha256(path),
            reads=f"windows [n, {WINDOW_STEPS}, {len(BAR_FEATURE_NAMES)}]"
            if seq
            else f"features [n, {len(FEATURE_NAMES)}]",
            outputs="regime probabilities (none, trend, range) and regime"
            if name == "regime"
            else "probabilities (down, flat, up)",
            validation=models.validation.get(name),
        )
    manifest = BarBundleManifest(
        version=version,
        created_at=created,
        feature_names=list(FEATURE_NAMES),
        window_features=list(BAR_FEATURE_NAMES),
        window_steps=WINDOW_STEPS,
        direction_horizon_s=DIRECTION_HORIZON_BARS * 300.0,
        dead_zone_ticks=DEAD_ZONE_TICKS,
        classes=list(CLASSES),
        regime_horizon_s=REGIME_HORIZON_BARS * 300.0,
        regime_min_path_ticks=REGIME_MIN_PATH_TICKS,
        regimes=list(REGIMES),
        members=members,
        data=data,
        budget=budget.model_dump(),
        training_time_s=round(time.perf_counter() - started, 1),
    )
    write_atomic(out / MANIFEST, manifest.model_dump_json(indent=2).encode())
    return out


@dataclass(frozen=True)
class ShippedFrame:
    """Features and labels of a shipped bar file, and what identifies that file."""

    frame: BarFrame
    path: Path
    sha256: str
    contracts: int
    bars: int
    rolls: pd.DataFrame  # `esml.data.continuous.roll_table`: when, from, to, gap


def frame_from_shipped(path: str | Path = SHIPPED_BARS) -> ShippedFrame:
    """The shipped bars (checked against their sha256), chained and featurised."""
    path = Path(path)
    per_contract = read_shipped_bars(path)
    chained = chain_bars(per_contract)
    return ShippedFrame(
        bar_features(chained),
        path,
        sha256_of(path),
        len(per_contract),
        len(chained),
        roll_table(chained),
    )


def train_bar_bundle(
    shipped: ShippedFrame,
    out_root: Path,
    budget: BarBudget,
    progress: Progress | None = None,
    held_out_years: int = 0,
) -> Path:
    """Fit every model on the labelled decision rows (each early-stopped on its own purged
    last fifth) and write the bundle; the ONNX parity checks run on the last 64 training
    decisions. The last `held_out_years` years of the data are left out, purged and
    embargoed like a walk-forward test year, so the bundle can be scored out of sample on
    them (`esml demo`); the manifest names them."""
    started = time.perf_counter()
    frame = shipped.frame
    dir_rows = np.flatnonzero(frame.decision & frame.dir_valid)
    reg_rows = np.flatnonzero(frame.decision & frame.regime_valid)
    years = sorted({int(y) for y in frame.year[dir_rows]})
    if not 0 <= held_out_years < len(years):
        raise ValueError(f"held_out_years must be 0 to {len(years) - 1}, got {held_out_years}")
    held_out = years[len(years) - held_out_years :] if held_out_years else []
    if held_out:
        embargo = budget.embargo_s
        dir_rows = year_split(frame, dir_rows, held_out[0], DIRECTION_HORIZON_BARS, embargo)[0]
        reg_rows = year_split(frame, reg_rows, held_out[0], REGIME_HORIZON_BARS, embargo)[0]
    models = fit_bar_models(frame, dir_rows, reg_rows, budget, progress)
    data = BarTrainingData(
        file=shipped.path.name,
        sha256=shipped.sha256,
        source="Sierra Chart ES 5-minute exports ESH15..ESZ23, github.com/AndreaFerrante/"
        "Orderflow (MIT), see data/samples/NOTICE",
        contracts=shipped.contracts,
        bars=shipped.bars,
        years=sorted({int(y) for y in frame.year[dir_rows]}),
        held_out_years=held_out,
        direction_rows=len(dir_rows),
        regime_rows=len(reg_rows),
    )
    return write_bar_bundle(models, frame, dir_rows[-64:], out_root, data, budget, started)


@dataclass(frozen=True)
class BarBundle:
    """A loaded bundle: the manifest and one onnxruntime session per member."""

    path: Path
    manifest: BarBundleManifest
    sessions: dict[str, ort.InferenceSession]

    def direction(
        self,
        features: np.ndarray,
        window: np.ndarray | None = None,
        members: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Each direction member's probabilities and the ensemble's (their mean); with
        `members`, those members alone (the nets, which need `window`, cost far more)."""
        names = [n for n in self.sessions if n != "regime"]
        wanted = names if members is None else list(members)
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ValueError(f"no direction members {unknown} in {self.path}; it has {names}")
        out = {}
        for name in wanted:
            arg = window if name in ("bar_lstm", "bar_transformer") else features
            if arg is None:
                raise ValueError(f"{name} reads windows [n, {WINDOW_STEPS}, f]: pass `window`")
            run = self.sessions[name].run
            out[name] = run([OUTPUT_NAME], {INPUT_NAME: arg.astype(np.float32)})[0]
        if members is None:
            out[ENSEMBLE] = np.mean(list(out.values()), axis=0)
        return out

    def regime(self, features: np.ndarray) -> np.ndarray:
        """The regime classifier's call per feature row (0 none, 1 trend, 2 range)."""
        x = {INPUT_NAME: features.astype(np.float32)}
        return self.sessions["regime"].run([REGIME_OUTPUT], x)[0]


def load_bar_bundle(path: str | Path) -> BarBundle:
    """Read the manifest and every member, refusing any file whose sha256 differs."""
    path = Path(path)
    try:
        manifest = BarBundleManifest.model_validate(json.loads((path / MANIFEST).read_text()))
    except FileNotFoundError as e:
        raise ModelFileError(f"{path / MANIFEST}: no bundle manifest") from e
    except ValueError as e:
        raise ModelFileError(f"{path / MANIFEST}: not a bar bundle manifest: {e}") from e
    sessions = {}
    for name, m in manifest.members.items():
        got = file_sha256(path / m.file)
        if got != m.sha256:
            raise ModelFileError(f"{path / m.file}: sha256 {got} is not the manifest's {m.sha256}")
        sessions[name] = ort.InferenceSession(
            str(path / m.file), providers=["CPUExecutionProvider"]
        )
    return BarBundle(path, manifest, sessions)
