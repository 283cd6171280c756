"""Real CME ES MBO data in: decoding, book reconstruction and its consistency."""

from __future__ import annotations

import numpy as np
import pytest

from esml.data.book import BookState, apply_event, replay_l1, snapshot_end
from esml.data.dbn import DataFileError, main_instrument, read_mbo
from esml.data.validate import check_book
from esml.market.events import ADD, CANCEL, CLEAR, F_LAST, MODIFY, TRADE
from esml.market.instruments import ES
from tests.conftest import ES_FILE, FIXTURES


def test_real_es_file_decodes_to_every_record(es_events: np.ndarray) -> None:
    assert len(es_events) == 68_792
    assert snapshot_end(es_events) == 8_725
    assert (es_events["action"] == TRADE).sum() == 2_973
    assert main_instrument(es_events) == 17077
    # ts_recv is the exchange-ordered clock the engine runs on
    assert np.all(np.diff(es_events["ts_recv"].astype(np.int64)) >= 0)


def test_databento_fixture_mbo_decodes() -> None:
    ev = read_mbo(FIXTURES / "test_data.mbo.dbn.zst")
    assert len(ev) == 4
    assert set(ev["instrument_id"]) == {5482}
    assert ev["price"][0] == 3_675_750_000_000  # 3675.75, DBN's 1e-9 fixed point


def test_a_non_mbo_schema_is_refused_naming_the_record() -> None:
    with pytest.raises(DataFileError, match=r"record 0 is not an MBO record.*ohlcv-1m"):
        read_mbo(FIXTURES / "test_data.ohlcv-1m.dbn.zst")


def test_truncated_and_corrupt_files_fail_clearly(tmp_path, es_events) -> None:
    import zstandard

    raw = zstandard.ZstdDecompressor().stream_reader(ES_FILE.read_bytes(),
                                                     read_across_frames=True).read()  # fmt: skip
    cut = tmp_path / "cut.dbn"
    cut.write_bytes(raw[:-30])
    with pytest.raises(DataFileError, match=r"cut\.dbn: truncated.*record 68791"):
        read_mbo(cut)
    junk = tmp_path / "junk.dbn.zst"
    junk.write_bytes(ES_FILE.read_bytes()[:5000] + b"\x00" * 100)
    with pytest.raises(DataFileError, match=r"junk\.dbn\.zst"):
        read_mbo(junk)
    cutz = tmp_path / "cut.dbn.zst"
    cutz.write_bytes(ES_FILE.read_bytes()[:-100])
    with pytest.raises(DataFileError, match=r"cut\.dbn\.zst: truncated: zstd frame"):
        read_mbo(cutz)
    not_dbn = tmp_path / "notes.dbn"
    not_dbn.write_text("Date and Time,Price,Volume\n")
    with pytest.raises(DataFileError, match="not a DBN file"):
        read_mbo(not_dbn)


def test_book_never_crossed_once_continuous_trading_starts(es_events) -> None:
    r = check_book(es_events, ES.tick_fixed)
    assert r.packets_checked > 40_000
    assert r.crossed_packets == 0, f"first crossed packet ends at record {r.first_crossed}"
    # before the 17:00 CT reopen the pre-open auction book may cross; it must uncross
    assert r.preopen_crossed_packets > 0


def test_every_trade_prints_at_or_inside_the_touch(es_events) -> None:
    """Sweeps are judged against the book less the packet's earlier fills. A print beyond
    that touch is allowed only when every resting order skipped over is cancelled right
    after the match without a fill (CME self-match prevention)."""
    r = check_book(es_events, ES.tick_fixed)
    assert r.trades_checked == 2_972  # all but the auction's opening print (side N)
    bad = _trades_outside_touch(es_events)
    assert len(bad) == r.trades_outside_touch
    for i, skipped in bad:
        for oid in skipped:
            later = np.flatnonzero(es_events["order_id"][i:i + 200] == oid) + i
            actions = {chr(es_events["action"][k]) for k in later}
            assert "F" not in actions and "C" in actions, (
                f"trade {i} skipped order {oid}, which stayed in the book"
            )


def _trades_outside_touch(ev: np.ndarray) -> list[tuple[int, list[int]]]:
    """Slow, obvious reference replay: (trade index, ask/bid orders it jumped over)."""
    live: dict[int, tuple[int, int, int]] = {}
    filled: set[int] = set()
    out = []
    opened = False
    for i, e in enumerate(ev):
        a, oid = int(e["action"]), int(e["order_id"])
        if a == TRADE and i >= 8_725:
            if opened and e["side"] != ord("N"):
                px = int(e["price"])
                buy = e["side"] == ord("B")
                book_side = ord("A") if buy else ord("B")
                better = [k for k, (p, s, sd) in live.items() if sd == book_side and s > 0
                          and k not in filled and (p < px if buy else p > px)]  # fmt: skip
                if better:
                    out.append((i, better))
            opened = True
        elif a == ord("F"):
            filled.add(oid)
        elif a in (ADD, MODIFY):
            live[oid] = (int(e["price"]), int(e["size"]), int(e["side"]))
        elif a == CANCEL and oid in live:
            p, s, sd = live[oid]
            s -= int(e["size"])
            if s <= 0:
                del live[oid]
            else:
                live[oid] = (p, s, sd)
        elif a == CLEAR:
            live.clear()
        if e["flags"] & F_LAST:
            filled.clear()
    return out


def test_l1_and_l2_come_from_the_same_l3_book(es_events) -> None:
    """Against a plain dict-of-orders reference at several checkpoints: same levels."""
    book = BookState.new(ES.tick_fixed)
    ref: dict[int, tuple[int, int, int]] = {}
    checkpoints = {8_725, 20_000, 40_000, 60_000, len(es_events)}
    start = 0
    for stop in sorted(checkpoints):
        l1 = replay_l1(es_events[start:stop], ES.tick_fixed, book)
        for e in es_events[start:stop]:
            a, oid = int(e["action"]), int(e["order_id"])
            if a in (ADD, MODIFY):
                ref[oid] = (int(e["side"]), int(e["price"]), int(e["size"]))
            elif a == CANCEL and oid in ref:
                sd, p, s = ref[oid]
                ref[oid] = (sd, p, s - int(e["size"]))
                if ref[oid][2] <= 0:
                    del ref[oid]
        start = stop
        levels: dict[tuple[int, int], int] = {}
        for sd, p, s in ref.values():
            levels[(sd, p)] = levels.get((sd, p), 0) + s
        bids = sorted(((p, q) for (sd, p), q in levels.items() if sd == ord("B")), reverse=True)
        asks = sorted((p, q) for (sd, p), q in levels.items() if sd == ord("A"))
        depth = book.depth(10)
        assert [tuple(r) for r in depth[:, :2]] == bids[:10]
        assert [tuple(r) for r in depth[:, 2:]] == asks[:10]
        assert tuple(l1[-1]) == (bids[0][0], bids[0][1], asks[0][0], asks[0][1])
        assert book.touch() == tuple(l1[-1])


def test_book_reports_an_off_grid_price() -> None:
    book = BookState.new(ES.tick_fixed)
    apply_event(*book.arrays, ADD, ord("B"), 4_800_000_000_000, 1, 1)
    apply_event(*book.arrays, ADD, ord("A"), 4_800_100_000_000, 1, 2)  # 4800.10: off grid
    with pytest.raises(ValueError, match="off the tick grid"):
        book.check()
