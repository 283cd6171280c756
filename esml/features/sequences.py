"""Sequence inputs of the neural alpha models: tick bars, book snapshots, minute-bar rows.

Each input is kept in ring buffers by compiled code updated per event (O(1)) and read at a
decision time. The streaming classes and the batch functions run the very same `feed_*`
and `read_*` functions, so a training window equals what the live engine would see:

- tick bars (`TICK`): OHLCV bars of 20 trades; the last 7 completed bars, prices in ticks
  relative to the last close, volume over the mean of the last 50 completed bars;
- book snapshots (`LOB`): one per packet (the record flagged F_LAST) whose 10-level book
  differs from the previous snapshot, two-sided and uncrossed books only; the last 100, as
  DeepLOB lays them out (ask px, ask sz, bid px, bid sz per level), prices in ticks from
  the latest mid, sizes over the mean level size of the last 1024 snapshots;
- minute bars (`BAR`): the last 60 closed one-minute bars' technical features, as the
  streaming kernel computes them (`esml.features.technicals`, `esml.features.bars`); a bar
  ending at E is in every window read at t >= E.

No look-ahead: a window read at t uses only events with ts_recv <= t, and its normalisers
(last close, mean volume, mid, mean size) come from the same past.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from numba import njit

from esml.data.book import M_ERROR, M_TICK, BookState, apply_event, l2_levels
from esml.features.bars import BAR_FEATURE_NAMES, minute_bar_features, minute_end
from esml.features.kernel import (
    ERROR,
    PER_EVENT_FEATURES,
    advance_exchange,
    idle_exchange,
    touch,
)
from esml.features.layout import BAR_OUT, N_BAR_FEATURES, S_BAR_END_MIN, S_BAR_N
from esml.features.streaming import (
    DEPTH_LEVELS,
    FEATURE_VERSION,
    N_FEATURES,
    FeatureState,
    compute,
)
from esml.market.events import F_LAST, MBO_DTYPE, TRADE

TICK_BAR_TRADES = 20
TICK_WINDOW = 7
TICK_VOLUME_BARS = 50  # bars in the volume normaliser
TICK_RING = 64  # >= TICK_VOLUME_BARS and TICK_WINDOW

LOB_LEVELS = 10
LOB_WINDOW = 100
LOB_RING = 128
LOB_SCALE_SNAPSHOTS = 1024  # snapshots in the size normaliser

BAR_WINDOW = 60
BAR_ROW_RING = 64

_FOREVER = np.iinfo(np.int64).max
_MINUTE_NS = 60_000_000_000

# tick state scalars
T_BARS = 0  # completed bars
T_TRADES = 1  # trades in the bar being built
T_VOL_SUM = 2  # volume of the last TICK_VOLUME_BARS completed bars
# LOB state scalars
L_SNAPS = 0  # snapshots taken
L_SIZE_SUM = 1  # total size of the last LOB_SCALE_SNAPSHOTS snapshots
# minute-bar state scalars
B_ROWS = 0  # rows kept
B_SEEN = 1  # closed bars of the feature state already looked at
B_MISSED = 2  # bars that closed unseen (capture_bar not called after each update)


@dataclass(frozen=True)
class WindowSpec:
    """What one model input is: its name, shape (steps, fields) and the fields' names."""

    name: str
    steps: int
    step_names: tuple[str, ...]
    version: str

    @property
    def shape(self) -> tuple[int, int]:
        return self.steps, len(self.step_names)


TICK = WindowSpec(
    "tick_bars", TICK_WINDOW, ("open", "high", "low", "close", "volume"), "tick-bars-1"
)
LOB = WindowSpec(
    "lob_snapshots",
    LOB_WINDOW,
    tuple(
        f"{what}_{level}"
        for level in range(1, LOB_LEVELS + 1)
        for what in ("ask_px", "ask_sz", "bid_px", "bid_sz")
    ),
    "lob-snapshots-1",
)
BAR = WindowSpec("minute_bars", BAR_WINDOW, BAR_FEATURE_NAMES, f"minute-bars-1/{FEATURE_VERSION}")


