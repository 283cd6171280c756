"""Trading a strategy on 5-minute bars, with fills that never flatter it.

The same decision objects as the engine where they apply to bars: strategies answer
`Signal`s (`esml.alpha.strategy`), the rule strategies are `esml.alpha.rules`' own classes,
the thresholds come from `RiskConfig` / `ExecutionConfig` / `ExitRules` defaults:

- gates: entries only when flat, at a decision bar (08:35-14:30 CT closes), with the side's
  probability >= `RiskConfig.min_confidence` (0.55); no entry for one bar after an exit
  (cooldown); none for the rest of the trade date once its net loss reaches
  `max_daily_loss` ($1,500) or it is `max_drawdown` ($2,000) below the day's peak.
- sizing: one contract (`RiskConfig.max_position` 1 caps Kelly and the tiers; the loss
  streak cap is 1 as well).
- exits: stop R = the decision bar's ATR(14), 8 to 48 ticks (the engine's 8-tick stop is
  for seconds; a bar's stop must sit outside a bar's noise); target `take_profit_r` (4) R;
  breakeven at 0.6 R, trailing at 1 R (0.5 R behind the peak) and 1.5 R (0.25 R); a rule's
  `trail_ticks` trails at that distance instead; the time exit at the 30-minute horizon;
  the flip exit when the strategy says the other side with >= 0.7; a rule's exit signal.

Fills from bars, conservatively: a decision at a bar's close enters at the next bar's
open plus one tick of slippage (market order), and only if that bar starts right after
(no halt between). In each later bar, a stop is checked before the target: when a bar
reaches both, the stop fills. A stop fills at its price minus one tick (it becomes a
market order), or at the open minus one tick if the bar opens through it. A target
(a resting limit) fills only if the bar trades at least one tick through it, at the
target price. Stops move only at a bar's close, from that bar's extreme, and apply from
the next bar. Time, flip and rule exits are market orders at the next open (the time
exit: at the close of the bar where the horizon ends), less one tick. Fees: the
commission per side of `ExecutionConfig` (ES all-in $2.25) on entry and exit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from esml.alpha.bar_features import BAR_NS, DIRECTION_HORIZON_BARS, BarFrame
from esml.alpha.strategy import Signal
from esml.config import ExecutionConfig, RiskConfig
from esml.evaluation.trades import RoundTrip
from esml.execution.orders import OrderRole
from esml.execution.rules import ExitRules
from esml.market.instruments import ES, Instrument
from esml.market.side import Side

MIN_STOP_TICKS, MAX_STOP_TICKS = 8, 48
SLIPPAGE_TICKS = 1

Decide = Callable[[int, int], Signal | None]
"""(bar index, signed position) → the strategy's signal at that bar's close."""


@dataclass(frozen=True)
class BarTradeConfig:
    risk: RiskConfig = field(default_factory=RiskConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    exits: ExitRules = field(default_factory=ExitRules)
    horizon_bars: int = DIRECTION_HORIZON_BARS
    cooldown_bars: int = 1


@dataclass
class _Position:
    side: Side
    entry_bar: int
    entry_price: float
    stop: float
    target: float
    r_points: float
    trail_points: float | None
    peak: float
    exit_bar: int  # the bar at whose close the time exit fires

    def favour(self, price: float) -> float:
        return (price - self.entry_price) * self.side.sign


def simulate(
    frame: BarFrame,
    bars: np.ndarray,
    decide: Decide,
    cfg: BarTradeConfig | None = None,
    instrument: Instrument = ES,
) -> list[RoundTrip]:
    """Round trips of one strategy over the bars `bars` (sorted indices into `frame`; a
    position never outlives them: one still open at the last bar is closed at its close)."""
    cfg = cfg or BarTradeConfig()
    bars = np.asarray(bars, np.int64)
    px = frame.prices
    o, h, lo, c = (px[k].to_numpy() for k in ("open", "high", "low", "close"))
    ts = px["ts"].to_numpy()
    contract = px["contract"].to_numpy()
    atr = frame.column("bar_atr_14_ticks")
    tick = instrument.tick_size
    slip = SLIPPAGE_TICKS * tick
    fee = cfg.execution.commission_per_side
    trips: list[RoundTrip] = []
    pos: _Position | None = None
    pending: Signal | None = None  # an entry decided at the last bar's close
    pending_exit = False
    cooldown_until = -1
    day, day_net, day_peak, halted = None, 0.0, 0.0, False

    def close(i: int, price: float, role: OrderRole, at_ns: int) -> None:
        nonlocal pos, cooldown_until, day_net, day_peak, halted
        assert pos is not None
        gross = pos.favour(price) * instrument.point_value
        trips.append(
            RoundTrip(
                str(contract[pos.entry_bar]),
                pos.side,
                1,
                int(ts[pos.entry_bar]),
                pos.entry_price,
                at_ns,
                price,
                gross,
                2 * fee,
                gross - 2 * fee,
                role,
            )
        )
        day_net += gross - 2 * fee
        day_peak = max(day_peak, day_net)
        halted = (
            halted
            or day_net <= -cfg.risk.max_daily_loss
            or (day_peak - day_net >= cfg.risk.max_drawdown)
        )
        cooldown_until = i + cfg.cooldown_bars
        pos = None

    for k, i in enumerate(bars):
        if frame.day[i] != day:
            day, day_net, day_peak, halted = frame.day[i], 0.0, 0.0, False
        contiguous = k > 0 and ts[i] - ts[bars[k - 1]] == BAR_NS
        if pos is not None and not contiguous:  # a gap (halt, session end): out at the last close
            prev = bars[k - 1]
            close(int(prev), c[prev] - pos.side.sign * slip, OrderRole.EXIT, int(ts[prev]) + BAR_NS)
            pending_exit = False
        # 1. orders decided at the previous close execute at this bar's open
        if pos is not None and pending_exit:
            close(i, o[i] - pos.side.sign * slip, OrderRole.EXIT, int(ts[i]))
        pending_exit = False
        if pending is not None and pos is None and contiguous:
            pos = _open(pending, i, o[i], atr[bars[k - 1]], cfg, tick, slip)
        pending = None
        # 2. the open position against this bar: stop first, then target
        if pos is not None:
            _walk_bar(pos, i, o[i], h[i], lo[i], c[i], tick, slip, cfg.exits, close, int(ts[i]))
        if pos is not None and i >= pos.exit_bar:
            close(i, c[i] - pos.side.sign * slip, OrderRole.EXIT, int(ts[i]) + BAR_NS)
        # 3. the decision at this bar's close
        position = 0 if pos is None else pos.side.sign
        sig = decide(int(i), position) if frame.decision[i] else None
        if sig is None:
            continue
        if pos is not None:
            flip = cfg.exits.flip_exit_confidence
            against = sig.side is not None and sig.side is not pos.side
            if sig.exit_position or (against and flip is not None and sig.confidence >= flip):
                pending_exit = True
        elif (
            sig.side is not None
            and not halted
            and i >= cooldown_until
            and sig.confidence >= cfg.risk.min_confidence
        ):
            pending = sig
    if pos is not None:  # the period ends: flat at the last close
        last = bars[-1]
        close(int(last), c[last] - pos.side.sign * slip, OrderRole.EXIT, int(ts[last]) + BAR_NS)
    return trips


def _open(
    sig: Signal,
    i: int,
    open_px: float,
    atr_ticks: float,
    cfg: BarTradeConfig,
    tick: float,
    slip: float,
) -> _Position:
    side = sig.side
    assert side is not None
    stop_ticks = sig.stop_ticks or int(np.clip(round(atr_ticks), MIN_STOP_TICKS, MAX_STOP_TICKS))
    r = stop_ticks * tick
    entry = open_px + side.sign * slip
    tp_r = cfg.exits.take_profit_r
    target_ticks = sig.target_ticks or (math.ceil(tp_r * stop_ticks) if tp_r else 2 * stop_ticks)
    trail = sig.trail_ticks * tick if sig.trail_ticks else None
    return _Position(
        side,
        i,
        entry,
        entry - side.sign * r,
        entry + side.sign * target_ticks * tick,
        r,
        trail,
        entry,
        i + cfg.horizon_bars - 1,
    )


def _walk_bar(
    pos: _Position,
    i: int,
    o: float,
    h: float,
    lo: float,
    c: float,
    tick: float,
    slip: float,
    rules: ExitRules,
    close: Callable[[int, float, OrderRole, int], None],
    ts: int,
) -> None:
    """Fill the bracket against bar i, stop first; then move the stop from the bar's extreme."""
    s = pos.side.sign
    worst, best = (lo, h) if s > 0 else (h, lo)
    opens_through = (o - pos.stop) * s <= 0 and i > pos.entry_bar
    if opens_through:
        close(i, o - s * slip, OrderRole.STOP, ts)
        return
    if (worst - pos.stop) * s <= 0:
        close(i, pos.stop - s * slip, OrderRole.STOP, ts)
        return
    if (best - pos.target) * s >= tick:
        close(i, pos.target, OrderRole.TARGET, ts)
        return
    pos.peak = best if (best - pos.peak) * s > 0 else pos.peak
    gain = pos.favour(pos.peak)
    level = None
    if pos.trail_points is not None:
        level = pos.peak - s * pos.trail_points
    else:
        r = pos.r_points
        stages = [
            (rules.breakeven_r, None),
            (rules.trail_r, rules.trail_distance_r),
            (rules.tight_trail_r, rules.tight_trail_distance_r),
        ]
        for at_r, dist in stages:
            if at_r is not None and gain >= at_r * r:
                level = (
                    pos.entry_price + s * rules.breakeven_offset_ticks * tick
                    if dist is None
                    else pos.peak - s * dist * r
                )
    if level is not None:
        level = (math.floor(level / tick) if s > 0 else math.ceil(level / tick)) * tick
        if (level - pos.stop) * s > 0:  # a stop only moves toward the market
            pos.stop = level
