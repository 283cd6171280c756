"""`esml bars evaluate` end to end on a two-year file packed from the shipped bars, and a
clear error for a corrupt file."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from esml.cli.app import app
from esml.data.sierra import SHIPPED_BARS, SierraBars, read_shipped_bars, write_shipped_bars
from tests.conftest import ROOT


def test_evaluate_writes_the_document_and_chart(tmp_path: Path) -> None:
    bars = read_shipped_bars(ROOT / SHIPPED_BARS)
    two_years = [SierraBars(c, b, "0" * 64, Path(f"{c}.txt")) for c, b in bars.items()
                 if c.year <= 2016]  # fmt: skip
    data = tmp_path / "bars.parquet"
    write_shipped_bars(two_years, data)
    out = tmp_path / "doc" / "eval.md"
    args = ["bars", "evaluate", "--data", str(data), "--years", "2016", "--no-nets",
            "--n-boot", "100", "--out", str(out)]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    md = out.read_text()
    assert "| 2016 | " in md and "rolls of the continuous series" in md and "ESZ5 | ESH6" in md
    assert "plotly" in out.with_suffix(".html").read_text()
    data.write_bytes(data.read_bytes()[:-100])
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "corrupt or replaced" in r.output
