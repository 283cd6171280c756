"""The model rows of `make bench`: per-decision latency of streaming features plus the
trees and a tick LSTM served by onnxruntime, and the trees' training time on 1M rows.

Latency does not depend on what a net has learned, so the tick LSTM is exported untrained
(its parity with torch is still checked on export); the trees are the shipped champion.
The training rows are SYNTHETIC: real features of the real ES file resampled with noise to
1M rows, so the trees meet the real features' distributions at the size the goal names.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from esml.alpha.model import OnnxAlphaModel
from esml.alpha.nets import build_net
from esml.alpha.torch_onnx import export_net
from esml.alpha.xgb import XGBParams, fit_booster
from esml.data.book import BookState, apply_event, l2_levels
from esml.features.batch import batch_features
from esml.features.kernel import touch
from esml.features.streaming import DEPTH_LEVELS, N_FEATURES, FeatureState, compute, update
from esml.market.events import TRADE
from esml.market.instruments import ES

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "models/es_direction_20s"
TRAIN_ROWS = 1_000_000
TRAIN_FEATURES = 60
LATENCY_DECISIONS = 2_000


@dataclass(frozen=True)
class Latency:
    name: str
    decisions: int
    p50_us: float
    p99_us: float
    notes: str

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def decision_latency(events: np.ndarray) -> Latency:
    """At each of the last decisions of the real file: compute the 77 streaming features
    from the kernel state, then ask the trees and the tick LSTM."""
    trees = OnnxAlphaModel.load(MODEL_DIR)
    torch.manual_seed(0)
    net = build_net("tick_lstm")
    windows = np.random.default_rng(0).normal(size=(8, *net.input_shape)).astype(np.float32)
    onnx_bytes, _ = export_net(net, windows)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    lstm = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    lstm_in = lstm.get_inputs()[0].name
    book, fs = BookState.new(ES.tick_fixed), FeatureState()
    depth, row = np.zeros((DEPTH_LEVELS, 4), np.int64), np.zeros(N_FEATURES, np.float32)
    took: list[float] = []
    trades = np.flatnonzero(events["action"] == TRADE)
    checkpoints = set(trades[-LATENCY_DECISIONS:].tolist())
    arrays = book.arrays
    for i, e in enumerate(events):
        apply_event(*arrays, e["action"], e["side"], e["price"], e["size"], e["order_id"])
        bp, bs, ap, as_ = touch(book.meta, book.bid_qty, book.ask_qty)
        update(fs.s, fs.ring, e["ts_recv"], e["action"], e["side"], e["price"], e["size"],
               bp, ap, bs, as_, ES.tick_fixed)  # fmt: skip
        if i in checkpoints and bp and ap:
            t0 = time.perf_counter_ns()
            l2_levels(book.meta, book.bid_qty, book.ask_qty, depth)
            compute(fs.s, fs.ring, int(e["ts_recv"]), bp, ap, bs, as_, depth, ES.tick_fixed, row)
            trees.predict_one(row)
            lstm.run(None, {lstm_in: windows[:1]})
            took.append(time.perf_counter_ns() - t0)
    p50, p99 = np.percentile(np.array(took[20:]), [50, 99]) / 1e3
    return Latency(
        "features + trees + tick LSTM per decision", len(took) - 20, float(p50), float(p99),
        "L2 read, 77 features computed, both models through onnxruntime (1 thread)",
    )  # fmt: skip


def tree_training_seconds(events: np.ndarray) -> tuple[float, float]:
    """(wall, CPU) seconds to fit the trees on 1M rows x 60 features (SYNTHETIC resample)."""
    frame = batch_features(events, ES.tick_fixed, 1.0)
    x_real = np.nan_to_num(frame.X[:, :TRAIN_FEATURES].astype(np.float32))
    rng = np.random.default_rng(7)
    pick = rng.integers(0, len(x_real), TRAIN_ROWS)
    x = x_real[pick] + rng.normal(0, 0.05, (TRAIN_ROWS, TRAIN_FEATURES)).astype(np.float32)
    y = rng.integers(0, 3, TRAIN_ROWS)
    ts = np.arange(TRAIN_ROWS, dtype=np.int64) * 1_000_000_000
    params = XGBParams(n_estimators=200, early_stopping_rounds=200)
    w0, c0 = time.perf_counter(), time.process_time()
    fit_booster(x, y, ts, horizon_ns=20_000_000_000, params=params)
    return time.perf_counter() - w0, time.process_time() - c0
