"""Rule strategies: the simple baselines an ablation measures the models against.

Three rules, each behind the `Strategy` protocol so the engine runs them exactly like a
model: the z-score regime strategy (follow a stretch in a trend, fade it in a range),
momentum (follow a strong recent return) and mean reversion (fade a stretch away from the
session VWAP or a moving mean). They read named columns of the feature row, looked up once
at construction, so a change of the feature layout fails loudly instead of silently
reading the wrong column.

Rules have no calibrated probability. Their `confidence` is a documented ramp of signal
strength (see `_ramp`), there only so the confidence gate and the sizing have something
monotonic to work with; p_up / p_down carry the same number.

No look-ahead: every number comes from the current call and state kept from earlier calls.
Rule entries are made only when flat (rules never add); the only other things a rule says
are "exit" when the stretch it faded has gone (fade exits) and, for momentum, the opposite
side when the move turns against the open position (the execution layer's flip exit
decides what to do with it).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from esml.alpha.strategy import Signal, Strategy
from esml.features.streaming import FEATURE_NAMES
from esml.market.instruments import ES
from esml.market.side import Side


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def feature_index(names: Sequence[str], name: str, who: str) -> int:
    """The column of `name`, or an error that names the feature and who needed it."""
    try:
        return list(names).index(name)
    except ValueError:
        raise ValueError(
            f"{who} needs the feature {name!r}, which the feature layout does not have "
            f"({len(names)} features)"
        ) from None


def _ramp(strength: float, lo: float, hi: float, c_lo: float, c_hi: float) -> float:
    """Confidence rising linearly from `c_lo` at strength `lo` to `c_hi` at `hi`, flat
    beyond: stronger evidence, more confidence, never a claim of certainty."""
    if hi <= lo:
        return c_hi
    frac = min(1.0, max(0.0, (strength - lo) / (hi - lo)))
    return c_lo + (c_hi - c_lo) * frac


def _signal(
    ts_ns: int, source: str, side: Side, confidence: float, reason: str, **extra: Any
) -> Signal:
    up = confidence if side is Side.BUY else 1.0 - confidence
    return Signal(
        ts_ns=ts_ns,
        source=source,
        side=side,
        confidence=confidence,
        p_down=1.0 - up,
        p_up=up,
        reason=reason,
        **extra,
    )


def _exit(ts_ns: int, source: str, reason: str) -> Signal:
    return Signal(
        ts_ns=ts_ns, source=source, side=None, confidence=1.0, exit_position=True, reason=reason
    )


class _Inputs:
    """Checks a call's inputs before any state changes: bad input changes nothing."""

    def __init__(self, who: str, n_features: int) -> None:
        self.who = who
        self.n_features = n_features
        self.last_ts: int | None = None

    def check(self, ts_ns: int, features: np.ndarray, mid: float) -> None:
        if isinstance(ts_ns, bool) or not isinstance(ts_ns, int | np.integer):
            raise ValueError(f"{self.who}: decision time must be integer ns, got {ts_ns!r}")
        if self.last_ts is not None and ts_ns < self.last_ts:
            raise ValueError(
                f"{self.who}: decision time {ts_ns} is before the previous one {self.last_ts}"
            )
        if np.ndim(features) != 1 or np.shape(features)[0] != self.n_features:
            raise ValueError(
                f"{self.who}: expected a feature row of {self.n_features}, got shape "
                f"{np.shape(features)}"
            )
        if not (math.isfinite(mid) and mid > 0):
            raise ValueError(f"{self.who}: mid must be a positive finite price, got {mid}")

    def accept(self, ts_ns: int) -> None:
        self.last_ts = ts_ns


class _OwnTrade:
    """Whether the open position is the one this strategy entered to fade a stretch.

    An entry signal may be rejected by a gate or fill a few events later, so the rule
    remembers the side it asked for (pending), adopts the position once it appears with
    that side (open), and forgets it when the position is gone or is someone else's. A
    pending fade stays pending while flat, so a slow fill is still recognised.
    """

    def __init__(self) -> None:
        self.side: Side | None = None
        self.opened = False

    def observe(self, position: int) -> None:
        if self.side is None:
            return
        if position == 0:
            if self.opened:  # closed (stop, target, exit): the fade is over
                self.side, self.opened = None, False
        elif Side.of_position(position) is self.side:
            self.opened = True
        else:
            self.side, self.opened = None, False

    def is_open(self) -> bool:
        return self.side is not None and self.opened

    def entered(self, side: Side | None) -> None:
        """A new entry asked for: a fade of `side`, or None for an entry that is no fade."""
        self.side, self.opened = side, False


