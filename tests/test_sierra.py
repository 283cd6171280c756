"""Sierra Chart bar exports: the reader against SOURCE.txt and known rows, the shipped
Parquet, the chained continuous series and `esml data ingest`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from esml.cli.app import app
from esml.data.bar_store import read_store_bars
from esml.data.continuous import chain_bars, roll_table
from esml.data.dbn import DataFileError
from esml.data.sierra import (
    SHIPPED_BARS,
    read_shipped_bars,
    read_sierra_bars,
    read_sierra_dir,
    source_digests,
    write_shipped_bars,
)
from esml.market.contracts import parse_contract
from esml.market.instruments import ES
from tests.conftest import ROOT

DATA_DIR = Path(os.environ.get("ESML_DATA_DIR", ROOT.parent / "shared/data"))
SIERRA = DATA_DIR / "es-bars/sierra-5m"
ESH15 = SIERRA / "ESH15-CME.scid_BarData__5m.txt"
HEADER = "Date, Time, Open, High, Low, Last, Volume, NumberOfTrades, BidVolume, AskVolume\n"
needs_shared = pytest.mark.skipif(not ESH15.is_file(), reason=f"no shared data at {SIERRA}")


def _utc(text: str) -> int:
    return pd.Timestamp(text, tz="UTC").value


def _px(points: float) -> int:
    return ES.to_fixed(points)


@pytest.fixture(scope="module")
def shipped() -> dict:
    return read_shipped_bars(ROOT / SHIPPED_BARS)


@needs_shared
def test_export_matches_its_sha256_and_known_rows() -> None:
    want = source_digests(SIERRA / "SOURCE.txt")[ESH15.name]
    s = read_sierra_bars(ESH15, expected_sha256=want)
    assert s.sha256 == want and str(s.contract) == "ESH5" and s.contract.year == 2015
    first, last = s.bars.iloc[0], s.bars.iloc[-1]
    # 2014/12/23 18:00 CST (UTC-6) and 2015/3/20 08:25 CDT (UTC-5, after the March 8 change)
    assert first["ts"] == _utc("2014-12-24 00:00") and last["ts"] == _utc("2015-03-20 13:25")
    assert [first[c] for c in ("open", "high", "low", "close")] == [
        _px(2078.75), _px(2079.25), _px(2078.75), _px(2079.00)]  # fmt: skip
    assert [first[c] for c in ("volume", "trades", "bid_volume", "ask_volume")] == [129, 80, 60, 69]
    assert last["close"] == _px(2101.25) and last["bid_volume"] == 1095
    with pytest.raises(DataFileError, match="sha256"):
        read_sierra_bars(ESH15, expected_sha256="0" * 64)


@needs_shared
def test_shipped_parquet_is_the_exports_unchanged(shipped) -> None:
    for name in ("ESH15", "ESZ23"):
        s = read_sierra_bars(SIERRA / f"{name}-CME.scid_BarData__5m.txt")
        pd.testing.assert_frame_equal(shipped[s.contract], s.bars)
    sources = pq.read_schema(ROOT / SHIPPED_BARS).metadata[b"esml.sources"].decode()
    assert dict(x.split("=") for x in sources.split()) == source_digests(SIERRA / "SOURCE.txt")


def test_shipped_bars_cover_nine_years_in_order(shipped) -> None:
    assert len(shipped) == 36 and sum(len(b) for b in shipped.values()) == 627_831
    contracts = list(shipped)
    assert str(contracts[0]) == "ESH5" and contracts[-1] == parse_contract("ESZ23")
    ends = [int(b["ts"].iloc[-1]) for b in shipped.values()]
    starts = [int(b["ts"].iloc[0]) for b in shipped.values()]
    assert all(s > e for s, e in zip(starts[1:], ends[:-1], strict=True))  # no overlap
    # the RTH open (08:30 CT) is the busiest bar of the morning in both CST and CDT
    b = shipped[parse_contract("ESZ23")]
    local = pd.to_datetime(b["ts"], utc=True).dt.tz_convert("America/Chicago")
    morning = b[(local.dt.hour >= 7) & (local.dt.hour < 10)]
    by_time = morning.groupby(local.dt.strftime("%H:%M"))["volume"].median()
    assert by_time.idxmax() == "08:30"


def test_corrupt_or_replaced_shipped_file_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "bars.parquet"
    shutil.copy(ROOT / SHIPPED_BARS, copy)
    shutil.copy(ROOT / f"{SHIPPED_BARS}.sha256", tmp_path / "bars.parquet.sha256")
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(DataFileError, match="corrupt or replaced"):
        read_shipped_bars(copy)
    (tmp_path / "bars.parquet.sha256").unlink()
    with pytest.raises(DataFileError, match="missing"):
        read_shipped_bars(copy)


def _export(tmp_path: Path, rows: list[str], name: str = "ESH15-CME.scid_BarData__5m.txt") -> Path:
    p = tmp_path / name
    p.write_text(HEADER + "".join(r + "\n" for r in rows))
    return p


GOOD = "2015/1/5, 08:30:00, 2010.00, 2011.00, 2009.50, 2010.25, 100, 40, 60, 40"


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ("2015/1/5, 08:35:00, 2010.10, 2011.00, 2009.50, 2010.25, 1, 1, 1, 0", "tick grid"),
        ("2015/1/5, 08:35:00, 2010.00, 2009.00, 2009.50, 2010.25, 1, 1, 1, 0", "high/low"),
        ("2015/1/5, 08:30:00, 2010.00, 2011.00, 2009.50, 2010.25, 1, 1, 1, 0", "increase"),
        ("2015/1/5, 08:35:00, 2010.00, 2011.00, 2009.50, 2010.25, -1, 1, 1, 0", "count"),
        ("2015/3/8, 02:30:00, 2010.00, 2011.00, 2009.50, 2010.25, 1, 1, 1, 0", "Central"),
        ("2015/1/5, 8h35, 2010.00, 2011.00, 2009.50, 2010.25, 1, 1, 1, 0", "not a time"),
    ],
)
def test_bad_rows_name_the_line(tmp_path: Path, row: str, why: str) -> None:
    p = _export(tmp_path, [GOOD, row])
    with pytest.raises(DataFileError, match=why) as e:
        read_sierra_bars(p)
    if why not in ("Central",):
        assert "line 3" in str(e.value)


def test_wrong_header_or_name_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "ESH15-CME.scid_BarData__5m.txt"
    p.write_text("Date,Time,Price\n2015/1/5,08:30:00,1\n")
    with pytest.raises(DataFileError, match="not a Sierra"):
        read_sierra_bars(p)
    with pytest.raises(DataFileError, match="file name"):
        read_sierra_bars(_export(tmp_path, [GOOD], name="bars.txt"))
    folder = tmp_path / "f"
    folder.mkdir()
    _export(folder, [GOOD])
    (folder / "SOURCE.txt").write_text(f"{'1' * 64}  ESH15-CME.scid_BarData__5m.txt\n")
    with pytest.raises(DataFileError, match="sha256"):
        read_sierra_dir(folder)


def test_chain_back_adjusts_at_the_file_boundary(shipped) -> None:
    h, m = parse_contract("ESH15"), parse_contract("ESM15")
    chained = chain_bars({m: shipped[m], h: shipped[h]})
    assert len(chained) == len(shipped[h]) + len(shipped[m])
    assert list(chained["contract"].unique()) == ["ESH5", "ESM5"]
    rolls = roll_table(chained)
    assert len(rolls) == 1 and rolls["ts"].iloc[0] == shipped[m]["ts"].iloc[0]
    gap = shipped[m]["open"].iloc[0] - shipped[h]["close"].iloc[-1]  # next open - last close
    assert rolls["gap"].iloc[0] == gap
    old = chained[chained["contract"] == "ESH5"]
    assert np.array_equal(old["close"].to_numpy(), shipped[h]["close"].to_numpy() + gap)
    assert chained["open"].iloc[len(old)] == chained["close"].iloc[len(old) - 1]  # no jump
    assert "bid_volume" in chained and chained["ts"].is_monotonic_increasing
    with pytest.raises(ValueError, match="overlap"):
        chain_bars({h: shipped[h], m: shipped[h]})


@needs_shared
def test_data_ingest_takes_sierra_and_lean_all_or_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    lean = DATA_DIR / "es-bars/lean-minute/minute_es_20131008_trade.zip"
    runner = CliRunner()
    bad = _export(tmp_path, [GOOD, GOOD], name="ESM15-CME.scid_BarData__5m.txt")
    r = runner.invoke(app, ["data", "ingest", "--store", str(store), str(ESH15), str(bad)])
    assert r.exit_code == 2 and "nothing was added" in r.output
    assert not (store / "bars").exists()
    r = runner.invoke(app, ["data", "ingest", "--store", str(store), str(ESH15), str(lean)])
    assert r.exit_code == 0, r.output
    sierra = read_store_bars(store, "sierra")
    assert sum(len(b) for b in sierra.values()) == 16_583
    assert set(map(str, read_store_bars(store, "lean-trade"))) >= {"ESZ3", "ESH4"}
    r = runner.invoke(app, ["data", "ingest", "--store", str(store), str(ESH15)])
    assert r.exit_code == 0 and "already" in r.output
    assert len(list((store / "bars").rglob("*.parquet"))) == 1 + 4  # ESH15, four Lean expiries


def test_pack_round_trips_exports(tmp_path: Path) -> None:
    rows = [GOOD, "2015/1/5, 08:35:00, 2010.25, 2012.00, 2010.00, 2011.75, 250, 90, 100, 150"]
    export = read_sierra_bars(_export(tmp_path, rows))
    out = tmp_path / "packed" / "bars.parquet"
    digest = write_shipped_bars([export], out)
    assert (tmp_path / "packed" / "bars.parquet.sha256").read_text().split()[0] == digest
    back = read_shipped_bars(out)
    pd.testing.assert_frame_equal(back[export.contract], export.bars)
    assert back[export.contract]["close"].iloc[1] == _px(2011.75)
