"""Training the neural direction models on sequence windows, walk-forward and reproducibly.

Rows are the tree model's decision times (`batch_features`) with the same direction
labels, and a window of the net's input at each. A net trains on the earlier rows and
early-stops on the purged later block (`holdout_split`); the loss is class-balanced, since
"flat" dominates a 20 s horizon. Seeds, torch's deterministic algorithms and a fixed thread
count make two runs on the same data give the same weights bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from torch import nn

from esml.alpha.manifest import ClassificationMetrics
from esml.alpha.nets import NetKind, SequenceNet, build_net
from esml.alpha.params import TrainParams
from esml.alpha.sequence_model import SequenceManifest
from esml.alpha.splits import Fold, holdout_split, walk_forward_split
from esml.alpha.torch_onnx import export_net, write_net_model
from esml.alpha.xgb import N_CLASSES, class_weights, score
from esml.config import EsmlConfig, FeatureConfig
from esml.features.batch import batch_features
from esml.features.dataset import events_sha256
from esml.features.labels import direction_labels
from esml.features.sequences import (
    BAR,
    LOB,
    TICK,
    Windows,
    WindowSpec,
    bar_windows,
    lob_windows,
    tick_windows,
)
from esml.market.events import is_synthetic
from esml.market.instruments import Instrument

_NS = 1_000_000_000
_EVAL_BATCH = 1024

WindowBuilder = Callable[[np.ndarray, int, np.ndarray], Windows]
WINDOWS: dict[str, tuple[WindowSpec, WindowBuilder]] = {
    "tick_lstm": (TICK, tick_windows),
    "deeplob": (LOB, lob_windows),
    "bar_lstm": (BAR, bar_windows),
}
"""Each net kind's input: its spec and its batch builder (events, tick_fixed, decisions)."""


@dataclass(frozen=True)
class NetFit:
    net: SequenceNet  # the best epoch's weights, in eval mode: exactly the model scored
    split: Fold  # train / validation row indices into the arrays passed to `fit_net`
    validation: ClassificationMetrics
    epochs_run: int
    best_epoch: int  # 1-based
    history: list[tuple[float, float]]  # (training loss, validation loss) per epoch


@dataclass(frozen=True)
class SequenceDataset:
    x: np.ndarray  # float32 [n, steps, fields]
    y: np.ndarray  # int64: 0 down, 1 flat, 2 up
    ts_ns: np.ndarray  # int64 decision times
    spec: WindowSpec
    data_sha256: str


