"""Train the ES direction model: a SageMaker training entry point that also runs locally.

In SageMaker: every `.dbn`/`.dbn.zst` MBO file under `SM_CHANNEL_TRAIN` is read, the model
goes to `SM_MODEL_DIR` and the metrics to `SM_OUTPUT_DATA_DIR`; hyper-parameters arrive as
`--key value`. Locally:

    python training/train.py --data FILE_OR_DIR [--data ...] --out DIR
    python training/train.py --synthetic-days 5 --seed 7 --out DIR   # SYNTHETIC sessions
    python training/train.py --local --out DIR   # no data given: 5 SYNTHETIC sessions

With --stack, the whole stack (trees, tick LSTM, bar LSTM, DeepLOB, regime classifier,
ensemble) is trained into one bundle under --out, which becomes the `champion`
(training/stack.py, esml/alpha/registry.py); SYNTHETIC days then come from the
queue-reactive simulator:

    python training/train.py --stack --data FILE --out models
    python training/train.py --stack --local --synthetic-days 3 --keep 1 --out models

A stack bundle becomes the champion only when its ensemble beats every baseline on its
held-out rows (`--promotion-margin`); otherwise it is kept beside the champion, the command
says why and exits 3. `--force` makes it the champion anyway, and its bundle.json says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import databento_dbn as dbn
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from esml.alpha.manifest import ModelManifest
from esml.alpha.params import TrainParams, XGBParams
from esml.config import EsmlConfig, FeatureConfig, load_config
from esml.market.instruments import instrument_for

if TYPE_CHECKING:
    from training.stack import StackResult
# xgboost, torch and the numba readers load in the functions that train: --help stays instant

if __package__ in (None, ""):  # run as a script: make the `training` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NOT_PROMOTED = 3
"""Exit status of a stack that trained but did not earn promotion (the champion stays)."""
DEFAULT_LOCAL_DAYS = 5
DEFAULT_STACK_START = "2024-03-04"
DBN_SUFFIXES = (".dbn", ".dbn.zst")
_DAY_NS = 86_400 * 1_000_000_000
console = Console(stderr=True, soft_wrap=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--data",
        action="append",
        type=Path,
        default=[],
        help="an MBO .dbn/.dbn.zst file or a directory of them (repeatable)",
    )
    p.add_argument("--synthetic-days", type=int, help="train on N SYNTHETIC simulator sessions")
    p.add_argument(
        "--seed",
        type=int,
        default=7,
        help="seed of the first SYNTHETIC session (one per day: seed, seed+1, ...)",
    )
    p.add_argument(
        "--session-s",
        type=float,
        default=3600.0,
        help="length of each synthetic session in seconds",
    )
    p.add_argument("--out", type=Path, help="model directory (default: $SM_MODEL_DIR)")
    p.add_argument("--config", type=Path, help="esml TOML config (instrument, features)")
    p.add_argument(
        "--local",
        action="store_true",
        help="ignore SM_* variables; without data, train on SYNTHETIC sessions",
    )
    for key in ("instrument",):
        _add_both(p, key, str, "config override")
    for key, field in FeatureConfig.model_fields.items():
        _add_both(p, key, field.annotation, "feature config override")
    for key, field in XGBParams.model_fields.items():
        _add_both(p, key, field.annotation, f"hyper-parameter (default {field.default})")
    stack = p.add_argument_group("--stack: the whole model stack as one champion bundle")
    stack.add_argument("--stack", action="store_true", help="train every model into a bundle")
    stack.add_argument(
        "--models",
        help="comma-separated subset of trees,tick_lstm,bar_lstm,deeplob,regime,ensemble",
    )
    stack.add_argument("--keep", type=int, default=2, help="bundles kept under --out (>= 1)")
    stack.add_argument(
        "--force",
        action="store_true",
        help="make the bundle the champion even if it does not beat the baselines "
        "(bundle.json records promotion.forced)",
    )
    stack.add_argument(
        "--promotion-margin",
        type=float,
        default=0.0,
        help="how far the lower end of each improvement's 95%% interval must clear zero",
    )
    stack.add_argument(
        "--synthetic-start", default=DEFAULT_STACK_START, help="first SYNTHETIC trade date"
    )
    stack.add_argument(
        "--synthetic-hours",
        type=float,
        default=3.5,
        help="hours of each SYNTHETIC day from 07:30 CT (the first hour warms up minute bars)",
    )
    for key, field in TrainParams.model_fields.items():
        _add_both(stack, f"net_{key}", field.annotation, f"nets: {key} (default varies)")
    return p.parse_args(argv)


def _add_both(p: argparse._ActionsContainer, key: str, kind: object, help_: str) -> None:
    """SageMaker passes `--key value` with the key as written: accept `_` and `-` spellings."""
    dashed = key.replace("_", "-")
    flags = [f"--{key}"] + ([f"--{dashed}"] if dashed != key else [])
    p.add_argument(*flags, dest=f"opt_{key}", type=kind, help=help_)


def resolve_config(args: argparse.Namespace) -> tuple[EsmlConfig, XGBParams]:
    cfg = load_config(args.config)
    features = {k: getattr(args, f"opt_{k}") for k in FeatureConfig.model_fields}
    overrides: dict[str, object] = {
        "features": cfg.features.model_copy(
            update={k: v for k, v in features.items() if v is not None}
        ).model_dump()
    }
    if args.opt_instrument is not None:
        overrides["instrument"] = args.opt_instrument
    cfg = load_config(args.config, **overrides)
    hyper = {k: getattr(args, f"opt_{k}") for k in XGBParams.model_fields}
    return cfg, XGBParams(**{k: v for k, v in hyper.items() if v is not None})


@dataclass(frozen=True)
class DataFile:
    path: Path
    name: str  # the manifest's key: the path relative to the directory given, or the file name
    explicit: bool  # named on the command line, not found in a directory


def dbn_files(paths: Sequence[Path]) -> list[DataFile]:
    """Every file given, and every DBN file under a directory given."""
    out: list[DataFile] = []
    for path in paths:
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.is_file() and _is_dbn(f))
            out.extend(DataFile(f, str(f.relative_to(path)), explicit=False) for f in found)
        elif path.is_file():
            out.append(DataFile(path, path.name, explicit=True))
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return out


def _is_dbn(path: Path) -> bool:
    return path.name.endswith(DBN_SUFFIXES)


def read_sources(
    files: list[DataFile], cfg: EsmlConfig, progress: Progress
) -> dict[str, np.ndarray]:
    """Each MBO file's main outright; files of other schemas found in directories are skipped
    (named on stderr), an explicitly named one is an error."""
    from esml.data.dbn import DataFileError, open_dbn

    task = progress.add_task("reading MBO files", total=len(files))
    sources: dict[str, np.ndarray] = {}
    for f in files:
        metadata = open_dbn(f.path).metadata
        schema = metadata.schema
        if schema != dbn.Schema.MBO:
            if f.explicit:
                raise DataFileError(f"{f.path}: schema {schema}, not MBO")
            progress.console.print(f"skipping {f.path}: schema {schema}, not MBO")
            progress.advance(task)
            continue
        if f.name in sources:
            raise ValueError(f"two training files are both named {f.name}")
        sources[f.name] = _main_outright(f.path, metadata, cfg)
        progress.advance(task)
    if not sources:
        raise DataFileError(f"no MBO files among {[str(f.path) for f in files]}")
    return sources


def _main_outright(path: Path, metadata: dbn.Metadata, cfg: EsmlConfig) -> np.ndarray:
    """The records of the file's busiest instrument, which must be the configured one."""
    from esml.data.dbn import DataFileError, main_instrument, read_mbo

    events = read_mbo(path)
    if len(events) == 0:
        raise DataFileError(f"{path}: no MBO records")
    iid = main_instrument(events)
    symbol = _raw_symbol(metadata, iid)
    if symbol is not None and instrument_for(symbol) != cfg.instrument_spec:
        raise DataFileError(f"{path}: {symbol} is not {cfg.instrument}; pass --instrument")
    return events[events["instrument_id"] == iid]


