"""Walk-forward by calendar year on the ES 5-minute bars: train on the years before, test on
the year, score against baselines, then trade.

For each test year Y the training rows are the decision rows (08:35-14:30 CT closes) of
earlier years whose label window, plus an embargo of one day, ends before Y's first
decision: t + horizon + embargo < first test time (the rule of `esml.alpha.splits`).
Scores use `esml.evaluation.model_eval`: accuracy, macro F1, log loss and Brier with 95%
circular block-bootstrap intervals, blocks of one trading day of decisions (72 rows; a
label overlaps the next 5), every model paired with every baseline on the same blocks.

Direction baselines (fitted on the training rows): majority class; last-move persistence
(the label of the decision 30 minutes earlier, whose window has just closed); momentum
sign (up if the last hour's return is positive, down if negative), both with the training
rows' frequencies of the next label given that call as probabilities. Regime baselines:
majority, and the previous regime (the label of the hour that has just ended).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import Progress

from esml.alpha.bar_features import (
    DIRECTION_HORIZON_BARS,
    FEATURE_NAMES,
    REGIME_HORIZON_BARS,
    BarFrame,
)
from esml.alpha.bar_models import ENSEMBLE, BarBudget, BarModels, fit_bar_models
from esml.alpha.rules import (
    EfficiencyRegimeConfig,
    MeanReversionConfig,
    MeanReversionStrategy,
    MomentumConfig,
    MomentumStrategy,
    Regime,
    ZScoreRegimeConfig,
    ZScoreRegimeStrategy,
    feature_index,
)
from esml.alpha.strategy import Signal, Strategy
from esml.evaluation.bar_trading import BarTradeConfig, simulate
from esml.evaluation.metrics import Metrics, compute_metrics
from esml.evaluation.model_eval import (
    Comparison,
    Prediction,
    Scores,
    majority_baseline,
    persistence_baseline,
)
from esml.evaluation.model_eval import score_models as _score
from esml.features.labels import DOWN, UP
from esml.features.labels import REGIMES as REGIME_NAMES
from esml.market.side import Side

BAR_NS = 300 * 1_000_000_000
DIRECTION_BASELINES = ("majority", "persistence", "momentum")
REGIME_BASELINES = ("majority", "previous_regime")
BASELINE_LABELS = {
    "majority": "majority class",
    "persistence": "last-move persistence",
    "momentum": "momentum sign",
    "previous_regime": "previous regime",
}
REGIME_FEATURE = "regime_pred"
RULE_FEATURES = (*FEATURE_NAMES, REGIME_FEATURE)
RULES = ("momentum", "mean_reversion", "zscore_regime", "zscore_regime_ml")
COMBINED = "ensemble+rules"


class BarEvalSettings(BaseModel):
    """The walk-forward's settings (recorded in the report)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    test_years: tuple[int, ...] = (2017, 2018, 2019, 2020, 2021, 2022, 2023)
    block_rows: int = Field(72, ge=1)
    n_boot: int = Field(500, ge=100)
    seed: int = 7
    nets: tuple[str, ...] = ("bar_lstm", "bar_transformer")
    budget: BarBudget = BarBudget()


@dataclass(frozen=True)
class YearResult:
    year: int
    train_rows: int
    test_rows: int
    direction_scores: dict[str, Scores]
    direction_comparisons: list[Comparison]
    regime_scores: dict[str, Scores]
    regime_comparisons: list[Comparison]
    trading: dict[str, Metrics]
    class_shares: dict[str, float]
    seconds: float
    notes: list[str] = field(default_factory=list)


def year_split(
    frame: BarFrame, rows: np.ndarray, year: int, horizon_bars: int, embargo_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) among `rows` (sorted bar indices): test = the year's rows, train =
    earlier rows whose label window and embargo end before the first test row."""
    rows = np.asarray(rows, np.int64)
    test = rows[frame.year[rows] == year]
    if test.size == 0:
        raise ValueError(f"no decision rows in {year}")
    limit = frame.ts_end[test[0]] - horizon_bars * BAR_NS - round(embargo_s * 1e9)
    train = rows[(frame.ts_end[rows] < limit) & (frame.year[rows] < year)]
    if train.size == 0:
        raise ValueError(f"no training rows before {year}")
    return train, test


def previous_labels(y: np.ndarray, valid: np.ndarray, ts_end: np.ndarray, lag: int) -> np.ndarray:
    """The label of the row `lag` bars earlier when its window ends exactly now (it is known
    at decision time), else -1."""
    prev = np.full(len(y), -1, np.int64)
    i = np.arange(lag, len(y))
    ok = valid[i - lag] & (ts_end[i] - ts_end[i - lag] == lag * BAR_NS)
    prev[i[ok]] = y[i - lag][ok]
    return prev


def momentum_calls(frame: BarFrame) -> np.ndarray:
    """Up if the last hour's return is positive, down if negative, -1 (no call) if zero."""
    ret = frame.column("ret_12_ticks")
    return np.where(ret > 0, UP, np.where(ret < 0, DOWN, -1)).astype(np.int64)