# --- the z-score regime strategy ---------------------------------------------------------


class Regime(StrEnum):
    TREND = "trend"
    RANGE = "range"
    NONE = "none"


class RegimeRule(Protocol):
    """Trend or range now, from the feature row: the efficiency rule below, or later the
    ML regime classifier (`esml.alpha.regime`) behind the same call."""

    def classify(self, features: np.ndarray) -> Regime: ...


class EfficiencyRegimeConfig(_Strict):
    """Kaufman's efficiency ratio over the last 60 s (net move / path length, in [0, 1],
    the `efficiency_60s` feature) calls the regime: a trend when most of the path went one
    way, a range when price kept coming back. trend_min is the regime label's threshold
    (`esml.features.labels.regime_labels`, there over the next 5 minutes, here over the
    past minute). By default everything below it is a range, so the call is two-way like
    the seeds' trend / range split; range_max 0.1 (the label's) leaves a no-trade zone."""

    feature: str = "efficiency_60s"
    trend_min: float = Field(0.3, gt=0, le=1)
    range_max: float = Field(0.3, ge=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> EfficiencyRegimeConfig:
        if self.range_max > self.trend_min:
            raise ValueError(
                f"range_max {self.range_max} must not exceed trend_min {self.trend_min}"
            )
        return self


class EfficiencyRegime:
    """Trend if efficiency >= trend_min, else range if efficiency <= range_max, else
    neither (and neither when the feature is not a number)."""

    def __init__(
        self, config: EfficiencyRegimeConfig, feature_names: Sequence[str] = FEATURE_NAMES
    ) -> None:
        self.config = config
        self._col = feature_index(feature_names, config.feature, "the efficiency regime rule")

    def classify(self, features: np.ndarray) -> Regime:
        eff = float(features[self._col])
        if not math.isfinite(eff):
            return Regime.NONE
        if eff >= self.config.trend_min:
            return Regime.TREND
        if eff <= self.config.range_max:
            return Regime.RANGE
        return Regime.NONE


class ZScoreRegimeConfig(_Strict):
    """z = (mid - mean) / std over the previous `window` decision-time mids (the current mid
    is not in its own baseline; population std). Entries when flat and
    band_min <= |z| <= band_max: in a trend with z's sign, in a range against it. A fade
    exits when z comes back to within `exit_z` of the mean. Every entry trails its stop
    `trail_ticks` behind the best price."""

    name: str = "zscore_regime"
    window: int = Field(120, ge=3, le=100_000)
    band_min: float = Field(2.0, gt=0)
    band_max: float = Field(2.5, gt=0)
    exit_z: float = Field(0.2, ge=0)
    trail_ticks: int = Field(4, ge=1)
    min_std_ticks: float = Field(0.5, gt=0)  # below this the window is flat: z means nothing
    confidence: float = Field(0.6, gt=0.5, le=1)
    regime: EfficiencyRegimeConfig = EfficiencyRegimeConfig()

    @model_validator(mode="after")
    def _ordered(self) -> ZScoreRegimeConfig:
        if not self.exit_z < self.band_min <= self.band_max:
            raise ValueError(
                f"need exit_z < band_min <= band_max, got {self.exit_z}, {self.band_min}, "
                f"{self.band_max}"
            )
        return self


class RollingMeanStd:
    """Mean and population std of the last `n` values in O(1) per update.

    Sums are of differences from the first value seen: on a price grid those differences
    and their squares are exact binary fractions, so the sums neither drift nor depend on
    how long the strategy has run.
    """

    def __init__(self, n: int) -> None:
        if n < 2:
            raise ValueError(f"a rolling window needs at least 2 values, got {n}")
        self.n = n
        self._values: deque[float] = deque()
        self._anchor: float | None = None
        self._sum = 0.0
        self._sq = 0.0

    @property
    def full(self) -> bool:
        return len(self._values) == self.n

    def push(self, x: float) -> None:
        if self._anchor is None:
            self._anchor = x
        d = x - self._anchor
        self._values.append(d)
        self._sum += d
        self._sq += d * d
        if len(self._values) > self.n:
            old = self._values.popleft()
            self._sum -= old
            self._sq -= old * old

    def mean_std(self) -> tuple[float, float]:
        k = len(self._values)
        if k == 0 or self._anchor is None:
            raise ValueError("no values yet")
        m = self._sum / k
        var = max(0.0, self._sq / k - m * m)
        return self._anchor + m, math.sqrt(var)


class ZScoreRegimeStrategy:
    """The seeds' z-score regime strategy (see `ZScoreRegimeConfig` for the rule)."""

    def __init__(
        self,
        config: ZScoreRegimeConfig | None = None,
        *,
        tick_size: float = ES.tick_size,
        feature_names: Sequence[str] = FEATURE_NAMES,
        regime: RegimeRule | None = None,
    ) -> None:
        self.config = config or ZScoreRegimeConfig()
        if not tick_size > 0:
            raise ValueError(f"tick_size must be positive, got {tick_size}")
        self.tick_size = tick_size
        self.regime = regime or EfficiencyRegime(self.config.regime, feature_names)
        self._inputs = _Inputs(self.config.name, len(feature_names))
        self._window = RollingMeanStd(self.config.window)
        self._fade = _OwnTrade()

    @property
    def name(self) -> str:
        return self.config.name

    def z(self, mid: float) -> float | None:
        """z of `mid` against the window so far; None until the window is full or while
        it is flat."""
        if not self._window.full:
            return None
        mean, std = self._window.mean_std()
        if std < self.config.min_std_ticks * self.tick_size:
            return None
        return (mid - mean) / std

    def on_decision(
        self, ts_ns: int, features: np.ndarray, mid: float, position: int
    ) -> Signal | None:
        self._inputs.check(ts_ns, features, mid)
        z = self.z(mid)
        regime = self.regime.classify(features)
        self._inputs.accept(ts_ns)
        self._window.push(mid)
        self._fade.observe(position)
        if z is None:
            return None
        cfg = self.config
        if position != 0:  # asks again each time until the position is gone
            if self._fade.is_open() and self._fade_done(z):
                return _exit(ts_ns, self.name, f"fade done: z {z:+.2f} back within {cfg.exit_z}")
            return None
        if not cfg.band_min <= abs(z) <= cfg.band_max or regime is Regime.NONE:
            return None
        with_z = Side.BUY if z > 0 else Side.SELL
        side = with_z if regime is Regime.TREND else with_z.opposite
        self._fade.entered(side if regime is Regime.RANGE else None)
        verb = "follow" if regime is Regime.TREND else "fade"
        return _signal(
            ts_ns,
            self.name,
            side,
            cfg.confidence,
            f"{regime.value}: {verb} z {z:+.2f}",
            trail_ticks=cfg.trail_ticks,
        )

    def _fade_done(self, z: float) -> bool:
        """A long fade was entered below the mean: done once z is back up to -exit_z."""
        side = self._fade.side
        return (z >= -self.config.exit_z) if side is Side.BUY else (z <= self.config.exit_z)


# --- momentum ----------------------------------------------------------------------------


class MomentumConfig(_Strict):
    """Follow a return of at least `threshold_ticks` over the lookback the `return_feature`
    measures (default: the last 60 s, in ticks). Confidence ramps from `min_confidence` at
    the threshold to `max_confidence` at `full_strength_ticks`."""

    name: str = "momentum"
    return_feature: str = "ret_60s_ticks"
    threshold_ticks: float = Field(4.0, gt=0)
    full_strength_ticks: float = Field(12.0, gt=0)
    min_confidence: float = Field(0.55, gt=0.5, le=1)
    max_confidence: float = Field(0.75, gt=0.5, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> MomentumConfig:
        if self.full_strength_ticks < self.threshold_ticks:
            raise ValueError("full_strength_ticks must be at least threshold_ticks")
        if self.max_confidence < self.min_confidence:
            raise ValueError("max_confidence must be at least min_confidence")
        return self


class MomentumStrategy:
    """Momentum: the sign of a recent return beyond a threshold (see `MomentumConfig`)."""

    def __init__(
        self, config: MomentumConfig | None = None, *, feature_names: Sequence[str] = FEATURE_NAMES
    ) -> None:
        self.config = config or MomentumConfig()
        self._col = feature_index(feature_names, self.config.return_feature, self.config.name)
        self._inputs = _Inputs(self.config.name, len(feature_names))

    @property
    def name(self) -> str:
        return self.config.name

    def on_decision(
        self, ts_ns: int, features: np.ndarray, mid: float, position: int
    ) -> Signal | None:
        self._inputs.check(ts_ns, features, mid)
        self._inputs.accept(ts_ns)
        cfg = self.config
        ret = float(features[self._col])
        if not math.isfinite(ret) or abs(ret) < cfg.threshold_ticks:
            return None
        side = Side.BUY if ret > 0 else Side.SELL
        if position != 0 and Side.of_position(position) is side:
            return None  # already with it: rules never add
        conf = _ramp(
            abs(ret),
            cfg.threshold_ticks,
            cfg.full_strength_ticks,
            cfg.min_confidence,
            cfg.max_confidence,
        )
        return _signal(ts_ns, self.name, side, conf, f"{cfg.return_feature} {ret:+.2f} ticks")


# --- mean reversion ----------------------------------------------------------------------


class MeanReversionConfig(_Strict):
    """Fade a price stretched `entry_ticks` or more from its reference (the default feature
    is mid - session VWAP in ticks; `momentum_300s_ticks`, mid - its 5-minute mean, works
    the same way), but not beyond `max_ticks`: that far it is a breakout, not a stretch.
    The fade exits once the distance is back within `exit_ticks`."""

    name: str = "mean_reversion"
    distance_feature: str = "vwap_dist_ticks"
    entry_ticks: float = Field(8.0, gt=0)
    max_ticks: float = Field(24.0, gt=0)
    exit_ticks: float = Field(1.0, ge=0)
    min_confidence: float = Field(0.55, gt=0.5, le=1)
    max_confidence: float = Field(0.7, gt=0.5, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> MeanReversionConfig:
        if not self.exit_ticks < self.entry_ticks <= self.max_ticks:
            raise ValueError(
                f"need exit_ticks < entry_ticks <= max_ticks, got {self.exit_ticks}, "
                f"{self.entry_ticks}, {self.max_ticks}"
            )
        if self.max_confidence < self.min_confidence:
            raise ValueError("max_confidence must be at least min_confidence")
        return self


class MeanReversionStrategy:
    """Mean reversion against a reference price (see `MeanReversionConfig`)."""

    def __init__(
        self,
        config: MeanReversionConfig | None = None,
        *,
        feature_names: Sequence[str] = FEATURE_NAMES,
    ) -> None:
        self.config = config or MeanReversionConfig()
        self._col = feature_index(feature_names, self.config.distance_feature, self.config.name)
        self._inputs = _Inputs(self.config.name, len(feature_names))
        self._fade = _OwnTrade()

    @property
    def name(self) -> str:
        return self.config.name

    def on_decision(
        self, ts_ns: int, features: np.ndarray, mid: float, position: int
    ) -> Signal | None:
        self._inputs.check(ts_ns, features, mid)
        self._inputs.accept(ts_ns)
        self._fade.observe(position)
        cfg = self.config
        dist = float(features[self._col])
        if not math.isfinite(dist):
            return None
        if position != 0:
            if self._fade.is_open() and self._back(dist):
                return _exit(ts_ns, self.name, f"{cfg.distance_feature} {dist:+.2f}: reverted")
            return None
        if not cfg.entry_ticks <= abs(dist) <= cfg.max_ticks:
            return None
        side = Side.SELL if dist > 0 else Side.BUY
        self._fade.entered(side)
        conf = _ramp(
            abs(dist), cfg.entry_ticks, cfg.max_ticks, cfg.min_confidence, cfg.max_confidence
        )
        return _signal(
            ts_ns, self.name, side, conf, f"fade {cfg.distance_feature} {dist:+.2f} ticks"
        )

    def _back(self, dist: float) -> bool:
        """A short fade was entered above the reference: done once it is back down."""
        if self._fade.side is Side.SELL:
            return dist <= self.config.exit_ticks
        return dist >= -self.config.exit_ticks


# --- construction by name, for configuration files and `esml ablate` ---------------------

RULE_CONFIGS: dict[str, type[_Strict]] = {
    "zscore_regime": ZScoreRegimeConfig,
    "momentum": MomentumConfig,
    "mean_reversion": MeanReversionConfig,
}


def make_rule_strategy(
    kind: str,
    params: Mapping[str, Any] | None = None,
    *,
    tick_size: float = ES.tick_size,
    feature_names: Sequence[str] = FEATURE_NAMES,
) -> Strategy:
    """A rule strategy from its kind and its config's fields (validated strictly)."""
    if kind not in RULE_CONFIGS:
        raise ValueError(f"unknown rule strategy {kind!r}; known: {sorted(RULE_CONFIGS)}")
    cfg = RULE_CONFIGS[kind].model_validate(dict(params or {}))
    if isinstance(cfg, ZScoreRegimeConfig):
        return ZScoreRegimeStrategy(cfg, tick_size=tick_size, feature_names=feature_names)
    if isinstance(cfg, MomentumConfig):
        return MomentumStrategy(cfg, feature_names=feature_names)
    assert isinstance(cfg, MeanReversionConfig)
    return MeanReversionStrategy(cfg, feature_names=feature_names)
