"""The one event dtype: Databento's MBO record layout, so a DBN file is a zero-copy view.

Every source (DBN, the simulator, LOBSTER, CSV ticks) produces arrays of `MBO_DTYPE`;
the book, features and exchange simulator read nothing else.
"""

from __future__ import annotations

import numpy as np

MBO_DTYPE = np.dtype(
    [
        ("length", "u1"),
        ("rtype", "u1"),
        ("publisher_id", "<u2"),
        ("instrument_id", "<u4"),
        ("ts_event", "<u8"),
        ("order_id", "<u8"),
        ("price", "<i8"),
        ("size", "<u4"),
        ("flags", "u1"),
        ("channel_id", "u1"),
        ("action", "u1"),
        ("side", "u1"),
        ("ts_recv", "<u8"),
        ("ts_in_delta", "<i4"),
        ("sequence", "<u4"),
    ]
)
assert MBO_DTYPE.itemsize == 56

RTYPE_MBO = 0xA0
UNDEF_PRICE = np.iinfo(np.int64).max

# actions (ASCII codes, as in DBN)
ADD = ord("A")
CANCEL = ord("C")
MODIFY = ord("M")
CLEAR = ord("R")
TRADE = ord("T")
FILL = ord("F")
NONE = ord("N")

# sides
BID = ord("B")
ASK = ord("A")
NO_SIDE = ord("N")

# flags
F_LAST = 1 << 7
F_TOB = 1 << 6
F_SNAPSHOT = 1 << 5
F_MBP = 1 << 4
F_BAD_TS_RECV = 1 << 3
F_MAYBE_BAD_BOOK = 1 << 2

# publisher id used for events esml generates itself; never a real venue's id
PUBLISHER_SYNTHETIC = 0xFFFF


def empty_events(n: int) -> np.ndarray:
    """A zeroed event array with the header fields that never vary already set."""
    ev = np.zeros(n, dtype=MBO_DTYPE)
    ev["length"] = MBO_DTYPE.itemsize // 4
    ev["rtype"] = RTYPE_MBO
    return ev


def is_synthetic(events: np.ndarray) -> bool:
    return bool(len(events)) and bool(np.all(events["publisher_id"] == PUBLISHER_SYNTHETIC))
