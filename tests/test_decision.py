"""Gates and the config they come from."""

from __future__ import annotations

import pytest

from esml.config import ConfigError, load_config
from esml.decision.gates import GateStack
from esml.decision.proposal import AccountState, Proposal, TradingState
from esml.execution.orders import Side


def _p(side: Side = Side.BUY, qty: int = 1, conf: float | None = 0.8, exit_: bool = False):
    return Proposal("ES", side, qty, "model", 0, conf, exit_)


def test_each_gate_rejects_with_its_name_and_reason_and_counts() -> None:
    gates = GateStack.from_config(load_config().risk)  # 0.55 conf, 1 lot, $1,500
    acct = AccountState("2024-03-04")
    assert gates.evaluate(_p(conf=0.50), acct).gate == "confidence"
    acct.position = 1
    v = gates.evaluate(_p(), acct)
    assert (v.gate, v.reason) == ("max_position", "position would be +2, limit is 1")
    acct.position, acct.realized_pnl = 0, -1500.0
    assert gates.evaluate(_p(), acct).gate == "daily_loss"
    acct.realized_pnl, acct.state = 0.0, TradingState.HALTED
    assert gates.evaluate(_p(), acct).gate == "trading_state"
    acct.state = TradingState.ACTIVE
    assert gates.evaluate(_p(), acct).approved
    assert dict(gates.rejections) == {
        "confidence": 1, "max_position": 1, "daily_loss": 1, "trading_state": 1,
    }  # fmt: skip
    assert gates.passed == 1


def test_exits_pass_every_gate_but_a_halt() -> None:
    gates = GateStack.from_config(load_config().risk)
    acct = AccountState("2024-03-04", position=1, realized_pnl=-5000.0,
                        state=TradingState.REDUCING)  # fmt: skip
    assert gates.evaluate(_p(Side.SELL, conf=None, exit_=True), acct).approved
    assert gates.evaluate(_p(), acct).gate == "trading_state"


def test_a_new_trading_day_restores_the_loss_budget() -> None:
    acct = AccountState("2024-03-04", position=1, realized_pnl=-900.0)
    acct.roll_to("2024-03-05")
    assert acct.realized_pnl == 0.0 and acct.position == 1


def test_bad_config_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "esml.toml"
    bad.write_text("[risk]\nmax_positon = 2\n")  # typo
    with pytest.raises(ConfigError, match="max_positon"):
        load_config(bad)
    bad.write_text('instrument = "SPX"\n')
    with pytest.raises(ConfigError, match="unknown instrument 'SPX'"):
        load_config(bad)
    bad.write_text("[risk\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    good = tmp_path / "ok.toml"
    good.write_text('instrument = "MES"\n[risk]\nmax_position = 3\n')
    cfg = load_config(good)
    assert cfg.instrument_spec.tick_value == 1.25 and cfg.risk.max_position == 3
