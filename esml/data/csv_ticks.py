"""CSV trade ticks into esml trade events, with the time zone found from the data itself.

Two layouts are read:
- `Date and Time,Price,Volume`: naive wall-clock stamps such as `2011/07/31 22:00:00.120`
  (es_trades_2011-07-31.csv);
- `ts,price`: ISO 8601 stamps with a UTC offset on every row, such as
  `2018-05-07T08:30:00.001532-0500`, and no size (ESM8_trades_2018-05-07.csv).

How the time zone is found: the wall clock is read in each candidate zone (UTC,
America/Chicago, America/New_York) and a zone is kept when (a) no trade falls while CME
equity futures are shut for the weekend (Friday 16:15 CT to Sunday 17:00 CT) and (b) the
first trade comes within a minute after a session opens: the Globex open at 17:00 CT
(Sunday to Thursday) or the regular-hours open at 08:30 CT (Monday to Friday). Files cut
from a recording start at an open; one that starts mid-session, or fits more than one
zone, is refused unless a zone is given. So es_trades_2011-07-31.csv is UTC: its first
print, 22:00:00.120 on Sunday 31 July 2011, is 17:00:00.120 CDT, the weekly open, while as
Chicago or New York time it would be mid-evening. ESM8's first print, 08:30:00.0015 on
the wall clock, is the RTH open only in Chicago time, and its stated offset, -05:00, is
Chicago's (CDT) on that day; a stated offset that disagrees with the zone the data
implies is an error.

A file without sizes gets size 0 on every event ("not reported"; `TickFile.size_known` is
False): no real trade has size 0, and a volume sum then reads 0 rather than a made-up
number. Sides are unknown (NO_SIDE). Every event closes its own packet (F_LAST).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from esml.data.dbn import DataFileError
from esml.market.calendar import CHICAGO, DAY_START, RTH_OPEN
from esml.market.events import F_LAST, NO_SIDE, TRADE, empty_events
from esml.market.instruments import PRICE_SCALE, instrument_for

CANDIDATE_ZONES = ("UTC", "America/Chicago", "America/New_York")
OPEN_TOLERANCE = timedelta(minutes=1)
FRIDAY_CLOSE = time(16, 15)  # latest Friday close of CME equity futures over the years
HEADER_WITH_SIZE = "Date and Time,Price,Volume"
HEADER_PRICE_ONLY = "ts,price"
_NUM = r"\d+(?:\.\d+)?"
_ROW_WITH_SIZE = re.compile(
    rf"\d{{4}}/\d{{2}}/\d{{2}} \d{{2}}:\d{{2}}:\d{{2}}(?:\.\d{{1,9}})?,{_NUM},\d+"
)
_ROW_PRICE_ONLY = re.compile(
    rf"\d{{4}}-\d{{2}}-\d{{2}}T\d{{2}}:\d{{2}}:\d{{2}}(?:\.\d{{1,9}})?[+-]\d{{2}}:?\d{{2}},{_NUM}"
)
_CONTRACT = re.compile(r"(MES|MNQ|ES|NQ)[FGHJKMNQUVXZ]\d{1,2}")
_CONTRACT_IN_NAME = re.compile(rf"^{_CONTRACT.pattern}(?=[_.\-])")


@dataclass(frozen=True)
class TickFile:
    path: Path
    symbol: str
    events: np.ndarray  # MBO_DTYPE, action TRADE
    time_zone: str
    zone_evidence: str
    size_known: bool


def is_csv_ticks(path: Path) -> bool:
    """Whether a file starts with one of the known tick headers."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            first = fh.readline().strip().lstrip("\ufeff")
    except OSError:
        return False
    return first in (HEADER_WITH_SIZE, HEADER_PRICE_ONLY)