def direction_baselines(
    frame: BarFrame, train: np.ndarray, test: np.ndarray
) -> dict[str, Prediction]:
    """The direction baselines fitted on the `train` rows, predicting the `test` rows."""
    y = frame.y_dir
    prev = previous_labels(y, frame.dir_valid, frame.ts_end, DIRECTION_HORIZON_BARS)
    mom = momentum_calls(frame)
    return {
        "majority": majority_baseline(y[train], len(test)),
        "persistence": persistence_baseline(prev[train], y[train], prev[test]),
        "momentum": persistence_baseline(mom[train], y[train], mom[test]),
    }


class PredictedRegime:
    """The regime classifier's call as a `RegimeRule`: reads the `regime_pred` column the
    walk-forward appends to the rule strategies' feature row."""

    def __init__(self, feature_names: tuple[str, ...] = RULE_FEATURES) -> None:
        self._col = feature_index(feature_names, REGIME_FEATURE, "the predicted regime rule")

    def classify(self, features: np.ndarray) -> Regime:
        return Regime(REGIME_NAMES[int(features[self._col])])


def rule_strategies() -> dict[str, Strategy]:
    """The rule strategies with thresholds for 5-minute bars (the engine's are for seconds)."""
    zscore = {"window": 24, "trail_ticks": 8, "min_std_ticks": 2.0}
    return {
        "momentum": MomentumStrategy(
            MomentumConfig(
                return_feature="ret_6_ticks", threshold_ticks=16.0, full_strength_ticks=48.0
            ),
            feature_names=RULE_FEATURES,
        ),
        "mean_reversion": MeanReversionStrategy(
            MeanReversionConfig(
                distance_feature="vwap_dist_ticks", entry_ticks=24.0, max_ticks=80.0, exit_ticks=4.0
            ),
            feature_names=RULE_FEATURES,
        ),
        "zscore_regime": ZScoreRegimeStrategy(
            ZScoreRegimeConfig(**zscore, regime=EfficiencyRegimeConfig(feature="efficiency_12")),
            feature_names=RULE_FEATURES,
        ),
        "zscore_regime_ml": ZScoreRegimeStrategy(
            ZScoreRegimeConfig(name="zscore_regime_ml", **zscore),
            feature_names=RULE_FEATURES,
            regime=PredictedRegime(),
        ),
    }


def model_decider(frame: BarFrame, slot: np.ndarray, proba: np.ndarray, name: str) -> Callable:
    """A model's signal at decision bar i: the likelier of up and down, from `proba[slot[i]]`."""

    def decide(i: int, position: int) -> Signal | None:
        p_down, p_flat, p_up = proba[slot[i]]
        side = Side.BUY if p_up >= p_down else Side.SELL
        return Signal(
            int(frame.ts_end[i]),
            name,
            side,
            float(max(p_up, p_down)),
            float(p_down),
            float(p_flat),
            float(p_up),
        )

    return decide


def rule_decider(frame: BarFrame, slot: np.ndarray, regime: np.ndarray, rule: Strategy) -> Callable:
    """A rule strategy's signal at bar i, its feature row extended by the predicted regime."""
    close = frame.prices["close"].to_numpy()

    def decide(i: int, position: int) -> Signal | None:
        row = np.append(frame.x[i].astype(np.float64), regime[slot[i]])
        return rule.on_decision(int(frame.ts_end[i]), row, float(close[i]), position)

    return decide


def _combined(model: Callable, rule: Callable, min_confidence: float) -> Callable:
    """The ensemble's entries, and the rule's when the ensemble is not confident enough;
    both are asked at every bar, so the rule's state runs on."""

    def decide(i: int, position: int) -> Signal | None:
        m, r = model(i, position), rule(i, position)
        if m is not None and m.confidence >= min_confidence:
            return m
        return r

    return decide


