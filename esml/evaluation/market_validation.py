"""`make validate`: esml's books proved against outside truths, and the market generator
set beside real markets.

1. LOBSTER: every sample day replayed through esml's L3 book must reproduce LOBSTER's own
   orderbook file at every row and level (esml.data.lobster says how hidden depth is filled
   in from that file and counts each time).
2. CME ES MBO: once trading opens no packet ends crossed, every trade prints at the touch
   (a print beyond it only where CME's self-match prevention cancelled the orders it
   skipped), and L1 is the top of L2 after every packet.
3. Stylized facts (esml.evaluation.stylized) of real ES, LOBSTER stocks and the generator,
   with where the generator departs from real ES computed from the numbers.
4. Bar-level stylized facts (esml.evaluation.bar_stylized): the shipped nine years of real
   ES 5-minute bars against `--bar-days` consecutive generated days aggregated to the same
   bars (the slow dynamics: tails, clustering, the clock, regime lengths), with departures.

The generator runs with its slow dynamics fitted on the bars (`esml.sim.slow_dynamics`);
`--generator` replaces it in part 3's table only: the bar facts and the windows like the
real file's (`--evenings`) are always the queue-reactive generator's.
Exits non-zero when any check fails. Usage:
    python -m esml.evaluation.market_validation [--data-dir DIR] [--out FILE.html]
        [--generator MODULE:FUNCTION] [--seed N] [--bar-days N] [--evenings N]
"""

from __future__ import annotations

import argparse
import html
import importlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import databento_dbn as dbn
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from rich.console import Console
from rich.table import Table

from esml.data.book import BookState, apply_event, snapshot_end
from esml.data.continuous import chain_bars
from esml.data.dbn import DataFileError, main_instrument, open_dbn, read_mbo
from esml.data.lobster import TICK_FIXED, LobsterReplay, read_lobster, reconstruct
from esml.data.sierra import SHIPPED_BARS, read_shipped_bars
from esml.data.validate import check_book
from esml.evaluation.bar_stylized import (
    BarFacts,
    bar_facts,
    bar_scalars,
    bars_with_flow,
    profile_corr,
)
from esml.evaluation.stylized import TRADE_SIZE_QUANTILES, StylizedFacts, stylized_facts
from esml.market.calendar import is_trading_date
from esml.market.events import (
    ADD,
    ASK,
    BID,
    CANCEL,
    CLEAR,
    F_LAST,
    FILL,
    MODIFY,
    NO_SIDE,
    TRADE,
)
from esml.market.instruments import ES
from esml.sim.queue_reactive import generate_day, generate_days
from esml.sim.slow_dynamics import bar_calibrated_params

DEFAULT_DATA_DIR = "../shared/data"
DEFAULT_OUT = "reports/market-validation.html"
MIN_STYLIZED_HOURS = 0.5  # an ES file needs this much open market to give stylized facts
SMP_LOOKAHEAD = 200  # records within which a skipped order must be cancelled
CLOSE_ENOUGH = 0.25  # relative difference from real ES still called "close"
CKS_R2 = 0.65  # Cont, Kukanov and Stoikov (2014): mean R² on US equities, 10-s intervals

DEFAULT_BAR_DAYS = 20  # generated trade dates set against the real bars
WINDOW_EVENINGS = 10  # generated windows like the real MBO file's, averaged
Generator = Callable[[int], np.ndarray]


GENERATED_DAY = "2024-03-05"
BAR_BLOCK_DAYS = 5  # generated bars come in weeks of consecutive trade dates ...
BAR_SPAN = (date(2015, 9, 21), date(2023, 6, 26))  # ... spread over the real bars' years


def default_generator(seed: int) -> np.ndarray:
    """One SYNTHETIC trading day of ES from the queue-reactive generator, with its slow
    dynamics fitted on the real bars."""
    return generate_day(seed, GENERATED_DAY, params=bar_calibrated_params())


