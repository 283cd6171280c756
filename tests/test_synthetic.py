"""The synthetic session generator: a valid, deterministic CME-style MBO stream with some
realistic microstructure. Every statistic below is computed from generated data."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from esml.data.book import replay_l1, snapshot_end
from esml.data.validate import check_book
from esml.market.events import (
    ADD,
    ASK,
    BID,
    CANCEL,
    CLEAR,
    F_LAST,
    F_SNAPSHOT,
    FILL,
    MBO_DTYPE,
    MODIFY,
    NO_SIDE,
    PUBLISHER_SYNTHETIC,
    RTYPE_MBO,
    TRADE,
    is_synthetic,
)
from esml.market.instruments import ES, MES
from esml.sim import synthetic
from esml.sim.synthetic import DEFAULT_START_NS, SYNTHETIC_INSTRUMENT_ID, generate_session

NS = 1_000_000_000
HOUR = 3600.0


@pytest.fixture(scope="module")
def hour() -> np.ndarray:
    return generate_session(11)


@pytest.fixture(scope="module")
def long_session() -> np.ndarray:
    return generate_session(12, duration_s=6 * HOUR)


@pytest.fixture(scope="module")
def long_touch(long_session: np.ndarray) -> np.ndarray:
    return replay_l1(long_session, ES.tick_fixed)


# ------------------------------------------------------------------ determinism, labels


def test_same_seed_gives_identical_bytes_and_another_seed_differs() -> None:
    a = generate_session(5, duration_s=600)
    b = generate_session(5, duration_s=600)
    c = generate_session(6, duration_s=600)
    assert a.dtype == MBO_DTYPE
    assert a.tobytes() == b.tobytes()
    assert len(a) != len(c) or a.tobytes() != c.tobytes()
    n = min(len(a), len(c))
    assert (a["price"][:n] != c["price"][:n]).any()


def test_a_buffer_too_small_reruns_to_the_same_bytes(monkeypatch) -> None:
    expected = generate_session(9, duration_s=900)
    monkeypatch.setattr(synthetic, "RECORDS_PER_S_GUESS", 1)  # forces several reruns
    assert generate_session(9, duration_s=900).tobytes() == expected.tobytes()


def test_every_record_is_labelled_synthetic_and_well_formed(hour: np.ndarray) -> None:
    assert is_synthetic(hour)
    assert np.all(hour["publisher_id"] == PUBLISHER_SYNTHETIC)
    assert np.all(hour["instrument_id"] == SYNTHETIC_INSTRUMENT_ID)
    assert np.all(hour["rtype"] == RTYPE_MBO)
    assert np.all(hour["length"] * 4 == MBO_DTYPE.itemsize)
    assert set(np.unique(hour["action"])) == {ADD, CANCEL, MODIFY, TRADE, FILL, CLEAR}
    assert 20 <= len(hour) / HOUR <= 100  # events per second


def test_clock_and_sequence_are_monotone_from_the_default_rth_start(hour: np.ndarray) -> None:
    ts_event = hour["ts_event"].astype(np.int64)
    ts_recv = hour["ts_recv"].astype(np.int64)
    assert ts_event[0] == DEFAULT_START_NS
    assert ts_event[-1] < DEFAULT_START_NS + int(HOUR * NS)
    assert ts_event[-1] > DEFAULT_START_NS + int(0.99 * HOUR * NS)
    assert np.all(np.diff(ts_event) >= 0)
    assert np.all(np.diff(ts_recv) >= 0)
    latency = ts_recv - ts_event
    assert latency.min() > 0 and np.median(latency) < 1_000_000  # a feed handler's delay
    assert np.all(np.diff(hour["sequence"].astype(np.int64)) > 0)


def test_start_ns_and_instrument_only_move_the_clock_and_the_grid() -> None:
    start = DEFAULT_START_NS + 86_400 * NS
    ev = generate_session(3, start_ns=start, duration_s=300, instrument=MES, start_price=5012.3)
    assert ev["ts_event"][0] == start
    priced = ev["action"] != CLEAR
    assert np.all(ev["price"][priced] % MES.tick_fixed == 0)
    bid_px, _, ask_px, _ = replay_l1(ev, MES.tick_fixed)[snapshot_end(ev) - 1]
    assert (bid_px, ask_px) == (MES.to_fixed(5012.0), MES.to_fixed(5012.25))


# ------------------------------------------------------------------ MBO semantics


def test_session_opens_with_a_full_snapshot(hour: np.ndarray) -> None:
    end = snapshot_end(hour)
    snap = hour[:end]
    assert snap["action"][0] == CLEAR and snap["side"][0] == NO_SIDE
    assert np.all(snap["action"][1:] == ADD)
    assert np.all(snap["flags"] & F_SNAPSHOT)
    last_flags = snap["flags"] & F_LAST
    assert last_flags[-1] and not last_flags[:-1].any()
    assert not (hour["flags"][end:] & F_SNAPSHOT).any()
    for side in (BID, ASK):
        prices = snap["price"][snap["side"] == side]
        levels, per_level = np.unique(prices, return_counts=True)
        assert len(levels) >= 10
        assert per_level.mean() >= 3
    bid_px, _, ask_px, _ = replay_l1(snap, ES.tick_fixed)[-1]
    assert ask_px - bid_px == ES.tick_fixed


def test_the_lead_book_replays_it_uncrossed_with_every_trade_at_the_touch(hour) -> None:
    r = check_book(hour, ES.tick_fixed)
    n_trades = int((hour["action"] == TRADE).sum())
    assert r.crossed_packets == 0 and r.preopen_crossed_packets == 0
    assert r.trades_checked == n_trades - 1  # the checker starts after the first print
    assert r.trades_outside_touch == 0
    assert r.packets_checked > 100_000


def test_reference_replay_agrees_and_every_packet_is_well_formed(hour: np.ndarray) -> None:
    touch, stats = _reference_replay(hour)
    lead = replay_l1(hour, ES.tick_fixed)
    at_last = (hour["flags"] & F_LAST) != 0
    np.testing.assert_array_equal(touch[at_last], lead[at_last])
    assert np.all(lead[at_last, 0] < lead[at_last, 2])  # never crossed nor locked
    assert stats["sweeps"] > 0 and stats["partial_fills"] > 0
    assert stats["partial_cancels"] > 0 and stats["reprices"] > 0


def _reference_replay(ev: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """A slow, obvious replay that asserts the CME MBO rules record by record: it returns
    the touch (bid_px, bid_sz, ask_px, ask_sz) after every record."""
    orders: dict[int, list[int]] = {}  # order id -> [side, price, size]
    queues: dict[int, dict[int, list[int]]] = {BID: defaultdict(list), ASK: defaultdict(list)}
    stats = dict.fromkeys(("sweeps", "partial_fills", "partial_cancels", "reprices"), 0)
    touch = np.zeros((len(ev), 4), np.int64)
    packet: dict | None = None  # an open trade packet

    def level_qty(side: int, price: int) -> int:
        return sum(orders[o][2] for o in queues[side][price])

    def best(side: int) -> int:
        prices = [p for p, q in queues[side].items() if q]
        return (max if side == BID else min)(prices)

    def remove(oid: int) -> None:
        side, price, _ = orders.pop(oid)
        queues[side][price].remove(oid)

    for k, e in enumerate(ev):
        a, side, oid = int(e["action"]), int(e["side"]), int(e["order_id"])
        price, size, last = int(e["price"]), int(e["size"]), bool(e["flags"] & F_LAST)
        where = f"record {k}"
        if a == TRADE:
            rest = ASK if side == BID else BID
            if packet is None:
                ladder = sorted((p for p, q in queues[rest].items() if q), reverse=rest == BID)
                packet = {"rest": rest, "ladder": ladder, "n": 0, "filled": {}, "updated": set()}
            elif packet["n"]:
                assert packet["trade"] == 0, f"{where}: the last trade's fills fall short"
                prev = packet["ladder"][packet["n"] - 1]
                assert packet["level_fill"] == level_qty(rest, prev), f"{where}: skipped depth"
                stats["sweeps"] += 1
            assert packet["rest"] == rest, where
            assert price == packet["ladder"][packet["n"]], f"{where}: trade off the touch"
            packet.update(n=packet["n"] + 1, price=price, trade=size, level_fill=0)
            packet["queue"] = list(queues[rest][price])
        elif a == FILL:
            assert packet is not None and side == packet["rest"] and price == packet["price"]
            assert packet["queue"] and packet["queue"].pop(0) == oid, f"{where}: not FIFO"
            assert 0 < size <= orders[oid][2] and orders[oid][1] == price, where
            packet["filled"][oid] = size
            packet["level_fill"] += size
            packet["trade"] -= size
            assert packet["trade"] >= 0, f"{where}: fills exceed the trade"
        elif packet is not None and packet["filled"]:
            assert a in (CANCEL, MODIFY) and oid in packet["filled"], f"{where}: not an update"
            assert packet["trade"] == 0, f"{where}: the last trade's fills fall short"
            filled = packet["filled"][oid]
            s, p, q = orders[oid]
            assert oid not in packet["updated"] and side == s and price == p, where
            packet["updated"].add(oid)
            if a == CANCEL:
                assert size == q == filled, f"{where}: fill-cancel size"
                remove(oid)
            else:
                assert size == q - filled > 0, f"{where}: partial fill's remaining size"
                orders[oid][2] = size
                stats["partial_fills"] += 1
            if last:
                assert packet["updated"] == set(packet["filled"]), f"{where}: update missing"
                packet = None
        else:
            assert last or e["flags"] & F_SNAPSHOT, f"{where}: F_LAST missing"
            if a == CLEAR:
                orders.clear()
                queues[BID].clear()
                queues[ASK].clear()
            elif a == ADD:
                assert oid not in orders and size > 0 and side in (BID, ASK), where
                assert price % ES.tick_fixed == 0, f"{where}: off the tick grid"
                orders[oid] = [side, price, size]
                queues[side][price].append(oid)
            elif a == CANCEL:
                assert oid in orders, f"{where}: cancel of an unknown order"
                s, p, q = orders[oid]
                assert side == s and price == p and 0 < size <= q, where
                if size == q:
                    remove(oid)
                else:
                    orders[oid][2] = q - size  # keeps its place in the queue
                    stats["partial_cancels"] += 1
            elif a == MODIFY:
                assert oid in orders, f"{where}: modify of an unknown order"
                s, p, q = orders[oid]
                assert side == s and size > 0 and price % ES.tick_fixed == 0, where
                if price != p or size > q:  # loses priority
                    remove(oid)
                    orders[oid] = [side, price, size]
                    queues[side][price].append(oid)
                    stats["reprices"] += price != p
                else:
                    orders[oid][2] = size
            else:
                raise AssertionError(f"{where}: unexpected action {chr(a)}")
        if orders and last:
            b, x = best(BID), best(ASK)
            touch[k] = (b, level_qty(BID, b), x, level_qty(ASK, x))
            assert b < x, f"{where}: crossed book"
    assert packet is None, "the session ends inside a packet"
    return touch, stats


# ------------------------------------------------------------------ microstructure


def test_trade_signs_balance_and_persist(long_session: np.ndarray) -> None:
    trades = long_session[long_session["action"] == TRADE]
    sign = np.where(trades["side"] == BID, 1.0, -1.0)
    assert len(sign) > 20_000
    assert 0.45 < (sign > 0).mean() < 0.55
    assert np.corrcoef(sign[1:], sign[:-1])[0, 1] > 0.1


def test_trade_sizes_are_mostly_small_with_a_heavy_tail(long_session: np.ndarray) -> None:
    sizes = long_session["size"][long_session["action"] == TRADE]
    assert sizes.min() >= 1
    assert np.median(sizes) <= 3
    assert (sizes <= 5).mean() > 0.85
    assert (sizes >= 20).sum() > 100


def test_absolute_one_minute_returns_cluster(long_session: np.ndarray) -> None:
    trades = long_session[long_session["action"] == TRADE]
    ts = trades["ts_event"].astype(np.int64)
    minutes = ts[0] + np.arange(1, int(6 * HOUR / 60)) * 60 * NS
    close = trades["price"][np.searchsorted(ts, minutes, side="right") - 1] / 1e9
    move = np.abs(np.diff(close))
    assert move.std() > 0
    assert _autocorr(move) > 0.1


def test_spread_is_one_tick_almost_always(long_session, long_touch) -> None:
    at_last = (long_session["flags"] & F_LAST) != 0
    spread = (long_touch[at_last, 2] - long_touch[at_last, 0]) // ES.tick_fixed
    assert spread.min() >= 1
    assert 0.9 < (spread == 1).mean() < 1.0


def test_imbalance_and_trade_flow_carry_short_horizon_information(
    long_session: np.ndarray, long_touch: np.ndarray
) -> None:
    ts = long_session["ts_event"].astype(np.int64)
    at_last = np.flatnonzero((long_session["flags"] & F_LAST) != 0)
    seconds = ts[0] + np.arange(60, int(6 * HOUR) - 60) * NS
    row = at_last[np.searchsorted(ts[at_last], seconds, side="right") - 1]
    bid_px, bid_sz, ask_px, ask_sz = long_touch[row].T.astype(float)
    mid = (bid_px + ask_px) / 2
    imbalance = (bid_sz - ask_sz) / (bid_sz + ask_sz)

    # the thin side gives way first: the next mid move follows the L1 imbalance
    moves = np.flatnonzero(np.diff(mid))
    nxt = np.searchsorted(moves, np.arange(len(mid) - 1))
    ok = nxt < len(moves)
    up = mid[moves[nxt[ok]] + 1] > mid[moves[nxt[ok]]]
    lean = imbalance[:-1][ok]
    assert up[lean > 0.3].mean() > 0.6 and up[lean < -0.3].mean() < 0.4
    assert _corr(imbalance[:-10], mid[10:] - mid[:-10]) > 0

    # net aggressor volume of the last 30 s and the mid change of the next 20 s
    trades = long_session[long_session["action"] == TRADE]
    signed = np.where(trades["side"] == BID, 1, -1) * trades["size"].astype(np.int64)
    cum = np.concatenate([[0], np.cumsum(signed)])
    at = np.searchsorted(trades["ts_event"].astype(np.int64), seconds, side="right")
    flow = (cum[at[30:]] - cum[at[:-30]])[:-20]
    ahead = mid[50:] - mid[30:-20]
    assert _corr(flow, ahead) > 0.05


def _autocorr(x: np.ndarray) -> float:
    return _corr(x[1:], x[:-1])


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1])


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
        ({"duration_s": 0}, "duration_s"),
        ({"duration_s": float("nan")}, "duration_s"),
        ({"duration_s": float("inf")}, "duration_s"),
        ({"duration_s": 2 * 86_400.0}, "duration_s"),
        ({"start_ns": -5}, "start_ns"),
        ({"start_ns": 2**63 - 10}, "start_ns"),
        ({"start_price": 10.0}, "start_price"),
        ({"start_price": float("nan")}, "start_price"),
    ],
)
def test_bad_arguments_are_refused_clearly(kwargs: dict, message: str) -> None:
    args = {"seed": 1, "duration_s": 60.0} | kwargs
    seed = args.pop("seed")
    with pytest.raises(ValueError, match=message):
        generate_session(seed, **args)
