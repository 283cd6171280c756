"""Entry point of the Fargate tick-engine service: `esml live` from environment settings.

    ESML_SOURCE       replay | sim (SYNTHETIC, the default) | tradovate
    ESML_BROKER       paper (the default) | tradovate: the mode is paper or live
    ESML_DATA         replay: a recorded file (a local path or s3://bucket/key)
    ESML_SPEED        replay: times real time (default 1; max: as fast as it goes)
    ESML_STRATEGY     model (the champion bundle, the default) or a rule strategy
    ESML_SYMBOL       the contract traded (default: the config's instrument)
    ESML_FOR          stop after this long (90s, 15m, 2h), flat; default: until stopped
    ESML_LOCKOUT_S    no entry this long after the start-up reconciliation (default 10)
    ESML_WARM_DATA    recorded files (paths or s3:// URIs, comma-separated, oldest first)
                      that end before the live data: they warm the models' windows
    ESML_WARM_S3_HOURS  tradovate: the capture's hours of the last this many hours, from
                      s3://MODEL_BUCKET/DATA_PREFIX live/, warm first (default 2; 0: none)
    ESML_WARM_HISTORY 1 (the default) | 0: tradovate: then Tradovate's chart history warms
    ESML_ON_STOP      flatten (the default) | leave: on SIGTERM close everything, or leave
                      the position under its exchange-held bracket for the next start
    TRADOVATE_SECRET_ARN    the credentials secret (JSON: name, password, appId, ...);
                      outside AWS, ESML_TRADOVATE_CREDENTIALS names a JSON file instead
    ESML_TRADOVATE_REST / _WS / _MD    endpoints (default: the secret's env, demo)
    ORDERS_TABLE, FILLS_TABLE, RISK_STATE_TABLE    with all three, the journal is DynamoDB
                      and every entry is reserved on the shared account (ESML_ACCOUNT,
                      default: the secret's accountSpec, else "paper"); else SQLite at
                      ESML_JOURNAL
    ESML_ACCOUNT_CLOCK  wall (the default) | market: the shared account's clock (gates,
                      cooldown, trading day); market: the market data's time, for a
                      server that replays a recording (`esml sim tradovate`)
    ESML_METRICS_NAMESPACE, ESML_METRICS_S    CloudWatch EMF records (default esml, 10 s)
    ESML_HEALTH_FILE  touched at every status tick; `health.py` beside this file is the
                      container's health check (healthy while younger than 30 s)
    MODEL_BUCKET, MODEL_PREFIX, ESML_MODEL_DIR, ESML_MODEL_SYNC_S    the champion's sync
    ESML_CAPTURE_DIR  with it, what the engine receives is kept there, one esml store per
                      hour, each uploaded to s3://MODEL_BUCKET/DATA_PREFIX live/<symbol>/<hour>/
    ESML_CONFIG       JSON of EsmlConfig fields
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from esml.alpha.manifest import ModelFileError
from esml.alpha.s3_models import sync_champion
from esml.config import ConfigError, EsmlConfig, load_config
from esml.decision.gates import GateStack
from esml.engine.capture import Capture, s3_uploader
from esml.engine.emf import EmfReporter
from esml.engine.engine import Engine, EngineBroker
from esml.engine.live_run import (
    CREDENTIALS_ENV,
    Endpoints,
    LiveSettings,
    LiveSetupError,
    credentials_from_file,
    make_strategy,
    parse_duration,
    run,
    tradovate_client,
    with_defaults,
)
from esml.engine.serving import serve
from esml.engine.shared_risk import on_shared_account
from esml.engine.status import Snapshot
from esml.engine.warm_start import download_recorded
from esml.journal.base import Journal
from esml.journal.sqlite import SQLiteJournal

log = logging.getLogger("esml.tick_engine")
HEALTH_FILE = "/tmp/esml/health"  # as health.py reads it


def settings_from_env(env: dict[str, str]) -> LiveSettings:
    data = env.get("ESML_DATA")
    for_ = env.get("ESML_FOR")
    return LiveSettings(
        source=env.get("ESML_SOURCE", "sim"),  # type: ignore[arg-type]
        broker=env.get("ESML_BROKER", "paper"),  # type: ignore[arg-type]
        data=Path(fetch(data)) if data else None,
        speed=None if env.get("ESML_SPEED") == "max" else float(env.get("ESML_SPEED", "1")),
        strategy=env.get("ESML_STRATEGY", "model"),
        for_s=parse_duration(for_) if for_ else None,
        lockout_s=float(env.get("ESML_LOCKOUT_S", "10")),
        sim_seed=int(env.get("ESML_SIM_SEED", "1")),
        sim_hours=float(env.get("ESML_SIM_HOURS", "6.5")),
        symbol=env.get("ESML_SYMBOL"),
        warm_from=tuple(Path(fetch(u)) for u in env.get("ESML_WARM_DATA", "").split(",") if u),
        warm_history=env.get("ESML_WARM_HISTORY", "1") != "0",
        endpoints=Endpoints(*(env.get(f"ESML_TRADOVATE_{k}") for k in ("REST", "WS", "MD"))),
    )


def fetch(uri: str) -> str:
    """A local copy of `uri` (s3://bucket/key is downloaded once)."""
    if not uri.startswith("s3://"):
        return uri
    bucket, _, key = uri[5:].partition("/")
    local = Path("/tmp/esml/data") / Path(key).name
    if not local.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        boto3.client("s3").download_file(bucket, key, str(local))
    return str(local)


def credentials(env: dict[str, str]) -> dict[str, Any]:
    """From the secret the stack names; outside AWS, from ESML_TRADOVATE_CREDENTIALS."""
    arn = env.get("TRADOVATE_SECRET_ARN")
    if not arn and env.get(CREDENTIALS_ENV):
        return credentials_from_file(env[CREDENTIALS_ENV])
    if not arn:
        raise LiveSetupError("Tradovate needs TRADOVATE_SECRET_ARN (or ESML_TRADOVATE_CREDENTIALS)")
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    try:
        return with_defaults(json.loads(secret))
    except json.JSONDecodeError as e:
        raise LiveSetupError(f"the secret {arn} is not JSON") from e


class MarketClock:
    """The market data's own time (`ESML_ACCOUNT_CLOCK=market`): the shared account's
    clock when its server replays a recording (the Tradovate simulator), so its gates,
    cooldown and trading day follow the recording. Wall time until the first event."""

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def __call__(self) -> datetime:
        ns = self.engine.last_event_ns if self.engine is not None else 0
        return datetime.fromtimestamp(ns / 1e9, UTC) if ns else datetime.now(UTC)


def journal_and_broker(
    env: dict[str, str], cfg: EsmlConfig, broker: EngineBroker | None,
    creds: dict[str, Any] | None, clock: MarketClock | None = None,
) -> tuple[Journal, EngineBroker | None]:  # fmt: skip
    tables = [env.get(k) for k in ("ORDERS_TABLE", "FILLS_TABLE", "RISK_STATE_TABLE")]
    if not all(tables):
        path = Path(env.get("ESML_JOURNAL", "/tmp/esml/journal.sqlite"))
        path.parent.mkdir(parents=True, exist_ok=True)
        log.warning("no DynamoDB tables: journal %s, account state in memory", path)
        return SQLiteJournal(path), broker
    if broker is None:  # the paper broker, built here so that it can be wrapped
        from esml.broker.paper import PaperBroker
        from esml.data.book import BookState

        inst = cfg.instrument_spec
        broker = PaperBroker(inst, BookState.new(inst.tick_fixed), cfg.paper_exchange)
    dynamodb = boto3.resource("dynamodb")
    orders, fills, risk = (dynamodb.Table(t) for t in tables)
    account = env.get("ESML_ACCOUNT") or (creds or {}).get("accountSpec") or "paper"
    gates = GateStack.from_config(cfg.risk, cfg.instrument_spec,
                                  cfg.execution.commission_per_side)  # fmt: skip
    shared, journal = on_shared_account(broker, orders_table=orders, fills_table=fills,
                                        risk_table=risk, account=account, gates=gates,
                                        risk=cfg.risk,
                                        **({} if clock is None else {"clock": clock}))  # fmt: skip
    log.info("journal: DynamoDB %s / %s; shared account %r in %s", tables[0], tables[1],
             account, tables[2])  # fmt: skip
    return journal, shared


class Reporter:
    """Status to the log, EMF metrics to stdout, and the health file, once a tick."""

    def __init__(self, env: dict[str, str], symbol: str) -> None:
        self.emf = EmfReporter(env.get("ESML_METRICS_NAMESPACE", "esml"),
                               {"Service": "tick-engine", "Instrument": symbol})  # fmt: skip
        self.every_s = float(env.get("ESML_METRICS_S", "10"))
        self.health = Path(env.get("ESML_HEALTH_FILE", HEALTH_FILE))
        self.health.parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine | None = None
        self._last = 0.0

    def __call__(self, snap: Snapshot) -> None:
        self.health.touch()
        now = time.monotonic()
        if self.engine is None or now - self._last < self.every_s:
            return
        self._last = now
        log.info("%s", snap.line())
        try:
            held = self.engine.broker.position(self.engine.symbol)
        except Exception:  # the broker unreachable: counted, the mismatch unknown
            self.engine.stats.broker_errors += 1
            held = None
        self.emf.emit(self.engine, snap, held)


async def run_service(env: dict[str, str]) -> Engine:
    try:
        cfg = load_config(**json.loads(env.get("ESML_CONFIG", "{}")))
        s = settings_from_env(env)
        on_stop = env.get("ESML_ON_STOP", "flatten")
        if on_stop not in ("flatten", "leave"):
            raise LiveSetupError(f"ESML_ON_STOP must be flatten or leave, got {on_stop!r}")
        creds = credentials(env) if "tradovate" in (s.broker, s.source) else None
        client = None
        if creds is not None:
            client = tradovate_client(creds, s.endpoints, cfg.execution.commission_per_side,
                                      orders=s.broker == "tradovate")  # fmt: skip
        remote = client if s.broker == "tradovate" else None
        account_clock = env.get("ESML_ACCOUNT_CLOCK", "wall")
        if account_clock not in ("wall", "market"):
            raise LiveSetupError(f"ESML_ACCOUNT_CLOCK: wall or market, not {account_clock!r}")
        clock = MarketClock() if account_clock == "market" else None
        journal, broker = journal_and_broker(env, cfg, remote, creds, clock)
        served = serve_models(env, cfg) if s.strategy == "model" else None
        strategy = make_strategy(s.strategy, cfg, lambda: served.strategy)  # type: ignore[union-attr]
    except (ConfigError, LiveSetupError, ValueError, json.JSONDecodeError) as e:
        log.error("cannot start: %s", e)
        raise SystemExit(2) from e
    recorded = recorded_hours(env, s.source, s.symbol or cfg.instrument)  # as the capture keeps
    s = replace(s, warm_from=s.warm_from + recorded)
    reporter = Reporter(env, cfg.instrument)  # the root: the alarms' dimension survives rolls
    capture = None
    if env.get("ESML_CAPTURE_DIR"):
        bucket = env.get("MODEL_BUCKET")
        upload = None
        if bucket:
            upload = s3_uploader(boto3.client("s3"), bucket, env.get("DATA_PREFIX", "data/"))
        capture = Capture(Path(env["ESML_CAPTURE_DIR"]), s.symbol or cfg.instrument, upload)

    def started(engine: Engine) -> None:
        reporter.engine = engine
        if clock is not None:
            clock.engine = engine

    log.info("%s -> %s (%s mode), strategy %s, on stop: %s", s.source, s.broker, s.mode,
             strategy.name, on_stop)  # fmt: skip
    try:
        engine = await run(s, cfg, strategy, journal, broker=broker, on_status=reporter,
                           on_stop=on_stop, started=started, market=client,
                           capture=capture)  # type: ignore[arg-type]
    finally:
        if served is not None:
            served.close()
        if client is not None:
            client.close()
    st = engine.stats
    log.info("session over: %d events, %d decisions, %d signals, %d orders, %d fills",
             st.events, st.decisions, st.signals, st.orders, st.fills)  # fmt: skip
    return engine


def recorded_hours(env: dict[str, str], source: str, symbol: str) -> tuple[Path, ...]:
    """The capture's last hours from S3, to warm from before the chart history (a live
    source only: a replay has its own clock)."""
    hours = float(env.get("ESML_WARM_S3_HOURS", "2"))
    bucket = env.get("MODEL_BUCKET")
    if source != "tradovate" or not bucket or hours <= 0:
        return ()
    try:
        return tuple(download_recorded(boto3.client("s3"), bucket, env.get("DATA_PREFIX", "data/"),
                                       symbol, hours=hours, now_ns=time.time_ns(),
                                       folder=Path("/tmp/esml/warm")))  # fmt: skip
    except Exception:  # no recorded hours: the chart history alone warms
        log.exception("warm start: the recorded hours could not be read from S3")
        return ()


def serve_models(env: dict[str, str], cfg: EsmlConfig):
    """The champion (synced from S3 first when MODEL_BUCKET is set)."""
    model_path = Path(env.get("ESML_MODEL_DIR", cfg.model.path))
    bucket = env.get("MODEL_BUCKET")
    if bucket:
        try:
            name = sync_champion(boto3.client("s3"), bucket, env.get("MODEL_PREFIX", "models/"),
                                 model_path)  # fmt: skip
            log.info("model root %s: champion %s", model_path, name or "unchanged")
        except Exception:
            log.exception("model sync failed; starting on the local champion")
    try:
        return serve(model_path, cfg)
    except ModelFileError as e:
        raise LiveSetupError(f"no model to serve: {e}") from e


def main() -> None:
    env = dict(os.environ)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")  # fmt: skip
    loop = asyncio.new_event_loop()
    task = loop.create_task(run_service(env))
    for sig in (signal.SIGTERM, signal.SIGINT):  # ECS stops a task with SIGTERM
        loop.add_signal_handler(sig, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        log.info("stopped by signal")


if __name__ == "__main__":
    main()