def generated_bars(seed: int, n_days: int) -> pd.DataFrame:
    """5-minute bars of `n_days` SYNTHETIC trade dates (slow dynamics on), in weeks of
    consecutive dates spread evenly over the years the real bars cover: a few consecutive
    weeks would see one level of the slowly moving daily volatility, nine years see all."""
    blocks = -(-n_days // BAR_BLOCK_DAYS)
    gap = (BAR_SPAN[1] - BAR_SPAN[0]) / blocks
    frames = []
    for k in range(blocks):
        n = min(BAR_BLOCK_DAYS, n_days - k * BAR_BLOCK_DAYS)
        start = BAR_SPAN[0] + gap * k
        days = generate_days(seed, n, start, params=bar_calibrated_params())
        frames += [bars_with_flow(ev) for _, ev in days]
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------- ES MBO


@dataclass(frozen=True)
class EsCheck:
    file: str
    instrument_id: int
    records: int
    packets_checked: int
    crossed_packets: int
    trades_checked: int
    trades_beyond_touch: int  # by the compiled check (esml.data.validate)
    trades_beyond_touch_reference: int  # by the plain dict replay here: must agree
    beyond_touch_explained: int  # skipped orders all cancelled unfilled: self-match prevention
    l1_l2_mismatches: int

    @property
    def ok(self) -> bool:
        return (
            self.crossed_packets == 0
            and self.trades_beyond_touch == self.trades_beyond_touch_reference
            and self.beyond_touch_explained == self.trades_beyond_touch
            and self.l1_l2_mismatches == 0
        )


def es_mbo_files(data_dir: Path) -> list[Path]:
    """Every MBO file under DIR/cme-es, known by its DBN metadata rather than its name."""
    found = []
    for path in sorted((data_dir / "cme-es").rglob("*.dbn*")):
        if open_dbn(path).metadata.schema == dbn.Schema.MBO:
            found.append(path)
    return found


def trades_beyond_touch(events: np.ndarray) -> list[tuple[int, list[int]]]:
    """(trade index, resting orders it jumped over) for each aggressor trade after the
    opening print that priced beyond an unfilled resting order of the passive side.

    A plain dict replay, independent of the compiled book it cross-checks."""
    live: dict[int, tuple[int, int, int]] = {}  # order id: (side, price, size)
    levels: dict[int, dict[int, set[int]]] = {BID: {}, ASK: {}}
    filled: set[int] = set()
    out: list[tuple[int, list[int]]] = []
    opened = False
    start = snapshot_end(events)

    def drop(oid: int) -> None:
        side, price, _ = live.pop(oid)
        ids = levels[side][price]
        ids.discard(oid)
        if not ids:
            del levels[side][price]

    for i, (action, side, price, size, oid, flags) in enumerate(
        zip(
            *(events[f].tolist() for f in ("action", "side", "price", "size", "order_id", "flags")),
            strict=True,
        )
    ):
        if action == TRADE and i >= start:
            if opened and side != NO_SIDE:
                buy = side == BID
                book = levels[ASK if buy else BID]
                better = [
                    o
                    for p, ids in book.items()
                    if (p < price if buy else p > price)
                    for o in ids
                    if o not in filled
                ]
                if better:
                    out.append((i, better))
            opened = True
        elif action == FILL:
            filled.add(oid)
        elif action in (ADD, MODIFY):
            if oid in live:
                drop(oid)
            live[oid] = (side, price, size)
            levels[side].setdefault(price, set()).add(oid)
        elif action == CANCEL and oid in live:
            s, p, left = live[oid]
            left -= size
            if left <= 0:
                drop(oid)
            else:
                live[oid] = (s, p, left)
        elif action == CLEAR:
            live.clear()
            levels = {BID: {}, ASK: {}}
        if flags & F_LAST:
            filled.clear()
    return out


def _self_match_explained(events: np.ndarray, beyond: list[tuple[int, list[int]]]) -> int:
    """How many of those trades skipped only orders cancelled soon after without a fill."""
    explained = 0
    for i, skipped in beyond:
        window = events[i : i + SMP_LOOKAHEAD]
        ok = True
        for oid in skipped:
            acts = set(window["action"][window["order_id"] == oid].tolist())
            ok &= CANCEL in acts and FILL not in acts
        explained += ok
    return explained


def _l1_l2_mismatches(events: np.ndarray, tick_fixed: int) -> int:
    """After every packet: is the touch the book reports its first L2 level?"""
    book = BookState.new(tick_fixed)
    arrays = book.arrays
    bad = 0
    fields = (events[f].tolist() for f in ("action", "side", "price", "size", "order_id", "flags"))
    for action, side, price, size, oid, flags in zip(*fields, strict=True):
        apply_event(*arrays, action, side, price, size, oid)
        if flags & F_LAST:
            top = book.depth(1)[0]
            bad += tuple(int(v) for v in top) != book.touch()
    book.check()
    return bad


def main_instrument_events(path: Path) -> np.ndarray:
    """The records of the file's outright (the instrument with the most records)."""
    events = read_mbo(path)
    return events[events["instrument_id"] == main_instrument(events)]


def check_es(name: str, events: np.ndarray, tick_fixed: int = ES.tick_fixed) -> EsCheck:
    """The book checks on one instrument's MBO records."""
    r = check_book(events, tick_fixed)
    beyond = trades_beyond_touch(events)
    return EsCheck(
        file=name,
        instrument_id=int(events["instrument_id"][0]) if len(events) else 0,
        records=len(events),
        packets_checked=r.packets_checked,
        crossed_packets=r.crossed_packets,
        trades_checked=r.trades_checked,
        trades_beyond_touch=r.trades_outside_touch,
        trades_beyond_touch_reference=len(beyond),
        beyond_touch_explained=_self_match_explained(events, beyond),
        l1_l2_mismatches=_l1_l2_mismatches(events, tick_fixed),
    )


# ---------------------------------------------------------------- stylized facts


@dataclass(frozen=True)
class Departure:
    """One statistic of the generator against real ES, and against the LOBSTER stocks'
    range where the statistic has no unit (sizes and tick-relative spreads do)."""

    statistic: str
    simulator: float
    real_es: float
    lobster_range: tuple[float, float] | None

    @property
    def relative(self) -> float:
        return (self.simulator - self.real_es) / abs(self.real_es) if self.real_es else math.nan

    @property
    def departs(self) -> bool:
        return not (abs(self.relative) <= CLOSE_ENOUGH)

    def sentence(self) -> str:
        if not (np.isfinite(self.relative) and np.isfinite(self.simulator)):
            return (
                f"{self.statistic}: not comparable (simulator {self.simulator:.3g}, real ES "
                f"{self.real_es:.3g})."
            )
        where = "above" if self.relative > 0 else "below"
        verdict = (
            f"departs, {abs(self.relative):.0%} {where} real ES"
            if self.departs
            else f"close to real ES ({self.relative:+.0%})"
        )
        text = f"{self.statistic}: simulator {self.simulator:.3g}, real ES {self.real_es:.3g}; "
        text += verdict
        if self.lobster_range is not None:
            lo, hi = self.lobster_range
            inside = "inside" if lo <= self.simulator <= hi else "outside"
            text += f"; {inside} the LOBSTER stocks' range {lo:.3g} to {hi:.3g}"
        return text + "."


# statistic: (value, has no unit so LOBSTER stocks compare)
def _scalars(f: StylizedFacts) -> dict[str, tuple[float, bool]]:
    q = dict(zip(TRADE_SIZE_QUANTILES, f.trade_size_quantiles, strict=True))
    return {
        "share of time at a one-tick spread": (f.one_tick_spread_share, False),
        "excess kurtosis of 1-s mid returns": (f.kurtosis_1s, True),
        "excess kurtosis of 1-min mid returns": (f.kurtosis_1min, True),
        "autocorrelation of |1-s returns|, mean of lags 1-5": (_mean5(f.abs_acf_1s), True),
        "autocorrelation of |1-min returns|, mean of lags 1-5": (_mean5(f.abs_acf_1min), True),
        "median trade size": (q[0.5], False),
        "90th percentile trade size": (q[0.9], False),
        "share of trades of size 1": (f.share_size_one, False),
        "R² of 10-s mid change on OFI (pooled)": (f.ofi.r2, True),
        "R² of 10-s mid change on OFI (30-min windows)": (f.ofi.window_r2, True),
    }


def _mean5(acf: tuple[float, ...]) -> float:
    v = np.asarray(acf[:5])
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else math.nan


def departures(
    sim: StylizedFacts, es: StylizedFacts, lobster: Sequence[StylizedFacts]
) -> list[Departure]:
    s, e = _scalars(sim), _scalars(es)
    lob = [_scalars(f) for f in lobster]
    out = []
    for name, (value, unit_free) in s.items():
        vals = [v[name][0] for v in lob if np.isfinite(v[name][0])]
        span = (min(vals), max(vals)) if unit_free and vals else None
        out.append(Departure(name, value, e[name][0], span))
    return out


def window_departures(real: StylizedFacts, seed: int, evenings: int) -> list[Departure]:
    """The tick-level statistics of generated windows like the real file's: its first
    `real.hours` from the 17:00 CT open, on `evenings` trade dates (slow dynamics on),
    averaged, since a statistic of one short window is noisy and, over a whole day, the
    daily swing of activity alone fattens tails and lengthens clustering."""
    values: dict[str, list[float]] = {}
    day = date.fromisoformat(GENERATED_DAY)
    for _ in range(evenings):
        while not is_trading_date(day):
            day += timedelta(days=1)
        ev = generate_day(seed, day, params=bar_calibrated_params(), hours=real.hours)
        for name, (v, _) in _scalars(stylized_facts(ev, ES.tick_fixed, str(day))).items():
            values.setdefault(name, []).append(v)
        day += timedelta(days=1)
    e = _scalars(real)
    return [Departure(n, float(np.nanmean(v)), e[n][0], None) for n, v in values.items()]


def _window_title(real: StylizedFacts, evenings: int) -> str:
    return (
        f"The same window as {real.label} ({real.hours:.1f} h from the 17:00 CT open), "
        f"mean of {evenings} generated evenings:"
    )


def bar_departures(sim: BarFacts, real: BarFacts) -> list[Departure]:
    """Each bar-level statistic of the generated days against the real bars."""
    r = bar_scalars(real)
    return [Departure(name, v, r[name], None) for name, v in bar_scalars(sim).items()]


BAR_HEAD = ("statistic", "real ES bars", "generated (SYNTHETIC)", "generated vs real")


def _bar_rows(gaps: Sequence[Departure]) -> list[list[object]]:
    return [
        [g.statistic, g.real_es, g.simulator, f"{g.relative:+.0%}" if np.isfinite(g.relative)
         else "n/a"]
        for g in gaps
    ]  # fmt: skip


def _bar_sample(real: BarFacts, sim: BarFacts) -> str:
    return (
        f"real ES: {real.bars:,} 5-min bars over {real.trade_dates:,} trade dates "
        f"({SHIPPED_BARS.name}); generated: {sim.bars:,} bars over {sim.trade_dates} "
        f"SYNTHETIC trade dates in weeks spread over {BAR_SPAN[0].year}-{BAR_SPAN[1].year}. "
        "Time-of-day profiles, generated against real: "
        f"volatility r = {profile_corr(sim, real):.2f}, volume r = "
        f"{profile_corr(sim, real, 'volume_profile'):.2f}."
    )


def _es_sample(real: Sequence[StylizedFacts]) -> str:
    """How much real ES the comparison rests on: short samples carry their own noise."""
    return "; ".join(f"{f.label}: {f.hours:.1f} h from the open, {f.trades:,} trades" for f in real)


def _cks_sentence(facts: Sequence[StylizedFacts]) -> str:
    said = ", ".join(f"{f.label} {f.ofi.window_r2:.2f}" for f in facts)
    return (
        f"Cont, Kukanov and Stoikov (2014) report a mean R² of about {CKS_R2:.2f} for 10-s mid "
        f"changes on order-flow imbalance in half-hour windows on US equities; here: {said}."
    )


# ---------------------------------------------------------------- the report


def _html_table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _lobster_rows(replays: Sequence[LobsterReplay]) -> list[list[object]]:
    return [
        [
            Path(r.source.split(":")[0]).stem.removeprefix("LOBSTER_SampleFile_"),
            r.levels,
            r.messages,
            r.rows_matching,
            r.rows_exact,
            r.rows_revealed,
            r.levels_revealed,
            r.reattributions,
            r.mismatches,
        ]
        for r in replays
    ]


LOBSTER_HEAD = (
    "file",
    "levels",
    "messages",
    "rows matching exactly",
    "by messages alone",
    "rows with revealed depth",
    "levels revealed",
    "re-attributions",
    "mismatches",
)
ES_HEAD = (
    "file",
    "instrument",
    "records",
    "packets",
    "crossed after open",
    "trades",
    "trades beyond touch",
    "(reference replay)",
    "self-match prevention",
    "L1 != top of L2",
)


def _es_rows(checks: Sequence[EsCheck]) -> list[list[object]]:
    return [
        [
            c.file,
            c.instrument_id,
            c.records,
            c.packets_checked,
            c.crossed_packets,
            c.trades_checked,
            c.trades_beyond_touch,
            c.trades_beyond_touch_reference,
            c.beyond_touch_explained,
            c.l1_l2_mismatches,
        ]
        for c in checks
    ]


def _facts_table(facts: Sequence[StylizedFacts]) -> tuple[list[str], list[list[object]]]:
    head = ["statistic"] + [f.label + (" (SYNTHETIC)" if f.synthetic else "") for f in facts]
    per = [_scalars(f) for f in facts]
    rows: list[list[object]] = [["hours from the open", *(f.hours for f in facts)]]
    rows += [["trades", *(f.trades for f in facts)]]
    rows += [[name, *(p[name][0] for p in per)] for name in per[0]]
    return head, rows


def _figures(facts: Sequence[StylizedFacts]) -> list[go.Figure]:
    names = [f.label + (" (SYNTHETIC)" if f.synthetic else "") for f in facts]
    bars = go.Figure()
    for key, title in (
        ("one_tick_spread_share", "one-tick spread share"),
        ("share_size_one", "share of size-1 trades"),
    ):
        bars.add_bar(name=title, x=names, y=[getattr(f, key) for f in facts])
    bars.add_bar(name="OFI R² (30-min windows)", x=names, y=[f.ofi.window_r2 for f in facts])
    bars.add_hline(y=CKS_R2, line_dash="dot", annotation_text="CKS 2014 R² ≈ 0.65")
    bars.update_layout(title="Shares and R²", barmode="group")
    kurt = go.Figure()
    kurt.add_bar(name="1-s", x=names, y=[f.kurtosis_1s for f in facts])
    kurt.add_bar(name="1-min", x=names, y=[f.kurtosis_1min for f in facts])
    kurt.update_layout(title="Excess kurtosis of mid returns", barmode="group", yaxis_type="log")
    acf = go.Figure()
    for f, n in zip(facts, names, strict=True):
        for series, dash in ((f.abs_acf_1s, "solid"), (f.abs_acf_1min, "dot")):
            lags = list(range(1, len(series) + 1))
            label = f"{n} {'1-s' if dash == 'solid' else '1-min'}"
            acf.add_scatter(x=lags, y=series, name=label, line_dash=dash)
    acf.update_layout(title="Autocorrelation of absolute mid returns", xaxis_title="lag")
    sizes = go.Figure()
    for f, n in zip(facts, names, strict=True):
        sizes.add_scatter(
            x=[f"q{q:g}" for q in TRADE_SIZE_QUANTILES],
            y=f.trade_size_quantiles,
            name=n,
            mode="lines+markers",
        )
    sizes.update_layout(title="Trade-size quantiles", yaxis_type="log")
    return [bars, kurt, acf, sizes]


def _profile_figure(real: BarFacts, sim: BarFacts) -> go.Figure:
    """The volatility and volume clocks (Chicago time), each scaled to its own mean."""
    fig = go.Figure()
    hours = np.arange(len(real.vol_profile)) * 5 / 60
    for f, name in ((real, "real ES"), (sim, "generated (SYNTHETIC)")):
        for field, what, dash in (("vol_profile", "mean |r|", "solid"),
                                  ("volume_profile", "volume", "dot")):  # fmt: skip
            y = np.asarray(getattr(f, field))
            fig.add_scatter(x=hours, y=y / np.nanmean(y), name=f"{name} {what}", line_dash=dash)
    fig.update_layout(title="Time of day (CT), 5-min bars, each relative to its mean",
                      xaxis_title="hour of the Chicago day")  # fmt: skip
    return fig


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.bad { color: #b00020; font-weight: bold; } .good { color: #1a9850; font-weight: bold; }
.synthetic { background: #b00020; color: #fff; padding: 0.3em 0.6em; font-weight: bold; }
"""


def write_report(
    path: Path,
    replays: Sequence[LobsterReplay],
    es: Sequence[EsCheck],
    facts: Sequence[StylizedFacts],
    gaps: Sequence[Departure],
    real_es: Sequence[StylizedFacts],
    bars: tuple[BarFacts, BarFacts] | None = None,
    bar_gaps: Sequence[Departure] = (),
    like: Sequence[Departure] = (),
    like_title: str = "",
) -> None:
    ok_l = all(r.ok for r in replays)
    ok_e = all(c.ok for c in es)
    figs = _figures(facts)
    plots = "".join(
        f.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False)
        for i, f in enumerate(figs)
    )
    head, rows = _facts_table(facts)
    gone = [g for g in gaps if g.departs]
    close = [g for g in gaps if not g.departs]
    revealed = sum(r.rows_revealed for r in replays)
    parts = [
        "<h1>esml market validation</h1>",
        "<h2>LOBSTER: esml's L3 book against LOBSTER's orderbook files</h2>",
        f"<p class='{'good' if ok_l else 'bad'}'>"
        f"{sum(r.rows_matching for r in replays):,} of {sum(r.messages for r in replays):,} "
        "rows match exactly at every level.</p>",
        f"<p>The opening book is seeded from each orderbook file's first row with the first "
        f"message undone. Depth that first comes into view later (beyond the previous row's "
        f"deepest level, where LOBSTER omits messages) was read off the orderbook file in "
        f"{revealed:,} rows; levels already in view were never taken from it.</p>",
        _html_table(LOBSTER_HEAD, _lobster_rows(replays)),
        "<h2>CME ES MBO: book consistency</h2>",
        f"<p class='{'good' if ok_e else 'bad'}'>"
        f"{'all checks pass' if ok_e else 'a check fails'}</p>",
        _html_table(ES_HEAD, _es_rows(es)),
        "<h2>Stylized facts</h2>",
        "<p><span class='synthetic'>SYNTHETIC</span> columns are generated data, never "
        "evidence about a real market. LOBSTER sizes are shares, ES sizes contracts.</p>",
        _html_table(head, rows),
        "<h2>Where the simulator departs from the real data</h2>",
        f"<p>Compared with real ES ({_es_sample(real_es)}); a difference within "
        f"{CLOSE_ENOUGH:.0%} counts as close. {len(gone)} of {len(gaps)} statistics depart. "
        "Unit-free statistics are also set against the LOBSTER stocks' range.</p>",
        "<ul>" + "".join(f"<li>{html.escape(g.sentence())}</li>" for g in gone + close) + "</ul>",
        f"<p>{html.escape(_cks_sentence(facts))}</p>",
    ]
    if like:
        parts += [
            f"<h3>{html.escape(like_title)}</h3>",
            "<ul>" + "".join(f"<li>{html.escape(g.sentence())}</li>" for g in like) + "</ul>",
        ]
    parts += [plots]
    if bars is not None:
        real, sim = bars
        far = sum(g.departs for g in bar_gaps)
        parts += [
            "<h2>Bar-level stylized facts: the slow dynamics</h2>",
            f"<p>{html.escape(_bar_sample(real, sim))} {far} of {len(bar_gaps)} statistics "
            f"depart by more than {CLOSE_ENOUGH:.0%}.</p>",
            _html_table(BAR_HEAD, _bar_rows(bar_gaps)),
            _profile_figure(real, sim).to_html(full_html=False, include_plotlyjs=False),
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>esml market validation"
        f"</title><style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )


# ---------------------------------------------------------------- the command


def _rich_table(title: str, head: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    t = Table(title=title)
    names = max((len(_fmt(row[0])) for row in rows), default=0)
    t.add_column(head[0], overflow="fold", min_width=min(names, 64))
    for h in head[1:]:
        t.add_column(h, justify="right", overflow="fold")
    for row in rows:
        t.add_row(*(_fmt(c) for c in row))
    return t


def load_generator(spec: str) -> Generator:
    """'module:function', called with the seed alone."""
    module, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"--generator wants MODULE:FUNCTION, got {spec!r}")
    return getattr(importlib.import_module(module), name)


def run(
    data_dir: Path,
    out: Path,
    generator: Generator = default_generator,
    seed: int = 1,
    generator_tick_fixed: int = ES.tick_fixed,
    console: Console | None = None,
    bar_days: int = 0,
    evenings: int = 0,
) -> int:
    """The first three parts, the bar facts on `bar_days` generated days and the tick facts
    on `evenings` generated windows like the real file's (the command asks for
    DEFAULT_BAR_DAYS and WINDOW_EVENINGS); the exit status: 0 all good, 1 a check failed,
    2 data missing."""
    if console is None:  # a log (CI, make) gets the tables whole; a terminal wraps them
        console = Console()
        console = console if console.is_terminal else Console(width=240)
    zips = sorted((data_dir / "lobster").glob("*.zip"))
    mbo = es_mbo_files(data_dir) if (data_dir / "cme-es").is_dir() else []
    if not zips or not mbo:
        console.print(f"[red]no LOBSTER zips or no ES MBO files under {data_dir}[/red]")
        return 2
    replays = [reconstruct(read_lobster(z)) for z in zips]
    console.print(
        _rich_table(
            "LOBSTER replay against its orderbook files", LOBSTER_HEAD, _lobster_rows(replays)
        )
    )
    revealed = sum(r.rows_revealed for r in replays)
    console.print(
        f"Seeded from each file's first orderbook row (first message undone); depth coming into"
        f" view was read off the orderbook file in {revealed:,} rows (column 6)."
    )
    es_events = [main_instrument_events(p) for p in mbo]
    es = [check_es(p.name, ev) for p, ev in zip(mbo, es_events, strict=True)]
    console.print(_rich_table("CME ES MBO book checks", ES_HEAD, _es_rows(es)))

    es_facts = [
        stylized_facts(ev, ES.tick_fixed, f"ES {p.name.split('.')[0]}")
        for p, ev in zip(mbo, es_events, strict=True)
        if _open_hours(ev) >= MIN_STYLIZED_HOURS
    ]
    deepest: dict[str, LobsterReplay] = {}
    for r in replays:
        if r.ticker not in deepest or r.levels > deepest[r.ticker].levels:
            deepest[r.ticker] = r
    lob_facts = [
        stylized_facts(r.events, TICK_FIXED, f"{t} (LOBSTER {r.levels})")
        for t, r in sorted(deepest.items())
    ]
    sim = stylized_facts(generator(seed), generator_tick_fixed, f"generator seed {seed}")
    sim = replace(sim, synthetic=True)  # generated is synthetic, whatever its publisher id says
    facts = [*es_facts, *lob_facts, sim]
    head, rows = _facts_table(facts)
    console.print(_rich_table("Stylized facts", head, rows))
    gaps = departures(sim, es_facts[0], lob_facts) if es_facts else []
    for g in gaps:
        console.print(g.sentence(), style="yellow" if g.departs else None, markup=False)
    console.print(_cks_sentence(facts), markup=False)
    like = window_departures(es_facts[0], seed, evenings) if es_facts and evenings else []
    like_title = _window_title(es_facts[0], evenings) if like else ""
    if like:
        console.print(like_title, style="bold", markup=False)
        for g in like:
            console.print(g.sentence(), style="yellow" if g.departs else None, markup=False)
    bars, bar_gaps = None, []
    if bar_days > 0:
        shipped = Path(__file__).resolve().parents[2] / SHIPPED_BARS
        real_bars = bar_facts(chain_bars(read_shipped_bars(shipped)), "real ES 5-min")
        sim_bars = bar_facts(generated_bars(seed, bar_days), f"generator seed {seed}",
                             synthetic=True)  # fmt: skip
        bars, bar_gaps = (real_bars, sim_bars), bar_departures(sim_bars, real_bars)
        console.print(_rich_table("Bar-level stylized facts (5-minute bars)", BAR_HEAD,
                                  _bar_rows(bar_gaps)))  # fmt: skip
        console.print(_bar_sample(real_bars, sim_bars), markup=False)
        for g in bar_gaps:
            console.print(g.sentence(), style="yellow" if g.departs else None, markup=False)
    write_report(out, replays, es, facts, gaps, es_facts, bars, bar_gaps, like, like_title)
    console.print(f"report: {out}")
    bad = [r for r in replays if not r.ok] + [c for c in es if not c.ok]
    if bad:
        console.print(f"[red]{len(bad)} check(s) failed[/red]")
        return 1
    return 0


def _open_hours(events: np.ndarray) -> float:
    """Hours between the first trade after the snapshot and the last record."""
    start = snapshot_end(events)
    t = np.flatnonzero(events["action"][start:] == TRADE)
    if not len(t):
        return 0.0
    return float(events["ts_recv"][-1] - events["ts_recv"][start + t[0]]) / 3.6e12


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m esml.evaluation.market_validation", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("ESML_DATA_DIR", DEFAULT_DATA_DIR))
    )
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT))
    p.add_argument(
        "--generator",
        default=None,
        help="MODULE:FUNCTION taking a seed (default: one day of "
        "esml.sim.queue_reactive.generate_day)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--evenings",
        type=int,
        default=WINDOW_EVENINGS,
        help="generated windows like the real ES file's, for the like-for-like tick facts",
    )
    p.add_argument(
        "--bar-days",
        type=int,
        default=DEFAULT_BAR_DAYS,
        help="consecutive generated trade dates for the bar-level facts (0: skip them)",
    )
    a = p.parse_args(argv)
    if a.bar_days < 0 or a.evenings < 0:
        p.error("--bar-days and --evenings must be >= 0")
    gen = load_generator(a.generator) if a.generator else default_generator
    try:
        return run(a.data_dir, a.out, gen, a.seed, bar_days=a.bar_days, evenings=a.evenings)
    except DataFileError as e:
        Console().print(f"[red]{e}[/red]")
        return 2


if __name__ == "__main__":
    sys.exit(main())
