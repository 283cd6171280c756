"""Sierra Chart bar exports ("Date, Time, Open, High, Low, Last, Volume, NumberOfTrades,
BidVolume, AskVolume"), one file per contract, into esml's bar frames.

Why a reader of its own: Sierra writes the bar's start in the chart's time zone (US Central
for the ES exports we use), prices in index points and the volume traded at the bid and at
the ask, which no Databento schema carries. Bars come out like `esml.data.continuous`'s:
`ts` int64 ns UTC (the bar's start), `open high low close` int64 fixed point
(`PRICE_SCALE`), `volume`, `trades`, plus `bid_volume` and `ask_volume`.

The wall-clock times are localised with the IANA zone (`esml.market.calendar.CHICAGO`), so
daylight saving is right; a time that does not exist or is ambiguous there raises (Globex
is closed at 02:00 on a Sunday, so a real export never has one). The contract comes from the
file name (`ESH15-CME.scid_BarData__5m.txt`). A file can be checked against a SOURCE.txt
sha256 list before it is read.

The shipped sample (`data/samples/es-bars/`) is all 36 contracts in one zstd Parquet with
a sidecar sha256: `read_shipped_bars` refuses a file whose digest, columns or rows differ.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from esml.data.dbn import DataFileError
from esml.market.calendar import CHICAGO
from esml.market.contracts import Contract, parse_contract
from esml.market.instruments import ES, PRICE_SCALE, Instrument

SIERRA_HEADER = (
    "Date",
    "Time",
    "Open",
    "High",
    "Low",
    "Last",
    "Volume",
    "NumberOfTrades",
    "BidVolume",
    "AskVolume",
)
FLOW_BAR_COLUMNS = (
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "trades",
    "bid_volume",
    "ask_volume",
)
_PRICES = ("open", "high", "low", "close")
_COUNTS = ("volume", "trades", "bid_volume", "ask_volume")
_FILE_NAME = re.compile(r"^([A-Z]+[FGHJKMNQUVXZ]\d{2})-[A-Z]+\.scid_BarData")
SHIPPED_BARS = Path("data/samples/es-bars/es-5m-sierra.parquet")


@dataclass(frozen=True)
class SierraBars:
    """One contract's bars from one export, and the file's sha256."""

    contract: Contract
    bars: pd.DataFrame
    sha256: str
    path: Path


def is_sierra_bars(path: str | Path) -> bool:
    """Whether the file starts with Sierra's bar-export header."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            head = f.readline()
    except OSError:
        return False
    return tuple(c.strip() for c in head.split(",")) == SIERRA_HEADER


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_digests(source_txt: str | Path) -> dict[str, str]:
    """{file name: sha256} from a SOURCE.txt ("<64 hex>  <name>" lines)."""
    out = {}
    for line in Path(source_txt).read_text().splitlines():
        m = re.match(r"^([0-9a-f]{64})\s+(\S+)\s*$", line.strip())
        if m:
            out[m.group(2)] = m.group(1)
    if not out:
        raise DataFileError(f"{source_txt}: no sha256 lines")
    return out


def contract_of_file(path: str | Path) -> Contract:
    m = _FILE_NAME.match(Path(path).name)
    if m is None:
        raise DataFileError(
            f"{path}: the contract must be in the file name, as Sierra names exports "
            "(ESH15-CME.scid_BarData__5m.txt)"
        )
    return parse_contract(m.group(1))


