"""Bars from real ES trades, and continuous series stitched across rolls.

No public file holds two ES contracts side by side around a roll, so the stitching tests
use SYNTHETIC per-contract bars: a seeded random walk of the index with a realistic
calendar-spread premium per contract, on the real Globex session grid. The bar tests use
the real ESH4 file."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from esml.data.continuous import bars_from_trades, continuous_bars, interval_ns
from esml.market.calendar_arrays import is_open_array, trading_dates_of
from esml.market.contracts import Contract
from esml.market.events import FILL, TRADE
from esml.market.instruments import PRICE_SCALE

TICK = PRICE_SCALE // 4  # 0.25 index points
MINUTE = 60 * 10**9


def ct(wall: str) -> int:
    return int(pd.Timestamp(wall, tz="America/Chicago").value)


# --- bars from the real ESH4 trades -----------------------------------------------------


def test_one_minute_bars_of_the_christmas_reopen(es_events: np.ndarray) -> None:
    trades = es_events[es_events["action"] == TRADE]
    bars = bars_from_trades(es_events, "1m")

    # an independent computation: pandas groups the same trades by minute
    frame = pd.DataFrame(
        {
            "ts": trades["ts_event"].astype(np.int64),
            "price": trades["price"],
            "size": trades["size"].astype(np.int64),
        }
    ).sort_values("ts", kind="stable")
    g = frame.groupby(frame["ts"] // MINUTE * MINUTE)
    expected = pd.DataFrame(
        {
            "ts": g.size().index.to_numpy(),
            "open": g["price"].first().to_numpy(),
            "high": g["price"].max().to_numpy(),
            "low": g["price"].min().to_numpy(),
            "close": g["price"].last().to_numpy(),
            "volume": g["size"].sum().to_numpy(),
            "trades": g.size().to_numpy(),
        }
    )
    pd.testing.assert_frame_equal(bars, expected)

    assert len(bars) == 60  # 17:00-18:00 CT, a trade every minute
    assert bars["ts"].iloc[0] == ct("2023-12-25 17:00")
    assert bars["open"].iloc[0] == 4800 * PRICE_SCALE + TICK  # the reopen prints 4800.25
    assert bars["volume"].sum() == int(trades["size"].sum())
    assert bars["trades"].sum() == trades.size
    assert is_open_array(bars["ts"].to_numpy()).all()
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert ((bars[["open", "high", "low", "close"]] % TICK) == 0).all().all()


def test_fills_are_not_counted_twice(es_events: np.ndarray) -> None:
    assert (es_events["action"] == FILL).sum() > 0  # the file has the resting side too
    only_trades = es_events[es_events["action"] == TRADE]
    pd.testing.assert_frame_equal(bars_from_trades(es_events, "1m"),
                                  bars_from_trades(only_trades, "1m"))  # fmt: skip


def test_second_bars_roll_up_into_the_minute_bars(es_events: np.ndarray) -> None:
    seconds = bars_from_trades(es_events, "1s")
    minutes = bars_from_trades(es_events, "1m")
    g = seconds.groupby(seconds["ts"] // MINUTE * MINUTE)
    rolled = pd.DataFrame(
        {
            "ts": g.size().index.to_numpy(),
            "open": g["open"].first().to_numpy(),
            "high": g["high"].max().to_numpy(),
            "low": g["low"].min().to_numpy(),
            "close": g["close"].last().to_numpy(),
            "volume": g["volume"].sum().to_numpy(),
            "trades": g["trades"].sum().to_numpy(),
        }
    )
    pd.testing.assert_frame_equal(minutes, rolled)
    assert len(seconds) > len(minutes)


def test_several_instruments_need_a_choice(es_events: np.ndarray) -> None:
    mixed = es_events.copy()
    mixed["instrument_id"][1::2] = 42  # a second instrument, made up for the test
    with pytest.raises(ValueError, match="2 instruments"):
        bars_from_trades(mixed, "1m")
    only = bars_from_trades(mixed, "1m", instrument_id=42)
    assert (
        only["trades"].sum() == ((mixed["action"] == TRADE) & (mixed["instrument_id"] == 42)).sum()
    )


@pytest.mark.parametrize("interval", ["7s", "1D", "0s", "-1m", "soon", 0])
def test_intervals_must_tile_the_day(interval: str | int) -> None:
    with pytest.raises(ValueError, match="interval"):
        interval_ns(interval)


def test_only_event_arrays_make_bars() -> None:
    with pytest.raises(TypeError, match="MBO_DTYPE"):
        bars_from_trades(np.zeros(3), "1m")


# --- continuous series (SYNTHETIC per-contract bars) -------------------------------------


def synthetic_bars(
    first_day: date, last_day: date, premiums: dict[Contract, float], step_min: int = 1,
    seed: int = 7,
) -> dict[Contract, pd.DataFrame]:  # fmt: skip
    """SYNTHETIC: one seeded random walk of the index (ticks), every open `step_min`-minute
    bar from `first_day`'s session to `last_day`'s; each contract trades it plus its
    premium (points), as the calendar spread makes real quarterlies do."""
    ts = np.arange(ct(f"{first_day} 00:00") - 7 * 60 * MINUTE, ct(f"{last_day} 16:00"),
                   step_min * MINUTE, dtype=np.int64)  # fmt: skip
    ts = ts[is_open_array(ts)]
    rng = np.random.default_rng(seed)
    index = 5100 * PRICE_SCALE + np.cumsum(rng.integers(-3, 4, ts.size)) * TICK
    frames = {}
    for contract, premium in premiums.items():
        close = index + round(premium * 4) * TICK
        open_ = np.r_[close[0], close[:-1]]
        frames[contract] = pd.DataFrame(
            {
                "ts": ts,
                "open": open_,
                "high": np.maximum(open_, close) + TICK,
                "low": np.minimum(open_, close) - TICK,
                "close": close,
                "volume": rng.integers(1, 500, ts.size),
            }
        )
    return frames


ESH4, ESM4, ESU4 = Contract("ES", 2024, 3), Contract("ES", 2024, 6), Contract("ES", 2024, 9)


def test_the_stitch_switches_at_the_roll_date_session() -> None:
    frames = synthetic_bars(date(2024, 3, 5), date(2024, 3, 8), {ESH4: 10.0, ESM4: 62.25})
    out = continuous_bars(frames, method="none")
    days = trading_dates_of(out["ts"].to_numpy())
    before = days < np.datetime64("2024-03-07")
    assert (out["contract"][before] == "ESH4").all() and (out["contract"][~before] == "ESM4").all()
    first_new = out.index[~before][0]
    assert out["ts"][first_new] == ct("2024-03-06 17:00")  # the roll date's session opens
    assert out["roll"].sum() == 1 and out["roll"][first_new]
    assert out["ts"].is_monotonic_increasing and out["ts"].is_unique
    # raw prices jump by the spread at the roll
    jump = out["close"][first_new] - out["close"][first_new - 1]
    assert abs(jump - 52.25 * PRICE_SCALE) < 10 * TICK


def test_difference_adjustment_removes_the_spread_and_keeps_point_moves() -> None:
    frames = synthetic_bars(date(2024, 3, 5), date(2024, 3, 8), {ESH4: 10.0, ESM4: 62.25})
    out = continuous_bars(frames, method="difference")
    raw = continuous_bars(frames, method="none")
    new = out["contract"] == "ESM4"
    gap = 52.25 * PRICE_SCALE
    assert (out.loc[~new, "close"] - raw.loc[~new, "close"] == gap).all()
    assert (out.loc[new, "close"] == raw.loc[new, "close"]).all()  # the newest is untouched
    assert out["close"].dtype == np.int64 and ((out["close"] % TICK) == 0).all()
    assert (out.loc[~new, "adjustment"] == gap).all() and (out.loc[new, "adjustment"] == 0).all()

    # continuity: across the roll the series moves exactly as ESM4 itself moved
    i = out.index[out["roll"]][0]
    esm4 = frames[ESM4].set_index("ts")["close"]
    own_move = esm4[out["ts"][i]] - esm4[out["ts"][i - 1]]
    assert out["close"][i] - out["close"][i - 1] == own_move
    # and every point move before the roll is ESH4's own
    assert (out.loc[~new, "close"].diff().dropna() == raw.loc[~new, "close"].diff().dropna()).all()


def test_ratio_adjustment_keeps_returns() -> None:
    frames = synthetic_bars(date(2024, 3, 5), date(2024, 3, 8), {ESH4: 10.0, ESM4: 62.25})
    out = continuous_bars(frames, method="ratio")
    raw = continuous_bars(frames, method="none")
    new = out["contract"] == "ESM4"
    assert out["close"].dtype == np.float64
    np.testing.assert_allclose(out.loc[new, "close"], raw.loc[new, "close"].astype(float))
    old_returns = raw.loc[~new, "close"].astype(float).pct_change().dropna()
    np.testing.assert_allclose(out.loc[~new, "close"].pct_change().dropna(), old_returns)
    i = out.index[out["roll"]][0]
    ref_ts = out["ts"][i - 1]  # the last ESH4 bar: adjusted, it sits at ESM4's price then
    esm4_then = frames[ESM4].set_index("ts")["close"][ref_ts]
    assert out["close"][i - 1] == pytest.approx(esm4_then, rel=1e-12)


def test_two_rolls_accumulate() -> None:
    premiums = {ESH4: 10.0, ESM4: 62.25, ESU4: 115.5}
    frames = synthetic_bars(date(2024, 3, 5), date(2024, 6, 14), premiums, step_min=60)
    out = continuous_bars(frames)
    raw = continuous_bars(frames, method="none")
    assert out["contract"].unique().tolist() == ["ESH4", "ESM4", "ESU4"]
    assert out["roll"].sum() == 2
    offsets = (out["close"] - raw["close"]).groupby(out["contract"]).unique()
    assert offsets["ESH4"].tolist() == [105.5 * PRICE_SCALE]
    assert offsets["ESM4"].tolist() == [53.25 * PRICE_SCALE]
    assert offsets["ESU4"].tolist() == [0]
    roll_days = trading_dates_of(out.loc[out["roll"], "ts"].to_numpy()).astype(str).tolist()
    assert roll_days == ["2024-03-07", "2024-06-13"]


def test_symbol_keys_resolve_their_decade_from_the_bars() -> None:
    frames = synthetic_bars(date(2024, 3, 5), date(2024, 3, 8), {ESH4: 10.0, ESM4: 62.25})
    by_symbol = {c.symbol: bars for c, bars in frames.items()}
    pd.testing.assert_frame_equal(continuous_bars(by_symbol), continuous_bars(frames))


def test_a_missing_lead_contract_is_refused() -> None:
    frames = synthetic_bars(date(2024, 3, 5), date(2024, 6, 14), {ESH4: 10.0, ESU4: 115.5},
                            step_min=60)  # fmt: skip
    with pytest.raises(ValueError, match=r"no bars for \['ESM4'\]"):
        continuous_bars(frames)


def test_a_roll_needs_the_new_contract_before_its_roll_date() -> None:
    frames = synthetic_bars(date(2024, 3, 5), date(2024, 3, 8), {ESH4: 10.0, ESM4: 62.25})
    late = frames[ESM4][frames[ESM4]["ts"] >= ct("2024-03-06 17:00")]
    with pytest.raises(ValueError, match="cannot measure the ESH4->ESM4 roll"):
        continuous_bars({ESH4: frames[ESH4], ESM4: late})
    assert continuous_bars({ESH4: frames[ESH4], ESM4: late}, method="none")["roll"].sum() == 1


def test_bad_inputs_are_refused() -> None:
    frames = synthetic_bars(date(2024, 3, 5), date(2024, 3, 6), {ESH4: 10.0})
    with pytest.raises(ValueError, match="method"):
        continuous_bars(frames, method="panama")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="several roots"):
        continuous_bars({ESH4: frames[ESH4], Contract("MES", 2024, 3): frames[ESH4]})
    with pytest.raises(ValueError, match="lack columns"):
        continuous_bars({ESH4: frames[ESH4].drop(columns="close")})
    with pytest.raises(ValueError, match="strictly increasing"):
        continuous_bars({ESH4: frames[ESH4].iloc[::-1]})
    empty = continuous_bars({ESH4: frames[ESH4].iloc[:0]})
    assert empty.empty and "adjustment" in empty.columns