@dataclass(frozen=True)
class Windows:
    """Batch output: one window per decision time; rows with `ready` False are zeros."""

    ts_ns: np.ndarray  # int64 [n] decision times
    x: np.ndarray  # float32 [n, steps, fields]
    ready: np.ndarray  # bool [n]: enough history for a full window


# ---------------------------------------------------------------- tick bars


@njit(cache=True)
def update_ticks(t_meta, t_cur, t_bars, action, price, size, tick):
    """Fold one event into the bar being built; a bar closes on its 20th trade."""
    if action != TRADE:
        return
    px = price // tick
    if t_meta[T_TRADES] == 0:
        t_cur[0] = px
        t_cur[1] = px
        t_cur[2] = px
        t_cur[4] = 0
    t_cur[1] = max(t_cur[1], px)
    t_cur[2] = min(t_cur[2], px)
    t_cur[3] = px
    t_cur[4] += size
    t_meta[T_TRADES] += 1
    if t_meta[T_TRADES] < TICK_BAR_TRADES:
        return
    n = t_meta[T_BARS]
    if n >= TICK_VOLUME_BARS:
        t_meta[T_VOL_SUM] -= t_bars[(n - TICK_VOLUME_BARS) % TICK_RING, 4]
    t_bars[n % TICK_RING, :] = t_cur
    t_meta[T_VOL_SUM] += t_cur[4]
    t_meta[T_BARS] = n + 1
    t_meta[T_TRADES] = 0


@njit(cache=True)
def read_ticks(t_meta, t_bars, out) -> bool:
    """Write the window [TICK_WINDOW, 5] into `out`; False (out untouched) before 7 bars."""
    n = t_meta[T_BARS]
    if n < TICK_WINDOW:
        return False
    last_close = t_bars[(n - 1) % TICK_RING, 3]
    mean_volume = t_meta[T_VOL_SUM] / min(n, TICK_VOLUME_BARS)
    for k in range(TICK_WINDOW):
        bar = t_bars[(n - TICK_WINDOW + k) % TICK_RING]
        for j in range(4):
            out[k, j] = bar[j] - last_close
        out[k, 4] = bar[4] / mean_volume if mean_volume > 0 else 0.0
    return True


@njit(cache=True)
def feed_ticks(ev, i, until_ns, t_meta, t_cur, t_bars, tick):
    """Apply events from `i` while ts_recv <= until_ns; the index of the first not applied."""
    n = len(ev)
    while i < n and ev[i].ts_recv <= until_ns:
        e = ev[i]
        update_ticks(t_meta, t_cur, t_bars, e.action, e.price, e.size, tick)
        i += 1
    return i


@njit(cache=True)
def _batch_ticks(ev, t_meta, t_cur, t_bars, tick, decision_ns, out, ready):
    i = 0
    for k in range(len(decision_ns)):
        i = feed_ticks(ev, i, decision_ns[k], t_meta, t_cur, t_bars, tick)
        ready[k] = read_ticks(t_meta, t_bars, out[k])


# ---------------------------------------------------------------- book snapshots


