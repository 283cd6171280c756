"""The retraining state machine's SageMaker steps, run by the training image.

The image's entry point runs this script when the job's hyper-parameters hold `esml_step`
(cdk/esml_cdk/retraining_flow.py sets it); each step reads SageMaker's channels and
writes its model directory, which SageMaker archives to the job's own output prefix:

    train     data channel + shipped data -> split in time -> the stack trained on the part
              before the cutoff -> bundles/<name>/ and dataset.json
    evaluate  challenger channel (the train job's archive) + the same data + the champion
              followed from S3 -> evaluation.json and evaluation.md
    promote   challenger channel -> the bundle verified and promoted in S3
              (esml.alpha.s3_models.promote: files first, then the pointer)

Locally: python training/retrain_steps.py --esml_step train --data DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `training` and `esml` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from esml.alpha import registry, s3_models
from esml.config import EsmlConfig, load_config
from training.retrain_data import (
    collect_sources,
    read_split,
    split_by_time,
    write_split,
)
from training.retrain_evaluate import PromotionPolicy, judge, render_markdown
from training.stack import StackParams, train_stack
from training.train import report_stack

SHIPPED_DATA = Path(__file__).resolve().parents[1] / "data" / "shipped"
"""The real CME ES hour the training image carries (containers/training/Dockerfile)."""
BUNDLES = "bundles"
REPORT_FILE = "evaluation.json"
REPORT_MARKDOWN = "evaluation.md"
PROMOTED_FILE = "promoted.json"
STEPS = ("train", "evaluate", "promote")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--esml_step", "--esml-step", dest="step", choices=STEPS, required=True)
    p.add_argument("--data", type=Path, action="append", default=[], help="data root(s)")
    p.add_argument("--challenger", type=Path, help="the train job's model.tar.gz or folder")
    p.add_argument("--out", type=Path, help="model directory (default: $SM_MODEL_DIR)")
    p.add_argument("--holdout_fraction", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--models", help="comma-separated subset of the stack (default: all)")
    p.add_argument("--bucket")
    p.add_argument("--models_prefix", default="models/")
    p.add_argument("--promotion_metrics", default="log_loss,brier")
    p.add_argument("--margin_vs_champion", type=float, default=0.0)
    p.add_argument("--margin_vs_baselines", type=float, default=0.0)
    p.add_argument("--n_boot", type=int, default=1000)
    p.add_argument("--no-shipped-data", dest="shipped", action="store_false")
    return p.parse_args(argv)


def data_roots(args: argparse.Namespace, env: Mapping[str, str]) -> list[Path]:
    roots = list(args.data)
    if not roots and "SM_CHANNEL_DATA" in env:
        roots.append(Path(env["SM_CHANNEL_DATA"]))
    if args.shipped and SHIPPED_DATA.is_dir():
        roots.append(SHIPPED_DATA)
    return roots


def train(args: argparse.Namespace, roots: list[Path], out: Path, cfg: EsmlConfig) -> str:
    sources, skipped = collect_sources(roots)
    for s in skipped:
        print(f"skipped {s.what}: {s.reason}", file=sys.stderr)
    split = split_by_time(sources, args.holdout_fraction)
    result = train_stack(
        split.training_sources(),
        cfg,
        out / BUNDLES,
        synthetic=False,
        params=StackParams(seed=args.seed, **_models(args.models)),
        keep=1,
    )
    write_split(split, out)
    report_stack(result)  # the held-out scores, as `name=value;` for SageMaker's metrics
    return result.path.name


def _models(text: str | None) -> dict[str, tuple[str, ...]]:
    return {"models": tuple(m.strip() for m in text.split(",") if m.strip())} if text else {}


def unpack_challenger(path: Path, into: Path) -> Path:
    """The train job's output as a folder (SageMaker hands the archive over as is)."""
    if path.is_dir():
        archives = sorted(path.glob("*.tar.gz"))
        if not archives:
            return path
        path = archives[0]
    with tarfile.open(path, mode="r:gz") as tar:
        tar.extractall(into, filter="data")  # refuses links and paths outside `into`
    return into


def challenger_bundle(root: Path) -> Path:
    """The one bundle the train job published. The train job's own promotion gate does
    not decide here (the evaluate step does), so no champion pointer is needed."""
    found = registry.bundles(root / BUNDLES) if (root / BUNDLES).is_dir() else []
    if len(found) != 1:
        raise FileNotFoundError(
            f"{root}: the challenger archive must hold exactly one bundle, found {len(found)}"
        )
    return found[0]


def evaluate(
    args: argparse.Namespace, roots: list[Path], challenger_root: Path, out: Path,
    cfg: EsmlConfig, s3: object, champion_root: Path,
) -> dict[str, object]:  # fmt: skip
    """Judge the challenger against the champion S3 serves now (followed exactly as the
    tick engine follows it) and the baselines; write the report."""
    split = read_split(challenger_root, roots)
    bundle = challenger_bundle(challenger_root)
    champion = None
    if args.bucket:
        s3_models.sync_champion(s3, args.bucket, args.models_prefix, champion_root, keep=1)
        champion = registry.champion_name(champion_root)
    policy = PromotionPolicy(
        metrics=tuple(m.strip() for m in args.promotion_metrics.split(",") if m.strip()),
        margin_vs_champion=args.margin_vs_champion,
        margin_vs_baselines=args.margin_vs_baselines,
        n_boot=args.n_boot,
        seed=args.seed,
    )
    judgement = judge(split, bundle, champion_root / champion if champion else None, cfg, policy)
    report = judgement.report(bundle.name, champion, split, policy)
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    (out / REPORT_MARKDOWN).write_text(render_markdown(report))
    return report


def promote(args: argparse.Namespace, challenger_root: Path, out: Path, s3: object) -> str:
    if not args.bucket:
        raise ValueError("promote needs --bucket")
    name = s3_models.promote(
        s3, challenger_bundle(challenger_root), args.bucket, args.models_prefix
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / PROMOTED_FILE).write_text(json.dumps({"champion": name}) + "\n")
    return name


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = args.out or (Path(env["SM_MODEL_DIR"]) if "SM_MODEL_DIR" in env else None)
    if out is None:
        print("error: pass --out DIR or set SM_MODEL_DIR", file=sys.stderr)
        return 2
    cfg = load_config()
    if args.step == "train":
        name = train(args, data_roots(args, env), out, cfg)
        print(f"challenger {name} -> {out}", file=sys.stderr)
        return 0
    challenger = args.challenger or (
        Path(env["SM_CHANNEL_CHALLENGER"]) if "SM_CHANNEL_CHALLENGER" in env else None
    )
    if challenger is None:
        print("error: pass --challenger or set SM_CHANNEL_CHALLENGER", file=sys.stderr)
        return 2
    import boto3

    with tempfile.TemporaryDirectory() as tmp:
        root = unpack_challenger(challenger, Path(tmp) / "challenger")
        if args.step == "evaluate":
            report = evaluate(args, data_roots(args, env), root, out, cfg, boto3.client("s3"),
                              Path(tmp) / "champion")  # fmt: skip
            print(f"evaluation:promote={int(report['decision'] == 'promote')};", flush=True)
            print(report["summary"], file=sys.stderr)
        else:
            name = promote(args, root, out, boto3.client("s3"))
            print(f"champion {name} promoted to s3://{args.bucket}/{args.models_prefix}",
                  file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
