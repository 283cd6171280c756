"""Manifests of what the stack trainer writes beyond the trees' and nets' own manifests: the
regime classifier, the ensemble, and the bundle that ties one model directory together.

Every manifest is strict (unknown keys are errors) and names the files it vouches for by
sha256, so a bundle that loads is the bundle that was trained and scored.

A champion must earn its promotion. bundle.json's `promotion` says how this bundle was
judged on its held-out rows (`training/stack.py`):

    "promotion": {"forced": false, "beats_baselines": true, "margin": 0.0,
                  "metrics": ["log_loss", "accuracy"], "shortfalls": []}

`beats_baselines` is true when, for every baseline and every metric listed, the lower end
of the paired 95% block-bootstrap interval of the ensemble's improvement exceeds `margin`;
`shortfalls` names each (metric, baseline) where it does not. Only such a bundle becomes
the champion, unless `--force` made it one anyway (`forced`: true, recorded only when the
bundle did not earn it). A bundle from before
the gate has no `promotion` (None): not judged. `promotion_line` is what `esml demo` and
every status line print.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from esml.alpha.calibration import MulticlassCalibrator
from esml.alpha.ensemble import EnsembleConfig
from esml.alpha.exit_outcomes import ExitOutcomes
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
    improvements: dict[str, dict[str, MetricInterval]] = Field(default_factory=dict)
    """baseline → metric → the ensemble's improvement (positive = better) with its paired
    interval; empty in manifests written before the promotion gate."""
    ece: float | None = None
    """Top-label expected calibration error (15 bins) of the calibrated ensemble here."""
    ece_uncalibrated: float | None = None
    """The same of the raw weighted mixture, before the calibrator."""
    reachable_max: list[float] | None = None
    """Per class (down, flat, up): the highest calibrated probability reachable anywhere."""


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
    exit_outcomes: list[ExitOutcomes] = Field(default_factory=list)
    """Held-out outcomes of each session's exit plan (the expected-move gate reads them);
    empty in manifests written before they were recorded."""


class Promotion(_Strict):
    """How a bundle was judged for promotion (see the module docstring)."""

    forced: bool
    beats_baselines: bool
    margin: float = Field(ge=0)
    metrics: list[str] = Field(min_length=1)
    shortfalls: list[str]


def judge_promotion(
    held_out: HeldOutScores | None, metrics: Sequence[str], margin: float, *, forced: bool
) -> Promotion:
    """The verdict on held-out scores: every improvement's lower bound above `margin`.
    `forced` is recorded only where the force was needed (the bundle did not earn it)."""
    if held_out is None:
        shortfalls = ["no ensemble was trained, so nothing was scored against the baselines"]
    elif not held_out.improvements:
        shortfalls = ["the held-out scores hold no paired improvements over the baselines"]
    else:
        shortfalls = [
            f"{m} vs {base}: {iv.value:+.4f} [{iv.low:+.4f}, {iv.high:+.4f}]"
            for base, by_metric in held_out.improvements.items()
            for m in metrics
            if (iv := by_metric[m]).low <= margin
        ]
    return Promotion(
        forced=forced and bool(shortfalls),
        beats_baselines=not shortfalls,
        margin=margin,
        metrics=list(metrics),
        shortfalls=shortfalls,
    )


def promotion_line(manifest: BundleManifest) -> str:
    """One line on how the bundle became champion, for `esml demo` and status lines."""
    p = manifest.promotion
    if p is None:
        return "promotion: not judged (the bundle predates the promotion gate)"
    rule = f"{' and '.join(p.metrics)} beyond a margin of {p.margin:g}"
    if p.beats_baselines:
        return f"promotion: earned: beats every baseline on held-out {rule}"
    why = "; ".join(p.shortfalls[:3]) + ("; ..." if len(p.shortfalls) > 3 else "")
    head = "FORCED (--force): it" if p.forced else "NOT promoted: it"
    return f"promotion: {head} does not beat the baselines on held-out {rule} ({why})"


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
    promotion: Promotion | None = None  # None: written before the promotion gate


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