@njit(cache=True)
def update_lob(l_meta, l_snaps, l_sizes, depth, row, flags, meta, bid_qty, ask_qty):
    """After a packet's last record, keep the 10-level book if it changed; levels beyond
    the book read one tick further out with size 0."""
    if flags & F_LAST == 0:
        return
    l2_levels(meta, bid_qty, ask_qty, depth)
    if depth[0, 1] <= 0 or depth[0, 3] <= 0 or depth[0, 0] >= depth[0, 2]:
        return
    tick = meta[M_TICK]
    bid_px = depth[0, 0] // tick + 1
    ask_px = depth[0, 2] // tick - 1
    total = 0
    for j in range(LOB_LEVELS):
        ask_px = depth[j, 2] // tick if depth[j, 3] > 0 else ask_px + 1
        bid_px = depth[j, 0] // tick if depth[j, 1] > 0 else bid_px - 1
        row[4 * j] = ask_px
        row[4 * j + 1] = depth[j, 3]
        row[4 * j + 2] = bid_px
        row[4 * j + 3] = depth[j, 1]
        total += depth[j, 3] + depth[j, 1]
    n = l_meta[L_SNAPS]
    if n > 0:
        prev = l_snaps[(n - 1) % LOB_RING]
        same = True
        for c in range(4 * LOB_LEVELS):
            if prev[c] != row[c]:
                same = False
                break
        if same:
            return
    l_snaps[n % LOB_RING, :] = row
    slot = n % LOB_SCALE_SNAPSHOTS
    if n >= LOB_SCALE_SNAPSHOTS:
        l_meta[L_SIZE_SUM] -= l_sizes[slot]
    l_sizes[slot] = total
    l_meta[L_SIZE_SUM] += total
    l_meta[L_SNAPS] = n + 1


@njit(cache=True)
def read_lob(l_meta, l_snaps, out) -> bool:
    """Write the window [LOB_WINDOW, 40] into `out`; False (out untouched) before 100."""
    n = l_meta[L_SNAPS]
    if n < LOB_WINDOW:
        return False
    last = l_snaps[(n - 1) % LOB_RING]
    mid2 = last[0] + last[2]  # twice the latest mid, in ticks: exact in integers
    size_scale = l_meta[L_SIZE_SUM] / (min(n, LOB_SCALE_SNAPSHOTS) * 2 * LOB_LEVELS)
    for k in range(LOB_WINDOW):
        snap = l_snaps[(n - LOB_WINDOW + k) % LOB_RING]
        for c in range(0, 4 * LOB_LEVELS, 2):
            out[k, c] = (2 * snap[c] - mid2) / 2.0
            out[k, c + 1] = snap[c + 1] / size_scale
    return True


@njit(cache=True)
def feed_lob(ev, i, until_ns, meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx,
             o_size, o_side, free, l_meta, l_snaps, l_sizes, depth, row):  # fmt: skip
    """Apply events to the book and the snapshot ring while ts_recv <= until_ns; returns the
    next index, or -1 - i when the book rejects record i."""
    n = len(ev)
    while i < n and ev[i].ts_recv <= until_ns:
        e = ev[i]
        apply_event(
            meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side, free,
            e.action, e.side, e.price, e.size, e.order_id,
        )  # fmt: skip
        if meta[M_ERROR] != 0:
            return -1 - i
        update_lob(l_meta, l_snaps, l_sizes, depth, row, e.flags, meta, bid_qty, ask_qty)
        i += 1
    return i


@njit(cache=True)
def _batch_lob(ev, meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size, o_side,
               free, l_meta, l_snaps, l_sizes, depth, row, decision_ns, out, ready):  # fmt: skip
    i = 0
    for k in range(len(decision_ns)):
        i = feed_lob(
            ev, i, decision_ns[k], meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals,
            o_idx, o_size, o_side, free, l_meta, l_snaps, l_sizes, depth, row,
        )  # fmt: skip
        if i < 0:
            return i
        ready[k] = read_lob(l_meta, l_snaps, out[k])
    return i


# ---------------------------------------------------------------- minute bars


@njit(cache=True)
def push_bar(b_meta, b_end, b_rows, end_ns, row):
    n = b_meta[B_ROWS]
    b_end[n % BAR_ROW_RING] = end_ns
    b_rows[n % BAR_ROW_RING, :] = row
    b_meta[B_ROWS] = n + 1


