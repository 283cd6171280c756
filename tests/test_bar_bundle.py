"""The shipped bar bundle: trained on real bars, every ONNX member serving what its trainer
predicts, the data it came from recorded, and a tampered file refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from esml.alpha.bar_bundle import ShippedFrame, load_bar_bundle, train_bar_bundle
from esml.alpha.bar_features import bar_features, windows
from esml.alpha.bar_models import BarBudget
from esml.alpha.manifest import ModelFileError
from esml.data.continuous import chain_bars, roll_table
from esml.data.sierra import SHIPPED_BARS, read_shipped_bars, sha256_of
from tests.conftest import ROOT

TINY = BarBudget(
    tree_rounds=20,
    net_epochs=1,
    max_train_windows=600,
    regime_max_rows=1500,
    regime_trees=10,
    regime_mlp_iter=10,
    threads=1,
)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bars = read_shipped_bars(ROOT / SHIPPED_BARS)
    chained = chain_bars({c: b for c, b in bars.items() if c.year == 2015})
    shipped = ShippedFrame(
        bar_features(chained),
        ROOT / SHIPPED_BARS,
        sha256_of(ROOT / SHIPPED_BARS),
        4,
        len(chained),
        roll_table(chained),
    )
    return train_bar_bundle(shipped, tmp_path_factory.mktemp("models"), TINY)


def test_bundle_records_real_data_and_serves_every_member(bundle_dir: Path) -> None:
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["synthetic_training_data"] is False
    assert manifest["data"]["sha256"] == sha256_of(ROOT / SHIPPED_BARS)
    assert manifest["data"]["years"] == [2014, 2015]
    assert set(manifest["members"]) == {"trees", "bar_lstm", "bar_transformer", "regime"}
    assert manifest["members"]["trees"]["validation"]["rows"] > 100
    bundle = load_bar_bundle(bundle_dir)
    bars = read_shipped_bars(ROOT / SHIPPED_BARS)
    frame = bar_features(chain_bars({c: b for c, b in bars.items() if c.year == 2015}))
    rows = np.flatnonzero(frame.decision)[-50:]
    p = bundle.direction(frame.x[rows], windows(frame.x, rows))
    assert set(p) == {"trees", "bar_lstm", "bar_transformer", "ensemble"}
    for name, proba in p.items():
        assert proba.shape == (50, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5), name
    assert np.allclose(p["ensemble"], np.mean([p["trees"], p["bar_lstm"], p["bar_transformer"]], 0))


def test_tampered_member_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    copy.mkdir()
    for f in bundle_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    data = bytearray((copy / "trees.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "trees.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256"):
        load_bar_bundle(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(ModelFileError, match="no bundle manifest"):
        load_bar_bundle(copy)


def test_shipped_bundle_was_trained_on_the_shipped_real_bars_but_its_last_two_years() -> None:
    (shipped,) = sorted((ROOT / "models").glob("es-bars-5m-*"))[-1:]
    bundle = load_bar_bundle(shipped)
    assert bundle.manifest.synthetic_training_data is False
    assert bundle.manifest.data.sha256 == sha256_of(ROOT / SHIPPED_BARS)
    data = bundle.manifest.data
    assert data.bars == 627_831 and data.years[-1] == 2021 and data.held_out_years == [2022, 2023]
    first_held_out_ns = 1_640_995_200 * 10**9  # 2022-01-01 UTC: nothing after it was trained on
    for member in bundle.manifest.members.values():
        assert member.validation is None or member.validation.last_ts_ns < first_held_out_ns
