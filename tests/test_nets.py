"""The neural models: each learns on real windows, its ONNX export matches torch within
1e-5, a seed fixes its weights, and the served model answers like the trained one.

Tick-bar and book windows come from the real ES file. Its 59 one-minute bars make no
60-bar window, so the bar LSTM trains on a SYNTHETIC 75-minute session from the simulator.
Epochs are tiny: these tests check behaviour, not skill.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from esml.alpha.manifest import INPUT_NAME, MODEL_FILE, OUTPUT_NAME, ModelFileError
from esml.alpha.model import AlphaModel, FeatureMismatchError
from esml.alpha.nets import BarLSTM, DeepLOB, TickLSTM, build_net
from esml.alpha.sequence_model import OnnxSequenceModel, single_window_latency_us
from esml.alpha.torch_onnx import PARITY_TOLERANCE, NetExportError, export_net
from esml.alpha.torch_train import (
    TrainParams,
    fit_net,
    predict_proba,
    seeded,
    sequence_dataset,
    train_sequence_model,
)
from esml.config import EsmlConfig, FeatureConfig
from esml.features.sequences import TICK
from esml.market.instruments import ES
from esml.sim.synthetic import generate_session

NS = 1_000_000_000
HORIZON_NS = 20 * NS
ROWS = 384  # a small set: the first rows with a full window
TINY = {
    "tick_lstm": None,
    "deeplob": {"conv_channels": 8, "inception_channels": 8, "lstm_hidden": 16},
    "bar_lstm": None,
}
FAST = TrainParams(epochs=6, batch_size=64, learning_rate=3e-3, patience=6, n_folds=0, threads=1)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Inference outside the trainer runs on torch's global threads: one, on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def datasets(es_events):
    """kind → (x, y, ts) of the first ROWS windows; real ES, synthetic for the bar LSTM."""
    synthetic = generate_session(5, duration_s=4500)  # SYNTHETIC
    out = {}
    for kind in TINY:
        events = synthetic if kind == "bar_lstm" else es_events
        d = sequence_dataset(events, ES, FeatureConfig(), kind)
        out[kind] = (d.x[:ROWS], d.y[:ROWS], d.ts_ns[:ROWS])
    return out


@pytest.fixture(scope="module")
def fits(datasets):
    return {
        kind: fit_net(
            kind, *datasets[kind], horizon_ns=HORIZON_NS, params=FAST, net_config=TINY[kind]
        )
        for kind in TINY
    }


@pytest.mark.parametrize("kind", list(TINY))
def test_each_net_learns_its_training_windows(datasets, fits, kind) -> None:
    x, y, _ = datasets[kind]
    assert len(x) == ROWS and set(np.unique(y)) == {0, 1, 2}
    fit = fits[kind]
    losses = [train for train, _ in fit.history]
    assert fit.epochs_run == FAST.epochs and len(losses) == FAST.epochs
    assert losses[-1] < losses[0] - 0.02, losses
    assert 1 <= fit.best_epoch <= fit.epochs_run
    assert fit.validation.rows == len(fit.split.test) and fit.validation.train_rows > 0
    # the best epoch's weights came back: its validation loss is the lowest seen
    assert fit.history[fit.best_epoch - 1][1] == min(v for _, v in fit.history)
    # the input scale was taken from the training rows only
    tr = x[fit.split.train].reshape(-1, x.shape[2])
    np.testing.assert_allclose(fit.net.in_mean.numpy(), tr.mean(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", list(TINY))
def test_onnx_export_matches_torch_on_held_out_windows(datasets, fits, kind) -> None:
    x, _, _ = datasets[kind]
    fit = fits[kind]
    held_out = x[fit.split.test]
    data, worst = export_net(fit.net, held_out)
    assert worst <= PARITY_TOLERANCE
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"  # dynamic batch
    want = predict_proba(fit.net, held_out)
    for batch in (held_out, held_out[:1], held_out[:7]):
        got = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        np.testing.assert_allclose(got, want[: len(batch)], rtol=0, atol=PARITY_TOLERANCE)
    np.testing.assert_allclose(want.sum(1), 1.0, atol=1e-6)
    with pytest.raises(NetExportError, match="check_windows"):
        export_net(fit.net, held_out[:, :-1])


@pytest.mark.parametrize("kind", ["tick_lstm", "deeplob"])
def test_a_seed_fixes_the_weights(datasets, kind) -> None:
    params = FAST.model_copy(update={"epochs": 1, "patience": 1, "max_batches_per_epoch": 3})
    runs = [
        fit_net(kind, *datasets[kind], horizon_ns=HORIZON_NS, params=p, net_config=TINY[kind])
        for p in (params, params, params.model_copy(update={"seed": 8}))
    ]
    a, b, c = (f.net.state_dict() for f in runs)
    again = runs[:2]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again[0].history == again[1].history
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert not torch.are_deterministic_algorithms_enabled()  # the settings were restored


def test_nets_have_the_documented_shapes() -> None:
    with seeded(1, 1):
        nets = [TickLSTM(), DeepLOB(), DeepLOB.paper_sized(), BarLSTM()]
    for net, shape in zip(nets, [(7, 5), (100, 40), (100, 40), (60, 11)], strict=True):
        assert net.input_shape == shape
        assert net(torch.zeros(3, *shape)).shape == (3, 3)
        rebuilt = build_net(net.kind, net.config())
        assert rebuilt.n_parameters() == net.n_parameters()
    bar = nets[3]
    assert bar.lstm.num_layers == 2 and bar.lstm.hidden_size == 64
    assert nets[2].n_parameters() > 2 * nets[1].n_parameters()  # the paper's widths
    with pytest.raises(ValueError, match="unknown net kind"):
        build_net("transformer")


def test_trained_model_is_served_by_onnxruntime(es_events, tmp_path) -> None:
    params = FAST.model_copy(update={"epochs": 3, "n_folds": 2})
    cfg = EsmlConfig()
    manifest = train_sequence_model(
        "tick_lstm",
        [es_events],
        cfg,
        tmp_path,
        synthetic=False,
        source_names=["esh4-20231225"],
        params=params,
    )
    assert manifest.kind == "tick_lstm" and not manifest.synthetic_training_data
    assert manifest.window_name == TICK.name and manifest.window_shape == (7, 5)
    assert len(manifest.folds) == 2 and manifest.onnx_parity_max_abs <= PARITY_TOLERANCE
    assert manifest.folds[0].last_ts_ns < manifest.folds[1].first_ts_ns
    model = OnnxSequenceModel.load(
        tmp_path, window_name=TICK.name, window_version=TICK.version, step_names=TICK.step_names
    )
    assert isinstance(model, AlphaModel) and model.feature_names == list(TICK.step_names)
    d = sequence_dataset(es_events, ES, cfg.features, "tick_lstm")
    proba = model.predict_proba(d.x[-50:])
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    one = model.predict_one(d.x[-1])
    np.testing.assert_allclose(one, proba[-1], atol=1e-6)
    p50, p99 = single_window_latency_us(model, d.x[-200:])
    assert 0 < p50 <= p99
    with pytest.raises(ValueError, match="one window"):
        model.predict_one(d.x[-1][:-1])
    with pytest.raises(FeatureMismatchError, match="version"):
        OnnxSequenceModel.load(tmp_path, window_version="tick-bars-0")
    with pytest.raises(FeatureMismatchError, match="reads"):
        OnnxSequenceModel.load(tmp_path, window_name="lob_snapshots")
    (tmp_path / MODEL_FILE).write_bytes((tmp_path / MODEL_FILE).read_bytes() + b"\0")
    with pytest.raises(ModelFileError, match="sha256"):
        OnnxSequenceModel.load(tmp_path)


def test_training_refuses_bad_input(datasets) -> None:
    x, y, ts = datasets["tick_lstm"]
    with pytest.raises(ValueError, match="lack classes"):
        fit_net("tick_lstm", x, np.ones_like(y), ts, horizon_ns=HORIZON_NS, params=FAST)
    with pytest.raises(ValueError, match="reads windows"):
        fit_net("deeplob", x, y, ts, horizon_ns=HORIZON_NS, params=FAST)
    bad = x.copy()
    bad[3, 2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_net("tick_lstm", bad, y, ts, horizon_ns=HORIZON_NS, params=FAST)
    with pytest.raises(ValueError, match="synthetic"):
        train_sequence_model(
            "tick_lstm",
            [generate_session(1, duration_s=300)],
            EsmlConfig(),
            "unused",
            synthetic=False,
        )
