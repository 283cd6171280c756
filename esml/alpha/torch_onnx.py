"""A trained net → `model.onnx` (softmax probabilities, dynamic batch) + its manifest.

The export uses torch's TorchScript exporter (`dynamo=False`): with torch pinned it needs
no extra package (the torch.export path needs onnxscript), it writes ONNX's native LSTM
operator, and it takes well under a second. Every export is run by onnxruntime on held-out
windows, in one batch and one window at a time as the engine calls it, and refused unless
it matches torch within 1e-5.
"""

from __future__ import annotations

import io
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from esml.alpha.manifest import (
    INPUT_NAME,
    MANIFEST_FILE,
    MODEL_FILE,
    OUTPUT_NAME,
    file_sha256,
    write_atomic,
)
from esml.alpha.nets import ProbabilityNet, SequenceNet
from esml.alpha.sequence_model import SequenceManifest

OPSET = 17  # written by the TorchScript exporter, run by onnxruntime 1.31 (up to opset 23)
PARITY_TOLERANCE = 1e-5
_SINGLE_CHECKS = 16  # windows also checked one at a time (batch size 1, the served path)


class NetExportError(ValueError):
    """The net's ONNX graph is invalid or disagrees with torch."""


def export_net(net: SequenceNet, check_windows: np.ndarray) -> tuple[bytes, float]:
    """(serialised ONNX model, worst absolute probability difference from torch) of `net` in
    eval mode, checked on `check_windows` [n, steps, fields] that it was not trained on."""
    windows = np.ascontiguousarray(check_windows, dtype=np.float32)
    if windows.ndim != 3 or windows.shape[1:] != net.input_shape or len(windows) == 0:
        raise NetExportError(
            f"check_windows must be a non-empty [n, {net.input_shape[0]}, "
            f"{net.input_shape[1]}] array, got {windows.shape}"
        )
    served = ProbabilityNet(net).eval()
    example = torch.from_numpy(windows[:2].copy())
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter announces its deprecation, notes that the LSTM's shape
        # checks are traced as constants, and warns that an LSTM exported at one batch size
        # may fail at another: the parity check below runs two batch sizes
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*LSTM.*", category=UserWarning)
        torch.onnx.export(
            served,
            (example,),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    data = buffer.getvalue()
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except onnx.checker.ValidationError as e:
        raise NetExportError(f"{net.kind}: the exported graph is not valid ONNX: {e}") from e
    worst = _parity(served, data, windows)
    if not worst <= PARITY_TOLERANCE:
        raise NetExportError(
            f"{net.kind}: ONNX probabilities differ from torch's by up to {worst:.3g} "
            f"(tolerance {PARITY_TOLERANCE}); the export is wrong and was not written"
        )
    return data, worst


def _parity(served: ProbabilityNet, data: bytes, windows: np.ndarray) -> float:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = served(torch.from_numpy(windows)).numpy()
    got = session.run([OUTPUT_NAME], {INPUT_NAME: windows})[0]
    worst = float(np.max(np.abs(got - want))) if got.shape == want.shape else np.inf
    for k in range(min(_SINGLE_CHECKS, len(windows))):
        one = session.run([OUTPUT_NAME], {INPUT_NAME: windows[k : k + 1]})[0]
        worst = max(worst, float(np.max(np.abs(one[0] - want[k]))))
    return worst


def write_net_model(out_dir: str | Path, onnx_bytes: bytes, **fields: object) -> SequenceManifest:
    """Write `model.onnx`, then the manifest describing it (`fields` are the manifest's,
    less version, created_at, onnx_sha256 and onnx_opset, which are set here). The old
    manifest goes first and the new one last, so a half-written directory never loads."""
    out = Path(out_dir)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    write_atomic(out / MODEL_FILE, onnx_bytes)
    created = datetime.now(UTC)
    sha = file_sha256(out / MODEL_FILE)
    manifest = SequenceManifest.model_validate(
        {
            **fields,
            "version": f"{created:%Y%m%dT%H%M%SZ}-{sha[:8]}",
            "created_at": created,
            "onnx_sha256": sha,
            "onnx_opset": OPSET,
        }
    )
    manifest.save(out)
    return manifest
