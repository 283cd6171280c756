"""Databento DBN files into esml events.

MBO records share esml's event dtype byte for byte, so an MBO file is decoded as one
numpy view of the decompressed bytes; `databento-dbn` parses the metadata and decodes
every other schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import databento_dbn as dbn
import numpy as np
import zstandard

from esml.market.events import MBO_DTYPE, RTYPE_MBO


class DataFileError(ValueError):
    """A data file is unreadable, corrupt or truncated; the message names file and record."""


@dataclass(frozen=True)
class DbnFile:
    path: Path
    metadata: dbn.Metadata
    body: bytes  # the records, after the metadata header


def _decompressed(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataFileError(f"{path}: cannot read: {e}") from e
    if raw[:4] != b"\x28\xb5\x2f\xfd":  # not zstd: a plain .dbn
        return raw
    # frame by frame, so a stream cut short or followed by junk is an error, not a short read
    out, rest, frame = [], raw, 0
    while rest:
        obj = zstandard.ZstdDecompressor().decompressobj()
        try:
            out.append(obj.decompress(rest))
        except zstandard.ZstdError as e:
            raise DataFileError(f"{path}: corrupt zstd frame {frame}: {e}") from e
        if not obj.eof:
            raise DataFileError(f"{path}: truncated: zstd frame {frame} is cut short")
        rest = obj.unused_data
        frame += 1
    return b"".join(out)


def open_dbn(path: str | Path) -> DbnFile:
    path = Path(path)
    data = _decompressed(path)
    if len(data) < 8 or data[:3] != b"DBN":
        raise DataFileError(f"{path}: not a DBN file (no DBN header)")
    meta_len = int.from_bytes(data[4:8], "little")
    start = 8 + meta_len
    if start > len(data):
        raise DataFileError(f"{path}: truncated in the metadata header")
    dec = dbn.DBNDecoder()
    dec.write(data[:start])
    try:
        metadata = dec.decode()[0]
    except Exception as e:  # the Rust decoder raises plain ValueError/RuntimeError
        raise DataFileError(f"{path}: unreadable DBN metadata: {e}") from e
    return DbnFile(path, metadata, data[start:])


def read_mbo(path: str | Path, instrument_id: int | None = None) -> np.ndarray:
    """All MBO records of a file as an `MBO_DTYPE` array (a copy, safe to keep).

    With `instrument_id`, only that instrument's records. Every record is checked for
    its length and rtype, so a corrupt or truncated file fails naming the first bad record.
    """
    f = open_dbn(path)
    size = MBO_DTYPE.itemsize
    if len(f.body) % size:
        n_ok = len(f.body) // size
        raise DataFileError(
            f"{f.path}: truncated: {len(f.body)} bytes of records is not a whole number of "
            f"{size}-byte MBO records (record {n_ok} is cut short)"
        )
    ev = np.frombuffer(f.body, dtype=MBO_DTYPE)
    bad = np.flatnonzero((ev["rtype"] != RTYPE_MBO) | (ev["length"] != size // 4))
    if len(bad):
        i = int(bad[0])
        raise DataFileError(
            f"{f.path}: record {i} is not an MBO record (rtype={ev['rtype'][i]:#x}, "
            f"length={ev['length'][i] * 4}); is this an MBO file? schema={f.metadata.schema}"
        )
    if instrument_id is not None:
        ev = ev[ev["instrument_id"] == instrument_id]
    return ev.copy()


def main_instrument(events: np.ndarray) -> int:
    """The instrument id with the most records: the outright a single-contract file is about."""
    ids, counts = np.unique(events["instrument_id"], return_counts=True)
    if not len(ids):
        raise DataFileError("no records")
    return int(ids[np.argmax(counts)])
