"""What a market data file holds, in any format esml reads: `esml data info FILE...`.

One small registry: each format is a `Format` (a name, a cheap test that claims a path, and
a describer), tried in order. A reader added elsewhere (Sierra Chart or Lean bars, say)
registers one entry, usually by handing its timestamps and symbols to `summarise`:

    def _describe_sierra(path: Path, symbol: str | None) -> Description:
        bars = read_sierra(path)
        return summarise(path, "Sierra Chart bars", "ohlcv-5m", bars.ts_ns, bars.symbols)

    register(Format("Sierra Chart bars", is_sierra_file, _describe_sierra))

Gaps are silences while the market is open: for CME data from the first modelled trade
date on, only the open-market time between two records counts (a weekend or the daily halt
is no gap); elsewhere (LOBSTER, older files) the wall clock does, and the report says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from esml.data.dbn import DataFileError
from esml.market.calendar import (
    DAY_START,
    HOURS_FROM,
    about_year,
    chicago_ns,
    session_table,
    trading_day,
)

MIN_GAP_NS = 5 * 60 * 1_000_000_000  # shorter silences are ordinary in a thin market
GAPS_LISTED = 5
# the first modelled session opens the evening before HOURS_FROM
MODELLED_FROM_NS = chicago_ns(HOURS_FROM - timedelta(days=1), DAY_START)
_WALL_CLOCK_NOTE = (
    "gaps in wall-clock time (CME session hours are modelled from {day}; none for {what})"
)


@dataclass(frozen=True)
class Gap:
    start_ns: int  # the last record before the silence
    end_ns: int  # the first record after it
    open_ns: int  # how much of it the market was open (the wall clock where not modelled)


@dataclass(frozen=True)
class Description:
    path: Path
    format: str
    schema: str
    instruments: tuple[tuple[str, int], ...]  # (symbol, records), busiest first
    records: int
    ts_min: int | None  # UTC ns; None for a file without records
    ts_max: int | None
    trading_days: tuple[str, ...]
    gaps: tuple[Gap, ...]  # the longest GAPS_LISTED, longest first
    gap_count: int
    gap_threshold_ns: int
    synthetic: bool = False
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Format:
    name: str
    claims: Callable[[Path], bool]
    describe: Callable[[Path, str | None], Description]  # (path, contract if the name lacks it)


FORMATS: list[Format] = []


def register(fmt: Format) -> None:
    """Add a format; the first format whose `claims` accepts a path describes it."""
    FORMATS.append(fmt)


def describe(path: str | Path, symbol: str | None = None) -> Description:
    """Describe one file (or store directory); DataFileError for a missing, unknown or
    corrupt one, naming the file and what is wrong. `symbol`: the contract of a file whose
    name does not say (CSV ticks)."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: no such file")
    for fmt in FORMATS:
        if fmt.claims(path):
            return fmt.describe(path, symbol)
    names = ", ".join(f.name for f in FORMATS)
    raise DataFileError(f"{path}: unsupported format: none of {names}")


