"""`esml data info FILE...`: what a file holds, for every format esml reads, on the real
files shipped in data/samples and in the shared data folder when it is there."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from esml.cli.data_cmd import app
from esml.data.dbn import DataFileError, read_mbo, write_mbo_dbn
from esml.data.describe import MIN_GAP_NS, describe, summarise
from esml.data.store import ingest
from tests.conftest import ES_FILE, FIXTURES, ROOT

CSV_2011 = ROOT / "data/samples/es_trades_2011-07-31.csv"
DATA_DIR = Path(os.environ.get("ESML_DATA_DIR", ROOT.parent / "shared/data"))
WIDE = {"COLUMNS": "220"}
MINUTE_NS = 60_000_000_000


def _ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1_000_000_000


def test_the_real_es_file() -> None:
    d = describe(ES_FILE)
    assert (d.format, d.schema, d.instruments, d.records) == (
        "Databento DBN", "mbo", (("ESH4", 68_792),), 68_792)  # fmt: skip
    assert d.trading_days == ("2023-12-26",)  # the Christmas-evening reopen trades for the 26th
    assert d.gap_count == 0 and not d.synthetic


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.dbn.zst")), ids=lambda p: p.name)
def test_every_databento_schema(path: Path) -> None:
    d = describe(path)
    assert d.schema == path.name.split(".")[1]  # test_data.<schema>.dbn.zst
    assert d.instruments[0][0] == "ESH1" and d.records >= 1
    assert d.trading_days == ("2020-12-28",)


def test_csv_ticks_need_a_contract_when_the_name_has_none() -> None:
    with pytest.raises(DataFileError, match="does not name its contract"):
        describe(CSV_2011)
    d = describe(CSV_2011, "ESU1")
    assert (d.format, d.schema, d.instruments, d.trading_days) == (
        "CSV ticks", "trades", (("ESU1", 11_101),), ("2011-08-01",))  # fmt: skip
    assert any("wall-clock" in n for n in d.notes)  # 2011: before the modelled session hours


def test_a_silence_in_real_data_is_a_gap(tmp_path) -> None:
    """The real ES hour with 12 minutes of its records taken out."""
    ev = read_mbo(ES_FILE)
    t = ev["ts_recv"].astype(np.int64)
    cut = _ns("2023-12-25 23:30:00")
    kept = ev[(t < cut) | (t >= cut + 12 * MINUTE_NS)]
    symbols = {"ESH4": int(ev["instrument_id"][0])}
    path = write_mbo_dbn(tmp_path / "holed.mbo.dbn.zst", kept, symbols=symbols)
    d = describe(path)
    assert d.gap_count == 1
    (g,) = d.gaps
    assert g.start_ns < cut and g.end_ns >= cut + 12 * MINUTE_NS
    assert 12 * MINUTE_NS <= g.open_ns < 14 * MINUTE_NS


def _minutes(first: str, last: str) -> np.ndarray:
    return np.arange(_ns(first), _ns(last) + 1, MINUTE_NS)


def test_the_daily_halt_and_the_weekend_are_no_gap() -> None:
    """Timestamps only (no market data needed), a record a minute around each silence:
    15:50 CT to 17:10 CT on a Tuesday is 20 min of open market around the halt; Friday
    15:55 CT to Sunday 17:01 CT is 6 minutes."""
    tue = np.concatenate([_minutes("2024-03-05 21:30", "2024-03-05 21:50"),
                          _minutes("2024-03-05 23:10", "2024-03-05 23:30")])  # fmt: skip
    d = summarise(Path("x"), "test", "trades", tue, np.full(len(tue), "ESH4"))
    assert [g.open_ns for g in d.gaps] == [20 * MINUTE_NS]
    weekend = np.concatenate([_minutes("2024-03-08 21:40", "2024-03-08 21:55"),
                              _minutes("2024-03-10 22:01", "2024-03-10 22:20")])  # fmt: skip
    d = summarise(Path("x"), "test", "trades", weekend, np.full(len(weekend), "ESH4"))
    assert d.gap_count == 1 and d.gaps[0].open_ns == 6 * MINUTE_NS
    assert d.gap_threshold_ns == MIN_GAP_NS
    assert d.trading_days == ("2024-03-08", "2024-03-11")


def test_cli_describes_files_and_names_the_bad_one(tmp_path) -> None:
    cut = tmp_path / "cut.mbo.dbn.zst"
    cut.write_bytes(ES_FILE.read_bytes()[:20_000])
    files = [ES_FILE, cut, ROOT / "README.md", FIXTURES / "test_data.ohlcv-1m.dbn.zst"]
    res = CliRunner().invoke(app, ["info", *map(str, files)], env=WIDE)
    assert res.exit_code == 2
    rows = [ln for ln in res.output.splitlines() if ln.count("│") > 5]
    assert len(rows) == 2 and "68,792" in rows[0] and "ohlcv-1m" in rows[1]
    assert "cut.mbo.dbn.zst: truncated" in res.output
    assert "README.md: unsupported format" in res.output


def test_cli_store_both_ways(tmp_path) -> None:
    store = tmp_path / "store"
    ingest(store, [ES_FILE, CSV_2011], symbol="ESU1")
    runner = CliRunner()
    by_option = runner.invoke(app, ["info", "--store", str(store)], env=WIDE)
    assert by_option.exit_code == 0 and "2 source files" in by_option.output
    as_file = runner.invoke(app, ["info", str(store)], env=WIDE)
    assert as_file.exit_code == 0, as_file.output
    assert "esml Parquet store" in as_file.output and "79,893" in as_file.output
    nothing = runner.invoke(app, ["info"], env={**WIDE, "ESML_STORE": ""})
    assert nothing.exit_code == 2 and "give FILE" in nothing.output


@pytest.mark.skipif(not (DATA_DIR / "lobster").is_dir(), reason="shared data folder absent")
def test_lobster_and_shared_cme_files() -> None:
    d = describe(DATA_DIR / "lobster/LOBSTER_SampleFile_GOOG_2012-06-21_10.zip")
    assert (d.format, d.instruments[0][0], d.records, d.trading_days) == (
        "LOBSTER", "GOOG", 147_916, ("2012-06-21",))  # fmt: skip
    assert d.schema == "messages + orderbook, 10 levels"
    for path in sorted((DATA_DIR / "cme-es").glob("*.dbn.zst")):
        assert describe(path).records > 0, path