@njit(cache=True)
def capture_bar(b_meta, b_end, b_rows, s):
    """Keep the bar the feature state `s` just closed, if it closed one: call after every
    `update` (per timestamp suffices: one timestamp closes at most one bar) and `compute`."""
    closed = np.int64(s[S_BAR_N])
    if closed == b_meta[B_SEEN]:
        return
    b_meta[B_MISSED] += closed - b_meta[B_SEEN] - 1
    b_meta[B_SEEN] = closed
    end_ns = np.int64(s[S_BAR_END_MIN]) * _MINUTE_NS
    push_bar(b_meta, b_end, b_rows, end_ns, s[BAR_OUT : BAR_OUT + N_BAR_FEATURES])


@njit(cache=True)
def read_bars(b_meta, b_rows, out) -> bool:
    """Write the last BAR_WINDOW rows [60, 11] into `out`; False (out untouched) before 60."""
    n = b_meta[B_ROWS]
    if n < BAR_WINDOW:
        return False
    for k in range(BAR_WINDOW):
        out[k, :] = b_rows[(n - BAR_WINDOW + k) % BAR_ROW_RING]
    return True


@njit(cache=True)
def feed_bars(ev, i, until_ns, meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx,
              o_size, o_side, free, fs, ring, b_meta, b_end, b_rows):  # fmt: skip
    """The engine's book and feature kernel over events with ts_recv <= until_ns, one
    minute at a time (`minute_end`), keeping each bar as it closes; the next index, or
    -1 - i when the book rejects record i."""
    n = len(ev)
    xm, xo, xa, xr, xf = idle_exchange()
    o_seq = np.zeros(0, np.int64)  # arrival sequences are kept only while an order of ours rests
    while i < n and ev[i].ts_recv <= until_ns:
        i, why = advance_exchange(
            ev, i, meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size,
            o_side, free, o_seq, fs, ring, PER_EVENT_FEATURES,
            min(minute_end(ev[i].ts_recv), until_ns), xm, xo, xa, xr, xf,
        )  # fmt: skip
        if why == ERROR:
            return -1 - i
        capture_bar(b_meta, b_end, b_rows, fs)
    return i


@njit(cache=True)
def roll_bars(meta, bid_qty, ask_qty, fs, ring, depth, scratch, ts_ns, b_meta, b_end, b_rows):
    """Bring the feature state to `ts_ns` as the engine's decision-time `compute` does (a
    minute that has ended closes its bar) and keep that bar."""
    bp, bs, ap, as_ = touch(meta, bid_qty, ask_qty)
    l2_levels(meta, bid_qty, ask_qty, depth)
    compute(fs, ring, ts_ns, bp, ap, bs, as_, depth, meta[M_TICK], scratch)
    capture_bar(b_meta, b_end, b_rows, fs)


@njit(cache=True)
def _batch_bars(bar_end, bar_x, decision_ns, b_meta, b_end, b_rows, out, ready):
    j = 0
    for k in range(len(decision_ns)):
        while j < len(bar_end) and bar_end[j] <= decision_ns[k]:
            push_bar(b_meta, b_end, b_rows, bar_end[j], bar_x[j])
            j += 1
        ready[k] = read_bars(b_meta, b_rows, out[k])


# ---------------------------------------------------------------- state and executors


class TickBarState:
    """Ring of completed tick bars and the bar being built."""

    def __init__(self, tick_fixed: int) -> None:
        self.tick = _check_tick(tick_fixed)
        self.meta = np.zeros(3, np.int64)
        self.cur = np.zeros(5, np.int64)
        self.bars = np.zeros((TICK_RING, 5), np.int64)


class LobState:
    """An L3 book and the ring of its 10-level snapshots."""

    def __init__(self, tick_fixed: int) -> None:
        self.book = BookState.new(_check_tick(tick_fixed))
        self.meta = np.zeros(2, np.int64)
        self.snaps = np.zeros((LOB_RING, 4 * LOB_LEVELS), np.int64)
        self.sizes = np.zeros(LOB_SCALE_SNAPSHOTS, np.int64)
        self.depth = np.zeros((LOB_LEVELS, 4), np.int64)
        self.row = np.zeros(4 * LOB_LEVELS, np.int64)

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        return (*self.book.arrays, self.meta, self.snaps, self.sizes, self.depth, self.row)


