"""Labels: known answers on hand-built paths, the same answers as a brute-force walk on the
real ES touch path, and nothing read from before the decision time."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esml.data.book import replay_l1, snapshot_end
from esml.features.batch import batch_features
from esml.features.labels import (
    DOWN,
    FLAT,
    REGIME_NONE,
    REGIME_RANGE,
    REGIME_TREND,
    UP,
    _first_at_or_above,
    bracket_labels,
    deeplob_labels,
    direction_labels,
    horizon_direction_labels,
    regime_labels,
    triple_barrier_labels,
)
from esml.market.events import F_LAST
from esml.market.instruments import ES

NS = 1_000_000_000
TICK = 0.25


def grid(n: int, step_s: float = 1.0) -> np.ndarray:
    return (np.arange(n) * round(step_s * NS)).astype(np.int64) + 1_700_000_000 * NS


@pytest.fixture(scope="module")
def es_touch(es_events):
    """The real ES touch after each complete event (F_LAST), two-sided and uncrossed."""
    l1 = replay_l1(es_events, ES.tick_fixed)
    keep = (es_events["flags"] & F_LAST) != 0
    keep[: snapshot_end(es_events)] = False
    keep &= (l1[:, 0] > 0) & (l1[:, 2] > 0) & (l1[:, 0] < l1[:, 2])
    ts = es_events["ts_recv"][keep].astype(np.int64)
    return ts, l1[keep, 0] / 1e9, l1[keep, 2] / 1e9


@pytest.fixture(scope="module")
def es_frame(es_events):
    return batch_features(es_events, ES.tick_fixed, 1.0)


# ------------------------------------------------------------------ direction


def test_direction_at_10_20_30_seconds_with_the_dead_zone() -> None:
    ts = grid(80)
    mid = np.full(80, 4800.0)
    mid[15:] = 4800.125  # +half a tick: inside the dead zone
    mid[25:] = 4800.25  # +one tick from the start: a move
    mid[50:] = 4799.75  # one tick below the start, three below 4800.25
    out = horizon_direction_labels(ts, mid, 0.5, TICK)
    assert sorted(out) == [10.0, 20.0, 30.0]
    y10, v10 = out[10.0]
    assert v10.sum() == 70 and not v10[70:].any()
    assert y10[5] == FLAT and y10[15] == FLAT  # each step is half a tick: not a move
    assert UP not in y10[v10] and y10[39] == FLAT and y10[40] == DOWN
    y20, _ = out[20.0]
    assert y20[4] == FLAT and y20[5] == UP  # t=5 → 25 is the first one-tick rise
    assert y20[30] == DOWN  # 4800.25 → 4799.75
    y30, v30 = out[30.0]
    assert v30.sum() == 50 and y30[0] == UP and y30[20] == DOWN


def test_direction_dead_zone_is_at_least_half_a_tick() -> None:
    ts, mid = grid(40), np.full(40, 4800.0)
    with pytest.raises(ValueError, match=r"at least 0\.5"):
        direction_labels(ts, mid, 20.0, 0.25, TICK)
    with pytest.raises(ValueError, match="sorted"):
        direction_labels(ts[::-1].copy(), mid, 20.0, 0.5, TICK)
    bad = mid.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        direction_labels(ts, bad, 20.0, 0.5, TICK)


def test_direction_rows_across_a_gap_are_not_valid() -> None:
    ts = np.concatenate([grid(30), grid(30)[-1] + 600 * NS + grid(30) - grid(30)[0]])
    _, valid = direction_labels(ts, np.full(60, 4800.0), 20.0, 0.5, TICK)
    # t + 20 s may fall up to 5 s (a quarter horizon) after the last row before the gap
    assert valid[:15].all() and not valid[15:30].any()
    assert valid[30:40].all() and not valid[40:].any()


# ------------------------------------------------------------------ barriers


def test_triple_barrier_known_answers_and_barrier_order() -> None:
    # path points every second; decisions at t = 0, 10 and 20 s
    path_ts = grid(40)
    price = np.full(40, 100.0)
    price[2] = 99.75  # one tick down: touches a 1-tick lower barrier of decision 0
    price[4] = 100.50  # two ticks up, later: decision 0 was already decided DOWN
    price[12] = 100.50  # decision 10: the upper barrier (+2) is touched exactly at 12 s
    price[13] = 99.00  # ... before this drop
    price[25] = 100.0
    out = triple_barrier_labels(path_ts[[0, 10, 20]], path_ts, price, 2, 1, 8.0, TICK)
    assert out.label.tolist() == [DOWN, UP, FLAT]
    assert out.hit_ts_ns.tolist() == [path_ts[2], path_ts[12], path_ts[20] + 8 * NS]
    assert out.exit_ticks.tolist() == [-1.0, 2.0, 0.0]
    assert out.valid.all()


def test_barrier_counts_only_points_after_t_and_within_the_limit() -> None:
    path_ts = grid(20)
    price = np.full(20, 100.0)
    price[5] = 101.0  # at the decision instant itself: not "after t"
    price[9] = 101.0  # exactly at t + 4 s: inside the limit
    out = triple_barrier_labels(path_ts[[5]], path_ts, price, 2, 2, 4.0, TICK)
    # reference is the price at t (101): 100 at 6..8 s is 4 ticks down
    assert out.label.tolist() == [DOWN] and out.hit_ts_ns[0] == path_ts[6]
    out = triple_barrier_labels(path_ts[[6]], path_ts, price, 4, 5, 3.0, TICK)
    assert out.label.tolist() == [UP] and out.hit_ts_ns[0] == path_ts[9]
    out = triple_barrier_labels(path_ts[[6]], path_ts, price, 4, 5, 2.999, TICK)
    assert out.label.tolist() == [FLAT]
    # no reference before the first point, and a limit past the data: not valid
    early = triple_barrier_labels(
        np.array([path_ts[0] - NS, path_ts[17]]), path_ts, price, 4, 4, 5.0, TICK
    )
    assert early.valid.tolist() == [False, False]


def test_long_bracket_enters_at_the_ask_and_exits_on_the_bid() -> None:
    ts = grid(12)
    bid = np.full(12, 100.0)
    ask = np.full(12, 100.25)
    ask[2] = 101.25  # the ask reaching entry + 4 ticks does not fill a sell limit there
    bid[3], ask[3] = 101.25, 101.5  # the bid reaching it does
    long = bracket_labels(ts[[0]], ts, bid, ask, "long", 2, 4, 10.0, TICK)
    assert long.label.tolist() == [UP] and long.hit_ts_ns[0] == ts[3]
    assert long.exit_ticks[0] == 4.0  # a limit fills at its own price
    # a gap through the stop costs the gap: the stop-market sells at the bid
    bid2, ask2 = np.full(12, 100.0), np.full(12, 100.25)
    bid2[4], ask2[4] = 98.75, 99.0  # entry 100.25, stop 99.75; the bid gaps to 98.75
    stopped = bracket_labels(ts[[0]], ts, bid2, ask2, "long", 2, 4, 10.0, TICK)
    assert stopped.label.tolist() == [DOWN] and stopped.exit_ticks[0] == -6.0
    # the short mirror: sells at the bid (100) and watches the ask: 99.0 is its target
    short = bracket_labels(ts[[0]], ts, bid2, ask2, "short", 2, 4, 10.0, TICK)
    assert short.label.tolist() == [DOWN] and short.exit_ticks[0] == 4.0
    assert short.hit_ts_ns[0] == ts[4]
    ask2[6] = 100.5  # a short's stop (entry + 2 ticks) on the ask, before a later target
    bid2[4], ask2[4] = 100.0, 100.25
    short = bracket_labels(ts[[0]], ts, bid2, ask2, "short", 2, 4, 10.0, TICK)
    assert short.label.tolist() == [UP] and short.exit_ticks[0] == -2.0
    with pytest.raises(ValueError, match="locked or crossed"):
        bracket_labels(ts[[0]], ts, ask, bid, "long", 2, 4, 10.0, TICK)
    with pytest.raises(ValueError, match="side"):
        bracket_labels(ts[[0]], ts, bid, ask, "both", 2, 4, 10.0, TICK)  # type: ignore[arg-type]


def _brute_bracket(ts, bid, ask, t, side, stop, target, limit_ns):
    i = np.searchsorted(ts, t, "right")
    entry = ask[i - 1] if side == "long" else bid[i - 1]
    watch = bid if side == "long" else ask
    up = entry + (target if side == "long" else stop) * TICK
    down = entry - (stop if side == "long" else target) * TICK
    for j in range(i, len(ts)):
        if ts[j] > t + limit_ns:
            break
        if watch[j] <= down:
            return DOWN, ts[j]
        if watch[j] >= up:
            return UP, ts[j]
    return FLAT, t + limit_ns


@pytest.mark.parametrize(("side", "stop", "target", "limit_s"), [
    ("long", 4, 4, 60.0), ("long", 2, 6, 120.0), ("short", 3, 5, 45.0), ("short", 8, 2, 300.0),
])  # fmt: skip
def test_brackets_match_a_brute_force_walk_on_real_es(es_touch, es_frame, side, stop, target,
                                                      limit_s) -> None:  # fmt: skip
    ts, bid, ask = es_touch
    decisions = es_frame.ts_ns
    out = bracket_labels(decisions, ts, bid, ask, side, stop, target, limit_s, TICK)
    assert out.valid.sum() > 2_500
    assert len(set(out.label[out.valid].tolist())) >= 2
    for k in range(0, len(decisions), 11):
        if not out.valid[k]:
            continue
        want = _brute_bracket(ts, bid, ask, decisions[k], side, stop, target, round(limit_s * NS))
        assert (out.label[k], out.hit_ts_ns[k]) == want


@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(st.integers(-20, 20), min_size=1, max_size=60),
    queries=st.lists(st.tuples(st.integers(0, 70), st.integers(-25, 25)), max_size=30),
)
def test_first_passage_kernel_equals_a_scan(values, queries) -> None:
    v = np.asarray(values, np.float64)
    queries = sorted(queries)
    starts = np.array([q[0] for q in queries], np.int64)
    levels = np.array([q[1] for q in queries], np.float64)
    got = _first_at_or_above(v, starts, levels)
    for s, level, g in zip(starts, levels, got, strict=True):
        hits = [j for j in range(s, len(v)) if v[j] >= level]
        assert g == (hits[0] if hits else len(v))


@settings(max_examples=25, deadline=None)
@given(cut=st.integers(10, 2_500), seed=st.integers(0, 2**16))
def test_no_label_reads_data_from_before_its_decision(es_touch, es_frame, cut, seed) -> None:
    """Scrambling every path point before a decision's own reference point (and every mid
    before it) changes no label at or after that decision."""
    ts, bid, ask = es_touch
    decisions, mid = es_frame.ts_ns, es_frame.mid
    rng = np.random.default_rng(seed)
    t = decisions[cut]
    ref = np.searchsorted(ts, t, "right") - 1  # the touch at t
    bid2, ask2 = bid.copy(), ask.copy()
    bid2[:ref] = bid[:ref] + rng.integers(-8, 9, ref) * TICK
    ask2[:ref] = bid2[:ref] + rng.integers(1, 4, ref) * TICK
    args = ("long", 3, 3, 90.0, TICK)
    a = bracket_labels(decisions[cut:], ts, bid, ask, *args)
    b = bracket_labels(decisions[cut:], ts, bid2, ask2, *args)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.hit_ts_ns, b.hit_ts_ns)
    mid2 = mid.copy()
    mid2[:cut] += rng.integers(-8, 9, cut) * TICK
    for fn in (
        lambda m: direction_labels(decisions, m, 20.0, 0.5, TICK),
        lambda m: regime_labels(decisions, m, TICK),
        lambda m: deeplob_labels(m, 50, 2e-5),
    ):
        (y1, v1), (y2, v2) = fn(mid), fn(mid2)
        np.testing.assert_array_equal(y1[cut:], y2[cut:])
        np.testing.assert_array_equal(v1[cut:], v2[cut:])


# ------------------------------------------------------------------ DeepLOB


def test_deeplob_label_is_the_mean_of_the_next_k_mids_against_the_current() -> None:
    mid = np.array([100.0, 100.0, 101.0, 102.0, 99.0, 100.0])
    y, valid = deeplob_labels(mid, k=2, alpha=0.004)
    # l_0 = (100.5 - 100) / 100 = 0.005 > 0.004: up; l_1 = (101.5-100)/100: up;
    # l_2 = (100.5 - 101) / 101 < -0.004: down; l_3 = (99.5 - 102)/102: down
    assert valid.tolist() == [True, True, True, True, False, False]
    assert y[:4].tolist() == [UP, UP, DOWN, DOWN]
    y, _ = deeplob_labels(mid, k=2, alpha=0.005)  # the threshold is strict
    assert y[0] == FLAT
    with pytest.raises(ValueError, match="positive integer"):
        deeplob_labels(mid, k=0, alpha=0.001)


def test_deeplob_labels_equal_the_formula_on_real_es(es_frame) -> None:
    mid, k, alpha = es_frame.mid, 20, 2e-5
    y, valid = deeplob_labels(mid, k, alpha)
    n = len(mid)
    m_plus = np.array([mid[i + 1 : i + k + 1].mean() for i in range(n - k)])
    change = (m_plus - mid[: n - k]) / mid[: n - k]
    want = np.where(change > alpha, UP, np.where(change < -alpha, DOWN, FLAT))
    assert valid.sum() == n - k
    np.testing.assert_array_equal(y[: n - k], want)
    assert set(want.tolist()) == {DOWN, FLAT, UP}


# ------------------------------------------------------------------ regime


def test_regime_labels_on_hand_built_paths() -> None:
    n = 400
    ts = grid(n)
    trend = 4800.0 + TICK * np.floor(np.arange(n) / 10)  # one tick up every 10 s
    y, valid = regime_labels(ts, trend, TICK)
    assert valid.sum() == n - 300 and np.all(y[valid] == REGIME_TREND)
    band = 4800.0 + TICK * np.tile([0, 1, 2, 1], n // 4)  # back and forth in a 2-tick band
    y, _ = regime_labels(ts, band, TICK)
    assert np.all(y[valid] == REGIME_RANGE)
    quiet = 4800.0 + TICK * (np.arange(n) // 100 % 2)  # four moves in 5 minutes
    y, _ = regime_labels(ts, quiet, TICK)
    assert np.all(y[valid] == REGIME_NONE)


def test_regime_labels_on_real_es_cover_all_regimes(es_frame) -> None:
    y, valid = regime_labels(es_frame.ts_ns, es_frame.mid, TICK)
    counts = np.bincount(y[valid], minlength=3)
    assert valid.sum() > 3_000 and np.all(counts > 100)
    with pytest.raises(ValueError, match="range_efficiency < trend_efficiency"):
        regime_labels(es_frame.ts_ns, es_frame.mid, TICK, trend_efficiency=0.05)
