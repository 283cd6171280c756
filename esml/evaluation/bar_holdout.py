"""A shipped bar bundle scored on the years it never saw: nothing is trained, nothing looked
ahead at.

The bundle's manifest names the years its models trained on (`data.years`) and the years
left out (`data.held_out_years`); only years of the bars after the last training year are
scored. For each such year, as in the walk-forward of `esml.evaluation.bar_walkforward`:

- direction over the next 30 minutes: the bundle's members against the direction
  baselines (majority class, last-move persistence, momentum sign), the baselines fitted
  on the bundle's own training years (purged and embargoed before the first held-out
  year), with paired block-bootstrap intervals (`esml.evaluation.model_eval`);
- trading the year's regular hours with the same gates, exits and conservative bar fills
  (`esml.evaluation.bar_trading`: stop before target, a tick of slippage, commissions):
  each member alone, the z-score regime rule driven by the bundle's regime classifier, and
  the momentum rule, which uses no model, as the bar to clear.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from esml.alpha.bar_bundle import BarBundle, ShippedFrame
from esml.alpha.bar_features import DIRECTION_HORIZON_BARS, FEATURE_NAMES, windows
from esml.evaluation.bar_trading import BarTradeConfig, simulate
from esml.evaluation.bar_walkforward import (
    DIRECTION_BASELINES,
    direction_baselines,
    model_decider,
    rule_decider,
    rule_strategies,
    year_split,
)
from esml.evaluation.metrics import Metrics, compute_metrics
from esml.evaluation.model_eval import Comparison, Scores, score_models

HELD_OUT_RULES = ("zscore_regime_ml", "momentum")
"""The rules traded beside the models: the one the bundle's regime classifier drives, and
the model-free momentum rule."""


@dataclass(frozen=True)
class HeldOutYear:
    year: int
    test_rows: int  # labelled decision rows scored
    scores: dict[str, Scores]  # members and baselines
    comparisons: list[Comparison]  # each member against each baseline
    trading: dict[str, Metrics]  # members, then HELD_OUT_RULES


@dataclass(frozen=True)
class HeldOutResult:
    bundle: str  # the bundle's directory name
    trained_years: tuple[int, ...]
    baseline_rows: int  # the training rows the baselines were fitted on
    years: tuple[HeldOutYear, ...]


def held_out_years(shipped: ShippedFrame, bundle: BarBundle) -> list[int]:
    """The years of the bars with decisions after every year the bundle trained on."""
    last = max(bundle.manifest.data.years)
    frame = shipped.frame
    return sorted(int(y) for y in np.unique(frame.year[frame.decision]) if y > last)


def score_held_out(
    shipped: ShippedFrame,
    bundle: BarBundle,
    members: Sequence[str] = ("trees",),
    *,
    n_boot: int = 500,
    block_rows: int = 72,
    seed: int = 7,
    trade_cfg: BarTradeConfig | None = None,
) -> HeldOutResult:
    """Score and trade `members` of `bundle` on every held-out year of `shipped`.

    Raises ValueError when the bundle reads other features than these bars give, or when
    the bars hold no year after the bundle's training years (scoring earlier years would
    be in sample)."""
    manifest = bundle.manifest
    if manifest.feature_names != list(FEATURE_NAMES):
        raise ValueError(f"{bundle.path.name} reads other features than esml's bar features")
    years = held_out_years(shipped, bundle)
    if not years:
        raise ValueError(
            f"{bundle.path.name} trained on {manifest.data.years[0]}-{manifest.data.years[-1]}: "
            "the bars hold no later year to score it on out of sample"
        )
    frame = shipped.frame
    dir_rows = np.flatnonzero(frame.decision & frame.dir_valid)
    embargo_s = float(manifest.budget.get("embargo_s", 86_400.0))
    train = year_split(frame, dir_rows, years[0], DIRECTION_HORIZON_BARS, embargo_s)[0]
    train = train[np.isin(frame.year[train], manifest.data.years)]
    cfg = trade_cfg or BarTradeConfig()
    nets = any(m in ("bar_lstm", "bar_transformer") for m in members)
    out = []
    for year in years:
        decisions = np.flatnonzero(frame.decision & (frame.year == year))
        slot = np.full(len(frame.ts_end), -1, np.int64)
        slot[decisions] = np.arange(len(decisions))
        x = frame.x[decisions]
        proba = bundle.direction(x, windows(frame.x, decisions) if nets else None, members)
        test = dir_rows[frame.year[dir_rows] == year]
        preds = {n: (p[slot[test]], p[slot[test]].argmax(axis=1)) for n, p in proba.items()}
        preds.update(direction_baselines(frame, train, test))
        scores, comparisons = score_models(
            frame.y_dir[test],
            preds,
            DIRECTION_BASELINES,
            block=block_rows,
            n_boot=n_boot,
            seed=seed,
        )
        regime = bundle.regime(x)
        rules = rule_strategies()
        deciders: dict[str, Callable] = {
            n: model_decider(frame, slot, p, n) for n, p in proba.items()
        }
        deciders.update({n: rule_decider(frame, slot, regime, rules[n]) for n in HELD_OUT_RULES})
        bars = np.flatnonzero((frame.column("is_rth") > 0) & (frame.year == year))
        trading = {n: compute_metrics(simulate(frame, bars, d, cfg)) for n, d in deciders.items()}
        out.append(HeldOutYear(year, len(test), scores, comparisons, trading))
    return HeldOutResult(bundle.path.name, tuple(manifest.data.years), len(train), tuple(out))
