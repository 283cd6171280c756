"""Lean minute trade and quote bars: counts and digests against SOURCE.txt, UTC times,
known rows, and clear errors for bad files."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from esml.data.dbn import DataFileError
from esml.data.lean import read_lean_minutes, read_lean_zip
from esml.data.sierra import source_digests
from esml.market.contracts import parse_contract
from esml.market.instruments import ES
from tests.conftest import ROOT

DATA_DIR = Path(os.environ.get("ESML_DATA_DIR", ROOT.parent / "shared/data"))
LEAN = DATA_DIR / "es-bars/lean-minute"
pytestmark = pytest.mark.skipif(not LEAN.is_dir(), reason=f"no shared data at {LEAN}")


def test_counts_and_digests_match_source() -> None:
    digests = source_digests(LEAN / "SOURCE.txt")
    trades = read_lean_minutes(LEAN, "trade")
    quotes = read_lean_minutes(LEAN, "quote")
    assert sum(len(b) for b in trades.values()) == 23_948
    assert sum(len(b) for b in quotes.values()) == 47_776
    z = read_lean_zip(LEAN / "minute_es_20131008_trade.zip")
    assert z.sha256 == digests["minute_es_20131008_trade.zip"]


def test_known_rows_and_utc_times() -> None:
    z = read_lean_zip(LEAN / "minute_es_20131008_trade.zip")
    dec = z.by_contract[parse_contract("ESZ13")]
    first = dec.iloc[0]
    assert first["ts"] == pd.Timestamp("2013-10-08 00:00", tz="UTC").value
    assert [first[c] for c in ("open", "high", "low", "close", "volume")] == [
        ES.to_fixed(1667.5),
        ES.to_fixed(1667.75),
        ES.to_fixed(1667.25),
        ES.to_fixed(1667.5),
        48,
    ]
    # UTC: the 08:30 CDT open is 13:30 UTC; volume jumps there on every October day
    hhmm = pd.to_datetime(dec["ts"], utc=True).dt.strftime("%H:%M")
    before = dec["volume"][(hhmm >= "13:15") & (hhmm < "13:30")].mean()
    after = dec["volume"][(hhmm >= "13:30") & (hhmm < "13:45")].mean()
    assert after > 3 * before
    local = pd.to_datetime(dec["ts"], utc=True)
    # the daily halt, 16:15-17:00 CDT, has no bars
    halt = (local >= pd.Timestamp("2013-10-08 21:16", tz="UTC")) & (
        local < pd.Timestamp("2013-10-08 22:00", tz="UTC"))  # fmt: skip
    assert not halt.any()


def test_quote_bars_keep_an_empty_side_as_zero() -> None:
    q = read_lean_zip(LEAN / "minute_es_20131006_quote.zip").by_contract[parse_contract("ESZ13")]
    row = q.iloc[1]  # "75660000,,,,,0,1682.25,..." : no bid that minute
    assert row["bid_close"] == 0 and row["bid_size"] == 0
    assert row["ask_close"] == ES.to_fixed(1682.25) and row["ask_size"] == 39
    hour = read_lean_zip(LEAN / "hour_es_trade.zip")
    assert hour.resolution == "hour" and len(hour.by_contract[parse_contract("ESZ13")]) == 147


def _zip(tmp_path: Path, name: str, member: str, text: str) -> Path:
    p = tmp_path / name
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr(member, text)
    return p


def test_bad_files_get_clear_errors(tmp_path: Path) -> None:
    broken = tmp_path / "minute_es_20131008_trade.zip"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataFileError):
        read_lean_zip(broken)
    off = _zip(tmp_path, "minute_es_20131009_trade.zip", "20131009_es_minute_trade_201312.csv",
               "0,1667.3,1667.75,1667.25,1667.5,48\n")  # fmt: skip
    with pytest.raises(DataFileError, match="tick grid"):
        read_lean_zip(off)
    back = _zip(tmp_path, "minute_es_20131010_trade.zip", "20131010_es_minute_trade_201312.csv",
                "60000,1,1,1,1,1\n0,1,1,1,1,1\n")  # fmt: skip
    with pytest.raises(DataFileError, match="row 2: time does not increase"):
        read_lean_zip(back)
    with pytest.raises(DataFileError, match="not a Lean"):
        read_lean_zip(_zip(tmp_path, "es.zip", "x.csv", ""))
