"""`python -m bench.run` (`make bench`): events per second of each stage of the per-event
path, on the real ES file replayed 20 times and on a SYNTHETIC generated day.

Each row is compiled (warmed up) first, then timed three times; the best wall-clock time
counts, and the CPU time of that run is kept beside it (on a shared machine the wall clock
also counts other people's work). Prints a table and writes bench/results.json.

The real file replayed 20 times: the whole file (its snapshot, then the hour) 20 times in
a row, each copy's timestamps shifted by the file's span and its order ids made fresh, with
a book-clear record before each copy after the first: every copy is replayed into a fresh
book, as a new day's file would be.
"""

from __future__ import annotations

from esml._compile_cache import use_source_keyed_numba_cache

use_source_keyed_numba_cache()  # before numba loads: its cache is keyed by esml's source

import datetime as dt  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402
import zstandard  # noqa: E402
from numba import njit  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.decisions import decision_latencies  # noqa: E402
from bench.live import live_latencies  # noqa: E402
from bench.models import tree_training_seconds  # noqa: E402
from bench.startup import startup_seconds  # noqa: E402
from bench.tradovate import tradovate_round_trips  # noqa: E402
from esml.config import load_config  # noqa: E402
from esml.data.book import BookState, apply_event_inlined  # noqa: E402
from esml.data.dbn import main_instrument, read_mbo, write_mbo_dbn  # noqa: E402
from esml.engine.backtest import run_backtest  # noqa: E402
from esml.features.batch import batch_features  # noqa: E402
from esml.features.kernel import (  # noqa: E402
    END,
    PER_EVENT_FEATURES,
    PER_EVENT_L1_IMBALANCE,
    PER_EVENT_NOTHING,
    UPDATE,
    advance_exchange,
)
from esml.features.streaming import FEATURE_NAMES, FeatureState  # noqa: E402
from esml.market.events import CLEAR, MBO_DTYPE, NO_SIDE  # noqa: E402
from esml.market.instruments import ES  # noqa: E402
from esml.sim.exchange import Exchange, ExchangeConfig, OrderKind, ReportKind  # noqa: E402
from esml.sim.exchange_core import O_SIDE  # noqa: E402
from esml.sim.queue_reactive import generate_day  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ES_FILE = ROOT / "data/samples/esh4-glbx-mdp3-20231225.mbo.dbn.zst"
RESULTS = ROOT / "bench/results.json"
COPIES = 20
SYNTHETIC_SEED = 1
SYNTHETIC_DATE = "2024-03-05"
REPEATS = 3
NEVER = np.iinfo(np.int64).max
GOAL = 5_000_000  # issue 3: book + exchange simulator + per-event L1 imbalance, one core
REFERENCES = {  # issue 3, measured on this machine on the same 20x file
    "zstd decode into a numpy view": 11.6e6,
    "hftbacktest (L3 FIFO queue, numba callback computing imbalance)": 4.9e6,
    "a plain numba L3 book": 5.3e6,
    "a pure-Python dict book": 1.9e6,
    "nautilus_trader 1.221, L3 book and an imbalance strategy": 0.29e6,
}


@dataclass(frozen=True)
class Row:
    name: str
    data: str
    events: int
    seconds: float  # best wall-clock run
    cpu_seconds: float  # CPU time of that run
    notes: str = ""

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "events_per_s": round(self.events_per_s),
                "events_per_cpu_s": round(self.events / self.cpu_seconds)}  # fmt: skip


