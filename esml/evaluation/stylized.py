"""Stylized facts of a market, measured the same way on any esml event array.

Why: the market simulator is only worth its name if what it emits looks like real order
flow in the ways that matter for short-horizon trading. These statistics put real CME ES,
LOBSTER's NASDAQ stocks and the generator side by side: how often the spread is one tick,
how fat-tailed and how clustered mid-price returns are, how big trades are, and how much of
the mid-price move order-flow imbalance explains (Cont, Kukanov and Stoikov 2014).

Everything starts from the touch after each exchange packet (a record with F_LAST), read
off esml's own book, from the open (the first trade after any snapshot) on; states with an
empty, locked or crossed side are left out. Time-based statistics sample the last mid at or
before each point of a regular grid, so no value ever looks ahead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esml.data.book import replay_l1, snapshot_end
from esml.market.events import F_LAST, TRADE, is_synthetic

NS = 1_000_000_000
TRADE_SIZE_QUANTILES = (0.25, 0.5, 0.75, 0.9, 0.99)


@dataclass(frozen=True)
class TopOfBook:
    """The touch after each packet: state n holds from ts_ns[n] until ts_ns[n + 1]
    (the last until end_ns). Prices fixed point, sizes in lots or shares."""

    ts_ns: np.ndarray
    bid_px: np.ndarray
    bid_sz: np.ndarray
    ask_px: np.ndarray
    ask_sz: np.ndarray
    tick_fixed: int
    end_ns: int

    def __len__(self) -> int:
        return len(self.ts_ns)

    @property
    def valid(self) -> np.ndarray:
        """Both sides present and not locked or crossed."""
        return (self.bid_sz > 0) & (self.ask_sz > 0) & (self.bid_px < self.ask_px)

    @property
    def mid(self) -> np.ndarray:
        return (self.bid_px + self.ask_px) / 2.0


def top_of_book(events: np.ndarray, tick_fixed: int) -> TopOfBook:
    """The touch after every packet from the open on, replayed through esml's L3 book."""
    l1 = replay_l1(events, tick_fixed)
    start = snapshot_end(events)
    trades = np.flatnonzero(events["action"][start:] == TRADE)
    if not len(trades):
        raise ValueError("no trade after the snapshot: the market never opened")
    first = start + int(trades[0])
    ends = np.flatnonzero((events["flags"][first:] & F_LAST) != 0) + first
    if not (events["flags"][start:] & F_LAST).any():
        ends = np.arange(first, len(events))  # a source without packets: every record
    ts = events["ts_recv"].astype(np.int64)
    return TopOfBook(
        ts_ns=ts[ends],
        bid_px=l1[ends, 0],
        bid_sz=l1[ends, 1],
        ask_px=l1[ends, 2],
        ask_sz=l1[ends, 3],
        tick_fixed=tick_fixed,
        end_ns=int(ts[-1]),
    )


def spread_share(tob: TopOfBook, ticks: int = 1) -> float:
    """Time-weighted share of valid-book time with a spread of exactly `ticks` ticks."""
    dur = np.diff(np.append(tob.ts_ns, tob.end_ns)).astype(np.float64)
    ok = tob.valid
    total = dur[ok].sum()
    if total <= 0:
        return float("nan")
    at = ok & (tob.ask_px - tob.bid_px == ticks * tob.tick_fixed)
    return float(dur[at].sum() / total)


