"""QuantConnect Lean futures bars (trade and bid/ask quote bars) into esml's bar frames.

Lean keeps one zip per day and type (`minute_es_20131008_trade.zip`), holding one CSV per
contract named by its expiry month (`20131008_es_minute_trade_201312.csv` is ESZ13). A
minute or second row starts with the milliseconds since midnight of that date; hour and
daily files (`hour_es_trade.zip`: `es_trade_201312.csv`) start with "yyyyMMdd HH:mm".
Times are UTC for CME futures in Lean's market-hours database (checked on the data: the
08:30 CT open is 13:30 UTC in October 2013 and the daily halt 21:15-22:00 UTC). Prices are
dollars, checked against the tick grid.

Trade rows: time, open, high, low, close, volume. Quote rows: time, bid open/high/low/
close, bid size, ask open/high/low/close, ask size. Out: `ts` (int64 ns UTC, the bar's
start), prices as int64 fixed point (`PRICE_SCALE`), sizes int64.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from esml.data.dbn import DataFileError
from esml.data.sierra import sha256_of
from esml.market.contracts import Contract
from esml.market.instruments import INSTRUMENTS, Instrument

LeanKind = Literal["trade", "quote"]
TRADE_COLUMNS = ("ts", "open", "high", "low", "close", "volume")
QUOTE_COLUMNS = (
    "ts",
    "bid_open",
    "bid_high",
    "bid_low",
    "bid_close",
    "bid_size",
    "ask_open",
    "ask_high",
    "ask_low",
    "ask_close",
    "ask_size",
)
_ZIP_NAME = re.compile(r"^(minute|second|hour|daily)_([a-z]+)_(?:(\d{8})_)?(trade|quote)\.zip$")
_MEMBER = re.compile(r"^(?:(\d{8})_)?([a-z]+)_(?:(?:minute|second)_)?(trade|quote)_(\d{6})\.csv$")


@dataclass(frozen=True)
class LeanBars:
    """The bars of one Lean zip, per contract."""

    kind: LeanKind
    resolution: str
    root: str
    by_contract: dict[Contract, pd.DataFrame]
    sha256: str
    path: Path


def is_lean_zip(path: str | Path) -> bool:
    return _ZIP_NAME.match(Path(path).name) is not None and zipfile.is_zipfile(path)


def read_lean_zip(path: str | Path) -> LeanBars:
    """Every contract's bars in one Lean trade or quote zip, checked in full."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    m = _ZIP_NAME.match(path.name)
    if m is None:
        raise DataFileError(
            f"{path}: not a Lean futures bar zip name (minute_es_20131008_trade.zip, "
            "hour_es_quote.zip)"
        )
    resolution, root, _, kind = m.groups()
    instrument = _instrument(path, root)
    try:
        zf = zipfile.ZipFile(path)
        members = {name: zf.read(name) for name in zf.namelist()}
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataFileError(f"{path}: corrupt zip: {e}") from e
    by_contract: dict[Contract, pd.DataFrame] = {}
    for name, data in sorted(members.items()):
        mm = _MEMBER.match(name)
        if mm is None or mm.group(2) != root or mm.group(3) != kind:
            raise DataFileError(f"{path}: member {name!r} is not a {root} {kind} CSV")
        day, _, _, expiry = mm.groups()
        contract = Contract(instrument.root, int(expiry[:4]), int(expiry[4:]))
        by_contract[contract] = _parse(f"{path}:{name}", data, day, kind, instrument)  # type: ignore[arg-type]
    return LeanBars(kind, resolution, root, by_contract, sha256_of(path), path)  # type: ignore[arg-type]


def _instrument(path: Path, root: str) -> Instrument:
    inst = INSTRUMENTS.get(root.upper())
    if inst is None:
        raise DataFileError(f"{path}: unknown root {root!r}; known {sorted(INSTRUMENTS)}")
    return inst


