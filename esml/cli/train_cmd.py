"""`esml train` and `esml evaluate`: train the model stack; judge every model honestly.

`esml train` hands its arguments to the training entry point (`training/train.py`, the
same one SageMaker runs), so the two can never drift apart; it needs the source checkout,
where `training/` lives. `esml evaluate` runs the walk-forward evaluation of
`esml.evaluation.model_eval` on LOBSTER, the real ES files and generated SYNTHETIC ES days,
and writes docs/model-evaluation.md.
"""

from __future__ import annotations

import importlib
import shlex
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import esml

if TYPE_CHECKING:  # torch, xgboost and pandas load when a command runs, not for --help
    from esml.evaluation.datasets import EvalDataset, Skipped

console = Console(stderr=True, soft_wrap=True)
train_app = typer.Typer(
    add_completion=False,
    help=__doc__,
    # every argument, --help included, belongs to training/train.py
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
)
evaluate_app = typer.Typer(add_completion=False, help=__doc__)

DEFAULT_ES_FILE = Path("data/samples/esh4-glbx-mdp3-20231225.mbo.dbn.zst")
DEFAULT_DOC = Path("docs/model-evaluation.md")
DATASETS = ("lobster", "es", "synthetic")
BUDGETS = ("default", "full")
ONLY_HELP = f"data sets to evaluate (repeatable), of {', '.join(DATASETS)}"


@train_app.callback(invoke_without_command=True)
def train(
    args: list[str] = typer.Argument(None, help="arguments of training/train.py (see --help)"),
) -> None:
    """Train models: `esml train --help` lists the options of training/train.py."""
    raise typer.Exit(_training_entry().main(list(args or [])))


def _training_entry() -> ModuleType:
    """training/train.py of the source checkout esml runs from."""
    root = Path(esml.__file__).resolve().parents[1]
    if not (root / "training" / "train.py").is_file():
        console.print(
            f"[red]error:[/red] no training/train.py beside {root / 'esml'}; "
            "`esml train` runs from a source checkout"
        )
        raise typer.Exit(2)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("training.train")


