"""The queue-reactive market generator and its calibration from the real ES MBO file.

Every statistic below is computed: from the real file (data/samples) or from generated,
SYNTHETIC events replayed through esml's own L3 book."""

from __future__ import annotations

import json
from datetime import date, datetime

import numpy as np
import pytest
from typer.testing import CliRunner

from esml.cli import sim_cmd
from esml.data.book import (
    M_BASE,
    M_BEST_ASK,
    M_BEST_BID,
    M_OVERSIZE_CANCELS,
    M_UNKNOWN_CANCELS,
    BookState,
    apply_event,
    replay_l1,
    snapshot_end,
)
from esml.data.dbn import read_mbo
from esml.data.validate import check_book
from esml.market.calendar import CHICAGO
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
    PUBLISHER_SYNTHETIC,
    TRADE,
    is_synthetic,
)
from esml.market.instruments import ES
from esml.sim.qr_calibration import CalibrationError, calibrate
from esml.sim.qr_params import (
    DEFAULT_PARAMS_FILE,
    IntradayParams,
    QRParams,
    QRParamsError,
    default_params,
)
from esml.sim.queue_reactive import generate, generate_day, generate_days, simulate
from esml.sim.synthetic import SYNTHETIC_INSTRUMENT_ID
from tests.conftest import ES_FILE

NS = 1_000_000_000
DAY = "2024-03-05"  # a Tuesday, no holiday
runner = CliRunner()


@pytest.fixture(scope="module")
def params() -> QRParams:
    return default_params()


@pytest.fixture(scope="module")
def calibrated(es_events: np.ndarray) -> QRParams:
    return calibrate(es_events, ES.tick_fixed, source=ES_FILE.name)


@pytest.fixture(scope="module")
def rth() -> np.ndarray:
    """Ten minutes after the RTH open: the busiest span of the day."""
    return generate_day(11, DAY, start="08:35", hours=1 / 6)


def _thin(params: QRParams, factor: float = 0.02) -> QRParams:
    """The same market at a small fraction of its activity: whole days in a few ms."""
    flat = IntradayParams(minutes=(0, 1380), factor=(factor, factor))
    return params.model_copy(update={"intraday": flat})


