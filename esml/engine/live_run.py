"""One live run put together from its settings, for `esml live` and the tick-engine
container alike: the market source, the broker, the strategy, the journal, the warm-up,
and the end (`--for` or the end of the data) that leaves nothing open.

Sources: `replay` (a recorded file, any schema esml reads, paced at `speed`), `sim` (the
seeded market generator, SYNTHETIC, paced in real time) and `tradovate` (Tradovate's
market-data socket). Brokers: `paper` (the exchange simulator on the engine's own book)
and `tradovate` (REST orders, user-socket news). The mode follows: a paper broker on a
live source is `paper` (seed 000's paper phase), Tradovate is `live`.

Tradovate credentials are never taken from the command line: locally from the JSON file
named by `ESML_TRADOVATE_CREDENTIALS`, in the container from the secret the stack names.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np

from esml.alpha.rules import RULE_CONFIGS, make_rule_strategy
from esml.alpha.strategy import Strategy
from esml.config import EsmlConfig
from esml.data.dbn import main_instrument, read_mbo
from esml.decision.alerts import front_month
from esml.decision.proposal import AccountState
from esml.engine.capture import Capture
from esml.engine.engine import Engine, EngineBroker, Mode
from esml.engine.live import NS, paced, run_live
from esml.engine.lockstep import FollowsMarketTime, LockstepBroker, sim_stepper
from esml.engine.status import Snapshot
from esml.engine.warm_start import warm_live
from esml.journal.base import Journal
from esml.market.calendar import trading_day
from esml.sim.synthetic import generate_session

Source = Literal["replay", "sim", "tradovate"]
BrokerKind = Literal["paper", "tradovate"]
SOURCES: tuple[Source, ...] = ("replay", "sim", "tradovate")
BROKERS: tuple[BrokerKind, ...] = ("paper", "tradovate")
CREDENTIALS_ENV = "ESML_TRADOVATE_CREDENTIALS"
StopAction = Literal["flatten", "leave"]


class LiveSetupError(ValueError):
    """The run's settings cannot work together; nothing was started."""


@dataclass(frozen=True)
class Endpoints:
    """Tradovate's three endpoints; None: the credentials' environment's (demo)."""

    rest: str | None = None
    ws: str | None = None
    md: str | None = None


@dataclass(frozen=True)
class LiveSettings:
    source: Source
    broker: BrokerKind
    data: Path | None = None  # replay: the recorded file
    speed: float | None = None  # replay: times real time; None as fast as it goes
    strategy: str = "model"  # "model" (the served bundle) or a rule strategy's kind
    for_s: float | None = None  # stop after this much wall time
    lockout_s: float = 10.0  # no entry this long after the start-up reconciliation
    warm_s: float = 0.0  # replay: the file's first seconds warm the windows, untraded
    warm_from: tuple[Path, ...] = ()  # recorded files or hour stores that warm the windows
    warm_history: bool = True  # tradovate: then Tradovate's chart history (`warm_start`)
    symbol: str | None = None  # the contract traded; None: the config's instrument
    sim_seed: int = 1
    sim_hours: float = 6.5
    endpoints: Endpoints = Endpoints()
    lockstep: str | None = None  # replay: the simulator's root URL; its replay follows ours

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise LiveSetupError(f"--source must be one of {SOURCES}, got {self.source!r}")
        if self.broker not in BROKERS:
            raise LiveSetupError(f"--broker must be one of {BROKERS}, got {self.broker!r}")
        if self.source == "replay" and self.data is None:
            raise LiveSetupError("--source replay needs --data FILE")
        if self.speed is not None and not self.speed > 0:
            raise LiveSetupError(f"--speed must be positive, got {self.speed}")
        if self.for_s is not None and not self.for_s > 0:
            raise LiveSetupError(f"--for must be positive, got {self.for_s}")
        if self.warm_s < 0 or self.lockout_s < 0:
            raise LiveSetupError("--warm and --lockout must be >= 0")
        if self.lockstep and (self.source, self.broker) != ("replay", "tradovate"):
            raise LiveSetupError("--lockstep needs --source replay --broker tradovate")
        if self.strategy != "model" and self.strategy not in RULE_CONFIGS:
            known = ", ".join(["model", *sorted(RULE_CONFIGS)])
            raise LiveSetupError(f"--strategy {self.strategy!r}: known are {known}")

    @property
    def mode(self) -> Mode:
        return "live" if self.broker == "tradovate" else "paper"


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `2h` → seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    t = text.strip().lower()
    scale = units.get(t[-1:])
    try:
        value = float(t[:-1] if scale else t)
    except ValueError:
        raise LiveSetupError(f"bad duration {text!r}: use 90, 90s, 15m or 2h") from None
    if not value > 0:
        raise LiveSetupError(f"a duration must be positive, got {text!r}")
    return value * (scale or 1.0)