def read_csv_ticks(
    path: str | Path, *, symbol: str | None = None, tz: str | None = None
) -> TickFile:
    """Every trade of a tick CSV as events with UTC ns timestamps.

    `symbol` names the contract (e.g. "ESU1") when the file name does not start with one;
    `tz` forces the zone of naive stamps instead of inferring it. A malformed row, a
    price off the contract's tick grid, a zero size or a stamp earlier than the one
    before fails with DataFileError naming the file and line; nothing is returned in part.
    """
    path = Path(path)
    symbol = (symbol or _symbol_from_name(path)).upper()
    if not _CONTRACT.fullmatch(symbol):
        raise DataFileError(f"{path}: {symbol!r} is not a contract such as ESU1 or MESZ25")
    tick = instrument_for(symbol).tick_fixed
    header, rows = _lines(path)
    if header == HEADER_WITH_SIZE:
        stamps, prices, sizes = _split(path, rows, _ROW_WITH_SIZE, 3)
        wall = _parse(path, [s.replace("/", "-") for s in stamps], utc=False)
        zone, evidence = _zone_of_naive(path, wall, tz)
        utc_ns = _localize(path, wall, zone)
        size = _sizes(path, sizes)
    elif header == HEADER_PRICE_ONLY:
        stamps, prices = _split(path, rows, _ROW_PRICE_ONLY, 2)
        utc_ns = _parse(path, stamps, utc=True)
        wall = _parse(path, [s[: _offset_start(s)] for s in stamps], utc=False)
        zone, evidence = _zone_of_stated(path, stamps, wall, utc_ns, tz)
        size = None
    else:
        raise DataFileError(
            f"{path}: unsupported format: line 1 {header!r} is not a known tick CSV header "
            f"({HEADER_WITH_SIZE!r} or {HEADER_PRICE_ONLY!r})"
        )
    _check_order(path, utc_ns)
    price = _prices(path, prices, tick)
    ev = empty_events(len(rows))
    ev["ts_event"] = utc_ns
    ev["ts_recv"] = utc_ns
    ev["price"] = price
    ev["size"] = 0 if size is None else size
    ev["action"] = TRADE
    ev["side"] = NO_SIDE
    ev["flags"] = F_LAST
    ev["sequence"] = np.arange(2, len(rows) + 2)  # the CSV line each event came from
    return TickFile(path, symbol, ev, zone, evidence, size_known=size is not None)


def _symbol_from_name(path: Path) -> str:
    m = _CONTRACT_IN_NAME.match(path.name.upper())
    if not m:
        raise DataFileError(
            f"{path}: the file does not name its contract; give the symbol (e.g. ESU1)"
        )
    return m.group(0)


