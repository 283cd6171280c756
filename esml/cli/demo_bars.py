"""`esml demo`'s real-data section: the shipped bar bundle scored and traded, out of sample,
on the held-out years of the shipped nine years of real ES 5-minute bars.

Everything is computed when the demo runs, from the shipped bars and the shipped bundle
(`esml.evaluation.bar_holdout`); the years scored are those after the years the bundle's
manifest says it trained on. Only the trees member is scored: the nets take minutes on two
cores; `esml bars evaluate` is the full walk-forward (docs/bar-model-evaluation.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.rule import Rule
from rich.table import Table

if TYPE_CHECKING:
    from esml.evaluation.bar_holdout import HeldOutResult
    from esml.evaluation.model_eval import Interval

DEMO_BARS = Path("data/samples/es-bars/es-5m-sierra.parquet")
DEMO_BAR_MODELS = Path("models")
DEMO_MEMBERS = ("trees",)
BUNDLE_GLOB = "es-bars-5m-*"


def latest_bar_bundle(models_root: Path) -> Path | None:
    """The newest bar bundle under `models_root` (versions are UTC timestamps)."""
    found = sorted(p for p in Path(models_root).glob(BUNDLE_GLOB) if p.is_dir())
    return found[-1] if found else None


def show_held_out(console: Console, bars: Path, models_root: Path) -> HeldOutResult | None:
    """Score the newest bar bundle on its held-out years and print the tables; a missing or
    unusable bundle or data file is said plainly and skipped (the demo goes on)."""
    from esml.alpha.bar_bundle import frame_from_shipped, load_bar_bundle
    from esml.alpha.manifest import ModelFileError
    from esml.data.dbn import DataFileError
    from esml.evaluation.bar_holdout import score_held_out

    console.print(Rule("real data, out of sample: nine years of ES 5-minute bars"))
    path = latest_bar_bundle(models_root)
    if path is None:
        console.print(f"no bar bundle ({BUNDLE_GLOB}) under {models_root}: skipped")
        return None
    try:
        bundle = load_bar_bundle(path)
        result = score_held_out(frame_from_shipped(bars), bundle, DEMO_MEMBERS)
    except (DataFileError, ModelFileError, OSError, ValueError) as e:
        console.print(f"[yellow]real-data section skipped:[/yellow] {e}")
        return None
    _print(console, result)
    return result


def _print(console: Console, r: HeldOutResult) -> None:
    from esml.alpha.bar_models import MODEL_LABELS
    from esml.evaluation.bar_report import STRATEGY_LABELS, beats_baselines
    from esml.evaluation.bar_walkforward import BASELINE_LABELS, DIRECTION_BASELINES
    from esml.evaluation.metrics import metric_rows
    from esml.evaluation.model_eval import METRIC_LABELS, METRICS

    held = ", ".join(str(y.year) for y in r.years)
    console.print(
        f"bundle {r.bundle}: trained on REAL ES bars {r.trained_years[0]}-"
        f"{r.trained_years[-1]}; scored here on {held}, which it never saw (nothing is "
        "trained now). Only its trees member: `esml bars evaluate` is the full walk-forward "
        "(docs/bar-model-evaluation.md). Baselines fitted on the bundle's "
        f"{r.baseline_rows:,} training rows.",
        highlight=False,
    )
    scores = Table(title="direction over the next 30 minutes (95% block-bootstrap intervals)")
    better = f"better than all {len(DIRECTION_BASELINES)} baselines on"
    for col in ("year", "model", "rows", "accuracy", "log loss", better):
        scores.add_column(col, justify="left" if col == "model" else "right")
    for y in r.years:
        for name in (*DEMO_MEMBERS, *DIRECTION_BASELINES):
            s = y.scores[name]
            wins = [METRIC_LABELS[m] for m in METRICS if beats_baselines(y.comparisons, name, m)]
            verdict = (", ".join(wins) or "nothing") if name in DEMO_MEMBERS else ""
            label = MODEL_LABELS.get(name) or f"baseline: {BASELINE_LABELS[name]}"
            scores.add_row(
                str(y.year),
                label,
                f"{s.n:,}",
                _iv(s.metrics["accuracy"]),
                _iv(s.metrics["log_loss"]),
                verdict,
            )
    console.print(scores)
    trading = Table(
        title="trading the held-out years: regular hours, one contract, bar fills stop "
        "first, 1 tick slippage, commissions"
    )
    wanted = {
        "Round trips": "trades",
        "Win rate (Wilson 95%)": "win rate (Wilson 95%)",
        "Profit factor": "profit factor",
        "Net P&L (after costs)": "net after costs",
        "Max drawdown (closed trades)": "max drawdown",
    }
    for col in ("year", "strategy", *wanted.values()):
        trading.add_column(col, justify="left" if col == "strategy" else "right")
    for y in r.years:
        for name, m in y.trading.items():
            cells = dict(metric_rows(m))
            trading.add_row(
                str(y.year), STRATEGY_LABELS.get(name, name), *(cells[k] for k in wanted)
            )
    console.print(trading)
    for name in DEMO_MEMBERS:
        beat = sum(beats_baselines(y.comparisons, name) for y in r.years)
        paid = sum(y.trading[name].net_pnl > 0 for y in r.years)
        console.print(
            f"{MODEL_LABELS[name]}: beats all {len(DIRECTION_BASELINES)} baselines on every "
            f"metric in {beat} of {len(r.years)} held-out years; profitable after costs in "
            f"{paid} of {len(r.years)}.",
            highlight=False,
        )


def _iv(iv: Interval) -> str:
    return f"{iv.value:.3f} [{iv.low:.3f}, {iv.high:.3f}]"