def credentials_from_file(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The JSON credentials file (`name, password, appId, appVersion, cid, sec`, and
    optionally `deviceId`, `env`); its path comes from `ESML_TRADOVATE_CREDENTIALS`."""
    where = path or os.environ.get(CREDENTIALS_ENV)
    if not where:
        raise LiveSetupError(
            f"--broker/--source tradovate needs credentials: set {CREDENTIALS_ENV} to a JSON "
            "file with name, password, appId, appVersion, cid, sec"
        )
    try:
        data = json.loads(Path(where).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LiveSetupError(f"{CREDENTIALS_ENV}={where}: {e}") from e
    if not isinstance(data, dict):
        raise LiveSetupError(f"{where}: the credentials must be a JSON object")
    return with_defaults(data)


def with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Tradovate's demo environment and a device id stable for this machine and user,
    unless the credentials name them."""
    device = hashlib.sha256(f"esml:{platform.node()}:{data.get('name')}".encode()).hexdigest()
    return {"env": "demo", "deviceId": device[:32], **data}


def tradovate_client(creds: dict[str, Any], endpoints: Endpoints, commission_per_side: float,
                     *, orders: bool) -> Any:  # fmt: skip
    """Tradovate's client for these credentials (checked without echoing a secret); with
    `orders`, its user socket is open and synced, so `take_updates` drains it."""
    from esml.broker.tradovate import TradovateClient, TradovateCredentials

    try:
        c = TradovateCredentials.model_validate(creds)
    except ValueError as e:
        fields = sorted({".".join(map(str, err["loc"])) for err in e.errors()})  # type: ignore[attr-defined]
        raise LiveSetupError(f"Tradovate credentials: bad or missing {fields}") from None
    client = TradovateClient(c, base_url=endpoints.rest, commission_per_side=commission_per_side,
                             ws_url=endpoints.ws, md_url=endpoints.md)  # fmt: skip
    if orders:
        client.connect()
    return client


async def tradovate_feed(client: Any, symbol: str, *, idle_s: float = 0.01, md: Any = None
                         ) -> AsyncIterator[np.ndarray]:  # fmt: skip
    """The md socket (`md`, or one opened here) as chunks of esml events: the 10-level DOM
    for the book and the live tick chart for the trades, in arrival order (stamps never go
    back between chunks)."""
    if md is None:
        md = await asyncio.to_thread(client.market_data, "dom")
    md.subscribe_dom(symbol)
    await asyncio.to_thread(md.get_chart, symbol, "Tick", as_much_as=1)
    last = 0
    try:
        while True:
            ev = md.take_events(symbol)
            if not len(ev):
                await asyncio.sleep(idle_s)
                continue
            ev = ev[np.argsort(ev["ts_recv"], kind="stable")]
            ts = np.maximum(ev["ts_recv"].astype(np.int64), last)
            ev["ts_recv"] = ts
            last = int(ts[-1])
            yield ev
    finally:
        md.close()


def make_strategy(name: str, cfg: EsmlConfig, serve_model: Callable[[], Strategy]) -> Strategy:
    if name == "model":
        return serve_model()
    return make_rule_strategy(name, tick_size=cfg.instrument_spec.tick_size)


def replay_events(path: Path) -> np.ndarray:
    ev = read_mbo(path)
    if len(ev) == 0:
        raise LiveSetupError(f"{path}: no MBO records")
    return ev[ev["instrument_id"] == main_instrument(ev)]


def recorded_events(s: LiveSettings) -> np.ndarray:
    """The events a replay or sim source will play (SYNTHETIC for `sim`)."""
    if s.source == "sim":
        return generate_session(s.sim_seed, duration_s=s.sim_hours * 3600)
    assert s.data is not None
    return replay_events(s.data)


def market_source(s: LiveSettings, engine: Engine,
                  events: np.ndarray) -> AsyncIterator[np.ndarray]:  # fmt: skip
    """The source's chunks; a replay's first `warm_s` seconds warm the engine first."""
    if s.source == "sim":
        return paced(events, speed=s.speed or 1.0)
    if s.warm_s:
        ts = events["ts_recv"].astype(np.int64)
        cut = int(np.searchsorted(ts, ts[0] + round(s.warm_s * NS)))
        engine.warm(events[:cut])
        events = events[cut:]
    return paced(events, speed=s.speed)


async def run(
    s: LiveSettings,
    cfg: EsmlConfig,
    strategy: Strategy,
    journal: Journal,
    *,
    broker: EngineBroker | None = None,
    on_status: Callable[[Snapshot], None] | None = None,
    account: AccountState | None = None,
    on_stop: StopAction = "flatten",
    started: Callable[[Engine], None] | None = None,
    market: Any = None,
    capture: Capture | None = None,
) -> Engine:
    """Run until the data ends or `for_s` is up, then close everything. Cancelled (a
    signal), close everything too, or with `on_stop="leave"` leave the position under its
    exchange-held bracket, as journaled, for the next start to adopt. `market`: the
    Tradovate client whose md socket a `tradovate` source reads; `capture` keeps what the
    engine receives in hourly files."""
    symbol = s.symbol or cfg.instrument
    if s.source == "tradovate":
        if market is None:
            raise LiveSetupError("--source tradovate needs a Tradovate client")
        events, day = None, trading_day(time.time_ns())
        symbol = s.symbol or front_month(cfg.instrument, date.fromisoformat(day))
    else:
        events = recorded_events(s)
        day = trading_day(int(events["ts_recv"][0]))
    if s.lockstep:  # the simulator replays our recording at our clock
        broker = LockstepBroker(broker, sim_stepper(s.lockstep))
    engine = Engine(cfg, strategy, journal, account or AccountState(day), symbol=symbol,
                    broker=broker, mode=s.mode, lockout_s=s.lockout_s)  # fmt: skip
    if started is not None:
        started(engine)
    md = None
    if events is None and s.warm_history:  # the md socket's chart history warms, then feeds
        md = await asyncio.to_thread(market.market_data, "dom")
    if s.warm_from or md is not None:  # history before the live data: nothing is traded
        await warm_live(engine, recorded=s.warm_from, md=md, symbol=symbol)
    source = (tradovate_feed(market, symbol, md=md) if events is None
              else market_source(s, engine, events))  # fmt: skip
    if capture is not None:
        source = capture.wrap(source)
    try:
        why = await run_live(engine, source, stop_after_s=s.for_s, on_status=on_status)
    except asyncio.CancelledError:
        if on_stop == "leave":
            engine.manager.tracker.note(
                engine.manager.now_ns, abs(engine.manager.position), "none",
                "stopped: the position is left under its exchange-held bracket",
            )  # fmt: skip
        else:
            await close_out(engine, "stopped by a signal")
        raise
    await close_out(engine, f"live run over: {why}")
    return engine


async def close_out(engine: Engine, reason: str, timeout_s: float = 30.0) -> None:
    # 30 s: the broker's cancels and fills can lag on a loaded box; ECS gives the task 120 s
    """Close everything: at once on the paper exchange; with a remote broker, flatten and
    read its news until it holds nothing and the journal has every order's end (its fills
    and cancels arrive on their own time)."""
    engine.finish(engine.last_event_ns, reason)
    if engine.paper is not None:
        return
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while (engine.exposed() or engine.manager.tracker.live()) and loop.time() < end:
        if isinstance(engine.broker, FollowsMarketTime):  # past the last event: carried out
            engine.broker.lockstep_to(engine.last_event_ns + NS)
        await asyncio.sleep(0.1)
        engine.poll()
        if engine.exposed():
            engine.flatten(engine.last_event_ns, reason)
    engine.sweep_fills()