def _lines(path: Path) -> tuple[str, list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataFileError(f"{path}: cannot read as UTF-8 text: {e}") from e
    lines = text.lstrip("\ufeff").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # trailing blank lines end the file; they are not rows
    if not lines:
        raise DataFileError(f"{path}: empty file")
    rows = [ln.strip() for ln in lines[1:]]
    if not rows:
        raise DataFileError(f"{path}: a header and no trades")
    return lines[0].strip(), rows


def _split(path: Path, rows: list[str], pattern: re.Pattern[str], n: int) -> list[list[str]]:
    ok = pd.Series(rows, dtype=object).str.fullmatch(pattern).to_numpy(bool)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise DataFileError(f"{path}: line {i + 2}: malformed row {rows[i]!r}")
    cols = [r.split(",") for r in rows]
    return [[c[k] for c in cols] for k in range(n)]


def _parse(path: Path, stamps: list[str], *, utc: bool) -> np.ndarray:
    """ns since the epoch: of the instant (utc=True), or of the wall clock as if UTC."""
    try:
        ts = pd.to_datetime(pd.Series(stamps), format="ISO8601", utc=utc)
    except (ValueError, OverflowError):
        for i, s in enumerate(stamps):
            try:
                pd.Timestamp(s)
            except (ValueError, OverflowError) as e:
                raise DataFileError(f"{path}: line {i + 2}: bad time {s!r}: {e}") from e
        raise
    if utc:
        return ts.dt.tz_convert(None).to_numpy("datetime64[ns]").view(np.int64)
    return ts.to_numpy("datetime64[ns]").view(np.int64)


def _offset_start(stamp: str) -> int:
    return max(stamp.rfind("+"), stamp.rfind("-"))


def _localize(path: Path, wall: np.ndarray, zone: str) -> np.ndarray:
    local = pd.DatetimeIndex(wall.view("datetime64[ns]"))
    try:
        aware = local.tz_localize(zone, ambiguous="raise", nonexistent="raise")
    except (ValueError, TypeError) as e:  # a stamp in a DST gap or repeated hour
        raise DataFileError(f"{path}: a wall-clock time does not exist once in {zone}: {e}") from e
    return aware.tz_convert(None).to_numpy("datetime64[ns]").view(np.int64)


def _sizes(path: Path, sizes: list[str]) -> np.ndarray:
    size = np.array([int(s) for s in sizes], dtype=np.int64)
    bad = np.flatnonzero((size <= 0) | (size > np.iinfo(np.uint32).max))
    if len(bad):
        raise DataFileError(f"{path}: line {bad[0] + 2}: size {sizes[bad[0]]} is not a trade size")
    return size


def _prices(path: Path, prices: list[str], tick: int) -> np.ndarray:
    fixed = np.rint(np.array(prices, dtype=np.float64) * PRICE_SCALE).astype(np.int64)
    bad = np.flatnonzero((fixed <= 0) | (fixed % tick != 0))
    if len(bad):
        raise DataFileError(
            f"{path}: line {bad[0] + 2}: price {prices[bad[0]]} is not on the "
            f"{tick / PRICE_SCALE} tick grid"
        )
    return fixed


def _check_order(path: Path, utc_ns: np.ndarray) -> None:
    back = np.flatnonzero(np.diff(utc_ns) < 0)
    if len(back):
        raise DataFileError(f"{path}: line {back[0] + 3}: time goes backwards")


def _chicago(utc_ns: int) -> datetime:
    return datetime.fromtimestamp(utc_ns / 1e9, UTC).astimezone(CHICAGO)


def _weekend_closed(t: datetime) -> bool:
    wd = t.weekday()
    return wd == 5 or (wd == 6 and t.time() < DAY_START) or (wd == 4 and t.time() >= FRIDAY_CLOSE)


def _opening(t: datetime) -> str | None:
    """The session open `t` follows within OPEN_TOLERANCE, if any."""
    wd = t.weekday()
    for name, at, days in (("the Globex open, 17:00 CT", DAY_START, (6, 0, 1, 2, 3)),
                           ("the RTH open, 08:30 CT", RTH_OPEN, (0, 1, 2, 3, 4))):  # fmt: skip
        start = datetime.combine(t.date(), at, CHICAGO)
        if wd in days and timedelta(0) <= t - start < OPEN_TOLERANCE:
            return name
    return None


def _fits(wall: np.ndarray, zone: str) -> tuple[bool, str]:
    """Whether reading the wall clock in `zone` fits ES trading hours, and what it shows."""
    try:
        utc_ns = _localize(Path(zone), wall, zone)
    except DataFileError:
        return False, f"as {zone} some stamps do not exist"
    closed = _closed_rows(utc_ns)
    if len(closed):
        when = _chicago(int(utc_ns[closed[0]]))
        return False, f"as {zone} trades fall in the weekend closure ({when:%a %H:%M} CT)"
    first = _chicago(int(utc_ns[0]))
    shown = f"as {zone} the first trade is {first:%a %Y-%m-%d %H:%M:%S.%f} CT"
    opening = _opening(first)
    if opening is None:
        return False, f"{shown}, at no session open"
    return True, f"{shown}, {opening}"


def _closed_rows(utc_ns: np.ndarray) -> np.ndarray:
    minutes = np.unique(utc_ns // 60_000_000_000)
    closed = {m for m in minutes.tolist() if _weekend_closed(_chicago(m * 60_000_000_000))}
    if not closed:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.isin(utc_ns // 60_000_000_000, list(closed)))


def _zone_of_naive(path: Path, wall: np.ndarray, tz: str | None) -> tuple[str, str]:
    if tz is not None:
        _check_closure(path, _localize(path, wall, _zone(path, tz)))
        return tz, "given"
    results = {z: _fits(wall, z) for z in CANDIDATE_ZONES}
    fitting = [z for z, (ok, _) in results.items() if ok]
    evidence = "; ".join(why for _, why in results.values())
    if len(fitting) != 1:
        raise DataFileError(
            f"{path}: cannot tell the time zone from the data ({evidence}); give it explicitly"
        )
    return fitting[0], evidence


def _zone_of_stated(
    path: Path, stamps: list[str], wall: np.ndarray, utc_ns: np.ndarray, tz: str | None
) -> tuple[str, str]:
    """Stated offsets fix the instants. When the trading hours also show the zone, every
    offset must be that zone's; when they do not (a file starting mid-session), the
    offsets are taken as stated."""
    _check_closure(path, utc_ns)
    try:
        zone, evidence = (tz, "given") if tz else _zone_of_naive(path, wall, None)
    except DataFileError as e:
        return "stated UTC offsets", f"offsets taken as stated: {e}"
    expected = _localize(path, wall, _zone(path, zone))
    off = np.flatnonzero(expected != utc_ns)
    if len(off):
        i = int(off[0])
        raise DataFileError(
            f"{path}: line {i + 2}: the UTC offset of {stamps[i]!r} is not {zone}'s, the "
            f"zone the trading hours show ({evidence})"
        )
    return zone, f"{evidence}; every stated UTC offset is {zone}'s"


def _check_closure(path: Path, utc_ns: np.ndarray) -> None:
    closed = _closed_rows(utc_ns)
    if len(closed):
        when = _chicago(int(utc_ns[closed[0]]))
        raise DataFileError(
            f"{path}: line {closed[0] + 2}: a trade at {when:%a %Y-%m-%d %H:%M} CT, "
            "while CME equity futures are closed for the weekend"
        )


def _zone(path: Path, tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ValueError, KeyError) as e:
        raise DataFileError(f"{path}: unknown time zone {tz!r}") from e
    return tz