@contextmanager
def seeded(seed: int, threads: int) -> Iterator[torch.Generator]:
    """Fixed seeds, deterministic kernels and a fixed thread count for the block; the
    process's previous torch settings come back afterwards."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_threads = torch.get_num_threads()
    rng_state = torch.get_rng_state()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(was_threads)
        torch.set_rng_state(rng_state)


def fit_net(
    kind: NetKind,
    x: np.ndarray,
    y: np.ndarray,
    ts_ns: np.ndarray,
    *,
    horizon_ns: int,
    params: TrainParams,
    net_config: dict[str, int | float] | None = None,
    progress: Progress | None = None,
) -> NetFit:
    """Build a net of `kind` under the seed, train it on the earlier rows and early-stop on
    the purged later block; returns it at its best validation epoch."""
    _check_arrays(x, y, ts_ns)
    split = holdout_split(
        ts_ns,
        test_fraction=params.validation_fraction,
        horizon_ns=horizon_ns,
        embargo_ns=round(params.embargo_s * _NS),
    )
    tr, va = split.train, split.test
    missing = [c for c in range(N_CLASSES) if not np.any(y[tr] == c)]
    if missing:
        raise ValueError(
            f"the {len(tr)} training rows lack classes {missing}; a direction model needs "
            f"all three (more data, or a smaller dead zone)"
        )
    with seeded(params.seed, params.threads) as gen:
        net = build_net(kind, net_config)
        if net.input_shape != x.shape[1:]:
            raise ValueError(f"{kind} reads windows {net.input_shape}, got {x.shape[1:]}")
        x_tr, y_tr = torch.from_numpy(x[tr]), torch.from_numpy(y[tr].astype(np.int64))
        x_va, y_va = torch.from_numpy(x[va]), torch.from_numpy(y[va].astype(np.int64))
        flat = x_tr.reshape(-1, x.shape[2]).double()  # training rows only: no look-ahead
        net.set_input_scale(flat.mean(0).float(), flat.std(0).float())
        loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(class_weights(y[tr])))
        opt = torch.optim.Adam(
            net.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
        )
        task = None if progress is None else progress.add_task(f"{kind}", total=params.epochs)
        history: list[tuple[float, float]] = []
        best, best_loss, best_epoch = _state(net), np.inf, 0
        for epoch in range(1, params.epochs + 1):
            train_loss = _train_epoch(net, opt, loss_fn, x_tr, y_tr, gen, params)
            val_loss = _mean_loss(net, loss_fn, x_va, y_va)
            if not (np.isfinite(train_loss) and np.isfinite(val_loss)):
                raise FloatingPointError(
                    f"{kind}: loss diverged at epoch {epoch} (train {train_loss}, validation "
                    f"{val_loss}); lower the learning rate"
                )
            history.append((train_loss, val_loss))
            if val_loss < best_loss:
                best, best_loss, best_epoch = _state(net), val_loss, epoch
            if progress is not None and task is not None:
                progress.update(
                    task,
                    advance=1,
                    description=(
                        f"{kind} train {train_loss:.4f} val {val_loss:.4f} (best @{best_epoch})"
                    ),
                )
            if epoch - best_epoch >= params.patience:
                break
        net.load_state_dict(best)
        net.eval()
        proba = predict_proba(net, x[va])
    return NetFit(
        net, split, score(proba, y[va], y[tr], ts_ns[va]), len(history), best_epoch, history
    )


def predict_proba(net: SequenceNet, x: np.ndarray) -> np.ndarray:
    """Probabilities [n, 3] (down, flat, up) of windows `x` with the net in eval mode."""
    net.eval()
    with torch.no_grad():
        chunks = [
            torch.softmax(net(torch.from_numpy(x[k : k + _EVAL_BATCH])), dim=1).numpy()
            for k in range(0, len(x), _EVAL_BATCH)
        ]
    return np.concatenate(chunks) if chunks else np.zeros((0, N_CLASSES), np.float32)


def walk_forward_net_scores(
    kind: NetKind,
    x: np.ndarray,
    y: np.ndarray,
    ts_ns: np.ndarray,
    *,
    horizon_ns: int,
    params: TrainParams,
    net_config: dict[str, int | float] | None = None,
    progress: Progress | None = None,
) -> Iterator[ClassificationMetrics]:
    """Out-of-sample scores of each walk-forward test block; each net is trained (and
    early-stopped on its own purged holdout) on the rows purged before its block."""
    folds = walk_forward_split(
        ts_ns,
        n_folds=params.n_folds,
        horizon_ns=horizon_ns,
        embargo_ns=round(params.embargo_s * _NS),
    )
    for fold in folds:
        tr, te = fold.train, fold.test
        fit = fit_net(
            kind,
            x[tr],
            y[tr],
            ts_ns[tr],
            horizon_ns=horizon_ns,
            params=params,
            net_config=net_config,
            progress=progress,
        )
        yield score(predict_proba(fit.net, x[te]), y[te], y[tr], ts_ns[te])


def sequence_dataset(
    events: np.ndarray, instrument: Instrument, cfg: FeatureConfig, kind: str
) -> SequenceDataset:
    """The windows of net `kind` at the decision times of the tree model, with the same
    direction labels; rows without a full window or a label are dropped."""
    if kind not in WINDOWS:
        raise ValueError(f"no window builder for {kind!r}; choose one of {sorted(WINDOWS)}")
    spec, build = WINDOWS[kind]
    frame = batch_features(events, instrument.tick_fixed, cfg.decision_interval_s)
    if len(frame.ts_ns) == 0:
        empty = np.zeros((0, *spec.shape), np.float32)
        return SequenceDataset(
            empty, np.zeros(0, np.int64), np.zeros(0, np.int64), spec, events_sha256(events)
        )
    y, valid = direction_labels(
        frame.ts_ns, frame.mid, cfg.horizon_s, cfg.dead_zone_ticks, instrument.tick_size
    )
    windows = build(events, instrument.tick_fixed, frame.ts_ns)
    keep = valid & windows.ready
    return SequenceDataset(
        windows.x[keep], y[keep].astype(np.int64), frame.ts_ns[keep], spec, events_sha256(events)
    )


def train_sequence_model(
    kind: NetKind,
    events_list: Sequence[np.ndarray],
    cfg: EsmlConfig,
    out_dir: str | Path,
    *,
    synthetic: bool,
    source_names: Sequence[str] | None = None,
    params: TrainParams | None = None,
    net_config: dict[str, int | float] | None = None,
    progress: Progress | None = None,
) -> SequenceManifest:
    """Events → windows → walk-forward scores → final net → `model.onnx` + `manifest.json`.

    Synthetic events (the simulator's publisher id) must be declared `synthetic=True`.
    """
    started = time.perf_counter()
    params = params or TrainParams()
    names = _source_names(events_list, source_names)
    undeclared = [n for n, ev in zip(names, events_list, strict=True) if is_synthetic(ev)]
    if undeclared and not synthetic:
        raise ValueError(f"sources {undeclared} are synthetic; pass synthetic=True")
    horizon_ns = round(cfg.features.horizon_s * _NS)
    inst = cfg.instrument_spec
    datasets = [sequence_dataset(ev, inst, cfg.features, kind) for ev in events_list]
    x, y, ts = _stack(datasets, names)
    folds = []
    if params.n_folds:
        folds = list(
            walk_forward_net_scores(
                kind,
                x,
                y,
                ts,
                horizon_ns=horizon_ns,
                params=params,
                net_config=net_config,
                progress=progress,
            )
        )
    fit = fit_net(
        kind,
        x,
        y,
        ts,
        horizon_ns=horizon_ns,
        params=params,
        net_config=net_config,
        progress=progress,
    )
    onnx_bytes, parity = export_net(fit.net, x[fit.split.test])
    spec = datasets[0].spec
    return write_net_model(
        out_dir,
        onnx_bytes,
        name=f"{cfg.instrument.lower()}_{kind}_{cfg.features.horizon_s:g}s",
        kind=kind,
        instrument=cfg.instrument,
        window_name=spec.name,
        window_version=spec.version,
        window_steps=spec.steps,
        step_names=list(spec.step_names),
        decision_interval_s=cfg.features.decision_interval_s,
        horizon_s=cfg.features.horizon_s,
        dead_zone_ticks=cfg.features.dead_zone_ticks,
        data_sha256={n: d.data_sha256 for n, d in zip(names, datasets, strict=True)},
        training_rows=len(fit.split.train),
        architecture=fit.net.config(),
        n_parameters=fit.net.n_parameters(),
        hyperparameters=params.model_dump(),
        epochs_run=fit.epochs_run,
        best_epoch=fit.best_epoch,
        validation=fit.validation,
        folds=folds,
        training_time_s=round(time.perf_counter() - started, 3),
        onnx_parity_max_abs=parity,
        synthetic_training_data=synthetic,
    )


def _train_epoch(
    net: SequenceNet,
    opt: torch.optim.Optimizer,
    loss_fn: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    gen: torch.Generator,
    params: TrainParams,
) -> float:
    """One pass over shuffled training rows (or the first `max_batches_per_epoch` batches
    of the shuffle); the mean training loss."""
    net.train()
    order = torch.randperm(len(x), generator=gen)
    batches = list(torch.split(order, params.batch_size))
    if params.max_batches_per_epoch:
        batches = batches[: params.max_batches_per_epoch]
    total, rows = 0.0, 0
    for idx in batches:
        opt.zero_grad()
        loss = loss_fn(net(x[idx]), y[idx])
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), params.grad_clip)
        opt.step()
        total += loss.item() * len(idx)
        rows += len(idx)
    return total / rows


def _mean_loss(
    net: SequenceNet, loss_fn: nn.CrossEntropyLoss, x: torch.Tensor, y: torch.Tensor
) -> float:
    """The class-weighted loss over all of x (weighted mean, as one batch would give)."""
    net.eval()
    weight = loss_fn.weight
    num, den = 0.0, 0.0
    with torch.no_grad():
        for k in range(0, len(x), _EVAL_BATCH):
            logits, target = net(x[k : k + _EVAL_BATCH]), y[k : k + _EVAL_BATCH]
            w = weight[target]
            num += float(nn.functional.cross_entropy(logits, target, reduction="none") @ w)
            den += float(w.sum())
    return num / den


def _state(net: SequenceNet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _stack(datasets: list[SequenceDataset], names: list[str]) -> tuple[np.ndarray, ...]:
    """All sessions' rows in time order."""
    x = np.concatenate([d.x for d in datasets])
    y = np.concatenate([d.y for d in datasets])
    ts = np.concatenate([d.ts_ns for d in datasets])
    if len(y) == 0:
        raise ValueError(f"no labelled windows in {names}; sessions too short for the window?")
    order = np.argsort(ts, kind="stable")
    return x[order], y[order], ts[order]


def _check_arrays(x: np.ndarray, y: np.ndarray, ts_ns: np.ndarray) -> None:
    if x.ndim != 3 or x.dtype != np.float32 or len(x) != len(y) or len(y) != len(ts_ns):
        raise ValueError(
            f"x float32 [n, steps, fields], y [n] and ts_ns [n] must agree: got {x.dtype} "
            f"{x.shape}, {y.shape}, {ts_ns.shape}"
        )
    if len(y) and (y.min() < 0 or y.max() >= N_CLASSES):
        raise ValueError(f"labels must be 0 (down), 1 (flat) or 2 (up); got {np.unique(y)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("windows contain NaN or infinite values")


def _source_names(events_list: Sequence[np.ndarray], names: Sequence[str] | None) -> list[str]:
    if not events_list:
        raise ValueError("no training data: events_list is empty")
    out = list(names) if names is not None else [f"session-{i}" for i in range(len(events_list))]
    if len(out) != len(events_list) or len(set(out)) != len(out):
        raise ValueError(f"source_names must be {len(events_list)} unique names, got {out}")
    return out
