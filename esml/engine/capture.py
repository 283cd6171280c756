"""Market-data capture: what the live engine receives, kept as hourly files so retraining
has fresh real data.

Each clock hour of event time becomes one `<symbol>-<YYYYMMDD>-<HH>.mbo.dbn.zst` file in
Databento's DBN format (`esml.data.dbn.write_mbo_dbn`: what `read_mbo`, `esml data ingest`
and the store read), written when the hour is over (or the run ends) and then handed to
`upload` (the container uploads it under the model bucket's data prefix). The capture wraps
the source, so the engine sees exactly what is kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from esml.data.dbn import write_mbo_dbn

HOUR_NS = 3600 * 1_000_000_000


class Capture:
    def __init__(self, folder: Path, symbol: str,
                 upload: Callable[[Path], None] | None = None) -> None:  # fmt: skip
        self.folder = Path(folder)
        self.symbol = symbol
        self.upload = upload
        self.written: list[Path] = []
        self._hour: int | None = None
        self._parts: list[np.ndarray] = []

    def add(self, events: np.ndarray) -> None:
        if not len(events):
            return
        hours = events["ts_recv"].astype(np.int64) // HOUR_NS
        start = 0
        for cut in np.flatnonzero(np.diff(hours)) + 1:
            self._take(events[start:cut], int(hours[start]))
            start = int(cut)
        self._take(events[start:], int(hours[start]))

    def close(self) -> None:
        """Write what is held (the hour in progress)."""
        if self._parts and self._hour is not None:
            self._write(self._hour)

    async def wrap(self, source: AsyncIterator[np.ndarray]) -> AsyncIterator[np.ndarray]:
        try:
            async for chunk in source:
                self.add(chunk)
                yield chunk
        finally:
            self.close()

    def _take(self, events: np.ndarray, hour: int) -> None:
        if self._hour is not None and hour != self._hour and self._parts:
            self._write(self._hour)
        self._hour = hour
        self._parts.append(events.copy())

    def _write(self, hour: int) -> None:
        events = np.concatenate(self._parts)
        self._parts = []
        stamp = datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y%m%d-%H")
        self.folder.mkdir(parents=True, exist_ok=True)
        ids = np.unique(events["instrument_id"]).tolist()
        symbols = {self.symbol if len(ids) == 1 else f"{self.symbol}-{i}": int(i) for i in ids}
        path = write_mbo_dbn(self.folder / f"{self.symbol}-{stamp}.mbo.dbn.zst", events,
                             symbols=symbols)  # fmt: skip
        self.written.append(path)
        if self.upload is not None:
            self.upload(path)


def s3_uploader(s3: object, bucket: str, prefix: str) -> Callable[[Path], None]:
    """Upload each file under `s3://bucket/<prefix>live/<name>`."""

    def upload(path: Path) -> None:
        s3.upload_file(str(path), bucket, f"{prefix}live/{path.name}")  # type: ignore[attr-defined]

    return upload