def _raw_symbol(metadata: dbn.Metadata, instrument_id: int) -> str | None:
    """The raw symbol mapped to `instrument_id` in the file's symbology, if it has one."""
    for raw, intervals in metadata.mappings.items():
        if any(str(i["symbol"]) == str(instrument_id) for i in intervals):
            return raw
    return None


def synthetic_sources(
    days: int, seed: int, session_s: float, cfg: EsmlConfig, progress: Progress
) -> dict[str, np.ndarray]:
    """SYNTHETIC sessions on consecutive days, one seed each: regenerable by anyone."""
    from esml.sim.synthetic import DEFAULT_START_NS, generate_session

    if days < 1:
        raise ValueError(f"--synthetic-days must be >= 1, got {days}")
    task = progress.add_task("generating SYNTHETIC sessions", total=days)
    sources = {}
    for d in range(days):
        sources[f"synthetic-seed-{seed + d}"] = generate_session(
            seed + d,
            start_ns=DEFAULT_START_NS + d * _DAY_NS,
            duration_s=session_s,
            instrument=cfg.instrument_spec,
        )
        progress.advance(task)
    return sources


def write_metrics(manifest: ModelManifest, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    body = {
        "name": manifest.name,
        "version": manifest.version,
        "synthetic_training_data": manifest.synthetic_training_data,
        "validation": manifest.validation.model_dump(),
        "folds": [f.model_dump() for f in manifest.folds],
    }
    path.write_text(json.dumps(body, indent=2) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 with a model written, or 2 with one clear line on stderr (which the training
    image's entry point turns into SageMaker's failure reason)."""
    args = parse_args(argv)
    env = {} if args.local else os.environ
    try:
        result = run(args, env)
    except (ValueError, OSError) as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        return 2
    stack_not_promoted = not isinstance(result, ModelManifest) and not result.champion
    return NOT_PROMOTED if stack_not_promoted else 0


def run(args: argparse.Namespace, env: Mapping[str, str]) -> ModelManifest | StackResult:
    out = args.out or (Path(env["SM_MODEL_DIR"]) if "SM_MODEL_DIR" in env else None)
    if out is None:
        raise ValueError("no output directory: pass --out DIR or set SM_MODEL_DIR")
    cfg, params = resolve_config(args)
    if args.stack:
        return run_stack(args, env, cfg, out)
    from esml.alpha.xgb import train_direction_model

    data, days = _training_data(args, env)
    synthetic = days is not None
    with _progress() as progress:
        if synthetic:
            sources = synthetic_sources(days, args.seed, args.session_s, cfg, progress)
        else:
            sources = read_sources(dbn_files(data), cfg, progress)
        manifest = train_direction_model(
            list(sources.values()),
            cfg,
            out,
            synthetic=synthetic,
            source_names=list(sources),
            params=params,
            progress=progress,
        )
    report(manifest, out)
    if "SM_OUTPUT_DATA_DIR" in env:
        write_metrics(manifest, Path(env["SM_OUTPUT_DATA_DIR"]))
    return manifest


def _training_data(
    args: argparse.Namespace, env: Mapping[str, str]
) -> tuple[list[Path], int | None]:
    """(data paths, synthetic days): exactly one of them, from the flags or SageMaker."""
    data = list(args.data)
    if not data and args.synthetic_days is None and "SM_CHANNEL_TRAIN" in env:
        data = [Path(env["SM_CHANNEL_TRAIN"])]
    days = args.synthetic_days
    if data and days is not None:
        raise ValueError("pass --data or --synthetic-days, not both")
    if not data and days is None:
        if not args.local:
            raise ValueError(
                "no training data: pass --data, --synthetic-days or set "
                "SM_CHANNEL_TRAIN (or --local for synthetic sessions)"
            )
        days = DEFAULT_LOCAL_DAYS
        console.print(f"no --data given: training on {days} SYNTHETIC sessions")
    return data, days


def run_stack(
    args: argparse.Namespace, env: Mapping[str, str], cfg: EsmlConfig, out: Path
) -> StackResult:
    """Every model of the stack into one bundle under `out`, published as the champion."""
    from esml.evaluation.datasets import synthetic_es_dataset
    from training.stack import STACK_MODELS, StackParams, train_stack

    if args.keep < 1:
        raise ValueError(f"--keep must be >= 1, got {args.keep}")
    nets = {k: getattr(args, f"opt_net_{k}") for k in TrainParams.model_fields}
    base = StackParams()
    given = {k: getattr(args, f"opt_{k}") for k in XGBParams.model_fields}
    fields: dict[str, object] = {
        "trees": XGBParams(
            **{**base.trees.model_dump(), **{k: v for k, v in given.items() if v is not None}}
        ),
        "nets": TrainParams(
            **{**base.nets.model_dump(), **{k: v for k, v in nets.items() if v is not None}}
        ),
        "seed": args.seed,
        "promotion_margin": args.promotion_margin,
    }
    if args.models:
        fields["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
        unknown = sorted(set(fields["models"]) - set(STACK_MODELS))
        if unknown:
            raise ValueError(f"--models: unknown {unknown}; choose from {list(STACK_MODELS)}")
    params = StackParams(**fields)
    data, days = _training_data(args, env)
    with _progress() as progress:
        if days is not None:
            start = date.fromisoformat(args.synthetic_start)
            ds = synthetic_es_dataset(args.seed, days, start, hours=args.synthetic_hours)
            sources = {s.name: s.events for s in ds.sources}
        else:
            sources = read_sources(dbn_files(data), cfg, progress)
        result = train_stack(
            sources,
            cfg,
            out,
            synthetic=days is not None,
            params=params,
            keep=args.keep,
            force=args.force,
            progress=progress,
        )
    report_stack(result)
    if "SM_OUTPUT_DATA_DIR" in env:
        path = Path(env["SM_OUTPUT_DATA_DIR"]) / "bundle.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(result.manifest.model_dump_json(indent=2) + "\n")
    return result


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def report_stack(result: StackResult) -> None:
    from esml.alpha.bundle_manifest import promotion_line

    m = result.manifest
    label = " (SYNTHETIC training data)" if m.synthetic_training_data else ""
    role = "champion" if result.champion else "bundle (not the champion)"
    console.print(f"{role} {m.version} → {result.path}{label}")
    console.print(f"  {promotion_line(m)}", highlight=False)
    for kind, why in m.left_out.items():
        console.print(f"  {kind}: {why}")
    if result.ensemble is not None:
        h = result.ensemble.held_out
        print(
            "; ".join(f"heldout:ensemble_{k}={v.value:.4f}" for k, v in h.metrics.items())
            + f"; heldout:rows={h.rows};"
        )
        for line in h.verdicts:
            console.print(f"  {line}")


def report(manifest: ModelManifest, out: Path) -> None:
    """One `name=value;` line per metric, the form SageMaker metric definitions match."""
    v = manifest.validation
    label = " (SYNTHETIC training data)" if manifest.synthetic_training_data else ""
    console.print(f"model {manifest.name} {manifest.version} → {out}{label}")
    print(
        f"validation:accuracy={v.accuracy:.4f}; validation:macro_f1={v.macro_f1:.4f}; "
        f"validation:log_loss={v.log_loss:.4f}; "
        f"validation:majority_baseline_accuracy={v.majority_baseline_accuracy:.4f}; "
        f"validation:prior_log_loss={v.prior_log_loss:.4f};"
    )
    for i, f in enumerate(manifest.folds):
        print(
            f"fold{i}:accuracy={f.accuracy:.4f}; fold{i}:log_loss={f.log_loss:.4f}; "
            f"fold{i}:majority_baseline_accuracy={f.majority_baseline_accuracy:.4f};"
        )


if __name__ == "__main__":
    sys.exit(main())