def tiled(events: np.ndarray, copies: int) -> np.ndarray:
    """`events` `copies` times in a row, each into a fresh book (see the module doc)."""
    span = np.uint64(int(events["ts_recv"][-1]) - int(events["ts_recv"][0]) + 1)
    id_step = np.uint64(int(events["order_id"].max()) + 1)
    parts = []
    for k in range(copies):
        c = events.copy()
        shift = np.uint64(k) * span
        c["ts_recv"] += shift
        c["ts_event"] += shift
        live = c["order_id"] != 0
        c["order_id"][live] += np.uint64(k) * id_step
        if k:
            clear = c[:1].copy()
            clear["action"], clear["side"], clear["size"], clear["order_id"] = CLEAR, NO_SIDE, 0, 0
            parts.append(clear)
        parts.append(c)
    return np.concatenate(parts)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(best wall seconds, CPU seconds of that run) after one warm-up call."""
    fn()
    best = (np.inf, np.inf)
    for _ in range(REPEATS):
        w, c = time.perf_counter(), time.process_time()
        fn()
        run = (time.perf_counter() - w, time.process_time() - c)
        best = min(best, run)
    return best


def zstd_view(path: Path) -> np.ndarray:
    """Decompress a DBN file and view its records, skipping the metadata: no checks."""
    raw = zstandard.ZstdDecompressor().stream_reader(path.read_bytes(),
                                                     read_across_frames=True).read()  # fmt: skip
    start = 8 + int.from_bytes(raw[4:8], "little")
    return np.frombuffer(raw, dtype=MBO_DTYPE, offset=start)


@njit(cache=True)
def _book_only(ev, meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size,
               o_side, free):  # fmt: skip
    for i in range(len(ev)):
        e = ev[i]
        apply_event_inlined(meta, bid_qty, ask_qty, bid_cnt, ask_cnt, keys, vals, o_idx, o_size,
                    o_side, free, e.action, e.side, e.price, e.size, e.order_id)  # fmt: skip
    return meta[0]


def book_only(events: np.ndarray) -> None:
    book = BookState.new(ES.tick_fixed)
    _book_only(events, *book.arrays)
    book.check()


def replay(events: np.ndarray, per_event: int, quotes: int = 0) -> None:
    """Book, exchange simulator and a compiled per-event computation over all events, as
    the engine's kernel runs them. With `quotes`, that many orders of ours rest on each
    side, 20 ticks and more off the touch, replaced when they fill: every event is matched
    against them."""
    book, fs = BookState.new(ES.tick_fixed), FeatureState()
    ex = Exchange(ExchangeConfig(market_hours="always_open"), ES.tick_fixed)
    i = 0
    if quotes:
        i = int(np.searchsorted(events["ts_recv"], events["ts_recv"][0] + 60 * 10**9))
        _replay_until(events[:i], book, fs, ex, per_event)
        for k in range(quotes):
            _quote(ex, book, int(events["ts_recv"][i - 1]), 1, k)
            _quote(ex, book, int(events["ts_recv"][i - 1]), -1, k)
    while i < len(events):
        i, why = advance_exchange(events, i, *book.arrays, book.o_seq, fs.s, fs.ring,
                                  per_event, NEVER, *ex.arrays)  # fmt: skip
        if why == UPDATE:
            now = ex.next_visible_ns
            for r in ex.take_reports(now):
                if r.kind is ReportKind.FILL:  # one lot each: it is gone, quote again
                    _quote(ex, book, now, int(ex.xo[r.slot, O_SIDE]), 0)
        elif why != END:
            raise RuntimeError(f"replay stopped at record {i} ({why})")


def _replay_until(events: np.ndarray, book: BookState, fs: FeatureState, ex: Exchange,
                  per_event: int) -> None:  # fmt: skip
    advance_exchange(events, 0, *book.arrays, book.o_seq, fs.s, fs.ring, per_event, NEVER,
                     *ex.arrays)  # fmt: skip


def _quote(ex: Exchange, book: BookState, now: int, side: int, k: int) -> None:
    bid, _, ask, _ = book.touch()
    away = (20 + k) * ES.tick_fixed
    ex.submit(now, side, OrderKind.LIMIT, 1, bid - away if side > 0 else ask + away)


class ImbalanceRule:
    """The engine backtest's model: buy a heavy bid, sell a heavy offer (a rule, not a
    forecast; it is here for the cost of deciding, not for its P&L)."""

    name = "bench-l1-imbalance"
    feature_names: tuple[str, ...] = FEATURE_NAMES
    _imb = FEATURE_NAMES.index("imbalance_l1")

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.array([self.predict_one(r) for r in x])

    def predict_one(self, row: np.ndarray) -> tuple[float, float, float]:
        lean = 0.45 * float(np.clip(row[self._imb], -1.0, 1.0))
        return 0.5 - lean, 0.0, 0.5 + lean


def measure(console: Console) -> list[Row]:
    real = read_mbo(ES_FILE)
    real = real[real["instrument_id"] == main_instrument(real)]
    real20 = tiled(real, COPIES)
    console.print(f"generating the SYNTHETIC day (seed {SYNTHETIC_SEED}, {SYNTHETIC_DATE})...")
    synth = generate_day(SYNTHETIC_SEED, SYNTHETIC_DATE)
    sets = [(f"real ES x{COPIES}", real20), ("SYNTHETIC day", synth)]
    rows: list[Row] = []

    def add(name: str, label: str, n: int, fn: Callable[[], object], notes: str = "") -> None:
        wall, cpu = timed(fn)
        rows.append(Row(name, label, n, wall, cpu, notes))
        console.print(f"  {name} [{label}]: {n / wall / 1e6:.2f}M events/s")

    with tempfile.TemporaryDirectory() as tmp:
        for label, ev in sets:
            path = Path(tmp) / f"{label.replace(' ', '_')}.mbo.dbn.zst"
            write_mbo_dbn(path, ev, symbols={"ES": int(ev["instrument_id"][0])})
            add("zstd decode into a numpy view", label, len(ev), lambda p=path: zstd_view(p),
                "the floor: decompress and view, no checks")  # fmt: skip
            add("DBN decode (zstd -> numpy view)", label, len(ev), lambda p=path: read_mbo(p),
                "esml's reader: decompress, check every record, copy")  # fmt: skip
    for label, ev in sets:
        n = len(ev)
        add("book reconstruction only", label, n, lambda e=ev: book_only(e),
            "L3 book: apply_event per record")  # fmt: skip
        add("replay: book + exchange sim + no-op strategy", label, n,
            lambda e=ev: replay(e, PER_EVENT_NOTHING),
            "no order of ours: the kernel's idle matching path")  # fmt: skip
        add("replay: book + exchange sim + per-event L1 imbalance", label, n,
            lambda e=ev: replay(e, PER_EVENT_L1_IMBALANCE),
            "imbalance of the touch computed in the compiled loop after every event")  # fmt: skip
        add("replay: ... + imbalance + 4 resting orders of ours", label, n,
            lambda e=ev: replay(e, PER_EVENT_L1_IMBALANCE, quotes=2),
            "2 bids + 2 offers resting (FIFO), replaced when filled")  # fmt: skip
        add("replay: book + exchange sim + streaming features", label, n,
            lambda e=ev: replay(e, PER_EVENT_FEATURES),
            f"the engine's {len(FEATURE_NAMES)} features' state, after every event")  # fmt: skip
    add("generator (queue-reactive, SYNTHETIC)", "SYNTHETIC day", len(synth),
        lambda: generate_day(SYNTHETIC_SEED, SYNTHETIC_DATE), "events generated per second")
    cfg = load_config(risk={"min_confidence": 0.7, "max_daily_loss": 1e9})
    add("engine backtest: features, decisions, gates, journal", "real ES x1", len(real),
        lambda: run_backtest(real, cfg, ImbalanceRule()),
        "a decision a second in Python, SQLite journal in memory")  # fmt: skip
    return rows


def machine() -> dict[str, object]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numba": numba.__version__,
        "numpy": np.__version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def table(rows: list[Row]) -> Table:
    t = Table(title="esml per-event throughput (best of 3, after warm-up)")
    for col in ("stage", "data", "events", "seconds", "M events/s", "M events/CPU-s", "notes"):
        t.add_column(col, justify="right" if col[0] in "sMe" and col != "stage" else "left")
    for r in rows:
        t.add_row(r.name, r.data, f"{r.events:,}", f"{r.seconds:.3f}",
                  f"{r.events_per_s / 1e6:.2f}", f"{r.events / r.cpu_seconds / 1e6:.2f}",
                  r.notes)  # fmt: skip
    return t


def model_rows(console: Console) -> tuple[list[Row], dict[str, object]]:
    """Issue 4's rows: batch features (events/s), decision latency, tree training time."""
    real = read_mbo(ES_FILE)
    real = real[real["instrument_id"] == main_instrument(real)]
    rows: list[Row] = []
    for label, ev in ((f"real ES x{COPIES}", tiled(real, COPIES)),):
        wall, cpu = timed(lambda e=ev: batch_features(e, ES.tick_fixed, 1.0))
        rows.append(Row("batch features (the streaming kernel over a day)", label, len(ev),
                        wall, cpu, f"{len(FEATURE_NAMES)} features, a row a second"))  # fmt: skip
    latencies = decision_latencies()
    for lat in latencies:
        console.print(f"  {lat.name}: p50 {lat.p50_us:.0f} us, p99 {lat.p99_us:.0f} us")
    wall, cpu = tree_training_seconds(real)
    console.print(f"  trees on 1M rows x 60 features: {wall:.1f} s ({cpu:.1f} CPU-s)")
    extra = {
        "decision_latency_us": [lat.as_dict() for lat in latencies],
        "goal_decision_p99_us": 200,
        "tree_training_1m_x_60": {
            "seconds": wall,
            "cpu_seconds": cpu,
            "goal_seconds": 60,
            "notes": "200 trees, depth 4, SYNTHETIC resample of real ES features",
        },
    }
    return rows, extra


