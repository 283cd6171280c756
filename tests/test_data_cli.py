"""`esml data ingest` and `esml data info`, run through the typer sub-app."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from esml.cli.data_cmd import app
from esml.data.store import MANIFEST, read
from tests.conftest import ES_FILE, FIXTURES, ROOT

CSV_2011 = ROOT / "data/samples/es_trades_2011-07-31.csv"
TRADES_FILE = ROOT / "data/samples/futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
WIDE = {"COLUMNS": "200"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_ingest_then_info(runner, tmp_path) -> None:
    store = tmp_path / "store"
    files = [ES_FILE, TRADES_FILE, FIXTURES / "test_data.ohlcv-1m.dbn.zst", CSV_2011]
    res = runner.invoke(app, ["ingest", *map(str, files), "--store", str(store),
                              "--symbol", "ESU1"], env=WIDE)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.output.count("ingested") == 4
    assert "68,792" in res.output and "2011-08-01" in res.output
    res = runner.invoke(app, ["info", "--store", str(store)], env=WIDE)
    assert res.exit_code == 0, res.output
    lines = {ln.split("│")[1].strip() + " " + ln.split("│")[2].strip(): ln
             for ln in res.output.splitlines() if ln.count("│") > 3}  # fmt: skip
    assert set(lines) == {"ESH4 mbo", "ESU4 trades", "ESH1 ohlcv-1m", "ESU1 trades"}
    assert "11,101" in lines["ESU1 trades"] and "2011-07-31 22:00:00" in lines["ESU1 trades"]
    assert "2024-07-02" in lines["ESU4 trades"] and "│ no " in lines["ESU4 trades"]
    assert "4 source files" in res.output


def test_reingest_says_so_and_adds_nothing(runner, tmp_path) -> None:
    args = ["ingest", str(TRADES_FILE), "--store", str(tmp_path)]
    assert runner.invoke(app, args, env=WIDE).exit_code == 0
    manifest = (tmp_path / MANIFEST).read_bytes()
    res = runner.invoke(app, args, env=WIDE)
    assert res.exit_code == 0 and "already in the store" in res.output
    assert (tmp_path / MANIFEST).read_bytes() == manifest
    assert len(read(tmp_path, "trades", "ESU4")) == 120


def test_unknown_and_corrupt_files_fail_and_add_nothing(runner, tmp_path) -> None:
    store = tmp_path / "store"
    notes = tmp_path / "messages.csv"
    notes.write_text("34200.004241176,1,16113575,18,5853300,1\n")
    res = runner.invoke(app, ["ingest", str(TRADES_FILE), str(notes), "--store", str(store)],
                        env=WIDE)  # fmt: skip
    assert res.exit_code == 2
    assert "messages.csv: unsupported format" in res.output and "nothing was added" in res.output
    assert not store.exists()  # a new store that got nothing is not left behind
    cut = tmp_path / "cut.dbn.zst"
    cut.write_bytes(ES_FILE.read_bytes()[:-1000])
    res = runner.invoke(app, ["ingest", str(cut), "--store", str(store)], env=WIDE)
    assert res.exit_code == 2 and "cut.dbn.zst: truncated" in res.output
    res = runner.invoke(app, ["ingest", str(CSV_2011), "--store", str(store)], env=WIDE)
    assert res.exit_code == 2 and "does not name its contract" in res.output


def test_info_fails_on_a_missing_store_or_part(runner, tmp_path) -> None:
    res = runner.invoke(app, ["info", "--store", str(tmp_path / "none")], env=WIDE)
    assert res.exit_code == 2 and "not an esml data store" in res.output
    runner.invoke(app, ["ingest", str(TRADES_FILE), "--store", str(tmp_path)], env=WIDE)
    part = next(Path(tmp_path).rglob("*.parquet"))
    part.unlink()
    res = runner.invoke(app, ["info", "--store", str(tmp_path)], env=WIDE)
    assert res.exit_code == 1 and "missing" in res.output


def test_store_can_come_from_the_environment(runner, tmp_path) -> None:
    res = runner.invoke(
        app, ["ingest", str(TRADES_FILE)], env={**WIDE, "ESML_STORE": str(tmp_path)}
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / MANIFEST).exists()
