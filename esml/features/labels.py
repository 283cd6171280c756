"""Training labels. They look ahead by design, so nothing here may feed a feature.

Every label at decision time t is a function of the state at t (the mid, or the touch, as
of the last point at or before t) and of what comes after t: nothing earlier than t is
read, so a label never smuggles in history that a feature already carries.

- `direction_labels`: the mid `horizon` seconds ahead against the mid now, with a dead
  zone of at least half a tick (a one-tick spread flickering open and shut moves the mid
  by half a tick without anyone trading through a price).
- `bracket_labels` / `triple_barrier_labels`: which of a target, a stop and a time limit
  is reached first after t (López de Prado's triple barrier), with the time it happened.
- `deeplob_labels`: Zhang, Zohren & Roberts (2019): the mean of the next k mids against
  the current mid, thresholded at alpha: for comparison with the literature only.
- `regime_labels`: trend / range / none over the next five minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numba import njit

DOWN, FLAT, UP = 0, 1, 2
CLASSES = ("down", "flat", "up")
MIN_DEAD_ZONE_TICKS = 0.5
DIRECTION_HORIZONS_S = (10.0, 20.0, 30.0)

REGIME_NONE, REGIME_TREND, REGIME_RANGE = 0, 1, 2
REGIMES = ("none", "trend", "range")
"""Regime class order; "none" comes first so an exact tie in any argmax resolves to it."""

_NS = 1_000_000_000


def direction_labels(
    ts_ns: np.ndarray,
    mid: np.ndarray,
    horizon_s: float,
    dead_zone_ticks: float,
    tick_size: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Mid-price direction `horizon_s` ahead of each decision time: (labels, valid mask).

    `ts_ns`/`mid` are the decision times and the mid at each. The future mid is the mid
    at the last decision time at or before t + horizon; rows whose horizon runs past the
    data, or across a gap with no decision time near t + horizon, are not valid.
    """
    ts_ns, mid = _check_series(ts_ns, mid, "mid")
    _check_positive(horizon_s=horizon_s, tick_size=tick_size)
    if not dead_zone_ticks >= MIN_DEAD_ZONE_TICKS:
        raise ValueError(
            f"dead_zone_ticks must be at least {MIN_DEAD_ZONE_TICKS} (half a tick: the mid "
            f"moves that much when the spread opens by one tick), got {dead_zone_ticks}"
        )
    n = len(ts_ns)
    y = np.full(n, FLAT, np.int8)
    if n == 0:
        return y, np.zeros(0, bool)
    h = round(horizon_s * _NS)
    j = _last_at_or_before(ts_ns, ts_ns + h)
    # the future point must be close to t + h, not the last row before a long gap
    valid = (ts_ns + h <= ts_ns[-1]) & (ts_ns[j] >= ts_ns + h - h // 4)
    move = (mid[j] - mid) / tick_size
    y[move > dead_zone_ticks] = UP
    y[move < -dead_zone_ticks] = DOWN
    return y, valid


def horizon_direction_labels(
    ts_ns: np.ndarray,
    mid: np.ndarray,
    dead_zone_ticks: float,
    tick_size: float,
    horizons_s: tuple[float, ...] = DIRECTION_HORIZONS_S,
) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """`direction_labels` at each horizon (10 / 20 / 30 s by default): {horizon: (y, valid)}."""
    return {h: direction_labels(ts_ns, mid, h, dead_zone_ticks, tick_size) for h in horizons_s}


@dataclass(frozen=True)
class BarrierLabels:
    """Which barrier a decision's path reached first.

    label: UP when the upper barrier came first, DOWN the lower, FLAT the time limit.
    hit_ts_ns: when the label was decided (the touching event, or t + time limit).
    exit_ticks: the signed move from the reference price to the exit, in ticks.
    valid: a reference price existed at t and the path covers the whole time limit (or a
    barrier was reached before the data ended).
    """

    label: np.ndarray
    hit_ts_ns: np.ndarray
    exit_ticks: np.ndarray
    valid: np.ndarray


def triple_barrier_labels(
    decision_ts_ns: np.ndarray,
    path_ts_ns: np.ndarray,
    price: np.ndarray,
    upper_ticks: float,
    lower_ticks: float,
    time_limit_s: float,
    tick_size: float,
) -> BarrierLabels:
    """López de Prado's triple barrier on one price path (mid or trade prices).

    The reference is the path's last price at or before t; the barriers are the reference
    plus `upper_ticks` and minus `lower_ticks`; a barrier counts when a path point after t
    (and no later than t + time limit) reaches or crosses it.
    """
    _check_positive(
        upper_ticks=upper_ticks, lower_ticks=lower_ticks, time_limit_s=time_limit_s,
        tick_size=tick_size,
    )  # fmt: skip
    path_ts, price = _check_series(path_ts_ns, price, "price")
    return _barriers(
        decision_ts_ns, path_ts, price, price, upper_ticks, lower_ticks, time_limit_s,
        tick_size, exit_at_upper=None, exit_at_lower=None,
    )  # fmt: skip


def bracket_labels(
    decision_ts_ns: np.ndarray,
    path_ts_ns: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    side: Literal["long", "short"],
    stop_ticks: float,
    target_ticks: float,
    time_limit_s: float,
    tick_size: float,
) -> BarrierLabels:
    """The outcome of a bracket entered at t, judged on the touch (L1) path after t.

    A long buys at the ask at t. Its target (a sell limit at entry + target) counts only
    once the bid reaches it, i.e. the market traded through it, so queue position never
    flatters the label; its stop counts once the bid falls to the stop, and the stop-market
    exit sells at that bid (a gap through the stop costs more than the stop). A short is
    the mirror: sells at the bid, watches the ask. At the time limit the position is
    closed at the touch. `label` is the side the price went: a long's target is UP, its
    stop DOWN; a short's target is DOWN, its stop UP; `exit_ticks` is the bracket's P&L.
    """
    _check_positive(
        stop_ticks=stop_ticks, target_ticks=target_ticks, time_limit_s=time_limit_s,
        tick_size=tick_size,
    )  # fmt: skip
    path_ts, bid = _check_series(path_ts_ns, bid, "bid")
    _, ask = _check_series(path_ts_ns, ask, "ask")
    empty = int(np.count_nonzero((bid <= 0) | (ask <= 0) | (ask <= bid)))
    if empty:
        raise ValueError(
            f"the touch path has {empty} rows with an empty side or a locked or crossed book; "
            f"drop them before labelling brackets"
        )
    if side == "long":
        # entry at the ask; target and stop both watch the bid (where a long exits)
        return _barriers(
            decision_ts_ns, path_ts, ask, bid, target_ticks, stop_ticks, time_limit_s,
            tick_size, exit_at_upper=target_ticks, exit_at_lower=None,
        )  # fmt: skip
    if side == "short":
        out = _barriers(
            decision_ts_ns, path_ts, bid, ask, stop_ticks, target_ticks, time_limit_s,
            tick_size, exit_at_upper=None, exit_at_lower=-target_ticks,
        )  # fmt: skip
        # a short earns what the price loses
        return BarrierLabels(out.label, out.hit_ts_ns, -out.exit_ticks, out.valid)
    raise ValueError(f"side must be 'long' or 'short', got {side!r}")


def deeplob_labels(mid: np.ndarray, k: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """DeepLOB's label (Zhang, Zohren & Roberts 2019), against the current mid: l_t =
    (m+(t) - p_t) / p_t with m+(t) the mean of the next k mids (events, not seconds); UP if
    l_t > alpha, DOWN if l_t < -alpha, else FLAT. Returns (labels, valid)."""
    mid = np.asarray(mid, dtype=np.float64)
    if mid.ndim != 1 or not np.all(np.isfinite(mid)) or np.any(mid <= 0):
        raise ValueError("mid must be a 1-d array of finite positive prices")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer number of events, got {k!r}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    n = len(mid)
    y = np.full(n, FLAT, np.int8)
    valid = np.arange(n) + k < n
    if not valid.any():
        return y, valid
    # sums of the next k mids from a cumulative sum of offsets (keeps float error small)
    c = np.concatenate(([0.0], np.cumsum(mid - mid[0])))
    i = np.flatnonzero(valid)
    change = np.zeros(n)
    m_plus = (c[i + k + 1] - c[i + 1]) / k + mid[0]
    change[i] = (m_plus - mid[i]) / mid[i]
    y[change > alpha] = UP
    y[change < -alpha] = DOWN
    return y, valid


def regime_labels(
    ts_ns: np.ndarray,
    mid: np.ndarray,
    tick_size: float,
    *,
    horizon_s: float = 300.0,
    min_path_ticks: float = 8.0,
    trend_efficiency: float = 0.3,
    range_efficiency: float = 0.1,
    range_sigma: float = 1.25,
) -> tuple[np.ndarray, np.ndarray]:
    """Trend / range / none over the next `horizon_s` of the decision grid: (labels, valid).

    Over the window [t, t + horizon] of mid samples: path = the sum of absolute moves,
    net = |last - first|, efficiency = net / path (Kaufman), range = max - min, and
    sigma = sqrt(sum of squared moves), the window's own realised volatility. A random
    walk's expected range is about 1.6 sigma and its efficiency shrinks like 1/sqrt(moves).
      - none: path < `min_path_ticks` (too quiet to call either way);
      - trend: efficiency >= `trend_efficiency` (most of the movement went one way);
      - range: efficiency <= `range_efficiency` and range <= `range_sigma` * sigma (price
        kept returning inside a band tighter than a random walk of the same activity);
      - none: everything else.
    Validity follows `direction_labels`: the grid must reach t + horizon without a gap.
    """
    ts_ns, mid = _check_series(ts_ns, mid, "mid")
    _check_positive(tick_size=tick_size, horizon_s=horizon_s, range_sigma=range_sigma)
    if not 0 <= range_efficiency < trend_efficiency <= 1:
        raise ValueError(
            "need 0 <= range_efficiency < trend_efficiency <= 1, got "
            f"{range_efficiency} and {trend_efficiency}"
        )
    if not min_path_ticks >= 0:
        raise ValueError(f"min_path_ticks must be >= 0, got {min_path_ticks}")
    n = len(ts_ns)
    y = np.full(n, REGIME_NONE, np.int8)
    if n == 0:
        return y, np.zeros(0, bool)
    h = round(horizon_s * _NS)
    j = _last_at_or_before(ts_ns, ts_ns + h)
    valid = (ts_ns + h <= ts_ns[-1]) & (ts_ns[j] >= ts_ns + h - h // 4)
    step = np.diff(mid, prepend=mid[0]) / tick_size  # step[k] = mid[k] - mid[k-1], in ticks
    path_c, sq_c = np.cumsum(np.abs(step)), np.cumsum(step * step)
    idx = np.arange(n)
    path = path_c[j] - path_c[idx]
    sigma = np.sqrt(sq_c[j] - sq_c[idx])
    net = np.abs(mid[j] - mid) / tick_size
    high = _window_extreme(mid, idx, j, np.maximum)
    rng = (high - _window_extreme(mid, idx, j, np.minimum)) / tick_size
    active = path >= max(min_path_ticks, 1e-12)
    eff = np.divide(net, path, out=np.zeros(n), where=path > 0)
    y[active & (eff >= trend_efficiency)] = REGIME_TREND
    y[active & (eff <= range_efficiency) & (rng <= range_sigma * sigma)] = REGIME_RANGE
    return y, valid


# ---------------------------------------------------------------------------- internals


def _barriers(
    decision_ts_ns: np.ndarray,
    path_ts: np.ndarray,
    reference: np.ndarray,
    watched: np.ndarray,
    upper_ticks: float,
    lower_ticks: float,
    time_limit_s: float,
    tick_size: float,
    *,
    exit_at_upper: float | None,
    exit_at_lower: float | None,
) -> BarrierLabels:
    """First touch of `watched` (after t) at ref + upper or ref - lower, ref = `reference`
    at the last point at or before t; `exit_at_*` fixes the exit of a limit-order barrier."""
    t = np.asarray(decision_ts_ns)
    if t.ndim != 1 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"decision_ts_ns must be a 1-d integer array, got {t.dtype} {t.shape}")
    t = t.astype(np.int64, copy=False)
    if len(t) > 1 and np.any(np.diff(t) < 0):
        raise ValueError("decision_ts_ns must be sorted in time")
    if len(path_ts) == 0:
        raise ValueError("the price path is empty")
    n, m = len(path_ts), len(t)
    limit = round(time_limit_s * _NS)
    first_after = np.searchsorted(path_ts, t, side="right")  # path points strictly after t
    last_in = np.searchsorted(path_ts, t + limit, side="right") - 1
    has_ref = first_after > 0
    # no reference price at t: NaN barriers, which no comparison ever reaches
    ref = np.where(has_ref, reference[np.maximum(first_after - 1, 0)], np.nan)
    j_up = _first_at_or_above(watched, first_after, ref + upper_ticks * tick_size)
    j_down = _first_at_or_above(-watched, first_after, lower_ticks * tick_size - ref)
    up_hit = j_up <= last_in
    down_hit = (j_down <= last_in) & ~(up_hit & (j_up < j_down))
    up_hit &= ~down_hit  # one event reaching both counts as the lower barrier
    label = np.full(m, FLAT, np.int8)
    label[up_hit], label[down_hit] = UP, DOWN
    decided = up_hit | down_hit
    hit = np.where(up_hit, j_up, np.where(down_hit, j_down, last_in))
    hit_ts = np.where(decided, path_ts[np.clip(hit, 0, n - 1)], t + limit)
    exit_ticks = (watched[np.clip(hit, 0, n - 1)] - ref) / tick_size
    if exit_at_upper is not None:
        exit_ticks[up_hit] = exit_at_upper
    if exit_at_lower is not None:
        exit_ticks[down_hit] = exit_at_lower
    valid = has_ref & ((path_ts[-1] >= t + limit) | decided)
    exit_ticks[~valid] = np.nan
    return BarrierLabels(label, hit_ts.astype(np.int64), exit_ticks, valid)


@njit(cache=True)
def _first_at_or_above(values, starts, levels):  # pragma: no cover - compiled
    """For each query q: the first index j >= starts[q] with values[j] >= levels[q], else
    len(values). `starts` non-decreasing. One right-to-left sweep keeps a monotonic stack
    (the chain of successive new maxima from the current index), so each query is a binary
    search: O((n + queries) log n) time, O(n) memory."""
    n = values.shape[0]
    out = np.full(starts.shape[0], n, np.int64)
    stack = np.empty(max(n, 1), np.int64)
    top = 0
    q = starts.shape[0] - 1
    while q >= 0 and starts[q] >= n:
        q -= 1
    for s in range(n - 1, -1, -1):
        v = values[s]
        while top > 0 and values[stack[top - 1]] <= v:
            top -= 1
        stack[top] = s
        top += 1
        while q >= 0 and starts[q] == s:
            level = levels[q]
            # values along the stack fall from the bottom (farthest) to the top (nearest)
            if values[stack[0]] >= level:
                lo, hi = 0, top - 1
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if values[stack[mid]] >= level:
                        lo = mid
                    else:
                        hi = mid - 1
                out[q] = stack[lo]
            q -= 1
    return out


def _window_extreme(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, op: np.ufunc) -> np.ndarray:
    """op (maximum / minimum) of values[lo[i] .. hi[i]] inclusive, from a sparse table:
    O(n log n) to build, O(1) per window."""
    table = [values]
    width = 1
    while 2 * width <= len(values):
        prev = table[-1]
        table.append(op(prev[:-width], prev[width:]))
        width *= 2
    length = hi - lo + 1
    level = np.floor(np.log2(np.maximum(length, 1))).astype(np.int64)
    out = np.empty(len(lo))
    for k in np.unique(level):
        rows = level == k
        block = table[k]
        out[rows] = op(block[lo[rows]], block[hi[rows] - (1 << k) + 1])
    return out


def _last_at_or_before(ts_ns: np.ndarray, when: np.ndarray) -> np.ndarray:
    return np.maximum(np.searchsorted(ts_ns, when, side="right") - 1, 0)


def _check_series(ts_ns: np.ndarray, values: np.ndarray, what: str) -> tuple[np.ndarray, ...]:
    ts = np.asarray(ts_ns)
    v = np.asarray(values, dtype=np.float64)
    if ts.ndim != 1 or not np.issubdtype(ts.dtype, np.integer):
        raise ValueError(f"timestamps must be a 1-d integer array, got {ts.dtype} {ts.shape}")
    if v.shape != ts.shape:
        raise ValueError(f"{what} has shape {v.shape}, its timestamps {ts.shape}")
    if len(ts) > 1 and np.any(np.diff(ts) < 0):
        raise ValueError(f"the {what} timestamps must be sorted in time")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{what} has {int(np.count_nonzero(~np.isfinite(v)))} non-finite values")
    return ts.astype(np.int64, copy=False), v


def _check_positive(**values: float) -> None:
    for name, v in values.items():
        if not v > 0:
            raise ValueError(f"{name} must be positive, got {v}")