class BarRowState:
    """Ring of the closed minute bars' technicals, with their end times."""

    def __init__(self) -> None:
        self.meta = np.zeros(3, np.int64)
        self.end = np.zeros(BAR_ROW_RING, np.int64)
        self.rows = np.zeros((BAR_ROW_RING, N_BAR_FEATURES), np.float64)


class _Stream(ABC):
    """Live executor: events arrive in chunks in time order; `read` gives the window as of
    the last event applied, so the caller reads at a decision time before feeding later ones."""

    def __init__(self) -> None:
        self._last_ns = -1
        self._window: np.ndarray

    def on_events(self, events: np.ndarray) -> None:
        _check_events(events)
        if len(events) and int(events["ts_recv"][0]) < self._last_ns:
            raise ValueError(
                f"events go back in time: ts_recv {int(events['ts_recv'][0])} after "
                f"{self._last_ns}; nothing was applied"
            )
        self._feed(events)
        if len(events):
            self._last_ns = int(events["ts_recv"][-1])

    def read(self, out: np.ndarray | None = None) -> np.ndarray | None:
        """The current window (into `out` when given: float32 of the spec's shape), or None
        before there is enough history."""
        target = self._window if out is None else out
        if target.shape != self._window.shape or target.dtype != np.float32:
            raise ValueError(f"out must be float32 {self._window.shape}, got {target.dtype} "
                             f"{target.shape}")  # fmt: skip
        if not self._read(target):
            return None
        return target if out is not None else target.copy()

    @abstractmethod
    def _feed(self, events: np.ndarray) -> None: ...

    @abstractmethod
    def _read(self, out: np.ndarray) -> bool: ...


class TickBarStream(_Stream):
    def __init__(self, tick_fixed: int) -> None:
        super().__init__()
        self.state = TickBarState(tick_fixed)
        self._window = np.zeros(TICK.shape, np.float32)

    def _feed(self, events: np.ndarray) -> None:
        s = self.state
        feed_ticks(events, 0, _FOREVER, s.meta, s.cur, s.bars, s.tick)

    def _read(self, out: np.ndarray) -> bool:
        return read_ticks(self.state.meta, self.state.bars, out)


class LobStream(_Stream):
    def __init__(self, tick_fixed: int) -> None:
        super().__init__()
        self.state = LobState(tick_fixed)
        self._window = np.zeros(LOB.shape, np.float32)

    def _feed(self, events: np.ndarray) -> None:
        stop = feed_lob(events, 0, _FOREVER, *self.state.arrays)
        if stop < 0:
            self.state.book.check(f" at record {-1 - stop} of this chunk")

    def _read(self, out: np.ndarray) -> bool:
        return read_lob(self.state.meta, self.state.snaps, out)


class BarStream(_Stream):
    """Owns a book and the streaming feature state, as the engine does; `read_at(t)` rolls
    them to the decision time t first, as the engine's `compute` at t would."""

    def __init__(self, tick_fixed: int) -> None:
        super().__init__()
        self.book = BookState.new(_check_tick(tick_fixed))
        self.features = FeatureState()
        self.state = BarRowState()
        self._depth = np.zeros((DEPTH_LEVELS, 4), np.int64)
        self._scratch = np.zeros(N_FEATURES, np.float32)
        self._window = np.zeros(BAR.shape, np.float32)

    def read_at(self, ts_ns: int, out: np.ndarray | None = None) -> np.ndarray | None:
        """The window as of decision time `ts_ns` (not before the last event applied)."""
        if ts_ns < self._last_ns:
            raise ValueError(f"read_at({ts_ns}) is before the last event, {self._last_ns}")
        if self._last_ns >= 0:  # before any event there is no state to roll
            f, s, b = self.features, self.state, self.book
            roll_bars(b.meta, b.bid_qty, b.ask_qty, f.s, f.ring, self._depth, self._scratch,
                      ts_ns, s.meta, s.end, s.rows)  # fmt: skip
        return self.read(out)

    def _feed(self, events: np.ndarray) -> None:
        f, s = self.features, self.state
        stop = feed_bars(events, 0, _FOREVER, *self.book.arrays, f.s, f.ring, s.meta, s.end,
                         s.rows)  # fmt: skip
        if stop < 0:
            self.book.check(f" at record {-1 - stop} of this chunk")
        if s.meta[B_MISSED]:
            raise RuntimeError(f"{int(s.meta[B_MISSED])} minute bars closed unseen")

    def _read(self, out: np.ndarray) -> bool:
        return read_bars(self.state.meta, self.state.rows, out)


