"""`esml score`: test a trained bundle, as shipped, on data of one's own (no training).

    esml score --model models --data my-es-day.mbo.dbn.zst [--data ...]

prints the tables `esml evaluate` writes to docs/model-evaluation.md: each member the data
can feed and the ensemble, against the baselines, with 95% block-bootstrap intervals
(`esml.evaluation.bundle_scoring`). Heavy modules load only when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(soft_wrap=True)


def score(
    model: Path = typer.Option(
        ..., "--model", help="a bundle directory, or a model root with a champion"
    ),
    data: list[Path] = typer.Option(
        ..., "--data", help="Databento MBO files or folders of them (repeatable)"
    ),
    baseline_fraction: float = typer.Option(
        0.5, min=0.05, max=0.95, help="share of the rows, the earliest, the baselines fit on"
    ),
    n_boot: int = typer.Option(1000, min=100, help="block-bootstrap replicates"),
    seed: int = typer.Option(7, help="seed of the baselines and the bootstrap"),
    out: Path | None = typer.Option(None, "--out", help="also write the tables to this file"),
) -> None:
    """Score a bundle on the files given, against the baselines; nothing is trained."""
    from esml.alpha.manifest import ModelFileError
    from esml.data.dbn import DataFileError
    from esml.evaluation.bundle_scoring import score_bundle
    from esml.evaluation.datasets import real_es_dataset
    from esml.evaluation.model_eval import MODEL_LABELS, score_tables

    missing = [str(p) for p in data if not p.exists()]
    if missing:
        console.print(f"[red]error:[/red] not found: {', '.join(missing)}")
        raise typer.Exit(2)
    try:
        dataset, skipped = real_es_dataset(data)
        for s in skipped:
            console.print(f"skipped {s.what}: {s.reason}")
        if dataset is None:
            raise ValueError("none of the files given is usable ES MBO data")
        r = score_bundle(
            model, dataset, baseline_fraction=baseline_fraction, n_boot=n_boot, seed=seed
        )
    except (ModelFileError, DataFileError, OSError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    label = " (trained on SYNTHETIC data)" if r.synthetic_training_data else ""
    lines = [
        f"# {r.bundle}{label} on {', '.join(s.name for s in dataset.sources)}",
        "",
        f"- baselines fit on the first {r.fit_rows:,} rows; every model and baseline scored "
        f"on the {r.scores[r.models[0]].n:,} rows after them (purged, embargoed)",
    ]
    lines += [f"- **{MODEL_LABELS[m]} not scored**: {why}" for m, why in r.not_scored.items()]
    if r.in_sample:
        lines.append(
            f"- **IN SAMPLE**: the bundle was trained on {', '.join(r.in_sample)}; "
            "these scores are not out of sample"
        )
    text = "\n".join([*lines, *score_tables(r.models, r.scores, r.comparisons)])
    console.print(text, markup=False, highlight=False)
    if out is not None:
        out.write_text(text)
