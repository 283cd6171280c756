"""One-minute trade bars and their technical indicators, folded in as trades arrive.

Why here and compiled: the streaming features, the batch executor and the bar LSTM's
input (`esml.features.bars`) must all see the same bars, so the kernel builds them per
trade and updates the indicators once per closed bar (O(1) per event, amortised).

A bar covers one UTC clock minute and exists only if something traded in it, as in
Databento's OHLCV-1m: a quiet minute leaves no bar. A bar closes once time reaches the end
of its minute, whether an event or a decision time notices first. Prices are in ticks.
Indicators follow their usual definitions: EMA seeded with the first close; RSI and ATR
Wilder-smoothed over 14 (a plain mean until 14 values exist); Bollinger %b over the last
20 closes (population sd); the volume z-score against the 20 bars before this one only.
"""

from __future__ import annotations

import math

from numba import njit

from esml.features.layout import (
    B_CLOSE,
    B_COLS,
    B_RANGE,
    B_VOL,
    BAR_OUT,
    BAR_RING,
    BARS,
    S_ATR,
    S_BAR_C,
    S_BAR_END_MIN,
    S_BAR_H,
    S_BAR_L,
    S_BAR_MIN,
    S_BAR_N,
    S_BAR_O,
    S_BAR_V,
    S_EMA12,
    S_EMA26,
    S_MACD_SIG,
    S_RANGE_EXP,
    S_RSI_GAIN,
    S_RSI_LOSS,
)

BAR_FEATURE_NAMES: tuple[str, ...] = (
    "bar_ret_1_ticks",
    "bar_ret_5_ticks",
    "bar_ret_15_ticks",
    "bar_rsi_14",
    "bar_macd_ticks",
    "bar_macd_signal_ticks",
    "bar_bollinger_pctb_20",
    "bar_atr_14_ticks",
    "bar_volume_z_20",
    "bar_range_ticks",
    "bar_close_location",
)
BAR_FEATURE_DEFAULTS = (0.0, 0.0, 0.0, 50.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0)
WILDER_N = 14
BOLLINGER_N = 20
VOLUME_Z_N = 20
RANGE_SHORT, RANGE_LONG = 5, 30  # range expansion: mean bar range, recent over longer
_A12, _A26, _A9 = 2.0 / 13.0, 2.0 / 27.0, 2.0 / 10.0


@njit(cache=True)
def bar_on_trade(s, minute, px, size):
    """Fold one trade (price in ticks) into the bar of its minute, opening it if needed."""
    if s[S_BAR_MIN] != minute:
        s[S_BAR_MIN] = minute
        s[S_BAR_O] = px
        s[S_BAR_H] = px
        s[S_BAR_L] = px
        s[S_BAR_C] = px
        s[S_BAR_V] = size
    else:
        s[S_BAR_H] = max(s[S_BAR_H], px)
        s[S_BAR_L] = min(s[S_BAR_L], px)
        s[S_BAR_C] = px
        s[S_BAR_V] += size


@njit(cache=True, inline="always")
def _col(k, col):
    """Offset of column `col` of closed bar number `k` in the bar ring."""
    return BARS + (k % BAR_RING) * B_COLS + col


@njit(cache=True, inline="always")
def _wilder(avg, x, m):
    """The Wilder average after its m-th value x: a plain mean until WILDER_N values."""
    if m <= WILDER_N:
        return avg + (x - avg) / m
    return (avg * (WILDER_N - 1) + x) / WILDER_N


@njit(cache=True)
def bar_close(s):
    """Close the open bar: append it to the ring and update every indicator."""
    n = int(s[S_BAR_N])  # bars closed before this one
    h, lo, c, v = s[S_BAR_H], s[S_BAR_L], s[S_BAR_C], s[S_BAR_V]
    out = BAR_OUT
    if n == 0:
        tr = h - lo
        s[S_EMA12] = c
        s[S_EMA26] = c
        s[S_MACD_SIG] = 0.0
    else:
        prev = s[_col(n - 1, B_CLOSE)]
        tr = max(h - lo, abs(h - prev), abs(lo - prev))
        s[S_EMA12] += _A12 * (c - s[S_EMA12])
        s[S_EMA26] += _A26 * (c - s[S_EMA26])
        s[S_MACD_SIG] += _A9 * (s[S_EMA12] - s[S_EMA26] - s[S_MACD_SIG])
        change = c - prev
        s[S_RSI_GAIN] = _wilder(s[S_RSI_GAIN], max(change, 0.0), n)
        s[S_RSI_LOSS] = _wilder(s[S_RSI_LOSS], max(-change, 0.0), n)
    s[S_ATR] = _wilder(s[S_ATR], tr, n + 1)
    # the volume z-score reads the bars before this one, so score it before appending
    m = min(n, VOLUME_Z_N)
    vz = 0.0
    if m >= 2:
        mean = 0.0
        for k in range(n - m, n):
            mean += s[_col(k, B_VOL)]
        mean /= m
        var = 0.0
        for k in range(n - m, n):
            var += (s[_col(k, B_VOL)] - mean) ** 2
        sd = math.sqrt(var / m)
        vz = (v - mean) / sd if sd > 0 else 0.0
    s[_col(n, B_CLOSE)] = c
    s[_col(n, B_VOL)] = v
    s[_col(n, B_RANGE)] = h - lo
    n += 1
    for j, back in enumerate((1, 5, 15)):
        s[out + j] = c - s[_col(max(n - 1 - back, 0), B_CLOSE)]
    gain, loss = s[S_RSI_GAIN], s[S_RSI_LOSS]
    if loss > 0:
        s[out + 3] = 100.0 - 100.0 / (1.0 + gain / loss)
    else:
        s[out + 3] = 100.0 if gain > 0 else 50.0
    s[out + 4] = s[S_EMA12] - s[S_EMA26]
    s[out + 5] = s[S_MACD_SIG]
    m = min(n, BOLLINGER_N)
    mean = 0.0
    for k in range(n - m, n):
        mean += s[_col(k, B_CLOSE)]
    mean /= m
    var = 0.0
    for k in range(n - m, n):
        var += (s[_col(k, B_CLOSE)] - mean) ** 2
    sd = math.sqrt(var / m)
    s[out + 6] = (c - mean + 2.0 * sd) / (4.0 * sd) if sd > 0 else 0.5
    s[out + 7] = s[S_ATR]
    s[out + 8] = vz
    s[out + 9] = h - lo
    s[out + 10] = 2.0 * (c - lo) / (h - lo) - 1.0 if h > lo else 0.0
    short = 0.0
    for k in range(max(n - RANGE_SHORT, 0), n):
        short += s[_col(k, B_RANGE)]
    long = 0.0
    for k in range(max(n - RANGE_LONG, 0), n):
        long += s[_col(k, B_RANGE)]
    short /= min(n, RANGE_SHORT)
    long /= min(n, RANGE_LONG)
    s[S_RANGE_EXP] = short / long if long > 0 else 1.0
    s[S_BAR_N] = n
    s[S_BAR_END_MIN] = s[S_BAR_MIN] + 1
    s[S_BAR_MIN] = -1.0
