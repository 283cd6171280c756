"""Bars from trades, and one continuous series across contract rolls.

Bars are pandas frames with `ts` (int64 ns, UTC, the bar's start, as in Databento's OHLCV),
`open high low close` (int64 fixed point, `PRICE_SCALE` units) and `volume`; bars exist only
for intervals with trades. A continuous series takes each trade date's bars from the
contract that leads that day (`esml.market.contracts`) and back-adjusts older contracts so
the roll gap (the calendar spread) does not show up as a price move:

- difference: add the later contract's premium to everything before the roll; prices stay
  int64 on the tick grid, and point moves (P&L) are preserved.
- ratio: multiply by the later/older price ratio; returns are preserved, prices become
  float64 (same units) and leave the tick grid.
- none: raw prices, gaps left in (for checks, never for features).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd

from esml.market.calendar_arrays import trading_dates_of
from esml.market.contracts import Contract, contract_schedule, parse_contract
from esml.market.events import MBO_DTYPE, TRADE, UNDEF_PRICE

BAR_COLUMNS = ("ts", "open", "high", "low", "close", "volume")
_PRICES = ("open", "high", "low", "close")
_DAY_NS = 86_400 * 1_000_000_000

AdjustMethod = Literal["difference", "ratio", "none"]


def interval_ns(interval: str | int | pd.Timedelta) -> int:
    """ "1s", "5m", "1h" or ns into ns; it must tile a day, so bars align to the clock."""
    try:
        ns = int(pd.Timedelta(interval).value) if isinstance(interval, str) else int(interval)
    except ValueError as e:
        raise ValueError(f"bar interval {interval!r} is not a duration: {e}") from e
    if ns <= 0 or ns >= _DAY_NS or _DAY_NS % ns:
        raise ValueError(
            f"bar interval {interval!r} must be positive, under a day and divide a day evenly "
            "(1s, 5s, 1m, 5m, 15m, 1h...); daily bars follow trade dates, not clock days"
        )
    return ns


def _empty_bars() -> pd.DataFrame:
    return pd.DataFrame({c: np.zeros(0, dtype=np.int64) for c in (*BAR_COLUMNS, "trades")})


def bars_from_trades(
    events: np.ndarray, interval: str | int | pd.Timedelta, instrument_id: int | None = None
) -> pd.DataFrame:
    """OHLCV bars from the trade events (action 'T') of an MBO event array, by exchange
    time (`ts_event`); also `trades`, the number of trade events in each bar. Fills ('F')
    are the resting side of the same trades and are not counted again."""
    if not isinstance(events, np.ndarray) or events.dtype != MBO_DTYPE:
        raise TypeError("bars_from_trades needs an MBO_DTYPE event array")
    step = interval_ns(interval)
    trades = events[events["action"] == TRADE]
    ids = np.unique(trades["instrument_id"])
    if instrument_id is not None:
        trades = trades[trades["instrument_id"] == instrument_id]
    elif ids.size > 1:
        raise ValueError(f"trades of {ids.size} instruments {ids.tolist()}: pass instrument_id")
    if trades.size == 0:
        return _empty_bars()
    if np.any(trades["price"] == UNDEF_PRICE):
        bad = int(np.flatnonzero(trades["price"] == UNDEF_PRICE)[0])
        raise ValueError(f"trade {bad} (sequence {trades['sequence'][bad]}) has no price")

    trades = trades[np.argsort(trades["ts_event"], kind="stable")]
    ts = trades["ts_event"].astype(np.int64)
    price = trades["price"]
    bar = ts - ts % step
    first = np.flatnonzero(np.r_[True, bar[1:] != bar[:-1]])
    last = np.r_[first[1:], ts.size] - 1
    return pd.DataFrame(
        {
            "ts": bar[first],
            "open": price[first],
            "high": np.maximum.reduceat(price, first),
            "low": np.minimum.reduceat(price, first),
            "close": price[last],
            "volume": np.add.reduceat(trades["size"].astype(np.int64), first),
            "trades": np.diff(np.r_[first, ts.size]).astype(np.int64),
        }
    )


def _check_bars(name: str, bars: pd.DataFrame) -> None:
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"{name} bars lack columns {missing}")
    ts = bars["ts"].to_numpy()
    if ts.dtype != np.int64:
        raise ValueError(f"{name} bars: ts must be int64 ns, got {ts.dtype}")
    if ts.size > 1 and not np.all(ts[1:] > ts[:-1]):
        raise ValueError(f"{name} bars: ts must be strictly increasing")
    if bars[list(_PRICES)].isna().to_numpy().any():
        raise ValueError(f"{name} bars have missing prices")


def _contracts(frames: Mapping[Contract | str, pd.DataFrame]) -> dict[Contract, pd.DataFrame]:
    out: dict[Contract, pd.DataFrame] = {}
    for key, bars in frames.items():
        name = str(key)
        _check_bars(name, bars)
        if isinstance(key, Contract):
            contract = key
        else:  # a one-digit year resolves against the date of the contract's own bars
            first_day = trading_dates_of(bars["ts"].to_numpy()[:1])
            contract = parse_contract(key, first_day[0].item() if first_day.size else None)
        if contract in out:
            raise ValueError(f"bars for {contract} given twice")
        out[contract] = bars
    if len({c.root for c in out}) > 1:
        raise ValueError(f"bars of several roots {sorted({c.root for c in out})}: stitch one")
    return out


def _front_bars(frames: dict[Contract, pd.DataFrame]) -> list[tuple[Contract, pd.DataFrame]]:
    """Each contract's bars on the trade dates it leads, in time order."""
    days = {c: trading_dates_of(b["ts"].to_numpy()) for c, b in frames.items() if len(b)}
    if not days:
        return []
    first: date = min(d.min() for d in days.values()).item()
    last: date = max(d.max() for d in days.values()).item()
    root = next(iter(frames)).root
    schedule = contract_schedule(root, first, last)
    picked = []
    for period in schedule:
        bars = frames.get(period.contract)
        if bars is None or not len(bars):
            continue
        d = days[period.contract]
        keep = (d >= np.datetime64(period.first)) & (d <= np.datetime64(period.last))
        if keep.any():
            picked.append((period.contract, bars.loc[keep]))
    if picked:
        led = [p.contract for p in schedule]
        inner = led[led.index(picked[0][0]) : led.index(picked[-1][0]) + 1]
        absent = [c for c in inner if c not in dict(picked)]
        if absent:
            raise ValueError(
                f"no bars for {[str(c) for c in absent]} while they lead, between bars of "
                f"{picked[0][0]} and {picked[-1][0]}: a stitch across them would be a false roll"
            )
    return picked


