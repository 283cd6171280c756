"""The bar-level models, fitted on the rows a walk-forward fold allows and nothing else.

- trees: XGBoost (`esml.alpha.xgb.fit_booster`: class-weighted, early-stopped on a purged
  later block of the training rows) on every bar feature (technicals, order flow, context);
- bar LSTM: seed 003's shape, 60 bars x 11 technicals (`esml.alpha.nets.BarLSTM`);
- bar Transformer: `esml.alpha.bar_transformer.BarTransformer` on the same windows;
- the ensemble: the mean of the three models' probabilities;
- regime: the two-hemisphere classifier (`esml.alpha.regime`), left hemisphere on price and
  context, right on order flow, trend / range / none over the next hour.

The nets train on at most `max_train_windows` training rows, drawn at random and kept in
time order (a few epochs over 60 x 11 windows on two shared CPU cores), with early
stopping on the purged later fifth. Standardisation, class weights and early stopping use
training rows only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xgboost as xgb
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import Progress

import esml.alpha.bar_transformer  # noqa: F401  (registers "bar_transformer" in NETS)
from esml.alpha.bar_features import DIRECTION_HORIZON_BARS, REGIME_HORIZON_BARS, BarFrame, windows
from esml.alpha.manifest import ClassificationMetrics
from esml.alpha.nets import SequenceNet
from esml.alpha.regime import RegimeClassifier, fit_regime_classifier
from esml.alpha.regime_config import RegimeConfig
from esml.alpha.torch_train import TrainParams, fit_net, predict_proba
from esml.alpha.xgb import XGBParams, fit_booster

ENSEMBLE = "ensemble"
MODEL_LABELS = {
    "trees": "trees (XGBoost)",
    "bar_lstm": "bar LSTM",
    "bar_transformer": "bar Transformer",
    ENSEMBLE: "ensemble (mean)",
}
_BAR_S = 300.0


class BarBudget(BaseModel):
    """How hard each fold trains (recorded in the report)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tree_rounds: int = Field(300, ge=1)
    tree_early_stop: int = Field(25, ge=1)
    net_epochs: int = Field(3, ge=1)
    net_patience: int = Field(2, ge=1)
    max_train_windows: int = Field(12_000, ge=100)
    regime_max_rows: int = Field(12_000, ge=100)
    regime_trees: int = Field(60, ge=1)
    regime_mlp_iter: int = Field(40, ge=10)
    embargo_s: float = Field(86_400.0, ge=0)
    threads: int = Field(2, ge=1, le=2)
    seed: int = 7


@dataclass(frozen=True)
class BarModels:
    trees: xgb.Booster
    nets: dict[str, SequenceNet]
    regime: RegimeClassifier
    validation: dict[str, ClassificationMetrics]  # each direction model's purged holdout

    @property
    def names(self) -> list[str]:
        return ["trees", *self.nets, ENSEMBLE]

    def direction(self, frame: BarFrame, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Probabilities [len(rows), 3] of each direction model and of the ensemble (the
        mean of the models fitted)."""
        out = {"trees": self.trees.inplace_predict(frame.x[rows]).astype(np.float64)}
        if self.nets:
            win = windows(frame.x, rows)
            for name, net in self.nets.items():
                out[name] = predict_proba(net, win).astype(np.float64)
        out[ENSEMBLE] = np.mean(list(out.values()), axis=0)
        return out


def _subsample(rows: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if len(rows) <= limit:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=limit, replace=False))


def fit_bar_models(
    frame: BarFrame,
    dir_rows: np.ndarray,
    regime_rows: np.ndarray,
    budget: BarBudget,
    progress: Progress | None = None,
    nets: tuple[str, ...] = ("bar_lstm", "bar_transformer"),
) -> BarModels:
    """Fit the trees, the `nets` and the regime classifier on their training rows (indices
    into `frame`, time-ordered, already purged before whatever they will be tested on)."""
    embargo = budget.embargo_s
    horizon_ns = round(DIRECTION_HORIZON_BARS * _BAR_S * 1e9)
    x, y, ts = frame.x, frame.y_dir, frame.ts_end
    tree_fit = fit_booster(
        x[dir_rows],
        y[dir_rows],
        ts[dir_rows],
        horizon_ns=horizon_ns,
        params=XGBParams(
            n_estimators=budget.tree_rounds,
            early_stopping_rounds=budget.tree_early_stop,
            n_jobs=budget.threads,
            embargo_s=embargo,
            n_folds=0,
            random_state=budget.seed,
        ),
    )
    validation = {"trees": tree_fit.validation}
    net_rows = _subsample(dir_rows, budget.max_train_windows, budget.seed)
    win = windows(x, net_rows) if nets else None
    params = TrainParams(
        epochs=budget.net_epochs,
        patience=budget.net_patience,
        threads=budget.threads,
        embargo_s=embargo,
        seed=budget.seed,
        n_folds=0,
    )
    fitted = {}
    for kind in nets:
        fit = fit_net(
            kind,  # type: ignore[arg-type]
            win,
            y[net_rows],
            ts[net_rows],
            horizon_ns=horizon_ns,
            params=params,
            progress=progress,
        )
        fitted[kind], validation[kind] = fit.net, fit.validation
    reg_rows = _subsample(regime_rows, budget.regime_max_rows, budget.seed)
    cfg = RegimeConfig(
        horizon_s=REGIME_HORIZON_BARS * _BAR_S,
        tree_count=budget.regime_trees,
        mlp_max_iter=budget.regime_mlp_iter,
        random_state=budget.seed,
    )
    regime = fit_regime_classifier(x[reg_rows], frame.y_regime[reg_rows], frame.names, cfg)
    return BarModels(tree_fit.booster, fitted, regime, validation)