def read_sierra_bars(
    path: str | Path, *, expected_sha256: str | None = None, instrument: Instrument = ES
) -> SierraBars:
    """Read one export in full and check it: header, numbers, tick grid, OHLC order, time
    order. Any fault raises `DataFileError` naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file")
    digest = sha256_of(path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise DataFileError(f"{path}: sha256 {digest} is not the expected {expected_sha256}")
    if not is_sierra_bars(path):
        raise DataFileError(f"{path}: not a Sierra Chart bar export (header {SIERRA_HEADER})")
    contract = contract_of_file(path)
    try:
        raw = pd.read_csv(path, skipinitialspace=True, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataFileError(f"{path}: unreadable: {e}") from e
    raw.columns = [c.strip() for c in raw.columns]
    bars = _parse(path, raw, instrument)
    return SierraBars(contract, bars, digest, path)


def _parse(path: Path, raw: pd.DataFrame, instrument: Instrument) -> pd.DataFrame:
    def bad(i: int, what: str) -> DataFileError:
        return DataFileError(f"{path}: line {i + 2}: {what}")  # +1 header, +1 one-based

    local = pd.to_datetime(
        raw["Date"] + " " + raw["Time"], format="%Y/%m/%d %H:%M:%S", errors="coerce"
    )
    if local.isna().any():
        i = int(np.flatnonzero(local.isna().to_numpy())[0])
        raise bad(i, f"date/time {raw['Date'].iloc[i]!r} {raw['Time'].iloc[i]!r} is not a time")
    try:
        utc = local.dt.tz_localize(CHICAGO, ambiguous="raise", nonexistent="raise")
    except (ValueError, TypeError) as e:  # pytz-style errors are ValueError subclasses
        raise DataFileError(f"{path}: a time is not a valid US Central wall-clock time: {e}") from e
    out = {"ts": np.asarray(utc.dt.as_unit("ns").array.asi8, dtype=np.int64)}  # ns, UTC
    for col, name in zip(_PRICES, ("Open", "High", "Low", "Last"), strict=True):
        values = pd.to_numeric(raw[name], errors="coerce").to_numpy(np.float64)
        ticks = values / instrument.tick_size
        off = ~np.isfinite(ticks) | (np.abs(ticks - np.round(ticks)) > 1e-6) | (values <= 0)
        if off.any():
            i = int(np.flatnonzero(off)[0])
            raise bad(
                i,
                f"{name} {raw[name].iloc[i]!r} is not a positive price on the "
                f"{instrument.tick_size} tick grid",
            )
        out[col] = np.round(ticks).astype(np.int64) * instrument.tick_fixed
    for col, name in zip(_COUNTS, SIERRA_HEADER[6:], strict=True):
        values = pd.to_numeric(raw[name], errors="coerce").to_numpy(np.float64)
        off = ~np.isfinite(values) | (values < 0) | (values != np.round(values))
        if off.any():
            i = int(np.flatnonzero(off)[0])
            raise bad(i, f"{name} {raw[name].iloc[i]!r} is not a count")
        out[col] = values.astype(np.int64)
    bars = pd.DataFrame(out, columns=list(FLOW_BAR_COLUMNS))
    hi, lo = bars["high"].to_numpy(), bars["low"].to_numpy()
    o, c = bars["open"].to_numpy(), bars["close"].to_numpy()
    off = (hi < np.maximum(o, c)) | (lo > np.minimum(o, c))
    if off.any():
        raise bad(int(np.flatnonzero(off)[0]), "high/low do not contain open and close")
    ts = bars["ts"].to_numpy()
    off = np.flatnonzero(np.diff(ts) <= 0)
    if off.size:
        raise bad(int(off[0]) + 1, "time does not increase")
    return bars


def read_sierra_dir(
    folder: str | Path, *, verify: bool = True, instrument: Instrument = ES
) -> list[SierraBars]:
    """Every export in a folder, in contract order; with `verify`, each file's sha256 must
    match the folder's SOURCE.txt."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if _FILE_NAME.match(p.name))
    if not files:
        raise DataFileError(f"{folder}: no Sierra bar exports (ESH15-CME.scid_BarData__5m.txt)")
    digests = source_digests(folder / "SOURCE.txt") if verify else {}
    out = []
    for p in files:
        want = digests.get(p.name) if verify else None
        if verify and want is None:
            raise DataFileError(f"{p}: not listed in {folder / 'SOURCE.txt'}")
        out.append(read_sierra_bars(p, expected_sha256=want, instrument=instrument))
    return sorted(out, key=lambda s: s.contract)


# --- the shipped sample ----------------------------------------------------------------


def write_shipped_bars(exports: Sequence[SierraBars], path: str | Path) -> str:
    """All contracts' bars, with a `contract` column, as one zstd Parquet; prices are
    stored in ticks (int32), which compresses far better than fixed point. Writes the
    file's sha256 beside it and returns it."""
    path = Path(path)
    frames = []
    for s in exports:
        f = s.bars.copy()
        f.insert(0, "contract", s.contract.format(2))
        frames.append(f)
    bars = pd.concat(frames, ignore_index=True)
    tick = ES.tick_fixed
    table = pa.table(
        {
            "contract": pa.array(bars["contract"]).dictionary_encode(),
            "ts": pa.array(bars["ts"].to_numpy()),
            **{c: pa.array((bars[c].to_numpy() // tick).astype(np.int32)) for c in _PRICES},
            **{c: pa.array(bars[c].to_numpy().astype(np.int32)) for c in _COUNTS},
        }
    ).replace_schema_metadata(
        {
            "esml.price_unit": "ticks of 0.25",
            "esml.time": "bar start, ns UTC",
            "esml.sources": " ".join(f"{s.path.name}={s.sha256}" for s in exports),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    delta = {c: "DELTA_BINARY_PACKED" for c in ("ts", *_PRICES, *_COUNTS)}
    pq.write_table(
        table,
        path,
        compression="zstd",
        compression_level=19,
        use_dictionary=["contract"],
        column_encoding=delta,
        row_group_size=1 << 20,
    )
    digest = sha256_of(path)
    _digest_path(path).write_text(f"{digest}  {path.name}\n")
    return digest


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_shipped_bars(path: str | Path = SHIPPED_BARS) -> dict[Contract, pd.DataFrame]:
    """The shipped bars per contract, after checking the file against its sidecar sha256."""
    path = Path(path)
    side = _digest_path(path)
    if not path.is_file() or not side.is_file():
        raise DataFileError(f"{path}: missing (or its {side.name}); the ES bars ship with esml")
    want = side.read_text().split()[0]
    got = sha256_of(path)
    if got != want:
        raise DataFileError(
            f"{path}: sha256 {got} is not {want} ({side.name}): corrupt or replaced"
        )
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataFileError(f"{path}: unreadable Parquet: {e}") from e
    missing = [c for c in ("contract", *FLOW_BAR_COLUMNS) if c not in table.column_names]
    if missing:
        raise DataFileError(f"{path}: lacks columns {missing}")
    df = table.to_pandas()
    out: dict[Contract, pd.DataFrame] = {}
    for name, part in df.groupby("contract", sort=False, observed=True):
        bars = part[list(FLOW_BAR_COLUMNS)].reset_index(drop=True).astype(np.int64)
        bars[list(_PRICES)] *= ES.tick_fixed
        out[parse_contract(str(name))] = bars
    return dict(sorted(out.items()))


def price_points(fixed: np.ndarray) -> np.ndarray:
    """Fixed-point prices in index points (float64)."""
    return np.asarray(fixed, dtype=np.float64) / PRICE_SCALE
