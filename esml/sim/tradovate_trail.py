"""Tradovate's `TrailingStop` in the simulator: a stop that follows the market.

`pegDifference` is the stop's signed distance from the market, as FIX's PegDifference
(tag 211) is added to the price it pegs to: negative for a Sell stop (below the market,
protecting a long), positive for a Buy stop. Each trade moves the stop to the traded
price plus the peg when that is better for the holder, never back; the stop triggers as
a plain stop (a market order once a trade reaches it). A `stopPrice` sent with the order
is where the stop starts (without one it starts at the reference price plus the peg); it
stays there until the market has moved far enough for the peg to pass it.
"""

from __future__ import annotations

from esml.market.instruments import instrument_for


def peg_side_ok(action: str, peg: float) -> bool:
    """A Sell stop pegs below the market, a Buy stop above it."""
    return peg < 0 if action == "Sell" else peg > 0


def trailed_stop(action: str, stop: float, peg: float, trade_px: float, symbol: str) -> float:
    """The stop after a trade at `trade_px`: moved towards the market, never away."""
    pegged = instrument_for(symbol).round_to_tick(trade_px + peg)
    return max(stop, pegged) if action == "Sell" else min(stop, pegged)
