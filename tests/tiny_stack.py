"""The smallest stack that is still the real thing: trees, a tick LSTM, the regime classifier
and the ensemble, trained in seconds on two SYNTHETIC 40-minute sessions (shared by the
training and the serving tests through conftest's session fixtures)."""

from __future__ import annotations

import numpy as np

from esml.alpha.regime_config import RegimeConfig
from esml.alpha.torch_train import TrainParams
from esml.alpha.xgb import XGBParams
from esml.sim.synthetic import DEFAULT_START_NS, generate_session
from training.stack import StackParams

TINY = StackParams(
    models=("trees", "tick_lstm", "regime", "ensemble"),
    trees=XGBParams(n_estimators=20, n_folds=1, n_jobs=1),
    nets=TrainParams(epochs=1, max_batches_per_epoch=2, n_folds=1, threads=1),
    regime=RegimeConfig(tree_count=10, mlp_max_iter=30, mlp_hidden=8),
    regime_folds=1,
    n_boot=100,
)
DAY_NS = 86_400 * 10**9
SESSION_S = 2400


def session(seed: int, day: int) -> np.ndarray:
    """A SYNTHETIC 40-minute session on the `day`-th day after the generator's default."""
    return generate_session(seed, start_ns=DEFAULT_START_NS + day * DAY_NS, duration_s=SESSION_S)


def tiny_sessions() -> dict[str, np.ndarray]:
    return {f"synthetic-seed-{seed}": session(seed, day) for day, seed in enumerate((1, 2))}