def _roll_gap(
    old: Contract, old_bars: pd.DataFrame, new: Contract, new_all: pd.DataFrame
) -> tuple[int | float, int | float]:
    """(new close, old close) at the old contract's last leading bar: both prices at the
    same instant, so their difference is the spread, not a move."""
    at = int(old_bars["ts"].iloc[-1])
    i = int(np.searchsorted(new_all["ts"].to_numpy(), at, side="right")) - 1
    if i < 0:
        raise ValueError(
            f"cannot measure the {old}->{new} roll: {new} has no bar at or before "
            f"{pd.Timestamp(at, tz='UTC')}, {old}'s last bar; include {new} bars from before "
            "its roll date"
        )
    return new_all["close"].iloc[i].item(), old_bars["close"].iloc[-1].item()


def continuous_bars(
    frames: Mapping[Contract | str, pd.DataFrame], method: AdjustMethod = "difference"
) -> pd.DataFrame:
    """One series from per-contract bars (keys `Contract` or symbols such as "ESH4"),
    switching contract at the first bar of each roll date's session.

    Adds `contract` (symbol), `roll` (True on the first bar after each switch) and, unless
    the method is none, `adjustment` (what was added to, or multiplied into, that bar's raw
    prices: subtract or divide it to get back the tradeable price)."""
    if method not in ("difference", "ratio", "none"):
        raise ValueError(f"method must be difference, ratio or none, got {method!r}")
    by_contract = _contracts(frames)
    picked = _front_bars(by_contract)
    if not picked:
        out = _empty_bars()[list(BAR_COLUMNS)].assign(
            contract=pd.Series(dtype=str), roll=pd.Series(dtype=bool)
        )
        return out if method == "none" else out.assign(adjustment=pd.Series(dtype=float))

    gaps = (
        []
        if method == "none"
        else [
            _roll_gap(old, old_bars, new, by_contract[new])
            for (old, old_bars), (new, _) in itertools.pairwise(picked)
        ]
    )
    return _assemble(picked, gaps, method, list(BAR_COLUMNS))


