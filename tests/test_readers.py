"""Readers of every GLBX.MDP3 schema and of CSV ticks, checked against outside truths:
databento-dbn's own decoder, the files' own top-of-book columns, and CME trading hours."""

from __future__ import annotations

import csv
import os
import re
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path

import databento_dbn as dbn
import numpy as np
import pytest
import zstandard

from esml.data.book import replay_l1
from esml.data.csv_ticks import read_csv_ticks
from esml.data.dbn import (
    L1_ASK_ORDER_ID,
    L1_BID_ORDER_ID,
    DataFileError,
    l1_events,
    read_dbn,
    read_mbo,
    record_symbols,
    to_events,
    write_mbo_dbn,
)
from esml.data.schemas import SCHEMAS, definitions, float_prices, to_frame
from esml.market.calendar import trading_day
from esml.market.events import (
    F_LAST,
    F_MBP,
    MBO_DTYPE,
    NO_SIDE,
    PUBLISHER_SYNTHETIC,
    TRADE,
    UNDEF_PRICE,
    is_synthetic,
)
from esml.market.instruments import ES
from tests.conftest import ES_FILE, FIXTURES, ROOT

SAMPLES = ROOT / "data/samples"
DATA_DIR = Path(os.environ.get("ESML_DATA_DIR", ROOT.parent / "shared/data"))
MBP1_FILE = SAMPLES / "futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
TRADES_FILE = SAMPLES / "futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
DEFINITION_V1 = SAMPLES / "definition-glbx-es-fut.dbn.zst"
CSV_2011 = SAMPLES / "es_trades_2011-07-31.csv"
ESM8_CSV = DATA_DIR / "es-trades/ESM8_trades_2018-05-07.csv"
SHARED_CME = DATA_DIR / "cme-es"

FIXTURE_FILES = sorted(FIXTURES.glob("test_data.*.dbn.zst"))
V1_FILES = [ES_FILE, MBP1_FILE, TRADES_FILE, DEFINITION_V1]
UPGRADE = dbn.VersionUpgradePolicy.UPGRADE_TO_V3


def _raw(path: Path) -> bytes:
    return zstandard.ZstdDecompressor().stream_reader(path.read_bytes(),
                                                      read_across_frames=True).read()  # fmt: skip


def _decoded(data: bytes, policy=dbn.VersionUpgradePolicy.AS_IS) -> list:
    dec = dbn.DBNDecoder(upgrade_policy=policy)
    dec.write(data)
    return dec.decode()[1:]


def _theirs(value: object) -> object:
    if isinstance(value, Enum):
        value = value.value
    return value.rstrip("\x00") if isinstance(value, str) else value


def _mine(records: np.ndarray, i: int, name: str) -> object:
    v = records[name][i]
    if name in ("is_trading", "is_quoting", "is_short_sell_restricted"):
        return {b"Y": True, b"N": False, b"~": None}[bytes(v)]
    if records.dtype[name].kind == "S":
        return bytes(v).decode("ascii")
    if name in ("action", "side") and records.dtype[name] == np.uint8:
        return chr(v)
    return int(v)


def _assert_same_as_databento(records: np.ndarray, theirs: list, spec_name: str) -> None:
    """Every data field equal; in big files, on 2,000 records spread over the file."""
    assert len(records) == len(theirs) > 0
    names = [n for n in records.dtype.names if n != "length" and not n.startswith("_")]
    picks = np.unique(np.linspace(0, len(theirs) - 1, min(len(theirs), 2000)).astype(int))
    for i in picks:
        rec = theirs[i]
        for name in names:
            assert _mine(records, i, name) == _theirs(getattr(rec, name)), (
                f"{spec_name} record {i} field {name}"
            )


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name.split(".")[1])
def test_every_fixture_schema_decodes_as_databento_does(path: Path) -> None:
    f = read_dbn(path)
    assert f.schema == path.name.split(".")[1]
    assert f.version == 3
    _assert_same_as_databento(f.records, _decoded(_raw(path)), f.schema)
    assert set(record_symbols(f)) == {"ESH1"}


def test_the_fixtures_cover_every_schema_the_reader_knows() -> None:
    assert {p.name.split(".")[1] for p in FIXTURE_FILES} == set(SCHEMAS)


@pytest.mark.parametrize("path", V1_FILES, ids=lambda p: p.name[:22])
def test_version_1_files_decode_as_stored_and_upgraded(path: Path) -> None:
    f = read_dbn(path)
    assert f.version == 1
    raw = _raw(path)
    _assert_same_as_databento(f.records, _decoded(raw), f.schema)
    _assert_same_as_databento(f.upgraded(), _decoded(raw, UPGRADE), f.schema)
    assert f.upgraded().dtype == f.spec.current