def evaluate_year(
    frame: BarFrame,
    year: int,
    settings: BarEvalSettings,
    progress: Progress | None = None,
    trade_cfg: BarTradeConfig | None = None,
) -> YearResult:
    """Fit on the years before `year`, score and trade `year`."""
    start = time.perf_counter()
    budget = settings.budget
    dir_rows = np.flatnonzero(frame.decision & frame.dir_valid)
    reg_rows = np.flatnonzero(frame.decision & frame.regime_valid)
    d_train, d_test = year_split(frame, dir_rows, year, DIRECTION_HORIZON_BARS, budget.embargo_s)
    r_train, r_test = year_split(frame, reg_rows, year, REGIME_HORIZON_BARS, budget.embargo_s)
    models = fit_bar_models(frame, d_train, r_train, budget, progress, settings.nets)

    # every decision bar of the year gets predictions (trading), the labelled ones a score
    decisions = np.flatnonzero(frame.decision & (frame.year == year))
    slot = np.full(len(frame.ts_end), -1, np.int64)
    slot[decisions] = np.arange(len(decisions))
    proba = models.direction(frame, decisions)
    regime = models.regime.predict(frame.x[decisions])

    y = frame.y_dir
    preds = {name: (p[slot[d_test]], p[slot[d_test]].argmax(axis=1)) for name, p in proba.items()}
    preds.update(direction_baselines(frame, d_train, d_test))
    score = partial(_score, block=settings.block_rows, n_boot=settings.n_boot, seed=settings.seed)
    d_scores, d_comp = score(y[d_test], preds, DIRECTION_BASELINES)

    yr = frame.y_regime
    rprev = previous_labels(yr, frame.regime_valid, frame.ts_end, REGIME_HORIZON_BARS)
    rpreds = {
        "regime": (regime.proba[slot[r_test]], regime.regime[slot[r_test]].astype(np.int64)),
        "majority": majority_baseline(yr[r_train], len(r_test)),
        "previous_regime": persistence_baseline(rprev[r_train], yr[r_train], rprev[r_test]),
    }
    r_scores, r_comp = score(yr[r_test], rpreds, REGIME_BASELINES)

    trade_cfg = trade_cfg or BarTradeConfig()
    trading = trade_year(frame, year, models, proba, regime.regime, slot, trade_cfg)
    shares = np.bincount(y[d_test], minlength=3) / len(d_test)
    return YearResult(
        year,
        len(d_train),
        len(d_test),
        d_scores,
        d_comp,
        r_scores,
        r_comp,
        trading,
        {"down": float(shares[0]), "flat": float(shares[1]), "up": float(shares[2])},
        time.perf_counter() - start,
    )


def trade_year(
    frame: BarFrame,
    year: int,
    models: BarModels,
    proba: dict[str, np.ndarray],
    regime: np.ndarray,
    slot: np.ndarray,
    cfg: BarTradeConfig,
) -> dict[str, Metrics]:
    """Metrics of each model alone, the ensemble, each rule, and the ensemble plus the
    ML-regime z-score rule, on the year's regular-hours bars."""
    bars = np.flatnonzero((frame.column("is_rth") > 0) & (frame.year == year))
    deciders: dict[str, Callable] = {
        name: model_decider(frame, slot, proba[name], name) for name in models.names
    }
    for name, rule in rule_strategies().items():
        deciders[name] = rule_decider(frame, slot, regime, rule)
    deciders[COMBINED] = _combined(
        model_decider(frame, slot, proba[ENSEMBLE], ENSEMBLE),
        rule_decider(frame, slot, regime, rule_strategies()["zscore_regime_ml"]),
        cfg.risk.min_confidence,
    )
    return {name: compute_metrics(simulate(frame, bars, d, cfg)) for name, d in deciders.items()}


def evaluate_bars(
    frame: BarFrame, settings: BarEvalSettings, progress: Progress | None = None
) -> list[YearResult]:
    """Every test year in turn."""
    task = (
        None
        if progress is None
        else progress.add_task("walk-forward years", total=len(settings.test_years))
    )
    out = []
    for year in settings.test_years:
        out.append(evaluate_year(frame, year, settings, progress))
        if progress is not None and task is not None:
            progress.update(task, advance=1, description=f"walk-forward: {year} done")
    return out