def main() -> None:
    console = Console(width=max(Console().width, 160))
    info = machine()
    rows = measure(console)
    more, extra = model_rows(console)
    extra["tradovate_round_trip_ms"] = tradovate_round_trips(console)
    extra["live_latency_ms"] = live_latencies(console)  # bench/live.py
    rows += more
    extra["startup_s"] = startup = startup_seconds()
    console.print(f"esml --help: {startup['python -m esml.cli.app --help']:.2f} s, slowest "
                  f"subcommand {startup['slowest subcommand s']:.2f} s (goal < 0.5 s)")  # fmt: skip
    console.print(table(rows))
    for lat in extra["decision_latency_us"]:
        console.print(f"decision latency, {lat['name']}: p50 {lat['p50_us']:.0f} us, "
                      f"p99 {lat['p99_us']:.0f} us")  # fmt: skip
    console.print(f"tree training on 1M x 60: {extra['tree_training_1m_x_60']['seconds']:.1f} s "
                  "(goal <= 60 s)")  # fmt: skip
    goal = [r for r in rows if r.name.endswith("per-event L1 imbalance")]
    for r in goal:
        verdict = "meets" if r.events_per_s >= GOAL else "misses"
        console.print(f"{r.data}: {r.events_per_s / 1e6:.2f}M events/s {verdict} the "
                      f"{GOAL / 1e6:.0f}M/s goal")  # fmt: skip
    RESULTS.write_text(json.dumps({
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": info,
        "goal_events_per_s": GOAL,
        "references_events_per_s": REFERENCES,
        "rows": [r.as_dict() for r in rows],
        **extra,
    }, indent=2) + "\n")  # fmt: skip
    console.print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
