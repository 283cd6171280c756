"""The retraining data set: recorded market data plus the shipped real data, split in time.

Sources, each the MBO events of one instrument over one CME trading day (a book replay
must start from that day's snapshot):
- every esml store (a folder holding `_manifest.json`, `esml.data.store`) under the data
  roots: the live engine's capture writes one per clock hour, at
  `data/live/<symbol>/<YYYYMMDD-HH>/` in the bucket (`esml.engine.capture`), each
  starting with a book snapshot so it replays on its own;
- every DBN MBO file under the data roots: data a person uploads, and the real CME ES
  hour this image ships.

Copies of one stream count once (by the sha256 of their events). The held-out part is the
most recent `holdout_fraction` of all events, by time: the challenger trains on what came
before the cutoff, and is judged (with the champion and the baselines) on what came after.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esml.data import store
from esml.data.dbn import DataFileError, main_instrument
from esml.evaluation.datasets import EvalDataset, Skipped, Source, real_es_dataset
from esml.features.dataset import events_sha256
from esml.market.instruments import ES, instrument_for

DATASET_FILE = "dataset.json"
DBN_SUFFIXES = (".dbn", ".dbn.zst")
MIN_SPAN_S = 1200.0


@dataclass(frozen=True)
class Split:
    """The cutoff and the sources it splits (recorded beside the challenger)."""

    cutoff_ns: int
    holdout_fraction: float
    sources: tuple[Source, ...]

    def training_sources(self) -> dict[str, np.ndarray]:
        """Each source's events before the cutoff (sources with none are left out)."""
        out = {}
        for s in self.sources:
            before = s.events[s.events["ts_recv"] < self.cutoff_ns]
            if len(before):
                out[s.name] = before
        return out

    def describe(self) -> dict[str, object]:
        return {
            "cutoff_ns": self.cutoff_ns,
            "holdout_fraction": self.holdout_fraction,
            "sources": [
                {
                    "name": s.name,
                    "sha256": s.sha256,
                    "first_ns": int(s.events["ts_recv"][0]),
                    "last_ns": int(s.events["ts_recv"][-1]),
                }
                for s in self.sources
            ],
        }


def collect_sources(roots: Sequence[Path]) -> tuple[list[Source], list[Skipped]]:
    """Every ES MBO source under `roots` (folders or files), oldest first."""
    files: list[Path] = []
    stores: list[Path] = []
    for root in roots:
        root = Path(root)
        if root.is_file():
            files.append(root)
        elif root.is_dir():
            files += sorted(p for p in root.rglob("*") if p.name.endswith(DBN_SUFFIXES))
            stores += sorted(m.parent for m in root.rglob(store.MANIFEST))
        else:
            raise FileNotFoundError(f"{root}: no such file or directory")
    skipped: list[Skipped] = []
    sources: list[Source] = []
    if files:
        dataset, skipped = real_es_dataset(files, MIN_SPAN_S)
        sources = list(dataset.sources) if dataset else []
    for folder in stores:
        found, left_out = _store_sources(folder)
        sources += found
        skipped += left_out
    unique: dict[str, Source] = {}
    for s in sources:
        unique.setdefault(s.sha256, s)
    return sorted(unique.values(), key=lambda s: int(s.events["ts_recv"][0])), skipped


def _store_sources(folder: Path) -> tuple[list[Source], list[Skipped]]:
    sources: list[Source] = []
    skipped: list[Skipped] = []
    for row in store.info(folder).rows:
        if row.schema != "mbo":
            continue
        try:
            is_es = instrument_for(row.instrument) == ES
        except ValueError:
            is_es = False
        if not is_es:
            skipped.append(Skipped(f"{folder.name}/{row.instrument}", "not an ES contract"))
            continue
        for day in row.dates:
            events = store.read_events(folder, "mbo", row.instrument, [day])
            if len(events) == 0:
                continue
            events = events[events["instrument_id"] == main_instrument(events)]
            span_s = (int(events["ts_recv"][-1]) - int(events["ts_recv"][0])) / 1e9
            name = f"{folder.name}/{row.instrument}/{day}"
            if span_s < MIN_SPAN_S:
                skipped.append(Skipped(name, f"spans {span_s:,.0f} s, under {MIN_SPAN_S:,.0f} s"))
                continue
            sources.append(Source(name, events, events_sha256(events)))
    return sources, skipped


def split_by_time(sources: Sequence[Source], holdout_fraction: float) -> Split:
    """Hold out the most recent `holdout_fraction` of all events."""
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    if not sources:
        raise DataFileError("no ES MBO data: nothing under the data channel or shipped")
    ts = np.sort(np.concatenate([s.events["ts_recv"] for s in sources]).astype(np.int64))
    cutoff = int(ts[min(len(ts) - 1, int(len(ts) * (1 - holdout_fraction)))])
    return Split(cutoff, holdout_fraction, tuple(sources))


def write_split(split: Split, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / DATASET_FILE
    path.write_text(json.dumps(split.describe(), indent=2) + "\n")
    return path


def read_split(directory: Path, roots: Sequence[Path]) -> Split:
    """The split a challenger was trained with, over the very same sources: data recorded
    since then is not part of its evaluation, and a source that is gone is an error."""
    recorded = json.loads((directory / DATASET_FILE).read_text())
    found, _ = collect_sources(roots)
    by_digest = {s.sha256: s for s in found}
    missing = [s["name"] for s in recorded["sources"] if s["sha256"] not in by_digest]
    if missing:
        raise DataFileError(f"the challenger's training data is gone: {missing}")
    return Split(
        int(recorded["cutoff_ns"]),
        float(recorded["holdout_fraction"]),
        tuple(by_digest[s["sha256"]] for s in recorded["sources"]),
    )


def as_dataset(split: Split) -> EvalDataset:
    return EvalDataset(
        name="CME ES (real MBO: recorded and shipped)",
        kind="cme-es",
        instrument=ES,
        sources=split.sources,
        synthetic=False,
    )