def _assemble(
    picked: list[tuple[Contract, pd.DataFrame]],
    gaps: list[tuple[int | float, int | float]],
    method: AdjustMethod,
    columns: list[str],
) -> pd.DataFrame:
    """Concatenate each contract's leading bars, back-adjusted by the (new, old) price pair
    measured at each roll: walking back from the newest contract, each roll's gap
    accumulates onto older bars."""
    ratio = method == "ratio"
    adjust: list[int | float] = [1.0 if ratio else 0] * len(picked)
    rolls = range(len(picked) - 1) if method != "none" else range(0)
    for k in reversed(rolls):
        new_close, old_close = gaps[k]
        if ratio:
            adjust[k] = adjust[k + 1] * new_close / old_close
        else:
            adjust[k] = adjust[k + 1] + new_close - old_close

    parts = []
    for k, (contract, bars) in enumerate(picked):
        part = bars[columns].copy()
        if ratio:
            part[list(_PRICES)] = part[list(_PRICES)].astype(np.float64) * adjust[k]
        elif method == "difference":
            part[list(_PRICES)] = part[list(_PRICES)] + adjust[k]
        part["contract"] = contract.symbol
        part["roll"] = False
        if k > 0:
            part.iloc[0, part.columns.get_loc("roll")] = True
        if method != "none":
            part["adjustment"] = adjust[k]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def chain_bars(
    frames: Mapping[Contract, pd.DataFrame], method: AdjustMethod = "difference"
) -> pd.DataFrame:
    """One series from per-contract bars that already cover consecutive, non-overlapping
    front-month periods (as Sierra Chart's per-contract exports do: each file runs to its
    expiry and the next starts after it), switching at each contract's first bar.

    With no bar of both contracts at one instant, the roll gap is measured from the old
    contract's last close to the new one's first open; that also removes whatever the
    market moved between those two bars (a weekend, when the switch is on expiry Friday),
    so a label or a return across a roll is not to be trusted: `roll` marks the first bar
    after each switch. Extra columns (bid/ask volume) are kept. Columns as `continuous_bars`."""
    if method not in ("difference", "ratio", "none"):
        raise ValueError(f"method must be difference, ratio or none, got {method!r}")
    picked = sorted(((c, b) for c, b in frames.items() if len(b)), key=lambda cb: cb[0])
    if not picked:
        raise ValueError("no bars to chain")
    if len({c.root for c, _ in picked}) > 1:
        raise ValueError(f"bars of several roots {sorted({c.root for c, _ in picked})}")
    for contract, bars in picked:
        _check_bars(str(contract), bars)
    for (old, a), (new, b) in itertools.pairwise(picked):
        if int(b["ts"].iloc[0]) <= int(a["ts"].iloc[-1]):
            raise ValueError(
                f"{new} starts at {pd.Timestamp(int(b['ts'].iloc[0]), tz='UTC')}, before "
                f"{old} ends: the periods overlap; use continuous_bars for overlapping bars"
            )
    gaps = [(b["open"].iloc[0].item(), a["close"].iloc[-1].item())
            for (_, a), (_, b) in itertools.pairwise(picked)]  # fmt: skip
    columns = list(picked[0][1].columns)
    return _assemble(picked, gaps, method, columns)


def roll_table(chained: pd.DataFrame) -> pd.DataFrame:
    """The rolls of a chained or continuous series: when, from which contract to which,
    and the back-adjustment in force on each side (the gap is their difference)."""
    at = np.flatnonzero(chained["roll"].to_numpy())
    rows = {
        "ts": chained["ts"].to_numpy()[at],
        "from_contract": chained["contract"].to_numpy()[at - 1],
        "to_contract": chained["contract"].to_numpy()[at],
    }
    if "adjustment" in chained:
        adj = chained["adjustment"].to_numpy()
        rows["gap"] = adj[at - 1] - adj[at]
    return pd.DataFrame(rows)