def summarise(
    path: Path,
    fmt: str,
    schema: str,
    ts_ns: np.ndarray,
    symbols: np.ndarray,
    *,
    cme: bool = True,
    synthetic: bool = False,
    notes: tuple[str, ...] = (),
    days: tuple[str, ...] | None = None,
) -> Description:
    """The common description of records given their UTC ns times and symbols. `cme`:
    the records are CME Globex data, whose session hours say what counts as a gap and
    give the trading days (`days` gives them for other data)."""
    ts = np.sort(np.asarray(ts_ns, dtype=np.int64))
    names, counts = np.unique(np.asarray(symbols).astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    instruments = tuple((str(names[i]), int(counts[i])) for i in order)
    if len(ts) == 0:
        return Description(path, fmt, schema, instruments, 0, None, None, (), (), 0, MIN_GAP_NS,
                           synthetic, notes)  # fmt: skip
    modelled = cme and int(ts[0]) >= MODELLED_FROM_NS
    if not modelled:
        what = "non-CME data" if not cme else "earlier data"
        notes = (*notes, _WALL_CLOCK_NOTE.format(day=HOURS_FROM, what=what))
    days = _trading_days(ts) if days is None else days
    threshold = _gap_threshold(ts)
    gaps = _gaps(ts, threshold, modelled)
    longest = tuple(sorted(gaps, key=lambda g: -g.open_ns)[:GAPS_LISTED])
    return Description(path, fmt, schema, instruments, len(ts), int(ts[0]), int(ts[-1]), days,
                       longest, len(gaps), threshold, synthetic, notes)  # fmt: skip


def _trading_days(ts: np.ndarray) -> tuple[str, ...]:
    """CME trade dates present, asked of the calendar once per distinct hour."""
    hours = np.unique(ts // 3_600_000_000_000)
    days = {trading_day(int(h) * 3_600_000_000_000) for h in hours}
    days |= {trading_day(int(ts[0])), trading_day(int(ts[-1]))}  # hour starts can straddle
    return tuple(sorted(days))


def _gap_threshold(ts: np.ndarray) -> int:
    """MIN_GAP_NS, or twice the usual spacing for sparser data (bars): a missing bar is a
    gap, a bar's own width is not."""
    steps = np.diff(ts)
    steps = steps[steps > 0]
    usual = int(np.median(steps)) if len(steps) else 0
    return max(MIN_GAP_NS, 2 * usual)


def _gaps(ts: np.ndarray, threshold: int, modelled: bool) -> list[Gap]:
    steps = np.diff(ts)
    where = np.flatnonzero(steps > threshold)
    if not modelled:
        return [Gap(int(ts[i]), int(ts[i + 1]), int(steps[i])) for i in where]
    table = session_table(about_year(int(ts[0])) - 1, about_year(int(ts[-1])) + 1)
    starts, ends = np.asarray(table.starts), np.asarray(table.ends)
    out = []
    for i in where:
        a, b = int(ts[i]), int(ts[i + 1])
        lo, hi = np.searchsorted(ends, a, "right"), np.searchsorted(starts, b, "left")
        open_ns = int(np.clip(np.minimum(ends[lo:hi], b) - np.maximum(starts[lo:hi], a), 0,
                              None).sum())  # fmt: skip
        if open_ns > threshold:
            out.append(Gap(a, b, open_ns))
    return out


# ---------------------------------------------------------------- the formats esml reads


def _describe_dbn_or_csv(path: Path, symbol: str | None) -> Description:
    from esml.data.store import load_source

    src = load_source(path, symbol=symbol)
    fmt = "Databento DBN" if src.format == "dbn" else "CSV ticks"
    notes = tuple(f"{k}: {v}" for k, v in src.details.items())
    ts = src.records[src.spec.index_ts] if len(src.records) else np.zeros(0, np.int64)
    return summarise(path, fmt, src.spec.name, ts, src.symbols, synthetic=src.synthetic,
                     notes=notes)  # fmt: skip


def _is_dbn_or_csv(path: Path) -> bool:
    from esml.data.csv_ticks import is_csv_ticks
    from esml.data.dbn import is_dbn

    return path.is_file() and (is_dbn(path) or is_csv_ticks(path))


def _is_lobster(path: Path) -> bool:
    return path.is_file() and (path.suffix.lower() == ".zip" or "_message_" in path.name)


def _describe_lobster(path: Path, symbol: str | None) -> Description:
    from esml.data.lobster import read_lobster

    day = read_lobster(path)
    symbols = np.full(len(day), day.ticker)
    return summarise(path, "LOBSTER", f"messages + orderbook, {day.levels} levels", day.ts_ns,
                     symbols, cme=False, days=(day.day.isoformat(),),
                     notes=("NASDAQ TotalView-ITCH",))  # fmt: skip


def _is_store(path: Path) -> bool:
    from esml.data.store import MANIFEST

    return path.is_dir() and (path / MANIFEST).is_file()


def _describe_store(path: Path, symbol: str | None) -> Description:
    """A store's own summary (its manifest); gaps are for the files it came from."""
    from esml.data.store import info

    s = info(path)
    if s.problems:
        raise DataFileError(f"{path}: " + "; ".join(s.problems))
    per_symbol: dict[str, int] = {}
    for r in s.rows:
        per_symbol[r.instrument] = per_symbol.get(r.instrument, 0) + r.rows
    instruments = tuple(sorted(per_symbol.items(), key=lambda kv: -kv[1]))
    days = tuple(sorted({d for r in s.rows for d in r.dates}))
    schemas = ", ".join(sorted({r.schema for r in s.rows}))
    return Description(
        path, "esml Parquet store", schemas, instruments, sum(r.rows for r in s.rows),
        min((r.ts_min for r in s.rows), default=None), max((r.ts_max for r in s.rows),
                                                           default=None),
        days, (), 0, MIN_GAP_NS, any(r.synthetic != "no" for r in s.rows),
        (f"{s.sources} source files; gaps: describe the source files",),
    )  # fmt: skip


register(Format("esml Parquet store", _is_store, _describe_store))
register(Format("Databento DBN or CSV ticks", _is_dbn_or_csv, _describe_dbn_or_csv))
register(Format("LOBSTER", _is_lobster, _describe_lobster))
