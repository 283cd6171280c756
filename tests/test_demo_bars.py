"""`esml demo`'s real-data section: the shipped bar bundle scored against the baselines and
traded on the years of real ES bars it never saw, computed when the demo runs; a bundle
that trained on every year the bars hold is not scored on them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from esml.alpha.bar_bundle import ShippedFrame, load_bar_bundle
from esml.alpha.bar_features import bar_features
from esml.cli.app import app
from esml.cli.demo_bars import latest_bar_bundle
from esml.data.continuous import chain_bars, roll_table
from esml.data.sierra import SHIPPED_BARS, read_shipped_bars, sha256_of
from esml.evaluation.bar_holdout import held_out_years, score_held_out
from tests.conftest import ROOT

MODEL_ROWS = ("trees (XGBoost)",)
BASELINE_ROWS = (
    "baseline: majority class",
    "baseline: last-move persistence",
    "baseline: momentum sign",
)
TRADED = ("trees (XGBoost)", "z-score regime (regime classifier)", "momentum rule")


def _table_rows(text: str) -> list[list[str]]:
    """The cells of every body row of the rich tables printed (year first)."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) > 2 and cells[0].isdigit():
            rows.append(cells)
    return rows


def test_demo_scores_and_trades_the_bar_bundle_on_years_it_never_saw(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the demo reads data/samples and models/ from where it runs
    r = CliRunner().invoke(app, ["demo", "--no-replay"], env={"COLUMNS": "220"})
    assert r.exit_code == 0, r.output
    out = r.output
    manifest = load_bar_bundle(latest_bar_bundle(ROOT / "models")).manifest
    trained, held = manifest.data.years, manifest.data.held_out_years
    assert held and min(held) > max(trained) and manifest.synthetic_training_data is False
    assert f"trained on REAL ES bars {trained[0]}-{trained[-1]}" in out
    rows = _table_rows(out)
    assert {int(c[0]) for c in rows} == set(held)  # only years after the training years
    for year in held:
        labels = [c[1] for c in rows if c[0] == str(year)]
        # the scores table (model and baselines), then the trading table
        assert labels == [*MODEL_ROWS, *BASELINE_ROWS, *TRADED], labels
        scored = [c for c in rows if c[0] == str(year) and c[1] in BASELINE_ROWS]
        assert len({c[2] for c in scored}) == 1  # every baseline on the same rows
        assert int(scored[0][2].replace(",", "")) > 10_000  # a year of 30-minute decisions
    trees = [c for c in rows if c[1] == "trees (XGBoost)" and "$" in c[5]]
    assert len(trees) == len(held) and all(int(c[2].replace(",", "")) > 0 for c in trees)
    paid = sum(not c[5].startswith("-") for c in trees)
    assert f"profitable after costs in {paid} of {len(held)}" in out


def test_a_bundle_is_scored_only_on_years_after_those_it_trained_on(tmp_path: Path) -> None:
    bars = read_shipped_bars(ROOT / SHIPPED_BARS)
    chained = chain_bars({c: b for c, b in bars.items() if c.year == 2023})
    frame = bar_features(chained)
    shipped = ShippedFrame(
        frame, ROOT / SHIPPED_BARS, sha256_of(ROOT / SHIPPED_BARS), 4, len(chained),
        roll_table(chained),
    )  # fmt: skip
    source = latest_bar_bundle(ROOT / "models")
    bundle = load_bar_bundle(source)
    last_trained = max(bundle.manifest.data.years)
    years = held_out_years(shipped, bundle)
    assert years and min(years) > last_trained and 2023 in years

    saw_all = tmp_path / source.name
    shutil.copytree(source, saw_all)
    manifest = json.loads((saw_all / "manifest.json").read_text())
    manifest["data"]["years"] = list(range(manifest["data"]["years"][0], 2024))
    (saw_all / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="no later year"):
        score_held_out(shipped, load_bar_bundle(saw_all))
