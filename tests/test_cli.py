"""The `esml` command: a clear error for bad input, a full backtest for good input."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from esml.cli.app import app
from tests.conftest import ES_FILE, ROOT

runner = CliRunner()


def test_backtest_on_the_real_es_file(demo_model_dir, tmp_path) -> None:
    out = tmp_path / "bt"
    r = runner.invoke(app, ["backtest", "--data", str(ES_FILE), "--model", str(demo_model_dir),
                            "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "Net P&L (after costs)" in r.output and "decision funnel" in r.output
    assert "SYNTHETIC" not in r.output.split("decision funnel")[0]  # real data is not labelled
    report = next(out.glob("*.html"))
    assert "plotly" in report.read_text()[:200_000].lower()
    assert (out / "journal.sqlite").exists()


def test_a_corrupt_file_is_refused_and_writes_nothing(tmp_path, demo_model_dir) -> None:
    bad = tmp_path / "bad.dbn.zst"
    bad.write_bytes(ES_FILE.read_bytes()[:20_000])
    out = tmp_path / "bt"
    r = runner.invoke(app, ["backtest", "--data", str(bad), "--model", str(demo_model_dir),
                            "--out", str(out)])  # fmt: skip
    assert r.exit_code == 2
    assert "bad.dbn.zst: truncated" in r.output
    assert not out.exists()


def test_a_bad_config_is_refused(tmp_path) -> None:
    cfg = tmp_path / "esml.toml"
    cfg.write_text("[risk]\nmax_position = -1\n")
    r = runner.invoke(app, ["backtest", "--data", str(ES_FILE), "--config", str(cfg)])
    assert r.exit_code == 2
    assert "max_position" in r.output


def test_the_demo_replays_an_open_market_day_the_models_never_saw() -> None:
    """A session stamped on a weekend would meet a closed market at every gate, and one
    the shipped models trained on would flatter them."""
    from esml.alpha.registry import champion, load_bundle
    from esml.cli.app import DEMO_REPLAY_DATE, DEMO_REPLAY_HOURS, DEMO_REPLAY_SEED
    from esml.market.calendar import is_open
    from esml.sim.queue_reactive import generate_day

    ev = generate_day(DEMO_REPLAY_SEED, DEMO_REPLAY_DATE, start="07:30", hours=DEMO_REPLAY_HOURS)
    assert is_open(int(ev["ts_recv"][0])) and is_open(int(ev["ts_recv"][-1]))
    trained_on = load_bundle(champion(ROOT / "models")).data_sha256
    dates = [re.search(r"\d{4}-\d{2}-\d{2}", name).group() for name in trained_on]
    assert len(dates) == len(trained_on) and max(dates) < DEMO_REPLAY_DATE
