"""Bar files (Sierra Chart exports, Lean trade/quote zips) in the Parquet store, beside the
DBN schemas:

    <store>/bars/format=<sierra|lean-trade|lean-quote>/instrument=<ESZ13>/<source sha256>.parquet

Why apart from the DBN partitions: these bars carry columns no Databento schema has (bid/ask
volume, bid/ask quote bars) and 5-minute intervals. An ingest reads and checks every file
before writing anything; each part is written to a temporary name and renamed into place,
so a failed ingest leaves nothing behind, and a source already present is not written again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from esml.data.dbn import DataFileError
from esml.data.lean import is_lean_zip, read_lean_zip
from esml.data.sierra import is_sierra_bars, read_sierra_bars
from esml.market.contracts import Contract, parse_contract

BARS_DIR = "bars"


@dataclass(frozen=True)
class BarIngestResult:
    path: Path
    format: str
    instruments: tuple[str, ...]
    rows: int
    ts_min: int
    ts_max: int
    status: str  # "ingested" or "already in the store"


def is_bar_file(path: str | Path) -> bool:
    return Path(path).is_file() and (is_sierra_bars(path) or is_lean_zip(path))


def _read(path: Path) -> tuple[str, str, dict[Contract, pd.DataFrame]]:
    if is_sierra_bars(path):
        s = read_sierra_bars(path)
        return "sierra", s.sha256, {s.contract: s.bars}
    if is_lean_zip(path):
        lean = read_lean_zip(path)
        return f"lean-{lean.kind}", lean.sha256, lean.by_contract
    raise DataFileError(f"{path}: neither a Sierra Chart bar export nor a Lean bar zip")


Loaded = tuple[Path, str, str, dict[Contract, pd.DataFrame]]


def load_bar_files(paths: Sequence[str | Path]) -> list[Loaded]:
    """Read and check every file, writing nothing: (path, format, sha256, bars per contract)."""
    return [(Path(p), *_read(Path(p))) for p in paths]


def ingest_bar_files(store: str | Path, paths: Sequence[str | Path]) -> list[BarIngestResult]:
    """Add bar files to the store: all of them or, if one is bad, none."""
    return write_bar_files(store, load_bar_files(paths))


def write_bar_files(store: str | Path, loaded: Sequence[Loaded]) -> list[BarIngestResult]:
    """Write files `load_bar_files` checked; a failure removes what this call wrote."""
    store = Path(store)
    results, written = [], []
    try:
        for path, fmt, digest, frames in loaded:
            status = "already in the store"
            for contract, bars in frames.items():
                target = (
                    store
                    / BARS_DIR
                    / f"format={fmt}"
                    / f"instrument={contract.format(2)}"
                    / f"{digest}.parquet"
                )
                if target.exists():
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".tmp")
                bars.to_parquet(tmp, compression="zstd", index=False)
                os.replace(tmp, target)
                written.append(target)
                status = "ingested"
            nonempty = [b for b in frames.values() if len(b)]
            results.append(
                BarIngestResult(
                    path,
                    fmt,
                    tuple(c.format(2) for c in frames),
                    sum(len(b) for b in frames.values()),
                    min((int(b["ts"].iloc[0]) for b in nonempty), default=0),
                    max((int(b["ts"].iloc[-1]) for b in nonempty), default=0),
                    status,
                )
            )
    except BaseException:
        for f in written:
            f.unlink(missing_ok=True)
        raise
    return results


def read_store_bars(store: str | Path, fmt: str) -> dict[Contract, pd.DataFrame]:
    """Every contract's bars of one format in the store, sources joined in time order."""
    root = Path(store) / BARS_DIR / f"format={fmt}"
    out = {}
    for folder in sorted(root.glob("instrument=*")):
        frames = [pd.read_parquet(f) for f in sorted(folder.glob("*.parquet"))]
        bars = pd.concat(frames, ignore_index=True).sort_values("ts", kind="stable")
        out[parse_contract(folder.name.split("=", 1)[1])] = bars.drop_duplicates("ts").reset_index(
            drop=True
        )
    return out
