"""LOBSTER in: the reader, the event conversion, and esml's L3 book proved against LOBSTER's
own orderbook files (a hand-made day with known answers; the real samples when present)."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from esml.data.book import BookState, replay_l1
from esml.data.dbn import DataFileError
from esml.data.lobster import (
    AGGREGATE_ID_BASE,
    PUBLISHER_XNAS_ITCH,
    TICK_FIXED,
    read_lobster,
    reconstruct,
)
from esml.market.events import (
    ADD,
    ASK,
    BID,
    CANCEL,
    CLEAR,
    F_LAST,
    F_MAYBE_BAD_BOOK,
    F_MBP,
    F_SNAPSHOT,
    FILL,
    MODIFY,
    NONE,
    TRADE,
)
from tests.conftest import ROOT

DATA = Path(os.environ.get("ESML_DATA_DIR", ROOT.parent / "shared" / "data")) / "lobster"
needs_data = pytest.mark.skipif(
    not any(DATA.glob("*.zip")), reason=f"no LOBSTER sample zips in {DATA}"
)
AAPL_1 = DATA / "LOBSTER_SampleFile_AAPL_2012-06-21_1.zip"
GOOG_10 = DATA / "LOBSTER_SampleFile_GOOG_2012-06-21_10.zip"

# A hand-made two-level day. Before 09:30 rest bids 10.00x50, 9.99x30, 9.98x70 and asks
# 10.02x100, 10.03x40: the message file never shows 9.98 or 10.03 being placed.
MESSAGES = [
    "34200.000000001,1,11,10,100100,-1",  # ask 10.01x10 placed
    "34200.5,4,11,10,100100,-1",  # ... and bought: 10.03 comes into view
    "34201.0,5,0,5,100050,1",  # hidden buy order hit at 10.005
    "34201.25,3,22,50,100000,1",  # the pre-open bid 10.00x50 deleted: 9.98 comes into view
    "34201.5,7,0,0,-1,-1",  # halt
    "34202.0,7,0,0,1,-1",  # resume
    "34202.5,2,33,10,99900,1",  # 10 of a pre-open bid at 9.99 cancelled
    "34203.0,1,44,5,99900,1",
    "34203.5,2,44,2,99900,1",
    "34204.0,3,44,3,99900,1",
]
_A, _B = "100200,100,100000,50,100300,40,99900,30", "100200,100,99900,30,100300,40,99800,70"
BOOK = [
    "100100,10,100000,50,100200,100,99900,30",
    _A,
    _A,
    _B,
    _B,
    _B,
    "100200,100,99900,20,100300,40,99800,70",
    "100200,100,99900,25,100300,40,99800,70",
    "100200,100,99900,23,100300,40,99800,70",
    "100200,100,99900,20,100300,40,99800,70",
]
STEM = "TEST_2012-06-21_34200000_57600000_{}_2.csv"


def _zip(tmp_path: Path, messages: list[str], book: list[str], name: str = "day.zip") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(STEM.format("message"), "\n".join(messages) + "\n")
        z.writestr(STEM.format("orderbook"), "\n".join(book) + "\n")
    return path


def test_reader_units_and_times(tmp_path: Path) -> None:
    day = read_lobster(_zip(tmp_path, MESSAGES, BOOK))
    assert (day.ticker, day.levels, len(day)) == ("TEST", 2, 10)
    # 09:30 New York on 2012-06-21 is 13:30 UTC (EDT); LOBSTER's decimals are exact to the ns
    assert day.ts_ns[0] == pd.Timestamp("2012-06-21 13:30:00.000000001", tz="UTC").value
    assert day.ts_ns[3] == pd.Timestamp("2012-06-21 13:30:01.25", tz="UTC").value
    truth = day.truth_l2()
    assert truth.shape == (10, 2, 4)
    # level 1 of row 1 as (bid_px, bid_sz, ask_px, ask_sz) in 1e-9 fixed point
    assert tuple(truth[0, 0]) == (10_000_000_000, 50, 10_010_000_000, 10)


def test_a_hand_made_day_replays_exactly_with_its_hidden_depth_counted(tmp_path: Path) -> None:
    r = reconstruct(read_lobster(_zip(tmp_path, MESSAGES, BOOK)))
    assert r.ok and r.rows_matching == 10 and r.first_mismatch_line == 0
    # seed: row 1 with the ask 10.01 add undone: bids 10.00, 9.99 and the ask 10.02
    assert r.seeded_levels == 3
    # 10.03 (row 2) and 9.98 (row 4) come into view: read off the orderbook file, counted
    assert (r.rows_revealed, r.levels_revealed, r.lots_revealed_added) == (2, 2, 110)
    assert r.rows_exact == 8 and r.rows_forced == 0 and r.reattributions == 0

    ev = r.events
    snap = ev[(ev["flags"] & F_SNAPSHOT) != 0]
    assert snap["action"][0] == CLEAR and list(snap["action"][1:]) == [ADD] * 3
    assert np.all(snap["order_id"][1:] >= AGGREGATE_ID_BASE)
    body = ev[len(snap) :]
    ex = body[body["sequence"] == 2]  # the execution: trade (aggressor), fill, cancel
    assert [(chr(a), chr(s)) for a, s in zip(ex["action"], ex["side"], strict=True)] == [
        ("T", "B"), ("F", "A"), ("C", "A"), ("A", "A"),
    ]  # fmt: skip
    assert ex["flags"][-1] & F_MBP and ex["flags"][-1] & F_LAST  # the reveal closes the packet
    hidden = body[body["sequence"] == 3]
    assert len(hidden) == 1 and hidden["action"][0] == TRADE and hidden["side"][0] == ASK
    assert hidden["price"][0] == 10_005_000_000  # half a cent: hidden orders trade off the grid
    halts = body[np.isin(body["sequence"], [5, 6])]
    assert list(halts["action"]) == [NONE, NONE]
    assert np.all(ev["publisher_id"] == PUBLISHER_XNAS_ITCH)
    assert (body["flags"] & F_LAST != 0).sum() == 10  # one packet per message


def test_a_level_that_was_in_view_is_never_taken_from_the_truth(tmp_path: Path) -> None:
    """An orderbook row that disagrees with its messages at a level already shown is a
    mismatch, flagged and counted, not a reveal."""
    book = list(BOOK)
    book[9] = "100200,100,99900,21,100300,40,99800,70"  # the delete of 3 shows as 2
    r = reconstruct(read_lobster(_zip(tmp_path, MESSAGES, book)))
    assert r.rows_forced == 1 and r.mismatches == 1 and r.first_mismatch_line == 10
    assert not r.ok
    assert (r.events["flags"] & F_MAYBE_BAD_BOOK != 0).any()


@pytest.mark.parametrize(
    ("line", "text", "error"),
    [
        (3, "34201.0,6,0,5,100050,1", r"line 3: event type"),
        (5, "34200.1,7,0,0,-1,-1", r"line 5: time goes backwards"),
        (1, "34200.000000001,1,11,10,100150,-1", r"line 1: price off the one-cent grid"),
        (10, "34204.0,3,44,3", r"line 10: 4 fields, expected 6"),
        (2, "34200.5,4,11,10,100100,x", r"line 2: field 6 is 'x'"),
        (8, "34203.0,1,11,5,99900,1", r"line 8: order 11 added twice"),
        (9, "34203.5,2,44,2,100000,1", r"line 9: names an order at another price"),
    ],
)
def test_corrupt_messages_name_the_file_and_line(
    tmp_path: Path, line: int, text: str, error: str
) -> None:
    messages = list(MESSAGES)
    messages[line - 1] = text
    with pytest.raises(DataFileError, match=r"day\.zip:TEST_.*_message_2\.csv: " + error):
        reconstruct(read_lobster(_zip(tmp_path, messages, BOOK)))


def test_corrupt_orderbook_and_truncation_are_refused(tmp_path: Path) -> None:
    book = list(BOOK)
    book[1] = "100300,40,100000,50,100200,100,99900,30"  # asks out of price order
    with pytest.raises(DataFileError, match=r"orderbook_2\.csv: line 2: ask levels out of"):
        read_lobster(_zip(tmp_path, MESSAGES, book))
    with pytest.raises(DataFileError, match=r"9 rows, but .* 10 messages"):
        read_lobster(_zip(tmp_path, MESSAGES, BOOK[:-1], "short.zip"))
    cut = [*MESSAGES[:-1], MESSAGES[-1][:12]]  # the last line cut short
    with pytest.raises(DataFileError, match=r"message_2\.csv: line 10: 3 fields"):
        read_lobster(_zip(tmp_path, cut, BOOK, "cut.zip"))
    whole = _zip(tmp_path, MESSAGES, BOOK, "whole.zip").read_bytes()
    broken = tmp_path / "broken.zip"
    broken.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataFileError, match=r"broken\.zip: corrupt or truncated zip"):
        read_lobster(broken)


# ---------------------------------------------------------------- the real samples


def _touch_rows(events: np.ndarray) -> np.ndarray:
    """Index of each message's last record (its packet end), in line order."""
    ends = np.flatnonzero((events["flags"] & F_LAST != 0) & (events["flags"] & F_SNAPSHOT == 0))
    assert np.array_equal(events["sequence"][ends], np.arange(1, len(ends) + 1))
    return ends


