"""Parameters of the queue-reactive ES generator, validated wherever they come from.

Why a model of its own: the tables are calibrated from real MBO data by
`esml.sim.qr_calibration`, committed as `es_qr_params.json` and loaded by the generator;
a hand-edited or truncated file must fail on load with the file and the field named,
never half-work inside a compiled kernel. The microstructure tables come from data; the
regime, intraday and shock sections are stated assumptions (one hour of data cannot
identify them) and live beside the tables so one file describes the whole market.
"""

from __future__ import annotations

import itertools
import json
import math
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from esml.market.instruments import instrument_for

DEFAULT_PARAMS_FILE = Path(__file__).with_name("es_qr_params.json")
PMF_TOLERANCE = 1e-6
REGIMES = ("trend", "range", "quiet")
DAY_MINUTES = 23 * 60  # the CME equity day, 17:00 to 16:00 Chicago time

Vector = tuple[float, ...]
Table = tuple[tuple[float, ...], ...]


class QRParamsError(ValueError):
    """A parameter file is missing, unreadable or inconsistent; the message names it."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_pmf(name: str, p: Vector) -> None:
    if not p or any(not math.isfinite(x) or x < 0 for x in p):
        raise ValueError(f"{name} must be a non-empty list of non-negative numbers")
    if abs(sum(p) - 1.0) > PMF_TOLERANCE:
        raise ValueError(f"{name} must sum to 1, sums to {sum(p)}")


def _check_rates(name: str, rows: Table, shape: tuple[int, int]) -> None:
    if len(rows) != shape[0] or any(len(r) != shape[1] for r in rows):
        got = (len(rows), len(rows[0]) if rows else 0)
        raise ValueError(f"{name} must be {shape[0]} rows of {shape[1]}, got {got}")
    if any(not math.isfinite(x) or x < 0 for r in rows for x in r):
        raise ValueError(f"{name} holds a negative or non-finite rate")


class RegimeParams(_Frozen):
    """A hidden Markov chain over (trend, range, quiet): each regime scales all activity
    and sets a price pressure that leans market-order signs and liquidity."""

    mean_duration_s: Vector = (1200.0, 2400.0, 1800.0)
    transition: Table = ((0.0, 0.6, 0.4), (0.5, 0.0, 0.5), (0.4, 0.6, 0.0))
    activity: Vector = (1.4, 1.0, 0.6)
    trend_pressure: float = 0.05  # |pressure| in a trend, toward its direction
    range_reversion_per_tick: float = 0.005  # pressure back to the range's anchor
    range_max_pressure: float = 0.2
    market_sign_gain: float = 0.9  # buy rate x (1 + gain * pressure), sell x (1 - ...)
    liquidity_gain: float = 0.9  # fewer adds and more cancels on the side pushed against

    @model_validator(mode="after")
    def _valid(self) -> RegimeParams:
        n = len(REGIMES)
        if len(self.mean_duration_s) != n or any(
            not math.isfinite(x) or x <= 0 for x in self.mean_duration_s
        ):
            raise ValueError(f"mean_duration_s must be {n} positive seconds {REGIMES}")
        if len(self.activity) != n or any(not math.isfinite(x) or x <= 0 for x in self.activity):
            raise ValueError(f"activity must be {n} positive factors {REGIMES}")
        _check_rates("transition", self.transition, (n, n))
        for k, row in enumerate(self.transition):
            if row[k] != 0.0:
                raise ValueError("transition must have a zero diagonal (a switch changes regime)")
            _check_pmf(f"transition row {REGIMES[k]}", row)
        for name in ("trend_pressure", "range_max_pressure"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        kappa = self.range_reversion_per_tick
        if not (math.isfinite(kappa) and kappa >= 0):
            raise ValueError("range_reversion_per_tick must be >= 0")
        for name in ("market_sign_gain", "liquidity_gain"):
            if not 0.0 <= getattr(self, name) < 1.0:  # keeps every scaled rate positive
                raise ValueError(f"{name} must be in [0, 1)")
        return self


class IntradayParams(_Frozen):
    """Activity over the CME day as a piecewise-linear curve in minutes after 17:00 CT,
    relative to the calibration window (the first hour of the evening session)."""

    # quiet Asia, London from 02:00, US data at 07:30, the 08:30 open, lunch, the 15:00 close
    minutes: Vector = (0, 60, 120, 420, 540, 780, 840, 870, 920, 930, 960, 1020, 1110, 1230,
                       1290, 1320, 1335, 1350, 1380)  # fmt: skip
    factor: Vector = (1.15, 0.85, 0.6, 0.6, 1.8, 1.8, 3.0, 4.5, 4.0, 14.0, 11.0, 8.0, 5.0, 5.0,
                      7.0, 12.0, 6.0, 3.0, 2.0)  # fmt: skip

    @model_validator(mode="after")
    def _valid(self) -> IntradayParams:
        m, f = self.minutes, self.factor
        if len(m) < 2 or len(m) != len(f):
            raise ValueError("minutes and factor must be equal-length lists of 2 or more knots")
        if m[0] != 0 or m[-1] < DAY_MINUTES or any(b <= a for a, b in itertools.pairwise(m)):
            raise ValueError(
                f"minutes must rise strictly from 0 to at least {DAY_MINUTES} (16:00 CT)"
            )
        if any(not math.isfinite(x) or x <= 0 for x in f):
            raise ValueError("every intraday factor must be positive")
        return self


class ShockParams(_Frozen):
    """Rare bursts of one-sided market orders while the side they hit thins out."""

    rate_per_hour: float = 0.04  # at activity 1 (the curve scales it): about 3 a day
    mean_duration_s: float = 20.0
    market_multiplier: float = 10.0
    cancel_multiplier: float = 2.0
    add_multiplier: float = 0.3
    theta: float = 0.9  # probability the price follows a depleted touch during a shock

    @model_validator(mode="after")
    def _valid(self) -> ShockParams:
        if not (math.isfinite(self.rate_per_hour) and self.rate_per_hour >= 0):
            raise ValueError("rate_per_hour must be >= 0")
        if not (math.isfinite(self.mean_duration_s) and self.mean_duration_s > 0):
            raise ValueError("mean_duration_s must be > 0")
        for name in ("market_multiplier", "cancel_multiplier"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 1.0):
                raise ValueError(f"{name} must be >= 1")
        if not 0.0 < self.add_multiplier <= 1.0:
            raise ValueError("add_multiplier must be in (0, 1]")
        if not 0.0 <= self.theta <= 1.0:
            raise ValueError("theta must be in [0, 1]")
        return self


class SlowParams(_Frozen):
    """The slow dynamics fitted on real bars (`esml.sim.slow_dynamics`): a multiplier of
    all activity that varies by time of day (`intraday`, replacing the assumed curve), by
    trade date (an AR(1) of log activity over business days) and within the day (an OU
    process of log activity), with where it was fitted from."""

    source: str  # the bar file the fit read
    source_sha256: str
    bars: int
    first_bar_utc: str
    last_bar_utc: str
    intraday: IntradayParams
    daily_phi: float  # AR(1) coefficient of log activity from one business day to the next
    daily_sd: float  # stationary sd of that log activity
    intraday_tau_s: float  # memory of the within-day log-activity OU process
    intraday_sd: float  # its stationary sd
    max_multiplier: float = 5.0  # the slow multiplier is clipped to [min, max]: no day ...
    min_multiplier: float = 0.05  # ... grows past memory, none stops
    step_s: float = 60.0  # the within-day path is drawn on this grid

    @model_validator(mode="after")
    def _valid(self) -> SlowParams:
        if not 0.0 <= self.daily_phi < 1.0:
            raise ValueError("daily_phi must be in [0, 1)")
        for name in ("daily_sd", "intraday_sd"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.0 <= v < 3.0):
                raise ValueError(f"{name} must be in [0, 3)")
        for name in ("intraday_tau_s", "step_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be > 0")
        if not (math.isfinite(self.max_multiplier) and self.max_multiplier >= 1.0):
            raise ValueError("max_multiplier must be >= 1")
        if not 0.0 < self.min_multiplier <= 1.0:
            raise ValueError("min_multiplier must be in (0, 1]")
        return self


class CalibrationSummary(_Frozen):
    """What the calibration window looked like, for reports and sanity checks."""

    source: str
    window_s: float
    records: int
    flow_events: int  # limit, cancel, move and market events inside the modelled levels
    outside_events: int  # flow events beyond the modelled levels (not generated)
    records_per_s: float
    one_tick_spread_share: float
    ref_price_changes: int
    touch_depletions: int
    gap_fills_by_opposite_side: int
    gap_fills_by_same_side: int
    mean_queue_contracts: Vector  # time-averaged size of queues 1..k
    mid_change_sd_1s: float  # points
    mid_change_sd_1min: float  # points


class QRParams(_Frozen):
    """Queue-reactive tables (Huang, Lehalle & Rosenbaum 2015) plus the scenario layers.

    Queues are indexed i = 1..k_levels from the reference price outward on each side
    (row i-1 of every table), their sizes in units of that queue's average event size
    (`aes`, contracts) rounded up and capped at n_max. Rates are events per second at
    activity 1, pooled over bid and ask.
    """

    version: int = 1
    instrument: str = "ES"
    tick_size: float
    start_price: float
    k_levels: int
    n_max: int
    aes: Vector
    limit_rate: Table
    cancel_rate: Table
    move_rate: Table  # an order repriced out of queue i (CME modify)
    move_destination: Table  # row i: where a repriced order from queue i goes
    market_rate: Vector  # by the size of the touch it hits, in units of aes[0]
    queue_pmf: Table  # time share of each queue size: the snapshot and re-centring draw
    theta: float  # probability the reference price follows a depleted touch
    theta_reinit: float  # probability the book is then redrawn around the new price
    partial_cancel_prob: float
    add_size_pmf: Table  # row i: sizes 1..len of orders added to queue i
    market_size_pmf: Vector  # aggressor sizes 1..len
    regimes: RegimeParams = RegimeParams()
    intraday: IntradayParams = IntradayParams()
    shocks: ShockParams = ShockParams()
    flow_pressure_sd: float = 0.0  # latent order-flow pressure: sd (fitted to 1-min vol)...
    flow_tau_s: float = 10.0  # ... and memory, in seconds at activity 1
    daily_open_vol: float = 0.01  # the seeded random walk of each day's opening price
    calibration: CalibrationSummary | None = None
    slow: SlowParams | None = None  # fitted slow dynamics; None: the assumed layers alone

    @model_validator(mode="after")
    def _valid(self) -> QRParams:
        if self.version != 1:
            raise ValueError(f"unsupported version {self.version} (this code reads 1)")
        if abs(instrument_for(self.instrument).tick_size - self.tick_size) > 1e-12:
            raise ValueError(f"tick_size {self.tick_size} is not {self.instrument}'s tick")
        if not (math.isfinite(self.start_price) and self.start_price > 1000 * self.tick_size):
            raise ValueError("start_price must exceed 1000 ticks so the book stays above zero")
        k, width = self.k_levels, self.n_max + 1
        if not 1 <= k <= 64 or not 1 <= self.n_max <= 10_000:
            raise ValueError("k_levels must be in [1, 64] and n_max in [1, 10000]")
        if len(self.aes) != k or any(not math.isfinite(a) or a <= 0 for a in self.aes):
            raise ValueError(f"aes must be {k} positive sizes")
        for name in ("limit_rate", "cancel_rate", "move_rate", "queue_pmf"):
            _check_rates(name, getattr(self, name), (k, width))
        _check_rates("move_destination", self.move_destination, (k, k))
        _check_rates("market_rate", (self.market_rate,), (1, width))
        for i in range(k):
            if self.cancel_rate[i][0] or self.move_rate[i][0]:
                raise ValueError(f"queue {i + 1}: an empty queue cannot cancel or reprice")
            _check_pmf(f"queue_pmf row {i + 1}", self.queue_pmf[i])
            _check_pmf(f"move_destination row {i + 1}", self.move_destination[i])
            if self.move_destination[i][i]:
                raise ValueError(f"move_destination row {i + 1}: a reprice must change level")
        if self.market_rate[0]:
            raise ValueError("market_rate[0] must be 0: an empty touch cannot trade")
        if self.limit_rate[0][0] <= 0:
            raise ValueError("limit_rate of an empty first queue must be > 0 (gaps must refill)")
        for name in ("theta", "theta_reinit", "partial_cancel_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if len(self.add_size_pmf) != k:
            raise ValueError(f"add_size_pmf must have {k} rows, one per queue")
        for i, row in enumerate(self.add_size_pmf):
            _check_pmf(f"add_size_pmf row {i + 1}", row)
        _check_pmf("market_size_pmf", self.market_size_pmf)
        if not 0.0 <= self.flow_pressure_sd < 1.0:
            raise ValueError("flow_pressure_sd must be in [0, 1)")
        if not (math.isfinite(self.flow_tau_s) and self.flow_tau_s > 0):
            raise ValueError("flow_tau_s must be > 0")
        if not (math.isfinite(self.daily_open_vol) and 0 <= self.daily_open_vol < 0.2):
            raise ValueError("daily_open_vol must be in [0, 0.2)")
        return self

    def save(self, path: str | Path) -> None:
        """Written under a temporary name and renamed: a reader never sees half a file."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.model_dump_json(indent=1) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> QRParams:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except OSError as e:
            raise QRParamsError(f"{path}: cannot read queue-reactive parameters: {e}") from e
        except json.JSONDecodeError as e:
            raise QRParamsError(f"{path}: not valid JSON: {e}") from e
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise QRParamsError(f"{path}: invalid queue-reactive parameters: {e}") from e


@lru_cache(maxsize=1)
def default_params() -> QRParams:
    """The committed ES calibration (`es_qr_params.json`), read and validated once."""
    return QRParams.load(DEFAULT_PARAMS_FILE)