@evaluate_app.callback(invoke_without_command=True)
def evaluate(
    data_dir: Path = typer.Option(
        Path("../shared/data"),
        "--data-dir",
        envvar="ESML_DATA_DIR",
        help="folder with lobster/ and cme-es/ ($ESML_DATA_DIR)",
    ),
    es_file: list[Path] = typer.Option(
        [DEFAULT_ES_FILE], "--es-file", help="real ES MBO files (repeatable)"
    ),
    only: list[str] = typer.Option(list(DATASETS), "--only", help=ONLY_HELP),
    synthetic_days: int = typer.Option(3, min=1, help="generated ES trade dates"),
    synthetic_seed: int = typer.Option(7, min=0, help="the generator's seed"),
    synthetic_start: str = typer.Option("2024-03-04", help="first generated trade date"),
    synthetic_hours: float = typer.Option(
        3.0,
        min=1.5,
        help="hours per generated day, from 07:30 CT (the first hour warms up minute bars)",
    ),
    folds: int = typer.Option(3, min=1, max=10, help="walk-forward test folds"),
    budget_name: str = typer.Option(
        "default",
        "--budget",
        help="default: minutes on two cores; full: every model trains to convergence "
        "(early stopping on a validation block), which takes far longer",
    ),
    epochs: int = typer.Option(3, min=1, help="default budget: most epochs per net per fold"),
    batches: int = typer.Option(
        8, min=1, help="default budget: most batches of 256 windows per net epoch"
    ),
    jobs: int = typer.Option(
        1, min=1, max=8, help="data sets evaluated at once, one process each (same results)"
    ),
    n_boot: int = typer.Option(1000, min=100, help="block-bootstrap replicates"),
    seed: int = typer.Option(7, help="seed of every model and of the bootstrap"),
    out: Path = typer.Option(DEFAULT_DOC, "--out", help="the markdown report"),
) -> None:
    """Walk-forward evaluation of every model, the ensemble and three baselines, with 95%
    intervals, written to docs/model-evaluation.md."""
    from esml.alpha.manifest import write_atomic
    from esml.alpha.torch_train import TrainParams
    from esml.alpha.xgb import XGBParams
    from esml.config import FeatureConfig
    from esml.data.dbn import DataFileError
    from esml.evaluation.datasets import Skipped
    from esml.evaluation.eval_pool import evaluate_in_parallel
    from esml.evaluation.model_eval import (
        DatasetResult,
        EvalSettings,
        ModelBudget,
        ReportContext,
        evaluate_dataset,
        render_markdown,
    )

    started = time.perf_counter()
    unknown = sorted(set(only) - set(DATASETS))
    if unknown:
        console.print(f"[red]error:[/red] unknown data sets {unknown}; choose from {DATASETS}")
        raise typer.Exit(2)
    try:
        start_day = date.fromisoformat(synthetic_start)
    except ValueError as e:
        console.print(f"[red]error:[/red] --synthetic-start must be YYYY-MM-DD: {e}")
        raise typer.Exit(2) from e
    if budget_name not in BUDGETS:
        console.print(f"[red]error:[/red] --budget must be one of {BUDGETS}")
        raise typer.Exit(2)
    settings = EvalSettings(n_folds=folds, n_boot=n_boot, seed=seed)
    base = ModelBudget()
    budget = (
        ModelBudget.full(seed)
        if budget_name == "full"
        else ModelBudget(
            trees=XGBParams(**{**base.trees.model_dump(), "random_state": seed}),
            nets=TrainParams(
                **{
                    **base.nets.model_dump(),
                    "epochs": epochs,
                    "max_batches_per_epoch": batches,
                    "seed": seed,
                }
            ),
        )
    )
    features = FeatureConfig()
    with _progress() as progress:
        try:
            datasets, skipped = _load(
                only,
                data_dir,
                es_file,
                synthetic_seed,
                start_day,
                synthetic_days,
                synthetic_hours,
                progress,
            )
        except (DataFileError, OSError, ValueError) as e:
            console.print(f"[red]error:[/red] {e}")
            raise typer.Exit(2) from e
        results: list[DatasetResult] = []
        if jobs > 1 and len(datasets) > 1:
            results, missed = evaluate_in_parallel(
                datasets, features, settings, budget, jobs, progress
            )
            skipped += missed
        else:
            for ds in datasets:
                try:
                    results.append(
                        evaluate_dataset(ds, features, settings, budget, progress=progress)
                    )
                except ValueError as e:  # too little data for the folds: said in the report
                    skipped.append(Skipped(ds.title, str(e)))
    if not results:
        console.print(
            "[red]error:[/red] no data set could be evaluated: "
            + "; ".join(f"{s.what}: {s.reason}" for s in skipped)
        )
        raise typer.Exit(2)
    ctx = ReportContext(
        command=_command_line(),
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        seconds=time.perf_counter() - started,
        feature_cfg=features,
        settings=settings,
        budget=budget,
        skipped=tuple(skipped),
    )
    write_atomic(out, render_markdown(results, ctx).encode())
    out.chmod(0o644)  # a document in the repository, not a secret
    for r in results:
        console.print(f"{r.title}: {r.scores['ensemble'].n:,} test rows, {r.seconds:.0f} s")
    console.print(f"wrote {out} in {ctx.seconds / 60:.1f} min")


def _command_line() -> str:
    """The command as typed, for the report (the options only when run as `esml`)."""
    if len(sys.argv) > 1 and sys.argv[1] == "evaluate":
        return shlex.join(["esml", *sys.argv[1:]])
    return "esml evaluate"


def _load(
    only: list[str],
    data_dir: Path,
    es_files: list[Path],
    seed: int,
    start: date,
    days: int,
    hours: float,
    progress: Progress,
) -> tuple[list[EvalDataset], list[Skipped]]:
    from esml.evaluation.datasets import (
        Skipped,
        lobster_datasets,
        real_es_dataset,
        synthetic_es_dataset,
    )

    task = progress.add_task("loading data sets", total=len(only))
    datasets: list[EvalDataset] = []
    skipped: list[Skipped] = []
    if "lobster" in only:
        folder = data_dir / "lobster"
        if folder.is_dir():
            found, missed = lobster_datasets(folder)
            datasets += found
            skipped += missed
        else:
            skipped.append(Skipped("LOBSTER", f"{folder} not found (set ESML_DATA_DIR)"))
        progress.advance(task)
    if "es" in only:
        paths = [p for p in es_files if p.exists()]
        skipped += [Skipped(p.name, "file not found") for p in es_files if not p.exists()]
        if (data_dir / "cme-es").is_dir():
            paths.append(data_dir / "cme-es")
        es, missed = real_es_dataset(paths)
        skipped += missed
        if es is not None:
            datasets.append(es)
        progress.advance(task)
    if "synthetic" in only:
        datasets.append(synthetic_es_dataset(seed, days, start, hours=hours))
        progress.advance(task)
    return datasets, skipped


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