def test_version_1_statistics_upgrade_keeps_undefined_quantities_undefined(tmp_path) -> None:
    meta = dbn.Metadata("GLBX.MDP3", 1_609_113_600_000_000_000, dbn.SType.RAW_SYMBOL,
                        dbn.SType.INSTRUMENT_ID, dbn.Schema.STATISTICS, symbols=["ESH1"],
                        end=1_609_200_000_000_000_000, version=1)  # fmt: skip
    ts = 1_609_117_769_470_220_283
    recs = [
        dbn.StatMsgV1(1, 5482, ts, ts + 1000, dbn.UNDEF_TIMESTAMP, 3_707_750_000_000,
                      2**31 - 1, dbn.StatType.HIGHEST_BID, sequence=5),
        dbn.StatMsgV1(1, 5482, ts, ts + 2000, ts - 10**9, dbn.UNDEF_PRICE, 1234,
                      dbn.StatType.CLEARED_VOLUME, sequence=6),
    ]  # fmt: skip
    data = meta.encode() + b"".join(bytes(r) for r in recs)
    path = tmp_path / "stats-v1.dbn"
    path.write_bytes(data)
    f = read_dbn(path)
    assert (f.version, f.records.dtype.itemsize) == (1, 64)
    _assert_same_as_databento(f.records, _decoded(data), "statistics")
    up = f.upgraded()
    _assert_same_as_databento(up, _decoded(data, UPGRADE), "statistics")
    assert up["quantity"].tolist() == [np.iinfo(np.int64).max, 1234]
    frame = to_frame(up, f.spec)
    assert np.isnan(frame["price"][1]) and frame["price"][0] == 3707.75
    assert frame["ts_ref"].isna().tolist() == [True, False]


def test_version_2_definitions_decode_as_databento_does(tmp_path) -> None:
    raw = _raw(DEFINITION_V1)
    v2 = _decoded(raw, dbn.VersionUpgradePolicy.UPGRADE_TO_V2)
    meta = dbn.Metadata("GLBX.MDP3", 1, dbn.SType.RAW_SYMBOL, dbn.SType.INSTRUMENT_ID,
                        dbn.Schema.DEFINITION, symbols=["ESM3"], end=2, version=2)  # fmt: skip
    path = tmp_path / "def-v2.dbn"
    path.write_bytes(meta.encode() + b"".join(bytes(r) for r in v2))
    f = read_dbn(path)
    assert (f.version, f.records.dtype.itemsize) == (2, 400)
    _assert_same_as_databento(f.records, v2, "definition")
    _assert_same_as_databento(f.upgraded(), _decoded(raw, UPGRADE), "definition")


def test_definitions_give_the_contract_terms() -> None:
    (esh1,) = definitions(read_dbn(FIXTURES / "test_data.definition.dbn.zst").records)
    assert (esh1.raw_symbol, esh1.instrument_id, esh1.security_type) == ("ESH1", 5482, "FUT")
    assert esh1.expiration == datetime(2021, 3, 19, 13, 30, tzinfo=UTC)  # third Friday, open
    assert esh1.tick_size == ES.tick_size and esh1.multiplier == 50.0
    assert esh1.tick_value == ES.tick_value
    assert esh1.contract_multiplier is None  # CME leaves it undefined for index futures
    assert (esh1.maturity_year, esh1.maturity_month, esh1.currency) == (2021, 3, "USD")
    assert esh1.high_limit_price == 3_953_500_000_000
    esm3 = definitions(read_dbn(DEFINITION_V1).records)  # version 1, upgraded
    assert [d.raw_symbol for d in esm3] == ["ESM3", "ESM3"]
    assert esm3[0].expiration == datetime(2023, 6, 16, 13, 30, tzinfo=UTC)
    assert esm3[0].tick_value == 12.5 and esm3[0].unit_of_measure == "IPNT"


def test_float_prices_mark_undefined_as_nan() -> None:
    f = read_dbn(FIXTURES / "test_data.definition.dbn.zst")
    ratio = f.records["price_ratio"]
    assert ratio[0] == UNDEF_PRICE
    assert np.isnan(float_prices(ratio)).all()
    assert float_prices(f.records["min_price_increment"]).tolist() == [0.25]
    bars = read_dbn(FIXTURES / "test_data.ohlcv-1h.dbn.zst")
    frame = to_frame(bars.records, bars.spec)
    theirs = _decoded(_raw(FIXTURES / "test_data.ohlcv-1h.dbn.zst"))
    assert frame["close"].tolist() == [r.pretty_close for r in theirs]
    assert frame["ts_event"][0] == datetime(2020, 12, 28, 0, 0, tzinfo=UTC)
    exact = to_frame(bars.records, bars.spec, prices="fixed")
    assert exact["close"].tolist() == [r.close for r in theirs]


