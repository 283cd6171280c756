"""Trade statistics after costs, each with the uncertainty or the convention it needs to be
read honestly: a win rate comes with its Wilson interval, ratios say what they do with a
zero denominator."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from rich.table import Table

from esml.evaluation.trades import RoundTrip
from esml.market.calendar_arrays import trading_dates_of

TRADING_DAYS_PER_YEAR = 252


@dataclass(frozen=True)
class Metrics:
    trades: int
    wins: int  # net P&L > 0 after costs
    losses: int  # net P&L < 0 after costs
    win_rate: float | None  # None without trades
    win_rate_ci95: tuple[float, float]  # Wilson
    profit_factor: float  # gross won / gross lost, net of costs; inf with no loss
    net_pnl: float
    gross_pnl: float
    costs: float
    avg_trade: float | None  # net per round trip
    max_drawdown: float  # dollars, on closed-trade net equity starting at 0
    return_over_max_drawdown: float | None
    sharpe: float | None  # daily net P&L, annualised by sqrt(252)
    days: int  # trading days in the daily P&L series
    time_in_market: float | None  # fraction of the period with a position open

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion: unlike p ± z·se it stays inside
    [0, 1] and is honest for the small trade counts a strategy is judged on."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if z <= 0:
        raise ValueError(f"z must be positive, got {z}")
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (max(0.0, center - half), min(1.0, center + half))


def trading_days(ts_ns: Sequence[int] | np.ndarray) -> np.ndarray:
    """The CME trade date of each timestamp (datetime64[D]), holidays included."""
    return trading_dates_of(np.asarray(ts_ns, dtype=np.int64))


def profit_factor(net_pnls: Sequence[float]) -> float:
    """Gross won over gross lost: inf when something was won and nothing lost, 0 when
    nothing was won (no trades included)."""
    won = sum(p for p in net_pnls if p > 0)
    lost = -sum(p for p in net_pnls if p < 0)
    if lost == 0:
        return math.inf if won > 0 else 0.0
    return won / lost


def max_drawdown(net_pnls: Sequence[float]) -> float:
    """Largest fall from a peak of the cumulative P&L, the peak starting at 0."""
    equity = np.concatenate([[0.0], np.cumsum(np.asarray(net_pnls, dtype=float))])
    return float(np.max(np.maximum.accumulate(equity) - equity))


def daily_sharpe(daily_pnl: Sequence[float]) -> float | None:
    """Mean over standard deviation (ddof 1) of daily dollar P&L, times sqrt(252).
    None when it is undefined: fewer than 2 days, or no variation at all."""
    x = np.asarray(daily_pnl, dtype=float)
    if x.size < 2:
        return None
    sd = float(np.std(x, ddof=1))
    if sd == 0:
        return None
    return float(np.mean(x)) / sd * math.sqrt(TRADING_DAYS_PER_YEAR)


def compute_metrics(
    round_trips: Sequence[RoundTrip],
    equity_curve: tuple[np.ndarray, np.ndarray] | None = None,
) -> Metrics:
    """Metrics of closed round trips.

    Without `equity_curve` the daily P&L covers only days on which a trade closed, and
    time in market is measured from the first entry to the last exit. An equity curve
    (ts_ns, net equity in $) supplies every day it spans, flat days included, and the
    period for time in market.
    """
    rts = sorted(round_trips, key=lambda rt: rt.exit_ts_ns)
    nets = [rt.net_pnl for rt in rts]
    n = len(rts)
    wins = sum(1 for p in nets if p > 0)
    net = float(sum(nets))
    mdd = max_drawdown(nets)
    if equity_curve is None:
        daily = _daily_from_trades(rts)
        period = (rts[0].entry_ts_ns, rts[-1].exit_ts_ns) if rts else None
    else:
        ts, equity = _checked_curve(equity_curve)
        daily = _daily_from_curve(ts, equity)
        period = (int(ts[0]), int(ts[-1]))
    return Metrics(
        trades=n,
        wins=wins,
        losses=sum(1 for p in nets if p < 0),
        win_rate=wins / n if n else None,
        win_rate_ci95=wilson_interval(wins, n),
        profit_factor=profit_factor(nets),
        net_pnl=net,
        gross_pnl=float(sum(rt.gross_pnl for rt in rts)),
        costs=float(sum(rt.costs for rt in rts)),
        avg_trade=net / n if n else None,
        max_drawdown=mdd,
        return_over_max_drawdown=_return_over_drawdown(net, mdd),
        sharpe=daily_sharpe(daily),
        days=len(daily),
        time_in_market=_time_in_market(rts, period),
    )


def _return_over_drawdown(net: float, mdd: float) -> float | None:
    if mdd > 0:
        return net / mdd
    return math.inf if net > 0 else None


def _daily_from_trades(rts: Sequence[RoundTrip]) -> list[float]:
    """Net P&L per trading day on which a round trip closed."""
    if not rts:
        return []
    days = trading_days([rt.exit_ts_ns for rt in rts])
    uniq, which = np.unique(days, return_inverse=True)
    return np.bincount(which, weights=[rt.net_pnl for rt in rts], minlength=uniq.size).tolist()


def _checked_curve(curve: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ts = np.asarray(curve[0], dtype=np.int64)
    equity = np.asarray(curve[1], dtype=float)
    if ts.ndim != 1 or ts.shape != equity.shape or ts.size == 0:
        raise ValueError("equity curve needs two 1-D arrays of the same non-zero length")
    if np.any(np.diff(ts) < 0):
        raise ValueError("equity curve timestamps must not go backwards")
    if not np.all(np.isfinite(equity)):
        raise ValueError("equity curve values must be finite")
    return ts, equity


def _daily_from_curve(ts: np.ndarray, equity: np.ndarray) -> list[float]:
    """Each trading day's change of the curve's last value, from its first value."""
    days = trading_days(ts).astype(np.int64)
    last_of_day = np.flatnonzero(np.diff(days, append=days[-1] + 1))
    closes = np.concatenate([[equity[0]], equity[last_of_day]])
    return np.diff(closes).tolist()


def _time_in_market(rts: Sequence[RoundTrip], period: tuple[int, int] | None) -> float | None:
    """Union of the holding intervals over the period, so overlapping positions in two
    contract months are not counted twice."""
    if period is None or period[1] <= period[0]:
        return None
    held = 0
    end = period[0]
    for start, stop in sorted((rt.entry_ts_ns, rt.exit_ts_ns) for rt in rts):
        start, stop = max(start, end), min(stop, period[1])
        if stop > start:
            held += stop - start
            end = stop
    return held / (period[1] - period[0])


def metric_rows(m: Metrics) -> list[tuple[str, str]]:
    """The metrics as labelled display strings, shared by the terminal and HTML reports."""
    lo, hi = m.win_rate_ci95
    win_rate = "n/a" if m.win_rate is None else f"{m.win_rate:.1%}"
    return [
        ("Round trips", f"{m.trades:,}"),
        ("Wins / losses", f"{m.wins:,} / {m.losses:,}"),
        ("Win rate (Wilson 95%)", f"{win_rate} ({lo:.1%}–{hi:.1%})"),
        ("Profit factor", _ratio(m.profit_factor)),
        ("Net P&L (after costs)", usd(m.net_pnl)),
        ("Gross P&L", usd(m.gross_pnl)),
        ("Costs", usd(m.costs)),
        ("Average trade (net)", "n/a" if m.avg_trade is None else usd(m.avg_trade)),
        ("Max drawdown (closed trades)", usd(m.max_drawdown)),
        ("Return / max drawdown", _ratio(m.return_over_max_drawdown)),
        (f"Sharpe (daily, {m.days} days, ×√252)", _ratio(m.sharpe)),
        ("Time in market", "n/a" if m.time_in_market is None else f"{m.time_in_market:.1%}"),
    ]


def metrics_table(metrics: Metrics, title: str) -> Table:
    table = Table(title=title)
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    for label, value in metric_rows(metrics):
        table.add_row(label, value)
    return table


def usd(x: float) -> str:
    """Dollars as people write them: -$1,234.50."""
    return f"-${-x:,.2f}" if x < 0 else f"${x:,.2f}"


def _ratio(x: float | None) -> str:
    if x is None:
        return "n/a"
    return "∞" if math.isinf(x) else f"{x:.2f}"
