"""Ablation through the engine: identical data, fresh state per run, the same table twice."""

from __future__ import annotations

import pytest

from esml.config import ConfigError, load_config
from esml.decision.gates import GateStack
from esml.engine.ablation import FILTER_GATES, default_variants, run_ablation
from esml.engine.serving import serve
from esml.evaluation.ablation import to_markdown
from esml.sim.synthetic import generate_session


def test_the_same_input_gives_the_same_table(demo_model_dir) -> None:
    events = generate_session(5, duration_s=900)
    cfg = load_config()
    make = serve(demo_model_dir, cfg).make
    first = run_ablation(events, default_variants(cfg, make), name="synthetic")
    second = run_ablation(events, default_variants(cfg, make), name="synthetic")
    assert [r.name for r in first] == [
        "model, all gates", "model, risk limits only",
        "rule: zscore_regime", "rule: momentum", "rule: mean_reversion",
    ]  # fmt: skip
    assert to_markdown(first) == to_markdown(second)
    assert all(r.synthetic for r in first)
    for r in first:  # the funnel ends with what reached the position manager
        assert r.funnel[0][0] == "proposals" and r.funnel[0][1] <= r.signals
        assert r.orders <= r.funnel[-1][1]
    loose = dict(first[1].funnel)
    assert not set(FILTER_GATES) & set(loose)  # those gates were off, not just passed


def test_gates_can_be_turned_off_but_not_the_trading_state() -> None:
    stack = GateStack.from_config(load_config(risk={"gates_off": ["cooldown"]}).risk)
    assert "cooldown" not in [g.name for g in stack.gates]
    for bad in (["trading_state"], ["cooldwn"]):
        with pytest.raises(ValueError, match="cannot be turned off"):
            GateStack.from_config(load_config(risk={"gates_off": bad}).risk)
    with pytest.raises(ConfigError):
        load_config(risk={"gates_off": "cooldown"})
