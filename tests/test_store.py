"""The Parquet store: partitions by instrument and trading day, exact round trips,
idempotent re-ingest, and ingests that either complete or change nothing."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import zstandard

from esml.data import store
from esml.data.csv_ticks import read_csv_ticks
from esml.data.dbn import DataFileError, read_dbn, read_mbo, to_events, write_mbo_dbn
from esml.data.store import UnsupportedFormatError, info, ingest, read, read_events
from esml.market.calendar import CHICAGO
from esml.market.events import PUBLISHER_SYNTHETIC
from tests.conftest import ES_FILE, FIXTURES, ROOT

SAMPLES = ROOT / "data/samples"
MBP1_FILE = SAMPLES / "futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
TRADES_FILE = SAMPLES / "futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
DEFINITION_V1 = SAMPLES / "definition-glbx-es-fut.dbn.zst"
CSV_2011 = SAMPLES / "es_trades_2011-07-31.csv"
FIXTURE_FILES = sorted(FIXTURES.glob("test_data.*.dbn.zst"))


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under the store but the lock, with its content."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != store.LOCK
    }


@pytest.fixture(scope="module")
def full_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    ingest(root, [*FIXTURE_FILES, ES_FILE, MBP1_FILE, TRADES_FILE, DEFINITION_V1])
    ingest(root, [CSV_2011], symbol="ESU1")
    return root


def test_every_schema_reads_back_exactly(full_store) -> None:
    others = {MBP1_FILE: "ESU4", TRADES_FILE: "ESU4", DEFINITION_V1: "ESM3"}
    for path, symbol in [*((p, "ESH1") for p in FIXTURE_FILES), *others.items()]:
        f = read_dbn(path)
        back = read(full_store, f.schema, symbol)
        assert back.dtype == f.spec.current
        np.testing.assert_array_equal(back, f.upgraded(), err_msg=path.name)


def test_mbo_events_come_back_byte_for_byte(full_store) -> None:
    assert read_events(full_store, "mbo", "ESH4").tobytes() == read_mbo(ES_FILE).tobytes()
    l1 = read_events(full_store, "mbp-1", "ESU4")
    np.testing.assert_array_equal(l1, to_events(read_dbn(MBP1_FILE)))


def test_csv_ticks_are_stored_as_trades_on_their_trading_day(full_store) -> None:
    ticks = read_csv_ticks(CSV_2011, symbol="ESU1").events
    back = read_events(full_store, "trades", "ESU1", dates=["2011-08-01"])
    for name in ("ts_event", "ts_recv", "price", "size", "side", "action", "flags", "sequence"):
        np.testing.assert_array_equal(back[name], ticks[name], err_msg=name)
    assert len(read(full_store, "trades", "ESU1", dates=["2011-07-31"])) == 0


def test_info_summarises_instruments_dates_counts_and_time(full_store) -> None:
    summary = info(full_store)
    assert summary.problems == [] and summary.sources == 19
    rows = {(r.instrument, r.schema): r for r in summary.rows}
    assert {s for i, s in rows if i == "ESH1"} == {p.name.split(".")[1] for p in FIXTURE_FILES}
    esu1 = rows[("ESU1", "trades")]
    assert (esu1.rows, esu1.dates, esu1.synthetic) == (11_101, ("2011-08-01",), "no")
    assert esu1.ts_min == 1_312_149_600_120_000_000
    esu4 = rows[("ESU4", "mbp-1")]
    assert (esu4.rows, esu4.dates) == (2_288, ("2024-07-02",))  # Monday evening is Tuesday
    assert rows[("ESH4", "mbo")].rows == 68_792
    assert rows[("ESM3", "definition")].rows == 2


def test_reingest_adds_nothing(tmp_path) -> None:
    ingest(tmp_path, [ES_FILE, TRADES_FILE])
    before = _tree(tmp_path)
    plain = tmp_path.parent / "same-records.dbn"  # the same data, decompressed, renamed
    plain.write_bytes(zstandard.ZstdDecompressor().stream_reader(
        TRADES_FILE.read_bytes(), read_across_frames=True).read())  # fmt: skip
    results = ingest(tmp_path, [ES_FILE, plain, TRADES_FILE])
    assert [r.status for r in results] == ["already in the store"] * 3
    assert _tree(tmp_path) == before
    assert len(read(tmp_path, "mbo", "ESH4")) == 68_792
    twice = ingest(tmp_path / "fresh", [MBP1_FILE, MBP1_FILE])
    assert [r.status for r in twice] == ["ingested", "same data as another file given"]
    assert info(tmp_path / "fresh").rows[0].rows == 2_288


def test_a_bad_file_among_good_ones_changes_nothing(tmp_path) -> None:
    ingest(tmp_path, [TRADES_FILE])
    before = _tree(tmp_path)
    cut = tmp_path.parent / "cut.dbn.zst"
    cut.write_bytes(MBP1_FILE.read_bytes()[:-40])
    with pytest.raises(DataFileError, match=r"cut\.dbn\.zst: truncated"):
        ingest(tmp_path, [ES_FILE, cut])
    assert _tree(tmp_path) == before
    notes = tmp_path.parent / "notes.txt"
    notes.write_text("hello\n")
    with pytest.raises(UnsupportedFormatError, match=r"notes\.txt: unsupported format"):
        ingest(tmp_path, [ES_FILE, notes])
    assert _tree(tmp_path) == before


def test_a_failed_commit_leaves_no_trace(tmp_path, monkeypatch) -> None:
    ingest(tmp_path, [TRADES_FILE])
    before = _tree(tmp_path)
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(dst).name == store.MANIFEST:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        ingest(tmp_path, [ES_FILE, MBP1_FILE])
    monkeypatch.undo()
    assert _tree(tmp_path) == before
    assert not any(tmp_path.glob("schema=mbo"))


def test_leftovers_of_a_crashed_ingest_are_swept(tmp_path) -> None:
    ingest(tmp_path, [TRADES_FILE])
    before = _tree(tmp_path)
    orphan = tmp_path / "schema=mbo/instrument=ESH4/date=2023-12-26/dead.parquet"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half a file")
    (tmp_path / f"{store.STAGING_PREFIX}dead").mkdir()
    assert info(tmp_path).problems == []  # readers see only what the manifest lists
    ingest(tmp_path, [TRADES_FILE])
    assert _tree(tmp_path) == before
    assert not (tmp_path / "schema=mbo").exists()


def test_synthetic_days_are_split_by_trading_day_and_labelled(tmp_path, es_events) -> None:
    """A synthetic file spanning the 17:00 CT start of a new trading day."""
    ev = es_events[es_events["instrument_id"] == 17077][:3000].copy()
    open_ns = int(datetime(2024, 3, 5, 17, 0, tzinfo=CHICAGO).timestamp()) * 10**9
    ev["ts_recv"] = open_ns - 60 * 10**9 + np.arange(len(ev)) * 40_000_000  # 16:59 to 17:01
    ev["ts_event"] = ev["ts_recv"]
    ev["publisher_id"] = PUBLISHER_SYNTHETIC
    path = write_mbo_dbn(tmp_path / "synthetic.mbo.dbn.zst", ev, symbols={"ESH4": 17077})
    root = tmp_path / "store"
    (result,) = ingest(root, [path])
    assert result.dates == ("2024-03-05", "2024-03-06")
    (row,) = info(root).rows
    assert row.synthetic == "yes" and row.rows == 3000
    day1 = read(root, "mbo", "ESH4", dates=["2024-03-05"])
    day2 = read(root, "mbo", "ESH4", dates=["2024-03-06"])
    assert (day1["ts_recv"] < open_ns).all() and (day2["ts_recv"] >= open_ns).all()
    assert len(day1) + len(day2) == 3000
    assert np.concatenate([day1, day2]).tobytes() == ev.tobytes()


def test_info_reports_missing_parts_and_refuses_foreign_folders(tmp_path) -> None:
    ingest(tmp_path / "s", [TRADES_FILE])
    part = next((tmp_path / "s").rglob("*.parquet"))
    part.unlink()
    assert info(tmp_path / "s").problems == [f"{part.relative_to(tmp_path / 's')}: missing"]
    with pytest.raises(DataFileError, match="not an esml data store"):
        info(tmp_path / "nowhere")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/readme.md").write_text("mine\n")
    with pytest.raises(DataFileError, match="not an esml data store and not empty"):
        ingest(tmp_path / "docs", [TRADES_FILE])
    assert not (tmp_path / "docs" / store.MANIFEST).exists()
