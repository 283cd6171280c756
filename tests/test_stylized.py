"""Stylized facts: each statistic on hand-built books and series with known answers, then on
the real ES file and the synthetic generator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from esml.data.book import snapshot_end
from esml.evaluation.stylized import (
    TopOfBook,
    autocorrelation,
    excess_kurtosis,
    mid_log_returns,
    ofi_fit,
    order_flow_imbalance,
    spread_share,
    stylized_facts,
    top_of_book,
    trade_sizes,
)
from esml.market.events import (
    ADD,
    ASK,
    BID,
    CANCEL,
    CLEAR,
    F_LAST,
    F_SNAPSHOT,
    FILL,
    NO_SIDE,
    TRADE,
    UNDEF_PRICE,
    empty_events,
)
from esml.market.instruments import ES
from esml.sim.synthetic import generate_session

S = 1_000_000_000
TICK = ES.tick_fixed
PX = 4800 * 1_000_000_000  # 4800.00


def _events(rows: list[tuple[float, int, int, int, int, int, int]]) -> np.ndarray:
    """(seconds, action, side, price, size, order id, flags) per record."""
    ev = empty_events(len(rows))
    for i, (t, action, side, price, size, oid, flags) in enumerate(rows):
        ev[i]["ts_event"] = ev[i]["ts_recv"] = round(t * S)
        ev[i]["action"], ev[i]["side"], ev[i]["price"] = action, side, price
        ev[i]["size"], ev[i]["order_id"], ev[i]["flags"] = size, oid, flags
    return ev


def _opening(t_open: float) -> list[tuple[float, int, int, int, int, int, int]]:
    """A snapshot three ticks wide, then the opening: an ask at one tick and a trade."""
    return [
        (0, CLEAR, NO_SIDE, UNDEF_PRICE, 0, 0, F_SNAPSHOT),
        (0, ADD, BID, PX, 5, 1, F_SNAPSHOT),
        (0, ADD, ASK, PX + 3 * TICK, 5, 2, F_SNAPSHOT | F_LAST),
        (t_open, ADD, ASK, PX + TICK, 6, 3, F_LAST),
        (t_open, TRADE, BID, PX + TICK, 1, 0, 0),
        (t_open, FILL, ASK, PX + TICK, 1, 3, 0),
        (t_open, CANCEL, ASK, PX + TICK, 1, 3, F_LAST),
    ]


def test_a_constant_one_tick_spread_counts_from_the_open_on() -> None:
    rows = _opening(100.0)  # 100 s three ticks wide before the open must not count
    for k in range(50):
        rows.append((101.0 + k, ADD, BID, PX, 1, 10 + k, F_LAST))
    tob = top_of_book(_events(rows), TICK)
    assert tob.ts_ns[0] == 100 * S and len(tob) == 51
    assert spread_share(tob) == 1.0
    assert spread_share(tob, ticks=3) == 0.0


def test_spread_share_is_time_weighted() -> None:
    rows = _opening(0.0)
    rows += [
        (0.0, ADD, ASK, PX + 2 * TICK, 4, 20, F_LAST),
        (30.0, CANCEL, ASK, PX + TICK, 5, 3, F_LAST),  # one tick for 30 s, then two
        (40.0, ADD, ASK, PX + TICK, 2, 21, F_LAST),  # ... for 10 s
    ]
    tob = top_of_book(_events(rows), TICK)
    assert spread_share(tob) == pytest.approx(0.75)
    assert spread_share(tob, ticks=2) == pytest.approx(0.25)


def test_excess_kurtosis_known_laws() -> None:
    assert excess_kurtosis(np.array([1.0, -1.0] * 50)) == pytest.approx(-2.0)
    rng = np.random.default_rng(0)
    assert abs(excess_kurtosis(rng.standard_normal(400_000))) < 0.05
    assert excess_kurtosis(rng.laplace(size=400_000)) == pytest.approx(3.0, abs=0.15)
    assert math.isnan(excess_kurtosis(np.ones(10)))


def test_autocorrelation_of_an_alternating_series() -> None:
    n = 100
    acf = autocorrelation(np.array([1.0, -1.0] * (n // 2)), 3)
    assert acf == pytest.approx([-(n - 1) / n, (n - 2) / n, -(n - 3) / n])
    assert np.isnan(autocorrelation(np.ones(5), 2)).all()


def _tob(ts_s: list[float], bid: list[int], bsz: list[int], ask: list[int], asz: list[int],
         end_s: float, tick: int = 1) -> TopOfBook:  # fmt: skip
    return TopOfBook(
        ts_ns=np.round(np.array(ts_s) * S).astype(np.int64),
        bid_px=np.array(bid, np.int64),
        bid_sz=np.array(bsz, np.int64),
        ask_px=np.array(ask, np.int64),
        ask_sz=np.array(asz, np.int64),
        tick_fixed=tick,
        end_ns=round(end_s * S),
    )


def test_mid_returns_sample_the_last_mid_on_a_grid() -> None:
    tob = _tob([0.0, 1.5, 2.5], [99, 100, 98], [1, 1, 1], [101, 102, 100], [1, 1, 1], 4.0)
    r = mid_log_returns(tob, 1.0)  # grid 0..4 s: mids 100, 100, 101, 99, 99
    assert r == pytest.approx([0.0, math.log(101 / 100), math.log(99 / 101), 0.0])


def test_trade_sizes_merge_one_aggressors_prints_at_one_price_and_instant() -> None:
    ev = _events([
        (0, CLEAR, NO_SIDE, UNDEF_PRICE, 0, 0, F_SNAPSHOT | F_LAST),
        (1, TRADE, BID, PX, 2, 0, 0),
        (1, TRADE, BID, PX, 3, 0, F_LAST),  # the same buyer, two resting orders: one trade
        (1, TRADE, ASK, PX, 1, 0, F_LAST),
        (1, TRADE, BID, PX + TICK, 1, 0, F_LAST),
        (2, TRADE, BID, PX + TICK, 4, 0, F_LAST),
    ])  # fmt: skip
    assert trade_sizes(ev).tolist() == [5, 1, 1, 4]


def test_order_flow_imbalance_follows_cont_kukanov_stoikov() -> None:
    tob = _tob(
        [0, 1, 2, 3, 4, 5],
        bid=[100, 100, 100, 101, 100, 100],
        bsz=[10, 15, 15, 3, 20, 20],
        ask=[102, 102, 102, 102, 102, 103],
        asz=[10, 10, 12, 12, 12, 9],
        end_s=6,
    )
    e, t = order_flow_imbalance(tob)
    # queue +5 at the bid; ask queue +2; a better bid of 3; bid back down, its 3 gone;
    # ask up a tick: its 12 lots gone from the selling side
    assert e.tolist() == [5, -2, 3, -3, 12]
    assert t.tolist() == [1 * S, 2 * S, 3 * S, 4 * S, 5 * S]


def _shifting_book(moves_per_interval: list[int], queue_bumps: list[int]) -> TopOfBook:
    """Per 10-s interval: both sides move a tick together per move (OFI ±20 lots, mid ±1
    tick), then the bid queue may grow without the mid moving."""
    ts, bid, bsz, ask, asz = [0.0], [100], [10], [102], [10]
    for k, (moves, bump) in enumerate(zip(moves_per_interval, queue_bumps, strict=True)):
        step = 1 if moves > 0 else -1
        for m in range(abs(moves)):
            ts.append(10 * k + 1 + m)
            bid.append(bid[-1] + step)
            ask.append(ask[-1] + step)
            bsz.append(10)
            asz.append(10)
        if bump:
            ts.append(10 * k + 9)
            bid.append(bid[-1])
            ask.append(ask[-1])
            bsz.append(bsz[-1] + bump)
            asz.append(asz[-1])
    return _tob(ts, bid, bsz, ask, asz, end_s=10 * len(moves_per_interval))


def _reference_intervals(tob: TopOfBook, seconds: int) -> tuple[np.ndarray, np.ndarray]:
    """Slow, obvious: OFI summed per interval (t in (10k, 10k+10]), mid change per interval."""
    n = round(tob.end_ns / S) // seconds
    ofi = np.zeros(n)
    for i in range(1, len(tob)):
        b0, b1 = int(tob.bid_px[i - 1]), int(tob.bid_px[i])
        a0, a1 = int(tob.ask_px[i - 1]), int(tob.ask_px[i])
        e = tob.bid_sz[i] if b1 >= b0 else 0
        e -= tob.bid_sz[i - 1] if b1 <= b0 else 0
        e -= tob.ask_sz[i] if a1 <= a0 else 0
        e += tob.ask_sz[i - 1] if a1 >= a0 else 0
        ofi[math.ceil(tob.ts_ns[i] / S / seconds) - 1] += e

    def mid_at(t_s: int) -> float:
        i = max(k for k in range(len(tob)) if tob.ts_ns[k] <= t_s * S)
        return (tob.bid_px[i] + tob.ask_px[i]) / 2

    dp = np.array([mid_at(seconds * (k + 1)) - mid_at(seconds * k) for k in range(n)])
    return ofi, dp / tob.tick_fixed


MOVES = [1, 0, 2, -1, -3, 1, 0, 2, -2, 1, 3, -1]


def test_ofi_explains_the_mid_exactly_when_the_book_only_shifts() -> None:
    fit = ofi_fit(_shifting_book(MOVES, [0] * len(MOVES)), interval_s=10, window_s=40)
    assert fit.intervals == len(MOVES)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.beta == pytest.approx(1 / 20)  # one tick per 20 lots of imbalance
    assert fit.window_r2 == pytest.approx(1.0) and fit.windows == 3


def test_ofi_r2_against_an_independent_least_squares() -> None:
    tob = _shifting_book(MOVES, [0, 30, 0, 0, 25, 0, 40, 0, 0, 0, 15, 10])
    ofi, dp = _reference_intervals(tob, 10)
    assert not np.array_equal(ofi, 20.0 * np.array(MOVES))  # the bumps do count
    slope, intercept = np.polyfit(ofi, dp, 1)
    r2 = 1 - np.sum((dp - slope * ofi - intercept) ** 2) / np.sum((dp - dp.mean()) ** 2)
    fit = ofi_fit(tob, interval_s=10)
    assert 0.5 < r2 < 0.95
    assert fit.r2 == pytest.approx(r2) and fit.beta == pytest.approx(slope)


def test_real_es_shows_the_stylized_facts(es_events: np.ndarray) -> None:
    f = stylized_facts(es_events, ES.tick_fixed, "ES")
    assert not f.synthetic
    assert f.hours == pytest.approx(1.0, abs=0.01)  # the 23:00-24:00 UTC reopen
    assert 0.85 < f.one_tick_spread_share <= 1.0  # ES is a one-tick market
    assert f.kurtosis_1s > f.kurtosis_1min > 0  # fat tails that thin with the horizon
    assert f.abs_acf_1s[0] > 0.05  # volatility clusters
    assert 0.4 < f.share_size_one < 0.8 and f.trade_size_quantiles[1] == 1.0
    assert 0.2 < f.ofi.r2 < 0.9 and f.ofi.intervals > 300
    after = es_events[snapshot_end(es_events) :]
    traded = after["size"][after["action"] == TRADE].sum()
    assert trade_sizes(es_events).sum() == traded  # merging never loses volume
    assert f.trades <= (after["action"] == TRADE).sum()


def test_the_generator_is_measured_and_labelled_synthetic() -> None:
    f = stylized_facts(generate_session(7, duration_s=900), ES.tick_fixed, "generator")
    assert f.synthetic
    assert 0.0 <= f.one_tick_spread_share <= 1.0 and f.trades > 0
    assert np.isfinite(f.kurtosis_1s) and np.isfinite(f.ofi.r2)


def test_departures_are_read_off_the_numbers(es_events: np.ndarray) -> None:
    from dataclasses import replace

    from esml.evaluation.market_validation import departures

    es = stylized_facts(es_events, ES.tick_fixed, "ES")
    sim = replace(es, label="sim", one_tick_spread_share=es.one_tick_spread_share * 0.5,
                  kurtosis_1s=es.kurtosis_1s * 1.1)  # fmt: skip
    lob = replace(es, label="lobster", kurtosis_1s=es.kurtosis_1s * 2)
    gaps = {g.statistic: g for g in departures(sim, es, [lob, es])}
    spread = gaps["share of time at a one-tick spread"]
    assert spread.departs and spread.sentence().count("50% below real ES") == 1
    assert spread.lobster_range is None  # a tick-relative share: no unit-free comparison
    kurt = gaps["excess kurtosis of 1-s mid returns"]
    assert not kurt.departs and "close to real ES (+10%)" in kurt.sentence()
    assert kurt.lobster_range == pytest.approx((es.kurtosis_1s, 2 * es.kurtosis_1s))
    assert "inside the LOBSTER stocks' range" in kurt.sentence()
    assert not gaps["median trade size"].departs