@needs_data
def test_aapl_level_1_every_row_matches_through_a_plain_l1_replay() -> None:
    day = read_lobster(AAPL_1)
    assert len(day) == 118_497
    assert np.bincount(day.kind)[[1, 2, 3, 4, 5]].tolist() == [54818, 252, 28437, 23658, 11332]
    r = reconstruct(day)
    assert r.ok and r.rows_matching == len(day) and r.rows_forced == 0
    assert r.rows_exact + r.rows_revealed == len(day)
    # independent of the check inside reconstruct: esml's replay_l1 against the file's L1
    l1 = replay_l1(r.events, TICK_FIXED)[_touch_rows(r.events)]
    truth = day.truth_l2()[:, 0, :]
    assert np.array_equal(l1, truth)
    # executions: a trade per visible execution and per hidden one
    assert (r.events["action"] == TRADE).sum() == 23658 + 11332
    assert (r.events["action"] == FILL).sum() == 23658


@needs_data
def test_goog_level_10_every_level_at_checkpoints_and_every_row() -> None:
    day = read_lobster(GOOG_10)
    r = reconstruct(day)
    assert r.ok and r.rows_matching == len(day) == 147_916
    truth = day.truth_l2()
    ends = _touch_rows(r.events)
    book = BookState.new(TICK_FIXED)
    start = 0
    for row in np.linspace(0, len(day) - 1, 40).astype(int):
        replay_l1(r.events[start : ends[row] + 1], TICK_FIXED, book)
        start = ends[row] + 1
        assert np.array_equal(book.depth(10), truth[row]), f"line {row + 1}"
    inferred = r.events[(r.events["flags"] & F_MBP != 0) & (r.events["flags"] & F_SNAPSHOT == 0)]
    assert not (inferred["flags"] & F_MAYBE_BAD_BOOK).any()
    assert set(np.unique(inferred["action"])) <= {ADD, CANCEL, MODIFY}
    assert np.all(np.isin(r.events["side"][r.events["action"] == FILL], [BID, ASK]))


