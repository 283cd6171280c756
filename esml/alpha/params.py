"""Hyper-parameters of the tree and net trainers, apart from the trainers themselves.

`training/train.py` builds its `--help` from these fields: keeping them free of xgboost and
torch lets `esml train --help` answer at once (issue 15).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class XGBParams(BaseModel):
    """Hyper-parameters; SageMaker passes them as `--key value`, so every one has a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_estimators: int = Field(400, ge=1)
    max_depth: int = Field(4, ge=1, le=12)
    learning_rate: float = Field(0.05, gt=0, le=1)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    min_child_weight: float = Field(5.0, ge=0)
    reg_lambda: float = Field(1.0, ge=0)
    early_stopping_rounds: int = Field(30, ge=1)
    # on a busy machine 2 threads pay only if OMP_WAIT_POLICY=PASSIVE was set before xgboost
    # loaded: libgomp's default spin-waiting otherwise burns the time slices both threads need
    n_jobs: int = Field(2, ge=1, le=2)
    max_bin: int = Field(256, ge=2, le=1024)
    random_state: int = 7
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    embargo_s: float = Field(0.0, ge=0)
    n_folds: int = Field(3, ge=0, le=20)


class TrainParams(BaseModel):
    """Hyper-parameters; SageMaker passes them as `--key value`, so every one has a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(40, ge=1)
    batch_size: int = Field(256, ge=1)
    max_batches_per_epoch: int = Field(0, ge=0)  # 0: every training row each epoch
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    patience: int = Field(5, ge=1)  # epochs without a better validation loss before stopping
    seed: int = 7
    threads: int = Field(2, ge=1, le=2)
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    embargo_s: float = Field(0.0, ge=0)
    n_folds: int = Field(3, ge=0, le=20)
