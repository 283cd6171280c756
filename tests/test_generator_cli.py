"""`esml sim calibrate --bars` writes the shipped slow-dynamics fit from the shipped bars,
refuses what it cannot use, and `esml sim generate` uses the fit by default."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from esml.cli import sim_cmd
from esml.data.dbn import read_mbo
from esml.data.sierra import SHIPPED_BARS, sha256_of
from esml.sim.queue_reactive import generate_day
from esml.sim.slow_dynamics import bar_calibrated_params, load_slow

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_calibrate_bars_writes_the_shipped_fit_with_its_provenance(tmp_path) -> None:
    out = tmp_path / "slow.json"
    r = runner.invoke(sim_cmd.app, ["calibrate", "--bars", str(ROOT / SHIPPED_BARS),
                                    "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "within-day log-activity" in r.output
    fit = load_slow(out)
    assert fit == load_slow()  # the committed file is what the command writes
    assert fit.source_sha256 == sha256_of(ROOT / SHIPPED_BARS) and fit.bars > 600_000
    # what nine years of ES say: volatility persists over days and over hours
    assert 0.8 < fit.daily_phi < 0.99 and 0.5 < fit.daily_sd < 1.5
    assert 1800 < fit.intraday_tau_s < 6 * 3600 and 0.2 < fit.intraday_sd < 1.0
    f = dict(zip(fit.intraday.minutes, fit.intraday.factor, strict=True))
    assert f[932.5] > 5 * f[602.5]  # 08:30 CT against 03:00 CT


def test_calibrate_refuses_what_it_cannot_use_and_writes_nothing(tmp_path) -> None:
    out = tmp_path / "slow.json"
    r = runner.invoke(sim_cmd.app, ["calibrate", "--out", str(out)])
    assert r.exit_code == 2 and "one of the two" in r.output
    both = ["calibrate", str(ROOT / SHIPPED_BARS), "--bars", str(ROOT / SHIPPED_BARS)]
    assert runner.invoke(sim_cmd.app, [*both, "--out", str(out)]).exit_code == 2
    bad = tmp_path / "bars.parquet"
    bad.write_bytes(b"not parquet")
    r = runner.invoke(sim_cmd.app, ["calibrate", "--bars", str(bad), "--out", str(out)])
    assert r.exit_code == 2 and "bars.parquet" in r.output
    assert not out.exists()


def test_generate_uses_the_slow_dynamics_by_default(tmp_path) -> None:
    args = ["generate", "--days", "1", "--seed", "5", "--start-date", "2024-03-05"]
    r = runner.invoke(sim_cmd.app, [*args, "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    (written,) = tmp_path.iterdir()
    want = generate_day(5, "2024-03-05", params=bar_calibrated_params())
    assert read_mbo(written).tobytes() == want.tobytes()
