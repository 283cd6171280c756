"""Judge a challenger bundle on the held-out data against the champion and the baselines.

The same scoring as `esml evaluate` (esml.evaluation.model_eval): the rows come from
`build_rows`, the baselines (majority, last-move persistence, OFI logistic) are fitted on
the rows before the cutoff, every model's metrics get circular block-bootstrap intervals,
and each improvement over an opponent gets its paired interval. The challenger and the
champion are scored as served: each bundle's ensemble over its exported ONNX members,
with its own calibrator (`esml.alpha.bundle.load_served`, as the engine loads it).

Promotion is interval-based: on every promotion metric, the lower end of the challenger's
95% improvement interval over each opponent must exceed that opponent's margin (the
champion's, or the baselines'). An improvement that may be zero does not promote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from esml.alpha.bundle import TREES, ServedBundle, load_served
from esml.alpha.ensemble import ensemble_batch
from esml.config import EsmlConfig
from esml.evaluation.datasets import Rows, build_rows
from esml.evaluation.model_eval import (
    BASELINE_LABELS,
    BASELINES,
    METRIC_LABELS,
    METRICS,
    Comparison,
    FoldRows,
    Interval,
    Prediction,
    Scores,
    baseline_predictions,
    block_rows,
    score_models,
)
from training.retrain_data import Split, as_dataset

CHALLENGER = "challenger"
CHAMPION = "champion"
MIN_HELD_OUT_ROWS = 100
BLOCK_S = 60.0
_BATCH = 1024


class PromotionPolicy(BaseModel):
    """What a challenger must beat, and by how much (the stack's `esml:` context keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: tuple[str, ...] = ("log_loss", "brier")
    margin_vs_champion: float = 0.0
    margin_vs_baselines: float = 0.0
    embargo_s: float = Field(30.0, ge=0)
    n_boot: int = Field(1000, ge=100)
    seed: int = 7

    def model_post_init(self, context: object) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise ValueError(f"promotion metrics {unknown or '(none)'}; choose from {METRICS}")


@dataclass(frozen=True)
class Judgement:
    decision: str  # "promote" or "reject"
    summary: str
    reasons: tuple[str, ...]
    held_out_rows: int
    scores: dict[str, Scores]
    comparisons: tuple[Comparison, ...]

    def report(
        self, challenger: str, champion: str | None, split: Split, policy: PromotionPolicy
    ) -> dict[str, object]:
        """The evaluation.json body the verdict Lambda reads (and a person too)."""

        def iv(i: Interval) -> list[float]:
            return [i.value, i.low, i.high]

        return {
            "decision": self.decision,
            "summary": self.summary,
            "reasons": list(self.reasons),
            "challenger": challenger,
            "champion": champion,
            "policy": policy.model_dump(),
            "cutoff_ns": split.cutoff_ns,
            "held_out_rows": self.held_out_rows,
            "scores": {n: {m: iv(v) for m, v in s.metrics.items()} for n, s in self.scores.items()},
            "comparisons": [
                {
                    "model": c.model,
                    "opponent": c.baseline,
                    "improvement": {m: iv(v) for m, v in c.improvement.items()},
                    "verdict": c.sentence(c.model, _label(c.baseline)),
                }
                for c in self.comparisons
            ],
        }


def _label(name: str) -> str:
    return BASELINE_LABELS.get(name, f"the {name}")


def served_predictions(
    bundle: ServedBundle, rows: Rows, idx: np.ndarray, tick_size: float
) -> Prediction:
    """The bundle's ensemble on rows `idx`: members as exported, then its calibrated vote."""
    names = [m.name for m in bundle.ensemble_manifest.members]
    probas = []
    for name in names:
        model = bundle.members[name].model
        inputs = rows.x if name == TREES else rows.windows[name]
        probas.append(
            np.concatenate(
                [
                    model.predict_proba(inputs[idx[k : k + _BATCH]])
                    for k in range(0, len(idx), _BATCH)
                ]
            ).astype(np.float64)
        )
    em = bundle.ensemble_manifest
    batch = ensemble_batch(
        em.config, names, rows.ts_ns[idx], rows.mid[idx], np.stack(probas, axis=1), tick_size,
        em.calibrator,
    )  # fmt: skip
    return batch.proba, batch.direction.astype(np.int64)


def judge(
    split: Split,
    challenger_path: Path,
    champion_path: Path | None,
    cfg: EsmlConfig,
    policy: PromotionPolicy,
) -> Judgement:
    """Score the challenger, the champion (when there is one) and the baselines on the rows
    after the cutoff, and decide."""
    f = cfg.features
    grid = {"instrument": cfg.instrument, "decision_interval_s": f.decision_interval_s,
            "horizon_s": f.horizon_s}  # fmt: skip
    challenger = load_served(challenger_path, **grid)
    champion = load_served(champion_path, **grid) if champion_path is not None else None
    kinds = sorted(set(challenger.windows) | set(champion.windows if champion else ()))
    rows = build_rows(as_dataset(split), f, kinds)
    horizon_ns = round(f.horizon_s * 1e9)
    held = np.flatnonzero(rows.ts_ns >= split.cutoff_ns + round(policy.embargo_s * 1e9))
    before = np.flatnonzero(rows.ts_ns + horizon_ns < split.cutoff_ns)
    if len(held) < MIN_HELD_OUT_ROWS or len(before) == 0:
        reason = (f"{len(held)} held-out rows and {len(before)} before the cutoff: at least "
                  f"{MIN_HELD_OUT_ROWS} after and some before are needed to judge")  # fmt: skip
        return Judgement("reject", f"reject: {reason}", (reason,), len(held), {}, ())
    tick = cfg.instrument_spec.tick_size
    fold = FoldRows(fit=before, calibration=np.zeros(0, np.int64), test=held)
    predictions = {
        CHALLENGER: served_predictions(challenger, rows, held, tick),
        **baseline_predictions(rows, fold, policy.seed),
    }
    opponents: tuple[str, ...] = BASELINES
    if champion is not None:
        predictions[CHAMPION] = served_predictions(champion, rows, held, tick)
        opponents = (*BASELINES, CHAMPION)
    scores, comparisons = score_models(
        rows.y[held],
        predictions,
        opponents,
        block=block_rows(len(held), BLOCK_S, f.decision_interval_s),
        n_boot=policy.n_boot,
        seed=policy.seed,
    )
    mine = tuple(c for c in comparisons if c.model == CHALLENGER)
    decision, summary, reasons = decide(mine, policy, has_champion=champion is not None)
    return Judgement(decision, summary, reasons, len(held), scores, mine)


def decide(
    comparisons: Sequence[Comparison], policy: PromotionPolicy, *, has_champion: bool
) -> tuple[str, str, tuple[str, ...]]:
    """(decision, one-line summary, every shortfall) of the challenger's comparisons."""
    reasons = tuple(_shortfalls(comparisons, policy))
    if reasons:
        more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
        return "reject", f"reject: {reasons[0]}{more}", reasons
    judged = ", ".join(METRIC_LABELS[m] for m in policy.metrics)
    against = "the champion and " if has_champion else "no champion yet; "
    return "promote", f"promote: beats {against}all {len(BASELINES)} baselines on {judged}", ()


def _shortfalls(comparisons: Sequence[Comparison], policy: PromotionPolicy) -> list[str]:
    out = []
    for c in comparisons:
        margin = policy.margin_vs_champion if c.baseline == CHAMPION else policy.margin_vs_baselines
        for m in policy.metrics:
            iv = c.improvement[m]
            if not iv.low > margin:
                out.append(
                    f"vs {_label(c.baseline)}: {METRIC_LABELS[m]} improvement {iv.value:+.4f} "
                    f"(95% {iv.low:+.4f} to {iv.high:+.4f}) does not clear {margin:+.4f}"
                )
    return out


def render_markdown(report: dict[str, Any]) -> str:
    """evaluation.md: the report as a person reads it."""
    lines = [
        f"# Retraining evaluation: {report['decision'].upper()}",
        "",
        report["summary"],
        "",
        f"- challenger: {report['challenger']}",
        f"- champion: {report['champion'] or 'none'}",
        f"- held-out rows: {report['held_out_rows']} (after cutoff {report['cutoff_ns']} ns)",
        f"- policy: {report['policy']}",
        "",
    ]
    if report["scores"]:
        lines += ["| model | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " |",
                  "| --- |" + " --- |" * len(METRICS)]  # fmt: skip
        for name, metrics in report["scores"].items():
            cells = [f"{v:.4f} [{lo:.4f}, {hi:.4f}]" for v, lo, hi in (metrics[m] for m in METRICS)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"- {c['verdict']}" for c in report["comparisons"]]
    lines += [f"- {r}" for r in report["reasons"]]
    return "\n".join(lines) + "\n"