def test_mbp1_events_rebuild_the_files_touch_after_every_record() -> None:
    rec = read_dbn(MBP1_FILE).records
    ev, src = l1_events(rec)
    assert ev.dtype == MBO_DTYPE
    touch = replay_l1(ev, ES.tick_fixed)
    last = np.searchsorted(src, np.arange(len(rec)), side="right") - 1
    assert (last >= 0).all()
    expected = np.stack([
        np.where(rec["bid_sz_00"] == 0, 0, rec["bid_px_00"]), rec["bid_sz_00"],
        np.where(rec["ask_sz_00"] == 0, 0, rec["ask_px_00"]), rec["ask_sz_00"],
    ], axis=1).astype(np.int64)  # fmt: skip
    np.testing.assert_array_equal(touch[last], expected)
    levels = ev[ev["action"] != TRADE]
    assert set(levels["order_id"]) == {L1_BID_ORDER_ID, L1_ASK_ORDER_ID}
    assert (levels["flags"] & F_MBP).all()


def test_l1_events_keep_instruments_apart() -> None:
    one = read_dbn(MBP1_FILE).records[:400]
    other = one.copy()
    other["instrument_id"] = 999
    other["bid_px_00"] += 10 * ES.tick_fixed
    mixed = np.empty(800, one.dtype)
    mixed[0::2], mixed[1::2] = one, other  # interleaved, as a multi-contract file is
    ev, src = l1_events(mixed)
    alone = l1_events(one).events
    np.testing.assert_array_equal(ev[ev["instrument_id"] == 118], alone)
    assert (np.diff(src) >= 0).all()
    assert (mixed["instrument_id"][src] == ev["instrument_id"]).all()


def test_mbp1_trades_are_the_trades_files_trades() -> None:
    from_mbp1 = to_events(read_dbn(MBP1_FILE))
    from_trades = to_events(read_dbn(TRADES_FILE))
    mine = from_mbp1[from_mbp1["action"] == TRADE]
    assert len(mine) == len(from_trades) == 120
    for name in ("ts_event", "ts_recv", "price", "size", "side", "sequence", "instrument_id"):
        np.testing.assert_array_equal(mine[name], from_trades[name], err_msg=name)
    assert (from_trades["flags"] & F_LAST).all()  # a trades-only stream: each closes a packet


def test_tbbo_quotes_come_just_before_their_trades() -> None:
    tbbo = read_dbn(FIXTURES / "test_data.tbbo.dbn.zst")
    ev = to_events(tbbo)
    touch = replay_l1(ev, ES.tick_fixed)
    trades = np.flatnonzero(ev["action"] == TRADE)
    rec = tbbo.records
    assert len(trades) == len(rec) == 4
    before = touch[trades - 1]
    np.testing.assert_array_equal(before[:, 0], rec["bid_px_00"])
    np.testing.assert_array_equal(before[:, 3], rec["ask_sz_00"])
    trades_file = to_events(read_dbn(FIXTURES / "test_data.trades.dbn.zst"))
    np.testing.assert_array_equal(ev[trades]["price"], trades_file["price"])
    assert (ev[trades]["flags"] & F_LAST).all()


def test_schemas_without_an_event_form_say_so() -> None:
    with pytest.raises(ValueError, match="ohlcv-1m has no event form"):
        to_events(read_dbn(FIXTURES / "test_data.ohlcv-1m.dbn.zst"))