def _parse(
    where: str, data: bytes, day: str | None, kind: LeanKind, inst: Instrument
) -> pd.DataFrame:
    columns = TRADE_COLUMNS if kind == "trade" else QUOTE_COLUMNS
    try:
        raw = pd.read_csv(io.BytesIO(data), header=None, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return pd.DataFrame({c: np.zeros(0, np.int64) for c in columns})
    except pd.errors.ParserError as e:
        raise DataFileError(f"{where}: unreadable: {e}") from e
    if raw.shape[1] != len(columns):
        raise DataFileError(
            f"{where}: {raw.shape[1]} columns, a Lean {kind} bar has {len(columns)}"
        )
    out = {"ts": _times(where, raw[0], day)}
    for j, col in enumerate(columns[1:], start=1):
        values = pd.to_numeric(raw[j], errors="coerce").to_numpy(np.float64)
        if col.endswith(("volume", "size")):
            bad = ~np.isfinite(values) | (values < 0) | (values != np.round(values))
            if bad.any():
                raise DataFileError(
                    f"{where}: row {int(np.flatnonzero(bad)[0]) + 1}: {col} "
                    f"{raw[j].iloc[int(np.flatnonzero(bad)[0])]!r} is not a count"
                )
            out[col] = values.astype(np.int64)
            continue
        if kind == "quote":  # a side with no quote in the minute is left empty: price 0
            values = np.where(raw[j].to_numpy() == "", 0.0, values)
        ticks = values / inst.tick_size
        bad = ~np.isfinite(ticks) | (np.abs(ticks - np.round(ticks)) > 1e-6) | (values < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataFileError(
                f"{where}: row {i + 1}: {col} {raw[j].iloc[i]!r} is not a price "
                f"on the {inst.tick_size} tick grid"
            )
        out[col] = np.round(ticks).astype(np.int64) * inst.tick_fixed
    bars = pd.DataFrame(out, columns=list(columns))
    off = np.flatnonzero(np.diff(bars["ts"].to_numpy()) <= 0)
    if off.size:
        raise DataFileError(f"{where}: row {int(off[0]) + 2}: time does not increase")
    return bars


def _times(where: str, col: pd.Series, day: str | None) -> np.ndarray:
    if day is not None:  # milliseconds since midnight UTC of the file's date
        ms = pd.to_numeric(col, errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(ms) | (ms < 0) | (ms >= 86_400_000) | (ms != np.round(ms))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataFileError(f"{where}: row {i + 1}: {col.iloc[i]!r} is not ms since midnight")
        midnight = pd.Timestamp(day, tz="UTC").value
        return midnight + ms.astype(np.int64) * 1_000_000
    ts = pd.to_datetime(col, format="%Y%m%d %H:%M", errors="coerce", utc=True)
    if ts.isna().any():
        i = int(np.flatnonzero(ts.isna().to_numpy())[0])
        raise DataFileError(f"{where}: row {i + 1}: {col.iloc[i]!r} is not 'yyyyMMdd HH:mm'")
    return np.asarray(ts.dt.as_unit("ns").array.asi8, dtype=np.int64)


def read_lean_minutes(
    folder: str | Path, kind: LeanKind, root: str = "es"
) -> dict[Contract, pd.DataFrame]:
    """All daily minute zips of one kind in a folder, joined per contract in time order."""
    folder = Path(folder)
    zips = sorted(folder.glob(f"minute_{root}_*_{kind}.zip"))
    if not zips:
        raise DataFileError(f"{folder}: no minute_{root}_*_{kind}.zip files")
    parts: dict[Contract, list[pd.DataFrame]] = {}
    for z in zips:
        for contract, bars in read_lean_zip(z).by_contract.items():
            parts.setdefault(contract, []).append(bars)
    out = {}
    for contract, frames in sorted(parts.items()):
        bars = pd.concat(frames, ignore_index=True).sort_values("ts", kind="stable")
        if bars["ts"].duplicated().any():
            raise DataFileError(f"{folder}: {contract} has the same minute in two files")
        out[contract] = bars.reset_index(drop=True)
    return out