def tick_windows(events: np.ndarray, tick_fixed: int, decision_ns: np.ndarray) -> Windows:
    """The tick-bar window at each decision time (events with ts_recv <= t applied)."""
    _check_events(events)
    decisions = _check_decisions(decision_ns)
    s = TickBarState(tick_fixed)
    out = np.zeros((len(decisions), *TICK.shape), np.float32)
    ready = np.zeros(len(decisions), np.bool_)
    _batch_ticks(events, s.meta, s.cur, s.bars, s.tick, decisions, out, ready)
    return Windows(decisions, out, ready)


def lob_windows(events: np.ndarray, tick_fixed: int, decision_ns: np.ndarray) -> Windows:
    """The book-snapshot window at each decision time (events with ts_recv <= t applied)."""
    _check_events(events)
    decisions = _check_decisions(decision_ns)
    s = LobState(tick_fixed)
    out = np.zeros((len(decisions), *LOB.shape), np.float32)
    ready = np.zeros(len(decisions), np.bool_)
    stop = _batch_lob(events, *s.arrays, decisions, out, ready)
    if stop < 0:
        s.book.check(f" at record {-1 - stop}")
    return Windows(decisions, out, ready)


def bar_windows(events: np.ndarray, tick_fixed: int, decision_ns: np.ndarray) -> Windows:
    """The minute-bar window at each decision time t: the last 60 bars ending at or
    before t, from `minute_bar_features` (the streaming kernel run over the day)."""
    decisions = _check_decisions(decision_ns)
    bar_end, bar_x = minute_bar_features(events, tick_fixed)
    s = BarRowState()
    out = np.zeros((len(decisions), *BAR.shape), np.float32)
    ready = np.zeros(len(decisions), np.bool_)
    _batch_bars(bar_end, bar_x, decisions, s.meta, s.end, s.rows, out, ready)
    return Windows(decisions, out, ready)


def _check_tick(tick_fixed: int) -> int:
    if int(tick_fixed) <= 0:
        raise ValueError(f"tick_fixed must be a positive fixed-point tick, got {tick_fixed}")
    return int(tick_fixed)


def _check_events(events: np.ndarray) -> None:
    if not isinstance(events, np.ndarray) or events.dtype != MBO_DTYPE or events.ndim != 1:
        got = getattr(events, "dtype", type(events).__name__)
        raise ValueError(f"events must be a 1-d MBO_DTYPE array, got {got}")
    ts = events["ts_recv"]
    if len(ts) > 1 and np.any(ts[1:] < ts[:-1]):
        raise ValueError("events must be in ts_recv order")


def _check_decisions(decision_ns: np.ndarray) -> np.ndarray:
    d = np.asarray(decision_ns)
    if d.ndim != 1 or not np.issubdtype(d.dtype, np.integer):
        raise ValueError(f"decision_ns must be a 1-d integer array, got {d.dtype} {d.shape}")
    if len(d) > 1 and np.any(np.diff(d) < 0):
        raise ValueError("decision_ns must be sorted in time")
    return d.astype(np.int64)