@needs_data
def test_a_truncated_real_sample_names_the_file(tmp_path: Path) -> None:
    cut = tmp_path / AAPL_1.name
    cut.write_bytes(AAPL_1.read_bytes()[:-5000])
    with pytest.raises(DataFileError, match=r"LOBSTER_SampleFile_AAPL_2012-06-21_1\.zip"):
        read_lobster(cut)


def test_the_validation_command_fails_on_a_mismatch_and_without_data(tmp_path: Path) -> None:
    from rich.console import Console

    from esml.evaluation.market_validation import run
    from esml.sim.synthetic import generate_session
    from tests.conftest import FIXTURES

    data = tmp_path / "data"
    (data / "lobster").mkdir(parents=True)
    (data / "cme-es").mkdir()
    (data / "cme-es" / "test_data.mbo.dbn.zst").write_bytes(
        (FIXTURES / "test_data.mbo.dbn.zst").read_bytes()
    )
    out = tmp_path / "report.html"
    quiet = Console(file=io.StringIO())

    def short(seed: int) -> np.ndarray:
        return generate_session(seed, duration_s=120)

    assert run(data, out, short, console=quiet) == 2  # no LOBSTER day to prove the book on
    _zip(data / "lobster", MESSAGES, BOOK)
    assert run(data, out, short, console=quiet) == 0
    assert "10 of 10 rows match exactly" in out.read_text()
    bad = list(BOOK)
    bad[9] = "100200,100,99900,21,100300,40,99800,70"
    _zip(data / "lobster", MESSAGES, bad, "bad.zip")
    assert run(data, out, short, console=quiet) == 1
    assert "19 of 20 rows match exactly" in out.read_text()