def test_truncated_or_corrupt_files_fail_naming_file_and_record(tmp_path) -> None:
    raw = _raw(FIXTURES / "test_data.mbp-10.dbn.zst")
    cut = tmp_path / "cut.mbp10.dbn"
    cut.write_bytes(raw[:-100])
    with pytest.raises(DataFileError, match=r"cut\.mbp10\.dbn: truncated.*record 3 is cut short"):
        read_dbn(cut)
    bad = bytearray(raw)
    meta_end = 8 + int.from_bytes(raw[4:8], "little")
    bad[meta_end + 2 * 368 + 1] = 0x01  # record 2 claims to be MBP-1
    corrupt = tmp_path / "corrupt.dbn"
    corrupt.write_bytes(bytes(bad))
    with pytest.raises(DataFileError, match=r"corrupt\.dbn: record 2 does not fit schema mbp-10"):
        read_dbn(corrupt)
    z = tmp_path / "cut.dbn.zst"
    z.write_bytes(ES_FILE.read_bytes()[:-600_000])
    with pytest.raises(DataFileError, match=r"cut\.dbn\.zst: truncated: zstd frame \d+") as e:
        read_dbn(z)
    lost = int(re.search(r"unreadable from record (\d+) on", str(e.value)).group(1))
    assert 0 < lost < 68_792  # what decoded before the cut, in whole records
    flipped = bytearray(MBP1_FILE.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF
    fz = tmp_path / "flipped.dbn.zst"
    fz.write_bytes(bytes(flipped))
    with pytest.raises(DataFileError, match=r"flipped\.dbn\.zst: corrupt zstd frame \d+.*"
                       r"unreadable from record \d+ on"):  # fmt: skip
        read_dbn(fz)


def test_write_mbo_dbn_round_trips_byte_for_byte(tmp_path, es_events) -> None:
    out = write_mbo_dbn(tmp_path / "day.mbo.dbn.zst", es_events, symbols={"ESH4": 17077})
    back = read_mbo(out)
    assert back.tobytes() == es_events.tobytes()
    f = read_dbn(out)
    assert (f.schema, f.version, f.metadata.dataset) == ("mbo", 3, "GLBX.MDP3")
    assert set(record_symbols(f)) == {"ESH4"}
    theirs = _decoded(_raw(out))  # databento-dbn reads what we wrote
    assert len(theirs) == len(es_events)
    assert theirs[-1].order_id == int(es_events["order_id"][-1])
    assert theirs[-1].price == int(es_events["price"][-1])
    assert f.metadata.start == int(es_events["ts_recv"].min())
    assert not list(tmp_path.glob(".*.tmp"))


def test_write_mbo_dbn_keeps_synthetic_labels_and_refuses_bad_input(tmp_path, es_events) -> None:
    synth = es_events[:1000].copy()
    synth["publisher_id"] = PUBLISHER_SYNTHETIC
    start = int(synth["ts_recv"][0])
    path = write_mbo_dbn(tmp_path / "synth.dbn.zst", synth, symbols={"ESH4": 17077},
                         start_ns=start, end_ns=start + 86_400 * 10**9)  # fmt: skip
    assert is_synthetic(read_mbo(path))
    target = tmp_path / "bad.dbn.zst"
    with pytest.raises(ValueError, match=r"instrument ids \[17077\] are not in symbols"):
        write_mbo_dbn(target, synth, symbols={"ESM4": 1})
    with pytest.raises(ValueError, match="must lie in"):
        write_mbo_dbn(target, synth, symbols={"ESH4": 17077}, start_ns=start + 1)
    with pytest.raises(ValueError, match="MBO_DTYPE"):
        write_mbo_dbn(target, read_dbn(TRADES_FILE).records, symbols={"ESU4": 118})
    assert not target.exists()


def test_csv_ticks_2011_are_utc_from_the_sunday_open() -> None:
    ticks = read_csv_ticks(CSV_2011, symbol="ESU1")
    with CSV_2011.open() as fh:
        rows = [r for r in csv.reader(fh) if r][1:]
    ev = ticks.events
    assert len(ev) == len(rows) == 11_101
    assert ticks.time_zone == "UTC" and "Globex open" in ticks.zone_evidence
    assert ev["ts_recv"][0] == 1_312_149_600_120_000_000  # 2011-07-31 22:00:00.120 UTC
    assert ev["size"].sum() == sum(int(r[2]) for r in rows)
    assert ev["price"].tolist() == [round(float(r[1]) * 4) * 250_000_000 for r in rows]
    assert (ev["action"] == TRADE).all() and (ev["side"] == NO_SIDE).all()
    assert ticks.size_known and ticks.symbol == "ESU1"
    assert trading_day(int(ev["ts_recv"][0])) == "2011-08-01"  # Sunday evening is Monday


def _rewrite_2011(tmp_path: Path, name: str, hours: int, keep: int = 2000) -> Path:
    """The 2011 file with its wall clock moved by `hours`, as another zone would write it."""
    lines = CSV_2011.read_text().splitlines()
    out = [lines[0]]
    for ln in lines[1 : keep + 1]:
        stamp, rest = ln.split(",", 1)
        t = datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f") + timedelta(hours=hours)
        out.append(t.strftime("%Y/%m/%d %H:%M:%S.%f")[:-3] + "," + rest)
    path = tmp_path / name
    path.write_text("\n".join(out) + "\n")
    return path


@pytest.mark.parametrize(("hours", "zone"), [(-5, "America/Chicago"), (-4, "America/New_York")])
def test_csv_time_zone_is_found_from_trading_hours(tmp_path, hours, zone) -> None:
    utc = read_csv_ticks(CSV_2011, symbol="ESU1").events[:2000]
    shifted = read_csv_ticks(_rewrite_2011(tmp_path, "ESU1_local.csv", hours))
    assert shifted.time_zone == zone
    np.testing.assert_array_equal(shifted.events["ts_recv"], utc["ts_recv"])


def test_csv_starting_mid_session_needs_a_zone(tmp_path) -> None:
    lines = CSV_2011.read_text().splitlines()
    path = tmp_path / "ESU1_mid.csv"
    path.write_text("\n".join([lines[0], *lines[5000:5100]]) + "\n")
    with pytest.raises(DataFileError, match=r"cannot tell the time zone.*give it explicitly"):
        read_csv_ticks(path)
    assert read_csv_ticks(path, tz="UTC").time_zone == "UTC"


@pytest.mark.skipif(not ESM8_CSV.exists(), reason=f"{ESM8_CSV} absent (GPL file, not shipped)")
def test_csv_esm8_is_chicago_time_with_no_sizes() -> None:
    ticks = read_csv_ticks(ESM8_CSV)
    ev = ticks.events
    assert (ticks.symbol, ticks.time_zone, len(ev)) == ("ESM8", "America/Chicago", 74_907)
    assert "RTH open" in ticks.zone_evidence
    assert ev["ts_recv"][0] == 1_525_699_800_001_532_000  # 2018-05-07 13:30:00.001532 UTC
    assert not ticks.size_known and (ev["size"] == 0).all()
    assert trading_day(int(ev["ts_recv"][-1])) == "2018-05-07"


def test_csv_stated_offsets_must_be_the_zone_the_hours_show(tmp_path) -> None:
    rows = ["ts,price", "2018-05-07T08:30:00.001532-0400,2670.5",
            "2018-05-07T08:30:00.5-0400,2670.25"]  # fmt: skip
    path = tmp_path / "ESM8_wrong_offset.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataFileError, match=r"line 2: the UTC offset .* not America/Chicago"):
        read_csv_ticks(path)
    path.write_text("\n".join(r.replace("-0400", "-0500") for r in rows) + "\n")
    ok = read_csv_ticks(path)
    assert ok.time_zone == "America/Chicago" and not ok.size_known


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2011/07/31 22:00:00.120,1306.0", r"line 4: malformed row"),
        ("2011/07/31 22:00:00.120,1306.1,1", r"line 4: price 1306.1 is not on the 0.25 tick"),
        ("2011/07/31 22:00:00.120,1306.0,0", r"line 4: size 0 is not a trade size"),
        ("2011/07/31 22:00:00.000,1306.0,1", r"line 4: time goes backwards"),
        ("2011/02/30 22:00:01.000,1306.0,1", r"line 4: bad time"),
        ("", r"line 4: malformed row ''"),
    ],
)
def test_csv_bad_rows_are_named_by_line(tmp_path, row, message) -> None:
    good = CSV_2011.read_text().splitlines()
    lines = [*good[:3], row, *good[3:8]]
    path = tmp_path / "ESU1_bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match=f"ESU1_bad.csv: {message}"):
        read_csv_ticks(path)


def test_csv_needs_a_contract_and_a_known_header(tmp_path) -> None:
    with pytest.raises(DataFileError, match="does not name its contract"):
        read_csv_ticks(CSV_2011)
    with pytest.raises(DataFileError, match="'ES' is not a contract"):
        read_csv_ticks(CSV_2011, symbol="es")
    other = tmp_path / "ESU1_other.csv"
    other.write_text("time;price\n1;2\n")
    with pytest.raises(DataFileError, match="unsupported format"):
        read_csv_ticks(other)


def test_shared_cme_files_all_read() -> None:
    files = sorted(SHARED_CME.glob("*.dbn.zst"))
    if not files:
        pytest.skip(f"no shared CME data at {SHARED_CME} (set ESML_DATA_DIR)")
    counts = {p.name: len(read_dbn(p).records) for p in files}
    assert counts["esh4-glbx-mdp3-20231224.mbo.dbn.zst"] == 8_725
    assert counts["orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst"] == 13_796
    assert read_dbn(SHARED_CME / ES_FILE.name).records.tobytes() == read_mbo(ES_FILE).tobytes()