def _mid(events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    start = snapshot_end(events)
    touch = replay_l1(events, ES.tick_fixed)[start:]
    return events["ts_event"][start:].astype(np.int64), (touch[:, 0] + touch[:, 2]) / 2


# ------------------------------------------------------------------ determinism, labels


def test_same_seed_gives_identical_bytes_and_another_seed_differs() -> None:
    a = generate_day(5, DAY, start="17:00", hours=0.2)
    b = generate_day(5, date(2024, 3, 5), start="17:00", hours=0.2)
    c = generate_day(6, DAY, start="17:00", hours=0.2)
    assert a.dtype == MBO_DTYPE
    assert a.tobytes() == b.tobytes()
    n = min(len(a), len(c))
    assert (a["price"][:n] != c["price"][:n]).any()


def test_every_record_is_labelled_synthetic(rth: np.ndarray) -> None:
    assert is_synthetic(rth)
    assert np.all(rth["publisher_id"] == PUBLISHER_SYNTHETIC)
    assert np.all(rth["instrument_id"] == SYNTHETIC_INSTRUMENT_ID)
    assert set(np.unique(rth["action"])) == {ADD, CANCEL, MODIFY, TRADE, FILL, CLEAR}


def test_the_clock_starts_at_the_chicago_time_asked_and_sequences_rise(rth) -> None:
    first = datetime.fromtimestamp(rth["ts_event"][0] / NS, CHICAGO)
    last = datetime.fromtimestamp(rth["ts_event"][-1] / NS, CHICAGO)
    assert (first.date(), first.hour, first.minute, first.second) == (date(2024, 3, 5), 8, 35, 0)
    assert (last.hour, last.minute) == (8, 44)
    assert np.all(np.diff(rth["ts_event"].astype(np.int64)) >= 0)
    assert np.all(np.diff(rth["ts_recv"].astype(np.int64)) >= 0)
    assert np.all(np.diff(rth["sequence"].astype(np.int64)) == 1)


# ------------------------------------------------------------------ a valid CME MBO stream


def test_it_opens_with_a_snapshot_of_every_modelled_queue(rth, params) -> None:
    end = snapshot_end(rth)
    snap = rth[:end]
    assert snap["action"][0] == CLEAR and np.all(snap["action"][1:] == ADD)
    assert np.all(snap["flags"] & F_SNAPSHOT)
    assert (snap["flags"][-1] & F_LAST) and not (snap["flags"][:-1] & F_LAST).any()
    assert not (rth["flags"][end:] & F_SNAPSHOT).any()
    for side in (BID, ASK):
        levels = np.unique(snap["price"][snap["side"] == side])
        assert len(levels) >= params.k_levels - 2  # a deep queue may be drawn empty
    bid, _, ask, _ = replay_l1(snap, ES.tick_fixed)[-1]
    assert ask - bid == ES.tick_fixed


def test_esml_l3_book_replays_it_uncrossed_with_every_trade_at_the_touch(rth) -> None:
    r = check_book(rth, ES.tick_fixed)
    n_trades = int((rth["action"] == TRADE).sum())
    assert n_trades > 1000
    assert r.crossed_packets == 0 and r.preopen_crossed_packets == 0
    assert r.trades_checked == n_trades - 1  # the checker starts after the first print
    assert r.trades_outside_touch == 0
    book = BookState.new(ES.tick_fixed)
    replay_l1(rth, ES.tick_fixed, book)
    assert book.meta[M_UNKNOWN_CANCELS] == 0 and book.meta[M_OVERSIZE_CANCELS] == 0
    assert 0 <= book.meta[M_BEST_BID] < book.meta[M_BEST_ASK]


def test_every_order_id_is_known_and_every_trade_is_its_fills(rth) -> None:
    """Adds are new ids; cancels, modifies and fills name resting orders of their side and
    price; a trade's size is the sum of its fills, each packet ends with F_LAST."""
    live: dict[int, tuple[int, int, int]] = {}  # id -> side, price, size
    trade_left = repriced = 0
    for k, e in enumerate(rth[1:], start=1):
        a, oid, side = int(e["action"]), int(e["order_id"]), int(e["side"])
        price, size = int(e["price"]), int(e["size"])
        if a == ADD:
            assert oid not in live and size > 0, k
            live[oid] = (side, price, size)
        elif a == TRADE:
            assert trade_left == 0 and size > 0 and oid not in live, k
            trade_left = size
        elif a == FILL:
            assert live[oid][:2] == (side, price) and 0 < size <= live[oid][2], k
            trade_left -= size
        elif a in (CANCEL, MODIFY):
            assert oid in live and live[oid][0] == side, f"record {k}: unknown order {oid}"
            assert trade_left == 0, f"record {k}: the trade's fills fall short"
            if a == CANCEL:
                assert live[oid][1] == price and size == live[oid][2], k
                del live[oid]
            else:
                repriced += live[oid][1] != price
                live[oid] = (side, price, size)
        assert trade_left >= 0, k
        if e["flags"] & F_LAST:
            assert trade_left == 0, k
    assert repriced > 100  # CME reprices are modifies with a new price


# ------------------------------------------------------------------ calibration


def test_the_committed_parameters_are_what_calibrate_returns(calibrated, params) -> None:
    assert params.calibration.source == ES_FILE.name
    assert calibrated == params
    assert QRParams.model_validate_json(DEFAULT_PARAMS_FILE.read_text()) == calibrated


def test_calibration_reproduces_the_real_touch_measured_independently(es_events, calibrated):
    """A plain Python replay of the real file: the intensity of cancels, adds and market
    orders at the touch by touch size, against the calibrated tables at the same sizes."""
    rates = _touch_rates(es_events)
    aes = calibrated.aes[0]
    for kind, table in (("cancel", calibrated.cancel_rate[0]), ("add", calibrated.limit_rate[0]),
                        ("market", calibrated.market_rate)):  # fmt: skip
        measured = rates[kind]
        model = [np.mean(table[int(np.ceil(lo / aes)) : int(np.ceil(hi / aes)) + 1])
                 for lo, hi in TOUCH_BINS]  # fmt: skip
        # same shape: the thin touch is the busy one, for every kind of event
        assert measured[0] > measured[-1] and model[0] > model[-1], kind
        np.testing.assert_allclose(model, measured, rtol=0.35, err_msg=kind)
    # ES (this file): touch cancels FALL with queue size, unlike the stocks of HLR 2015
    assert rates["cancel"][0] > 2 * rates["cancel"][-1]
    assert 0.5 < calibrated.theta < 0.9  # the price follows most depletions
    assert calibrated.calibration.one_tick_spread_share > 0.9


TOUCH_BINS = ((1, 4), (5, 10), (11, 20), (21, 40), (41, 80))


def _touch_rates(ev: np.ndarray) -> dict[str, list[float]]:
    snap = snapshot_end(ev)
    start = snap + int(np.flatnonzero(ev["action"][snap:] == TRADE)[0])
    book = BookState.new(ES.tick_fixed)
    meta = book.meta
    counts = {k: np.zeros(len(TOUCH_BINS)) for k in ("cancel", "add", "market")}
    seconds = np.zeros(len(TOUCH_BINS))
    filled: set[int] = set()
    state, last_t = None, 0

    def bin_of(q: int) -> int:
        return next((i for i, (lo, hi) in enumerate(TOUCH_BINS) if lo <= q <= hi), -1)

    for j, e in enumerate(ev):
        a, bb, ba = int(e["action"]), int(meta[M_BEST_BID]), int(meta[M_BEST_ASK])
        if j > start and ba == bb + 1:  # classify at a one-tick spread only
            own = book.bid_qty if e["side"] == BID else book.ask_qty
            best = bb if e["side"] == BID else ba
            idx = (int(e["price"]) - int(meta[M_BASE])) // ES.tick_fixed
            b = bin_of(int(own[best]))
            if a == CANCEL and int(e["order_id"]) not in filled and idx == best and b >= 0:
                counts["cancel"][b] += 1
            elif a == ADD and idx == best and b >= 0:
                counts["add"][b] += 1
            elif a == TRADE:
                hit = book.ask_qty[ba] if e["side"] == BID else book.bid_qty[bb]
                if bin_of(int(hit)) >= 0:
                    counts["market"][bin_of(int(hit))] += 1
        if a == FILL:
            filled.add(int(e["order_id"]))
        apply_event(*book.arrays, e["action"], e["side"], e["price"], e["size"], e["order_id"])
        if j >= start and e["flags"] & F_LAST:
            filled.clear()
            t = int(e["ts_event"])
            for q in state or ():
                if bin_of(q) >= 0:
                    seconds[bin_of(q)] += (t - last_t) / NS
            last_t = t
            bb, ba = int(meta[M_BEST_BID]), int(meta[M_BEST_ASK])
            state = (int(book.bid_qty[bb]), int(book.ask_qty[ba])) if ba == bb + 1 else None
    return {k: (c / seconds).tolist() for k, c in counts.items()}


def test_calibrating_the_generator_recovers_its_own_tables(params) -> None:
    """The bare queue-reactive model (no re-centring, order-flow pressure, regimes, curve
    or shocks) run for three hours and calibrated like the real file gives back the touch
    intensities it was run with."""
    state = np.random.SeedSequence(9).generate_state(4, np.uint64)
    bare = params.model_copy(update={"flow_pressure_sd": 0.0, "theta_reinit": 0.0})
    run = simulate(state, bare, start_ns=0,
                   duration_s=3 * 3600.0, day_offset_s=0.0, open_price=4800.0,
                   layers=False)  # fmt: skip
    assert abs(run.ref_price_changes / run.touch_depletions - params.theta) < 0.05
    again = calibrate(run.events, ES.tick_fixed, fit=False)
    blocks = [(1, 5), (5, 10), (10, 20), (20, 30)]  # queue sizes, in average event sizes
    for name in ("limit_rate", "cancel_rate", "market_rate"):
        ours = np.atleast_2d(getattr(params, name))[0]
        theirs = np.atleast_2d(getattr(again, name))[0]
        np.testing.assert_allclose([np.mean(theirs[a:b]) for a, b in blocks],
                                   [np.mean(ours[a:b]) for a, b in blocks], rtol=0.15,
                                   err_msg=name)  # fmt: skip
    assert abs(again.theta - params.theta) < 0.08


def test_calibrate_refuses_what_it_cannot_use(es_events) -> None:
    with pytest.raises(CalibrationError, match="MBO_DTYPE"):
        calibrate(np.zeros(10), ES.tick_fixed)
    with pytest.raises(CalibrationError, match="no events"):
        calibrate(es_events[:0], ES.tick_fixed)
    with pytest.raises(CalibrationError, match="no trade after the snapshot"):
        calibrate(es_events[: snapshot_end(es_events)], ES.tick_fixed)
    with pytest.raises(CalibrationError, match="tick grid"):
        calibrate(es_events, 0.3)
    with pytest.raises(CalibrationError, match="positive"):
        calibrate(es_events, 0)
    with pytest.raises(CalibrationError, match="unknown instrument"):
        calibrate(es_events, ES.tick_fixed, instrument="ZZ")


def test_a_bad_parameter_file_fails_on_load_naming_it(tmp_path, params) -> None:
    raw = json.loads(DEFAULT_PARAMS_FILE.read_text())
    cases = {
        "missing.json": None,
        "truncated.json": DEFAULT_PARAMS_FILE.read_text()[:5000],
        "negative.json": {**raw, "cancel_rate": [[-1.0, *r[1:]] for r in raw["cancel_rate"]]},
        "short.json": {**raw, "aes": raw["aes"][:3]},
        "theta.json": {**raw, "theta": 1.5},
        "extra.json": {**raw, "surprise": 1},
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(QRParamsError, match=name):
            QRParams.load(path)


# ------------------------------------------------------------------ the layers


def test_regimes_set_the_event_rate(params) -> None:
    """Short regimes, a flat intraday curve: events per minute follow the hidden regime's
    activity (trend 1.4, range 1.0, quiet 0.6)."""
    fast = params.regimes.model_copy(update={"mean_duration_s": (300.0, 300.0, 300.0)})
    p = _thin(params, 1.0).model_copy(update={"regimes": fast})
    g = generate(4, DAY, params=p, start="18:00", hours=3.0)
    ts = g.events["ts_event"].astype(np.int64)
    ends = np.append(g.regime_ns[1:], ts[-1])
    per_min = {r: [0, 0.0] for r in range(3)}
    for begin, end, r in zip(g.regime_ns, ends, g.regime, strict=True):
        n = np.searchsorted(ts, end) - np.searchsorted(ts, begin)
        per_min[int(r)][0] += n
        per_min[int(r)][1] += (end - begin) / 60 / NS
    rate = {r: n / m for r, (n, m) in per_min.items()}
    assert all(m > 10 for _, m in per_min.values())  # every regime was visited
    assert rate[0] > rate[1] > rate[2]
    assert 1.6 < rate[0] / rate[2] < 3.2  # 1.4 / 0.6 = 2.3


def test_activity_follows_the_cme_day(params) -> None:
    """Ten minutes at four times of day, regimes equally active: the RTH open and close
    are busiest, lunch less, the Asian night least."""
    flat = params.regimes.model_copy(update={"activity": (1.0, 1.0, 1.0)})
    p = params.model_copy(update={"regimes": flat})
    rate = {at: len(generate_day(8, DAY, params=p, start=at, hours=1 / 6)) / 10
            for at in ("20:00", "08:30", "12:00", "14:50")}  # fmt: skip
    assert rate["08:30"] > rate["14:50"] > rate["12:00"] > 3 * rate["20:00"]


def test_a_shock_is_a_burst_of_one_sided_trades_that_moves_the_price(params) -> None:
    shocks = params.shocks.model_copy(update={"rate_per_hour": 3.0, "mean_duration_s": 30.0})
    p = params.model_copy(update={"shocks": shocks})
    g = generate(21, DAY, params=p, start="10:00", hours=0.5)
    ts, mid = _mid(g.events)
    trades = g.events[g.events["action"] == TRADE]
    long_enough = [(b, e, s) for (b, e), s in zip(g.shock_ns, g.shock_side, strict=True)
                   if e - b > 10 * NS]  # fmt: skip
    assert len(long_enough) >= 3
    for begin, end, side in long_enough:
        inside = trades[(trades["ts_event"] >= begin) & (trades["ts_event"] < end)]
        buys = float(np.mean(inside["side"] == BID))
        move = mid[np.searchsorted(ts, end) - 1] - mid[np.searchsorted(ts, begin)]
        if side == 1:  # the ask is hit: buyers, the price rises
            assert buys > 0.75 and move > 0
        else:
            assert buys < 0.25 and move < 0


# ------------------------------------------------------------------ days and the command


def test_generate_days_skips_weekends_and_holidays_and_equals_generate_day(params) -> None:
    thin = _thin(params)
    days = list(generate_days(3, 4, "2024-12-24", params=thin))
    assert [d for d, _ in days] == [date(2024, 12, d) for d in (24, 26, 27, 30)]
    for d, ev in days:
        assert ev.tobytes() == generate_day(3, d, params=thin).tobytes()
    last = datetime.fromtimestamp(days[0][1]["ts_event"][-1] / NS, CHICAGO)
    assert last.date() == date(2024, 12, 24) and last.time() < datetime(1, 1, 1, 12, 15).time()
    opens = [ev["price"][ev["action"] == ADD][0] for _, ev in days]
    assert len(set(opens)) > 1  # each day opens at its own level


def test_bad_requests_are_refused(params) -> None:
    with pytest.raises(ValueError, match="not a CME equity trade date"):
        generate_day(1, "2024-03-09")  # a Saturday
    with pytest.raises(ValueError, match="not a CME equity trade date"):
        generate_day(1, "2024-12-25")
    with pytest.raises(ValueError, match="seed"):
        generate_day(-1, DAY)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        generate_day(1, "05/03/2024")
    with pytest.raises(ValueError, match="HH:MM"):
        generate_day(1, DAY, start="8h30")
    with pytest.raises(ValueError, match="hours"):
        generate_day(1, DAY, hours=0)
    with pytest.raises(ValueError, match="close"):
        generate_day(1, DAY, start="16:30")
    with pytest.raises(ValueError, match="n_days"):
        list(generate_days(1, -1, DAY))


def test_the_command_writes_one_synthetic_dbn_file_per_trade_date(tmp_path, params) -> None:
    pfile = tmp_path / "thin.json"
    _thin(params).save(pfile)
    out = tmp_path / "days"
    args = ["--days", "2", "--seed", "7", "--start-date", "2024-03-08", "--out", str(out)]
    r = runner.invoke(sim_cmd.app, ["generate", *args, "--params", str(pfile)])
    assert r.exit_code == 0, r.output
    assert "SYNTHETIC" in r.output
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [
        "ES-SYNTHETIC-qr-2024-03-08-seed7.mbo.dbn.zst",
        "ES-SYNTHETIC-qr-2024-03-11-seed7.mbo.dbn.zst",
    ]
    back = read_mbo(files[1])
    assert is_synthetic(back)
    assert back.tobytes() == generate_day(7, "2024-03-11", params=_thin(params)).tobytes()


def test_the_command_refuses_bad_input_and_writes_nothing(tmp_path) -> None:
    out = tmp_path / "days"
    r = runner.invoke(sim_cmd.app, ["generate", "--start-date", "2024-13-01", "--out", str(out)])
    assert r.exit_code == 2 and "YYYY-MM-DD" in r.output and not out.exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = runner.invoke(sim_cmd.app, ["generate", "--start-date", DAY, "--out", str(out),
                                    "--params", str(bad)])  # fmt: skip
    assert r.exit_code == 2 and "bad.json" in r.output and not out.exists()
    corrupt = tmp_path / "cut.mbo.dbn.zst"
    corrupt.write_bytes(ES_FILE.read_bytes()[:20_000])
    written = tmp_path / "p.json"
    r = runner.invoke(sim_cmd.app, ["calibrate", str(corrupt), "--out", str(written)])
    assert r.exit_code == 2 and "truncated" in r.output and not written.exists()
