"""The data sets the direction models are judged on, and their aligned evaluation rows.

Three kinds, each named for what it is: LOBSTER's NASDAQ sample days (GOOG, AMZN, AAPL;
real, not ES), the real CME ES MBO files, and generated ES days labelled SYNTHETIC.

A row is a decision time (every `decision_interval_s`) with a valid direction label and a
full input for every model judged on the data set: the feature vector, and each net's
window. Every model and baseline is scored on the very same rows, so their numbers compare.
A net whose window is ready on too few rows (the bar LSTM needs 60 closed minutes, more
than a one-hour file holds) is left out of that data set, and the reason is recorded.

esml.market.instruments knows only CME futures, so the LOBSTER stocks get a small equity
spec here (`equity_instrument`: tick 0.01 USD, one share): features and labels take their
tick size from it exactly as they take ES's from `esml.market.instruments.ES`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import databento_dbn as dbn
import numpy as np

from esml.alpha.torch_train import WINDOWS
from esml.config import FeatureConfig
from esml.data.dbn import main_instrument, open_dbn, read_mbo
from esml.data.lobster import TICK_FIXED as LOBSTER_TICK_FIXED
from esml.data.lobster import read_lobster, reconstruct
from esml.features.batch import batch_features
from esml.features.dataset import events_sha256
from esml.features.labels import direction_labels, regime_labels
from esml.features.streaming import FEATURE_NAMES, FEATURE_VERSION
from esml.market.calendar import is_trading_date
from esml.market.instruments import ES, Instrument
from esml.sim.queue_reactive import generate_day

DatasetKind = Literal["lobster", "cme-es", "synthetic"]
LOBSTER_TICKERS = ("GOOG", "AMZN", "AAPL")
MIN_READY_SHARE = 0.5
"""A net joins a data set only if its window is ready on at least this share of the
labelled rows; otherwise requiring it would throw most of the data away."""
MIN_ROWS = 600  # fewer labelled rows than ten minutes of decisions cannot be walked forward
_NS = 1_000_000_000


def equity_instrument(ticker: str) -> Instrument:
    """A NASDAQ stock as the feature and label code sees an instrument: tick 0.01 USD,
    one share (a tick is worth one cent)."""
    inst = Instrument(
        ticker.upper(),
        0.01,
        0.01,
        exchange="NASDAQ",
        description=f"{ticker.upper()} common stock (LOBSTER sample)",
    )
    if inst.tick_fixed != LOBSTER_TICK_FIXED:  # the LOBSTER reader's price grid is one cent
        raise AssertionError(f"equity tick {inst.tick_fixed} != LOBSTER's {LOBSTER_TICK_FIXED}")
    return inst


@dataclass(frozen=True)
class Source:
    """One events array of a data set: a file, a LOBSTER day or one generated day."""

    name: str
    events: np.ndarray
    sha256: str


@dataclass(frozen=True)
class EvalDataset:
    name: str
    kind: DatasetKind
    instrument: Instrument
    sources: tuple[Source, ...]
    synthetic: bool
    notes: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        return f"{self.name} (SYNTHETIC)" if self.synthetic else self.name


@dataclass(frozen=True)
class Skipped:
    """A data set or file that was looked for and not used, with the reason."""

    what: str
    reason: str


# ---------------------------------------------------------------------------- loading


def lobster_datasets(
    folder: Path, tickers: Sequence[str] = LOBSTER_TICKERS
) -> tuple[list[EvalDataset], list[Skipped]]:
    """One data set per ticker, from its sample with the most book levels in `folder`."""
    found: list[EvalDataset] = []
    skipped: list[Skipped] = []
    for ticker in tickers:
        files = sorted(Path(folder).glob(f"LOBSTER_SampleFile_{ticker}_*_*.zip"), key=_levels)
        if not files:
            skipped.append(Skipped(f"LOBSTER {ticker}", f"no sample zip under {folder}"))
            continue
        path = files[-1]
        replay = reconstruct(read_lobster(path))
        if not replay.ok:
            skipped.append(
                Skipped(
                    path.name,
                    f"book replay differs from LOBSTER's orderbook "
                    f"file on {replay.mismatches} rows",
                )
            )
            continue
        levels = _levels(path)
        notes = [
            f"NASDAQ stock, not ES: {replay.messages:,} messages, {levels} book "
            f"level{'s' if levels > 1 else ''} (the richest sample here); tick 0.01 USD"
        ]
        if levels < 10:
            notes.append(
                f"DeepLOB sees {levels} real level{'s' if levels > 1 else ''}; the "
                f"deeper ones are empty (size 0) in its windows"
            )
        found.append(
            EvalDataset(
                name=f"LOBSTER {ticker} {path.stem.split('_')[3]}",
                kind="lobster",
                instrument=equity_instrument(ticker),
                sources=(Source(path.name, replay.events, events_sha256(replay.events)),),
                synthetic=False,
                notes=tuple(notes),
            )
        )
    return found, skipped


def _levels(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[-1])


def real_es_dataset(
    paths: Iterable[Path], min_span_s: float = 1200.0
) -> tuple[EvalDataset | None, list[Skipped]]:
    """The real CME ES MBO files among `paths` (files, or folders searched for DBN files):
    each file's busiest instrument; copies of one file count once; files of other schemas
    or spanning less than `min_span_s` are skipped with the reason."""
    sources: list[Source] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    for path in _dbn_files(paths):
        schema = open_dbn(path).metadata.schema
        if schema != dbn.Schema.MBO:
            skipped.append(Skipped(path.name, f"schema {schema}, not MBO"))
            continue
        events = read_mbo(path)
        if len(events) == 0:
            skipped.append(Skipped(path.name, "no MBO records"))
            continue
        events = events[events["instrument_id"] == main_instrument(events)]
        digest = events_sha256(events)
        if digest in seen:
            continue
        seen.add(digest)
        span = (int(events["ts_recv"][-1]) - int(events["ts_recv"][0])) / _NS
        if span < min_span_s:
            skipped.append(
                Skipped(
                    path.name,
                    f"spans {span:,.0f} s of data, under the "
                    f"{min_span_s:,.0f} s a walk-forward needs",
                )
            )
            continue
        sources.append(Source(path.name, events, digest))
    if not sources:
        return None, skipped
    return EvalDataset(
        name="CME ES (real MBO)",
        kind="cme-es",
        instrument=ES,
        sources=tuple(sources),
        synthetic=False,
        notes=(
            "real CME Globex data; the shipped sample is one thin hour of the 2023-12-25 "
            "holiday reopen, so its counts are small",
        ),
    ), skipped


def _dbn_files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.name.endswith((".dbn", ".dbn.zst"))))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return out


def synthetic_es_dataset(
    seed: int,
    n_days: int,
    start_date: date,
    *,
    start_ct: str = "07:30",
    hours: float = 3.5,
) -> EvalDataset:
    """`n_days` generated ES trade dates (queue-reactive simulator), each the window from
    `start_ct` (Chicago) for `hours`: the first hour builds the minute bars the bar LSTM
    reads. Weekends and holidays are skipped as `generate_days` skips them."""
    if n_days < 1:
        raise ValueError(f"n_days must be >= 1, got {n_days}")
    sources = []
    for day in trading_dates(start_date, n_days):
        events = generate_day(seed, day, start=start_ct, hours=hours)
        sources.append(
            Source(f"synthetic-qr-{day.isoformat()}-seed{seed}", events, events_sha256(events))
        )
    return EvalDataset(
        name=f"ES generated, {n_days} days",
        kind="synthetic",
        instrument=ES,
        sources=tuple(sources),
        synthetic=True,
        notes=(
            f"SYNTHETIC: esml.sim.queue_reactive.generate_day(seed={seed}) from "
            f"{start_ct} CT for {hours:g} h on each trade date; not market data, no "
            f"evidence of any edge",
        ),
    )


def trading_dates(start: date, n_days: int) -> list[date]:
    out, d = [], start
    while len(out) < n_days:
        if is_trading_date(d):
            out.append(d)
        d += timedelta(days=1)
    return out


# ---------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Rows:
    """Aligned evaluation rows of one data set, in time order."""

    ts_ns: np.ndarray  # int64 decision times, strictly increasing
    mid: np.ndarray  # float64 mid (price units) at each
    y: np.ndarray  # int64 direction label: 0 down, 1 flat, 2 up
    prev_y: np.ndarray  # int64 label of the row one horizon earlier (its move has ended); -1: none
    regime: np.ndarray  # int64 regime label (esml.features.labels.REGIMES); -1: not valid
    x: np.ndarray  # float32 [n, 77] features
    windows: dict[str, np.ndarray]  # net kind → float32 [n, steps, fields]
    source: np.ndarray  # int index into the data set's sources
    feature_names: tuple[str, ...]
    feature_version: str
    excluded: dict[str, str] = field(default_factory=dict)  # net kind → why it is not judged

    def __len__(self) -> int:
        return len(self.y)


def build_rows(
    dataset: EvalDataset,
    cfg: FeatureConfig,
    kinds: Sequence[str],
    *,
    regime_kwargs: dict[str, float] | None = None,
    on_source: Callable[[], None] | None = None,
) -> Rows:
    """Features, labels and the windows of the net `kinds` at every decision time of every
    source; rows kept where the label is valid and every kept net's window is ready.

    Built from the batch feature executor and the label and window builders directly
    (not `build_dataset`) because the ensemble's meta-learner needs the mid of each row
    and all models must share one row set."""
    unknown = [k for k in kinds if k not in WINDOWS]
    if unknown:
        raise ValueError(f"no window builder for {unknown}; choose from {sorted(WINDOWS)}")
    inst = dataset.instrument
    horizon_ns = round(cfg.horizon_s * _NS)
    parts = []
    for s_idx, src in enumerate(dataset.sources):
        frame = batch_features(src.events, inst.tick_fixed, cfg.decision_interval_s)
        n = len(frame.ts_ns)
        if n == 0:
            parts.append(None)
            continue
        y, valid = direction_labels(
            frame.ts_ns, frame.mid, cfg.horizon_s, cfg.dead_zone_ticks, inst.tick_size
        )
        reg, reg_valid = regime_labels(
            frame.ts_ns, frame.mid, inst.tick_size, **(regime_kwargs or {})
        )
        prev = _previous_labels(frame.ts_ns, y, valid, horizon_ns)
        windows = {}
        for kind in kinds:
            _, builder = WINDOWS[kind]
            w = builder(src.events, inst.tick_fixed, frame.ts_ns)
            windows[kind] = (w.x, w.ready)
        parts.append((frame, y, valid, np.where(reg_valid, reg, -1), prev, windows, s_idx))
        if on_source is not None:
            on_source()
    labelled = sum(int(p[2].sum()) for p in parts if p is not None)
    excluded = {}
    for kind in kinds:
        ready = sum(int((p[2] & p[5][kind][1]).sum()) for p in parts if p is not None)
        share = ready / labelled if labelled else 0.0
        if share < MIN_READY_SHARE:
            spec, _ = WINDOWS[kind]
            excluded[kind] = (
                f"its {spec.steps}-step {spec.name} window is ready on "
                f"{share:.0%} of the labelled rows"
            )
    kept = [k for k in kinds if k not in excluded]
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("ts", "mid", "y", "prev", "reg", "x", "src")
    }
    wins: dict[str, list[np.ndarray]] = {k: [] for k in kept}
    for p in parts:
        if p is None:
            continue
        frame, y, valid, reg, prev, windows, s_idx = p
        keep = valid.copy()
        for k in kept:
            keep &= windows[k][1]
        cols["ts"].append(frame.ts_ns[keep])
        cols["mid"].append(frame.mid[keep])
        cols["y"].append(y[keep].astype(np.int64))
        cols["prev"].append(prev[keep])
        cols["reg"].append(reg[keep].astype(np.int64))
        cols["x"].append(frame.X[keep])
        cols["src"].append(np.full(int(keep.sum()), s_idx, np.int64))
        for k in kept:
            wins[k].append(windows[k][0][keep])
    if not cols["ts"] or sum(len(t) for t in cols["ts"]) < MIN_ROWS:
        got = sum(len(t) for t in cols["ts"])
        raise ValueError(
            f"{dataset.title}: {got} labelled rows, fewer than the {MIN_ROWS} "
            f"a walk-forward evaluation needs"
        )
    ts = np.concatenate(cols["ts"])
    order = np.argsort(ts, kind="stable")
    if np.any(np.diff(ts[order]) <= 0):
        raise ValueError(f"{dataset.title}: sources overlap in time; rows must be one timeline")
    cat = {k: np.concatenate(v)[order] for k, v in cols.items()}
    return Rows(
        ts_ns=cat["ts"],
        mid=cat["mid"],
        y=cat["y"],
        prev_y=cat["prev"],
        regime=cat["reg"],
        x=cat["x"],
        windows={k: np.concatenate(v)[order] for k, v in wins.items()},
        source=cat["src"],
        feature_names=tuple(FEATURE_NAMES),
        feature_version=FEATURE_VERSION,
        excluded=excluded,
    )


def _previous_labels(
    ts_ns: np.ndarray, y: np.ndarray, valid: np.ndarray, horizon_ns: int
) -> np.ndarray:
    """The label of the decision one horizon before each row: the sign of the move that
    ended at (about) this row, known now. The earlier decision is the last at or before
    t - horizon, within a quarter horizon of it (as `direction_labels` finds its future
    point), with a valid label; else -1."""
    j = np.searchsorted(ts_ns, ts_ns - horizon_ns, side="right") - 1
    ok = j >= 0
    jj = np.maximum(j, 0)
    ok &= ts_ns[jj] >= ts_ns - horizon_ns - horizon_ns // 4
    ok &= valid[jj]
    return np.where(ok, y[jj], -1).astype(np.int64)
