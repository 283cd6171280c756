"""Shared fixtures: the shipped real ES file, and one small model trained once per run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
# pytest-xdist's workers get COLUMNS=80, and a rich Console built at import freezes that width:
# the CLI tests give their own width per invocation, which only works when none is frozen
os.environ.pop("COLUMNS", None)

# moto's AWS and the alert path's stack (webhook -> risk -> router -> the Tradovate simulator),
# as fixtures for every test that asks for them
pytest_plugins = ("tests.aws_fixtures", "tests.alert_stack")

ROOT = Path(__file__).resolve().parents[1]
ES_FILE = ROOT / "data/samples/esh4-glbx-mdp3-20231225.mbo.dbn.zst"
FIXTURES = ROOT / "data/samples/databento-fixtures"


@pytest.fixture(scope="session")
def es_events() -> np.ndarray:
    from esml.data.dbn import read_mbo

    return read_mbo(ES_FILE)


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A direction model trained on two short synthetic sessions (labelled synthetic)."""
    from esml.alpha.xgb import train_direction_model
    from esml.config import load_config
    from esml.sim.synthetic import generate_session

    out = tmp_path_factory.mktemp("model")
    sessions = [generate_session(seed, duration_s=1200) for seed in (1, 2)]
    train_direction_model(sessions, load_config(), out, synthetic=True,
                          source_names=["synthetic-1", "synthetic-2"])  # fmt: skip
    return out


@pytest.fixture(scope="session")
def sessions() -> dict[str, np.ndarray]:
    """Two SYNTHETIC 40-minute sessions on consecutive days: the tiny stack's data."""
    from tests.tiny_stack import tiny_sessions

    return tiny_sessions()


@pytest.fixture(scope="session")
def stack(sessions, tmp_path_factory):
    """A tiny stack bundle, forced to be the champion of its own model root (too small to
    beat the baselines, it would not earn promotion)."""
    from esml.config import EsmlConfig
    from tests.tiny_stack import TINY
    from training.stack import train_stack

    root = tmp_path_factory.mktemp("models")
    return train_stack(sessions, EsmlConfig(), root, synthetic=True, params=TINY, force=True)