def _grid(tob: TopOfBook, interval_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid times from the first valid state on, and the index of the valid state in force."""
    valid = np.flatnonzero(tob.valid)
    if not len(valid):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    t0 = -(-int(tob.ts_ns[valid[0]]) // interval_ns) * interval_ns
    grid = np.arange(t0, tob.end_ns + 1, interval_ns, dtype=np.int64)
    state = valid[np.searchsorted(tob.ts_ns[valid], grid, side="right") - 1]
    return grid, state


def mid_log_returns(tob: TopOfBook, interval_s: float) -> np.ndarray:
    """Log returns of the mid sampled every `interval_s` (previous-tick sampling)."""
    _, state = _grid(tob, round(interval_s * NS))
    return np.diff(np.log(tob.mid[state]))


def excess_kurtosis(x: np.ndarray) -> float:
    """Fisher's excess kurtosis (0 for a normal law); NaN without variance."""
    d = np.asarray(x, np.float64) - np.mean(x) if len(x) else np.zeros(0)
    m2 = np.mean(d**2) if len(d) else 0.0
    if m2 <= 0:
        return float("nan")
    return float(np.mean(d**4) / m2**2 - 3.0)


def autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelation at lags 1..max_lag (NaN where undefined)."""
    d = np.asarray(x, np.float64) - (np.mean(x) if len(x) else 0.0)
    denom = np.dot(d, d)
    out = np.full(max_lag, np.nan)
    if denom <= 0:
        return out
    for lag in range(1, min(max_lag, len(d) - 1) + 1):
        out[lag - 1] = np.dot(d[:-lag], d[lag:]) / denom
    return out


def trade_sizes(events: np.ndarray) -> np.ndarray:
    """Size of each trade after any snapshot: one aggressor's fills at one price at one
    instant count once (NASDAQ prints each resting order hit; CME one print per level)."""
    ev = events[snapshot_end(events) :]
    t = ev[ev["action"] == TRADE]
    if not len(t):
        return np.zeros(0, np.int64)
    new = np.ones(len(t), np.bool_)
    new[1:] = (
        (t["ts_event"][1:] != t["ts_event"][:-1])
        | (t["side"][1:] != t["side"][:-1])
        | (t["price"][1:] != t["price"][:-1])
    )
    group = np.cumsum(new) - 1
    return np.bincount(group, weights=t["size"].astype(np.float64)).astype(np.int64)


def order_flow_imbalance(tob: TopOfBook) -> tuple[np.ndarray, np.ndarray]:
    """Cont-Kukanov-Stoikov order-flow imbalance e_n of each valid touch change, and its
    time: bid-queue growth or a better bid adds, ask-queue growth or a better ask subtracts."""
    v = np.flatnonzero(tob.valid)
    if len(v) < 2:
        return np.zeros(0), np.zeros(0, np.int64)
    bp, bs, ap, asz = tob.bid_px[v], tob.bid_sz[v], tob.ask_px[v], tob.ask_sz[v]
    e = (
        (bp[1:] >= bp[:-1]) * bs[1:]
        - (bp[1:] <= bp[:-1]) * bs[:-1]
        - (ap[1:] <= ap[:-1]) * asz[1:]
        + (ap[1:] >= ap[:-1]) * asz[:-1]
    )
    return e.astype(np.float64), tob.ts_ns[v[1:]]


@dataclass(frozen=True)
class OfiFit:
    """ΔP (ticks) = alpha + beta * OFI over fixed intervals, by ordinary least squares."""

    r2: float  # pooled over every interval
    beta: float  # ticks per lot (or share) of imbalance
    intervals: int
    window_r2: float  # mean R² of separate fits per window (CKS: half-hour windows)
    windows: int


def _r2_beta(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy = np.dot(dx, dx), np.dot(dy, dy)
    if sxx <= 0 or syy <= 0:
        return float("nan"), float("nan")
    sxy = np.dot(dx, dy)
    return float(sxy**2 / (sxx * syy)), float(sxy / sxx)


def ofi_fit(tob: TopOfBook, interval_s: float = 10.0, window_s: float = 1800.0) -> OfiFit:
    """Regress each interval's mid change on its order-flow imbalance (both from L1)."""
    grid, state = _grid(tob, round(interval_s * NS))
    e, t = order_flow_imbalance(tob)
    if len(grid) < 3:
        return OfiFit(float("nan"), float("nan"), 0, float("nan"), 0)
    cum = np.concatenate([[0.0], np.cumsum(e)])
    at = cum[np.searchsorted(t, grid, side="right")]
    ofi = np.diff(at)
    dp = np.diff(tob.mid[state]) / tob.tick_fixed
    r2, beta = _r2_beta(ofi, dp)
    per = max(2, round(window_s / interval_s))
    # consecutive windows of `per` intervals; a last one at least half full counts too
    window_r2 = [
        _r2_beta(ofi[k : k + per], dp[k : k + per])[0]
        for k in range(0, len(ofi), per)
        if len(ofi) - k >= per // 2
    ]
    window_r2 = [r for r in window_r2 if np.isfinite(r)]
    return OfiFit(
        r2=r2,
        beta=beta,
        intervals=len(ofi),
        window_r2=float(np.mean(window_r2)) if window_r2 else float("nan"),
        windows=len(window_r2),
    )


@dataclass(frozen=True)
class StylizedFacts:
    label: str
    synthetic: bool
    events: int
    hours: float  # from the open to the last event
    one_tick_spread_share: float
    kurtosis_1s: float
    kurtosis_1min: float
    abs_acf_1s: tuple[float, ...]  # lags 1..k
    abs_acf_1min: tuple[float, ...]
    trades: int
    trade_size_quantiles: tuple[float, ...]  # at TRADE_SIZE_QUANTILES
    trade_size_mean: float
    share_size_one: float
    ofi: OfiFit


def stylized_facts(
    events: np.ndarray, tick_fixed: int, label: str, acf_lags: int = 10
) -> StylizedFacts:
    tob = top_of_book(events, tick_fixed)
    r1s, r1m = mid_log_returns(tob, 1.0), mid_log_returns(tob, 60.0)
    sizes = trade_sizes(events)
    has = len(sizes) > 0
    return StylizedFacts(
        label=label,
        synthetic=is_synthetic(events),
        events=len(events),
        hours=(tob.end_ns - int(tob.ts_ns[0])) / 3600 / NS if len(tob) else 0.0,
        one_tick_spread_share=spread_share(tob),
        kurtosis_1s=excess_kurtosis(r1s),
        kurtosis_1min=excess_kurtosis(r1m),
        abs_acf_1s=tuple(autocorrelation(np.abs(r1s), acf_lags).tolist()),
        abs_acf_1min=tuple(autocorrelation(np.abs(r1m), acf_lags).tolist()),
        trades=len(sizes),
        trade_size_quantiles=tuple(
            np.quantile(sizes, TRADE_SIZE_QUANTILES).tolist()
            if has
            else [float("nan")] * len(TRADE_SIZE_QUANTILES)
        ),
        trade_size_mean=float(sizes.mean()) if has else float("nan"),
        share_size_one=float((sizes == 1).mean()) if has else float("nan"),
        ofi=ofi_fit(tob),
    )
