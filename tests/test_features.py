"""Streaming features: live chunks and the batch executor agree, nothing looks ahead,
normalisers see only the past, and every family gives the known answer on hand-built
events."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esml.config import load_config
from esml.data.book import BookState, l2_levels
from esml.decision.proposal import AccountState
from esml.engine.engine import Engine
from esml.features.bars import minute_bar_features
from esml.features.batch import batch_features, decision_ok, next_decision
from esml.features.clock import TIME_FEATURE_NAMES, time_features
from esml.features.kernel import (
    END,
    PER_EVENT_FEATURES,
    advance_exchange,
    idle_exchange,
    touch,
)
from esml.features.labels import DOWN, FLAT, UP, direction_labels
from esml.features.streaming import (
    DEPTH_LEVELS,
    FEATURE_NAMES,
    FEATURE_VERSION,
    N_FEATURES,
    RATE_EPS,
    FeatureState,
    compute,
    ready,
)
from esml.features.technicals import BAR_FEATURE_NAMES
from esml.journal.sqlite import SQLiteJournal
from esml.market import calendar
from esml.market.events import ADD, ASK, BID, CANCEL, TRADE, empty_events
from esml.market.instruments import ES
from esml.sim.synthetic import DEFAULT_START_NS, generate_session

NS = 1_000_000_000
DAY_NS = 86_400 * NS
T0 = DEFAULT_START_NS  # Monday 2024-03-04 08:30 CT, the RTH open
TICK = ES.tick_fixed


def col(name: str) -> int:
    return FEATURE_NAMES.index(name)


@pytest.fixture(scope="module")
def synthetic_day() -> np.ndarray:
    return generate_session(7, duration_s=1800)  # synthetic


class RecordingModel:
    """Never confident, so the engine only observes; it keeps every row it was shown."""

    name = "recorder"
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.tile([0.3, 0.4, 0.3], (len(x), 1))

    def predict_one(self, row: np.ndarray) -> tuple[float, float, float]:
        self.rows.append(row.copy())
        return 0.3, 0.4, 0.3


def _engine_rows(events: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    model = RecordingModel()
    engine = Engine(load_config(), model, SQLiteJournal(":memory:"), AccountState("2023-12-26"))
    for k in range(0, len(events), chunk):
        engine.on_events(events[k : k + chunk])
    ts = np.array([t for t, _ in engine.stats.mids], np.int64)
    return ts, np.array(model.rows, np.float32).reshape(-1, N_FEATURES)


def _kernel_rows(
    events: np.ndarray, chunks: list[int], skip_every: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The engine's loop over live chunks: advance to each decision time, compute when
    ready. Every `skip_every`-th decision is skipped, as an engine holding a position does."""
    book, fs, exchange = BookState.new(TICK), FeatureState(), idle_exchange()
    depth, row = np.zeros((DEPTH_LEVELS, 4), np.int64), np.zeros(N_FEATURES, np.float32)
    until, seen, ts_out, rows = None, 0, [], []
    start = 0
    for size in chunks:
        ev = events[start : start + size]
        start += size
        if until is None:
            until = (int(ev["ts_recv"][0]) // NS) * NS
        i = 0
        while i < len(ev):
            i, why = advance_exchange(ev, i, *book.arrays, book.o_seq, fs.s, fs.ring,
                                      PER_EVENT_FEATURES, until, *exchange)  # fmt: skip
            if why == END:
                break
            bp, bs, ap, as_ = touch(book.meta, book.bid_qty, book.ask_qty)
            if ready(fs.s, until) and decision_ok(bp, bs, ap, as_):
                seen += 1
                if not (skip_every and seen % skip_every == 0):
                    l2_levels(book.meta, book.bid_qty, book.ask_qty, depth)
                    compute(fs.s, fs.ring, until, bp, ap, bs, as_, depth, TICK, row)
                    ts_out.append(until)
                    rows.append(row.copy())
            until = int(next_decision(until, int(ev["ts_recv"][i]), NS))
    return np.array(ts_out, np.int64), np.array(rows, np.float32).reshape(-1, N_FEATURES)


def _random_chunks(n: int, seed: int) -> list[int]:
    sizes = np.random.default_rng(seed).integers(1, 5_000, size=n // 1_000 + 2)
    sizes[-1] = n  # whatever is left
    return [int(s) for s in sizes]


# --- the two executors ---------------------------------------------------------------------


def test_the_feature_set_is_large_versioned_and_named_once() -> None:
    assert N_FEATURES == len(FEATURE_NAMES) >= 60
    assert len(set(FEATURE_NAMES)) == N_FEATURES
    assert FEATURE_VERSION != "skeleton-1"
    assert "pso" in FEATURE_NAMES and set(BAR_FEATURE_NAMES) <= set(FEATURE_NAMES)
    assert set(TIME_FEATURE_NAMES) <= set(FEATURE_NAMES)


@pytest.mark.parametrize("chunk", [1_000, 7_919])
def test_live_chunks_equal_the_batch_executor_on_real_es(es_events, chunk) -> None:
    frame = batch_features(es_events, ES.tick_fixed, 1.0)
    ts, rows = _engine_rows(es_events, chunk)
    assert len(frame.ts_ns) > 3_000
    np.testing.assert_array_equal(ts, frame.ts_ns)
    np.testing.assert_allclose(rows, frame.X, rtol=0, atol=1e-9)


@pytest.mark.parametrize("source", ["real", "synthetic"])
def test_kernel_fed_in_random_chunks_equals_the_batch_executor(
    source, es_events, synthetic_day
) -> None:
    events = es_events if source == "real" else synthetic_day
    frame = batch_features(events, TICK, 1.0)
    ts, rows = _kernel_rows(events, _random_chunks(len(events), 11))
    assert len(ts) > 1_000
    np.testing.assert_array_equal(ts, frame.ts_ns)
    np.testing.assert_allclose(rows, frame.X, rtol=0, atol=1e-9)


def test_skipped_decisions_do_not_change_later_features(synthetic_day) -> None:
    """Reading the features rolls the clock; skipping reads must not matter."""
    frame = batch_features(synthetic_day, TICK, 1.0)
    ts, rows = _kernel_rows(synthetic_day, [len(synthetic_day)], skip_every=3)
    keep = np.isin(frame.ts_ns, ts)
    assert keep.sum() == len(ts) and (~keep).sum() > 300
    np.testing.assert_allclose(rows, frame.X[keep], rtol=0, atol=1e-9)


def test_features_are_finite_and_informative(es_events, synthetic_day) -> None:
    """Each feature varies across a real ETH hour and a synthetic RTH half hour."""
    x = np.vstack([batch_features(e, TICK, 1.0).X for e in (es_events, synthetic_day)])
    assert np.all(np.isfinite(x))
    constant = [n for n, s in zip(FEATURE_NAMES, x.std(0), strict=True) if s == 0]
    assert not constant
    for name in ("imbalance_l1", "imbalance_l5", "imbalance_l10", "pso", "vpin"):
        assert np.all(np.abs(x[:, col(name)]) <= 1), name
    assert np.all((x[:, col("session_range_pos")] >= 0) & (x[:, col("session_range_pos")] <= 1))
    assert np.all((x[:, col("bar_rsi_14")] >= 0) & (x[:, col("bar_rsi_14")] <= 100))


def test_bad_input_is_refused(es_events) -> None:
    with pytest.raises(ValueError, match="MBO_DTYPE"):
        batch_features(np.zeros(3), TICK, 1.0)
    with pytest.raises(ValueError, match="ts_recv order"):
        batch_features(es_events[::-1].copy(), TICK, 1.0)
    with pytest.raises(ValueError, match="tick_fixed"):
        batch_features(es_events[:10], 0, 1.0)
    with pytest.raises(ValueError, match="interval_s"):
        batch_features(es_events[:10], TICK, 0.0)
    fs = FeatureState()
    with pytest.raises(ValueError, match="DEPTH_LEVELS"):
        compute(fs.s, fs.ring, 0, 1, 2, 1, 1, np.zeros((5, 4), np.int64), TICK,
                np.zeros(N_FEATURES, np.float32))  # fmt: skip


# --- no look-ahead -------------------------------------------------------------------------


def _other_future(ev: np.ndarray, t_cut: int, kind: str, seed: int) -> np.ndarray:
    """`ev` with every event after t_cut dropped, replaced, or rewritten."""
    past = ev[ev["ts_recv"] <= t_cut]
    future = ev[ev["ts_recv"] > t_cut].copy()
    rng = np.random.default_rng(seed)
    if kind == "drop":
        return past.copy()
    if kind == "trades":  # trades leave the book alone: any price and size will do
        t = future["action"] == TRADE
        future["size"][t] = rng.integers(1, 500, t.sum())
        future["price"][t] += rng.integers(-40, 40, t.sum()) * TICK
        future["side"][t] = np.where(rng.random(t.sum()) < 0.5, BID, ASK)
    else:  # another market altogether after t_cut (fresh order ids)
        other = generate_session(seed % 5 + 100, start_ns=t_cut + 1, duration_s=240)
        other["order_id"] += 10**15
        future = other
    return np.concatenate([past, future])


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cut=st.floats(0.1, 0.95),
    kind=st.sampled_from(["drop", "trades", "market"]),
    seed=st.integers(0, 10_000),
)
def test_no_look_ahead_changing_later_events_changes_no_earlier_feature(
    synthetic_day, cut, kind, seed
) -> None:
    ev = synthetic_day
    t_cut = int(ev["ts_recv"][int(cut * (len(ev) - 1))])
    altered = _other_future(ev, t_cut, kind, seed)
    base, other = batch_features(ev, TICK, 1.0), batch_features(altered, TICK, 1.0)
    keep = base.ts_ns < t_cut  # at t_cut itself a live engine could still be waiting
    m = int(keep.sum())
    np.testing.assert_array_equal(other.ts_ns[:m], base.ts_ns[keep])
    np.testing.assert_array_equal(other.X[:m], base.X[keep])
    base_end, base_bars = minute_bar_features(ev, TICK)
    other_end, other_bars = minute_bar_features(altered, TICK)
    known = int((base_end <= t_cut).sum())  # the event at t_cut closes every earlier bar
    assert len(other_end) >= known
    np.testing.assert_array_equal(other_end[:known], base_end[:known])
    np.testing.assert_array_equal(other_bars[:known], base_bars[:known])


# --- normalisation from the past only ------------------------------------------------------


def test_time_of_day_volume_norm_comes_from_past_days_only() -> None:
    day1 = generate_session(21, duration_s=1500)  # synthetic, Monday from 08:30 CT
    day2 = generate_session(22, start_ns=T0 + DAY_NS, duration_s=1500)  # Tuesday
    day2["order_id"] += 10**15
    both = np.concatenate([day1, day2])
    alone = batch_features(day2, TICK, 1.0)
    after = batch_features(both, TICK, 1.0)
    on_day2 = np.isin(after.ts_ns, alone.ts_ns)
    assert on_day2.sum() == len(alone.ts_ns)  # day 1 only adds earlier decisions
    # the norm of 08:30-08:45 CT: Monday's volume over its watched span, nothing of Tuesday's
    tr = day1[(day1["action"] == TRADE) & (day1["ts_recv"] < T0 + 900 * NS)]
    secs = tr["ts_recv"] // NS
    norm = tr["size"].sum() / (secs.max() - secs.min() + 1)
    trades2 = day2[day2["action"] == TRADE]
    j = col("volume_tod_ratio")
    checked = 0
    for t, x in zip(after.ts_ns[on_day2], after.X[on_day2], strict=True):
        if t >= T0 + DAY_NS + 900 * NS:
            break
        lo = (t // NS - 300) * NS  # the last 300 s up to t
        v = trades2["size"][(trades2["ts_recv"] >= lo) & (trades2["ts_recv"] <= t)].sum()
        expect = math.log((v / 300 + RATE_EPS) / (norm + RATE_EPS))
        assert x[j] == pytest.approx(expect, abs=1e-5)
        checked += 1
    assert checked > 500
    # with no past day the same rows fall back to Tuesday's own past: a different value
    assert not np.allclose(after.X[on_day2, j], alone.X[:, j])


# --- each family on hand-built events ------------------------------------------------------


def _events(rows: list[tuple]) -> np.ndarray:
    """(seconds after T0, action, side, price in points, size, order id) -> MBO events."""
    ev = empty_events(len(rows))
    for k, (t, action, side, px, size, oid) in enumerate(rows):
        ts = T0 + round(t * NS)
        ev[k]["ts_recv"] = ts
        ev[k]["ts_event"] = ts
        ev[k]["action"] = action
        ev[k]["side"] = side
        ev[k]["price"] = round(px * 1e9)
        ev[k]["size"] = size
        ev[k]["order_id"] = oid
    return ev


def _row_at(events: np.ndarray, seconds: int) -> np.ndarray:
    frame = batch_features(events, TICK, 1.0)
    hit = np.flatnonzero(frame.ts_ns == T0 + seconds * NS)
    assert len(hit) == 1, "no decision at that time"
    return frame.X[hit[0]].astype(np.float64)


QUOTES = [  # a two-tick market, built at t=0, then a hand-made quote sequence at t=100
    (0.0, ADD, BID, 4800.00, 10, 1),
    (0.0, ADD, ASK, 4800.50, 10, 2),
    (100.1, ADD, BID, 4800.00, 5, 3),  # bid 15: OFI +15 - 10 = +5
    (100.2, ADD, ASK, 4800.50, 3, 4),  # ask 13: OFI -13 + 10 = -3
    (100.3, CANCEL, BID, 4800.00, 10, 1),  # bid 5: OFI -10, depletes the bid by 10
    (100.4, ADD, BID, 4800.25, 8, 5),  # the bid improves: OFI +8
    (100.5, TRADE, BID, 4800.50, 3, 0),  # a buyer lifts 3: the book follows with a cancel
    (100.55, CANCEL, ASK, 4800.50, 3, 4),  # ask 10: OFI -10 + 13 = +3, depletes the ask by 3
    (100.6, TRADE, ASK, 4800.25, 1, 0),  # a seller hits 1
    (100.65, CANCEL, BID, 4800.25, 1, 5),  # bid 7: OFI +7 - 8 = -1, depletes the bid by 1
    (101.5, ADD, BID, 4795.00, 1, 6),  # far from the touch: OFI 0
    (102.5, ADD, ASK, 4805.00, 1, 7),
]


def test_order_flow_and_trade_flow_on_a_hand_made_quote_sequence() -> None:
    x = _row_at(_events(QUOTES), 101)
    for h in ("1s", "5s", "10s", "30s", "60s"):  # the book built at t=0 is outside them all
        assert x[col(f"ofi_{h}")] == 5 - 3 - 10 + 8 + 3 - 1
    assert x[col("trade_flow_imbalance_100t")] == pytest.approx((3 - 1) / 4)
    assert x[col("trade_flow_imbalance_300s")] == pytest.approx((3 - 1) / 4)
    assert x[col("queue_depletion_bid_10s")] == pytest.approx((10 + 1) / 10)
    assert x[col("queue_depletion_ask_10s")] == pytest.approx(3 / 10)
    assert x[col("queue_depletion_imbalance_10s")] == pytest.approx((1.1 - 0.3) / 1.4)
    assert x[col("avg_trade_size_60s")] == 2.0
    assert x[col("trades_per_s_60s")] == pytest.approx(2 / 60)
    assert x[col("vpin")] == 0.0  # no 100-lot bucket has filled yet
    # PSO: the first trade has no range (0), the second sits at its low (-1), EMA(25)
    assert x[col("pso")] == pytest.approx(-2 / 26)


def test_book_features_on_a_hand_made_book() -> None:
    x = _row_at(_events(QUOTES), 101)  # bids 7 @ 4800.25, 5 @ 4800.00; ask 10 @ 4800.50
    assert x[col("spread_ticks")] == 1.0
    assert x[col("imbalance_l1")] == pytest.approx((7 - 10) / 17)
    assert x[col("imbalance_l3")] == pytest.approx((12 - 10) / 22)
    assert x[col("imbalance_l10")] == pytest.approx((12 - 10) / 22)
    micro = (19201 * 10 + 19202 * 7) / 17  # ticks
    assert x[col("microprice_offset_ticks")] == pytest.approx(micro - 19201.5, abs=1e-5)
    assert x[col("depth_slope_bid")] == pytest.approx(math.log1p(12 / 2))  # 12 lots, 2 ticks
    assert x[col("depth_slope_ask")] == pytest.approx(math.log1p(10 / 1))
    assert x[col("depth_l10_log")] == pytest.approx(math.log1p(22))


def test_session_context_on_hand_made_trades() -> None:
    x = _row_at(_events(QUOTES), 101)
    vwap = (19202 * 3 + 19201 * 1) / 4  # ticks
    assert x[col("vwap_dist_ticks")] == pytest.approx(19201.5 - vwap)
    # the mid went from 19201 (t=0) to 19201.5 (t=100.4): now at the session high
    assert x[col("session_range_ticks")] == 0.5
    assert x[col("session_range_pos")] == 1.0
    assert x[col("dist_session_high_ticks")] == 0.0
    assert x[col("dist_session_low_ticks")] == 0.5


def test_price_dynamics_on_a_hand_made_mid_path() -> None:
    """The mid steps up one tick at 70.5 s, 80.5 s and 90.5 s after a flat minute."""
    rows = [
        (0.0, ADD, BID, 4800.00, 10, 1),
        (0.0, ADD, ASK, 4800.25, 10, 2),  # mid 19200.5 ticks
        (70.5, ADD, ASK, 4800.50, 10, 3),
        (70.5, CANCEL, ASK, 4800.25, 10, 2),
        (70.5, ADD, BID, 4800.25, 10, 4),  # mid 19201.5
        (80.5, ADD, ASK, 4800.75, 10, 5),
        (80.5, CANCEL, ASK, 4800.50, 10, 3),
        (80.5, ADD, BID, 4800.50, 10, 6),  # mid 19202.5
        (90.5, ADD, ASK, 4801.00, 10, 7),
        (90.5, CANCEL, ASK, 4800.75, 10, 5),
        (90.5, ADD, BID, 4800.75, 10, 8),  # mid 19203.5
        (100.5, ADD, BID, 4790.00, 1, 9),
    ]
    x = _row_at(_events(rows), 100)
    assert x[col("ret_1s_ticks")] == 0.0
    assert x[col("ret_15s_ticks")] == 1.0
    assert x[col("ret_30s_ticks")] == 3.0
    assert x[col("ret_60s_ticks")] == 3.0
    assert x[col("ret_300s_ticks")] == 3.0  # before the data the price had no history
    assert x[col("realized_vol_30s_ticks")] == pytest.approx(math.sqrt(3))
    assert x[col("realized_vol_300s_ticks")] == pytest.approx(math.sqrt(3))
    assert x[col("efficiency_60s")] == 1.0
    # the 60 s mean holds 30 s at +0, then 10 s each at +1, +2, +3: a mean of +1
    assert x[col("momentum_60s_ticks")] == pytest.approx(2.0)
    assert x[col("accel_5s_ticks")] == -1.0  # the last 5 s flat, the 5 s before +1
    assert x[col("ret_5t_ticks")] == 0.0  # no trade yet: no trade-count history


def test_pso_is_the_500_trade_stochastic_smoothed_by_an_ema_of_25() -> None:
    rng = np.random.default_rng(3)
    px = np.concatenate([[4830.0], 4800.0 + 0.25 * rng.integers(-8, 9, 1_200)])
    px[700:760] += np.linspace(0, 10, 60)  # a run up
    px = np.round(px * 4) / 4
    rows = [(0.0, ADD, BID, 4700.00, 10, 1), (0.0, ADD, ASK, 4900.00, 10, 2)]
    rows += [(60 + 0.05 * k, TRADE, BID, float(p), 1, 0) for k, p in enumerate(px)]
    rows += [(200.5, ADD, BID, 4701.00, 1, 3)]
    x = _row_at(_events(rows), 200)
    # reference: the plain definition, window of 500 trades including the current one
    pso = 0.0
    for k, p in enumerate(px):
        w = px[max(0, k - 499) : k + 1]
        raw = 2 * (p - w.min()) / (w.max() - w.min()) - 1 if w.max() > w.min() else 0.0
        pso = raw if k == 0 else pso + 2 / 26 * (raw - pso)
    assert x[col("pso")] == pytest.approx(pso, abs=1e-6)
    assert -1 <= pso <= 1


def test_pso_stays_in_bounds_and_saturates_on_a_one_way_market() -> None:
    up = [(0.0, ADD, BID, 4700.00, 10, 1), (0.0, ADD, ASK, 4900.00, 10, 2)]
    up += [(60 + 0.05 * k, TRADE, BID, 4800.0 + 0.25 * k, 1, 0) for k in range(200)]
    up += [(75.5, ADD, BID, 4701.00, 1, 3)]
    x = _row_at(_events(up), 75)
    assert 0.99 < x[col("pso")] <= 1.0


@pytest.mark.parametrize(
    ("utc", "expect"),
    [
        # 08:30 CST Monday, the cash open: 7.5 h to the 16:00 close, release 60 min ago
        (
            "2024-03-04T14:30:00",
            {
                "is_rth": 1,
                "is_eth": 0,
                "minutes_to_close": 450,
                "minutes_into_session": 930,
                "day_of_week": 0,
                "release_0830et_min": 60,
                "cash_open_min": 0,
                "cash_close_min": -120,
            },
        ),
        # Sunday 17:00 CDT, the day DST starts: Monday's session opens
        (
            "2024-03-10T22:00:00",
            {
                "is_rth": 0,
                "is_eth": 1,
                "minutes_to_close": 23 * 60,
                "minutes_into_session": 0,
                "day_of_week": 0,
            },
        ),
        # Saturday noon: closed
        ("2024-03-09T18:00:00", {"is_rth": 0, "is_eth": 0, "minutes_to_close": 0}),
        # Christmas Eve 2024, 12:00 CST: the early close at 12:15 CT
        ("2024-12-24T18:00:00", {"is_rth": 1, "minutes_to_close": 15}),
    ],
)
def test_time_features_at_known_instants(utc: str, expect: dict[str, float]) -> None:
    ts = int(datetime.fromisoformat(utc).replace(tzinfo=UTC).timestamp()) * NS
    out = np.zeros(len(TIME_FEATURE_NAMES))
    time_features(ts, out, 0)
    got = dict(zip(TIME_FEATURE_NAMES, out, strict=True))
    for name, value in expect.items():
        assert got[name] == pytest.approx(value), name
    assert got["tod_sin"] ** 2 + got["tod_cos"] ** 2 == pytest.approx(1.0)


def test_time_features_agree_with_the_calendar() -> None:
    rng = np.random.default_rng(5)
    start = calendar.chicago_ns(calendar.HOURS_FROM, calendar.RTH_OPEN)
    ts = rng.integers(start, start + 12 * 365 * DAY_NS, 400)
    out = np.zeros(len(TIME_FEATURE_NAMES))
    for t in map(int, ts):
        time_features(t, out, 0)
        got = dict(zip(TIME_FEATURE_NAMES, out, strict=True))
        is_open = calendar.is_open(t)
        assert got["is_rth"] == calendar.is_rth(t)
        assert got["is_rth"] + got["is_eth"] == is_open
        assert got["minutes_to_close"] == pytest.approx(calendar.minutes_to_close(t))
        if is_open:
            day = calendar.trading_date(datetime.fromtimestamp(t / NS, UTC))
            assert got["day_of_week"] == day.weekday()


def test_direction_labels_use_the_dead_zone_and_the_horizon() -> None:
    ts = np.arange(0, 60, dtype=np.int64) * 1_000_000_000
    mid = np.full(60, 4800.0)
    mid[25:] = 4800.125  # half a tick up: inside the dead zone
    mid[40:] = 4800.50  # two ticks up
    y, valid = direction_labels(ts, mid, 20.0, 0.5, 0.25)
    assert valid.sum() == 40 and not valid[40:].any()
    assert y[4] == FLAT and y[5] == FLAT  # +0.5 tick is not a move
    assert y[20] == UP and y[19] == FLAT
    mid2 = mid[::-1].copy()
    y2, _ = direction_labels(ts, mid2, 20.0, 0.5, 0.25)
    assert DOWN in set(y2[valid])
