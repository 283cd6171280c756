"""`esml score`: a trained bundle, as shipped, scored on the real ES file without training.

The bundle is conftest's tiny stack (trained on SYNTHETIC sessions, so every real-file
score is out of sample); the data is the real hour of ES MBO in data/samples."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from esml.alpha import registry
from esml.cli.score_cmd import score
from esml.evaluation.bundle_scoring import score_bundle
from esml.evaluation.datasets import real_es_dataset
from esml.evaluation.model_eval import BASELINES
from tests.conftest import ES_FILE


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(score)
    return app


@pytest.fixture(scope="module")
def es_dataset():
    ds, skipped = real_es_dataset([ES_FILE])
    assert ds is not None and not skipped
    return ds


def test_the_bundle_is_scored_as_served_against_the_baselines_on_later_rows(stack, es_dataset):
    r = score_bundle(stack.path, es_dataset, n_boot=200)
    assert r.models == ("trees", "tick_lstm", "ensemble") and not r.not_scored
    assert r.in_sample == () and r.synthetic_training_data
    assert set(r.scores) == {*r.models, *BASELINES}
    n = {s.n for s in r.scores.values()}
    assert len(n) == 1 and r.fit_rows > 0  # every model on the very same rows
    assert len(r.comparisons) == len(r.models) * len(BASELINES)
    again = score_bundle(stack.path.parent, es_dataset, n_boot=200)  # the root's champion
    assert again.scores == r.scores
    # the ensemble is the bundle's own: its calibrated probabilities, not a refit
    ll = r.scores["ensemble"].metrics["log_loss"]
    assert np.isfinite(ll.value) and ll.low <= ll.value <= ll.high


def test_score_command_prints_the_evaluation_tables_and_refuses_bad_input(stack, tmp_path):
    out = tmp_path / "scores.md"
    args = ["--model", str(stack.path), "--data", str(ES_FILE), "--n-boot", "200"]
    done = CliRunner().invoke(cli(), [*args, "--out", str(out)])
    assert done.exit_code == 0, done.output
    text = out.read_text()
    assert "(trained on SYNTHETIC data)" in text
    assert "| model | rows | accuracy | macro F1 | log loss | Brier |" in text
    assert "| baseline: L1 imbalance / microprice logistic |" in text
    assert "| **ensemble** |" in text and "In plain words:" in text
    missing = CliRunner().invoke(cli(), ["--model", str(stack.path), "--data", "nope.dbn"])
    assert missing.exit_code == 2 and "not found: nope.dbn" in missing.output
    broken = tmp_path / "broken"
    shutil.copytree(stack.path, broken)
    (broken / "trees" / "model.onnx").write_bytes(b"not a model")
    bad = CliRunner().invoke(cli(), ["--model", str(broken), "--data", str(ES_FILE)])
    assert bad.exit_code == 2 and "error" in bad.output
    assert registry.champion(stack.path.parent) == stack.path  # nothing changed
