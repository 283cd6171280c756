"""Entry point of the Fargate tick-engine service: `esml.engine` live, one writer.

The market source is chosen by `ESML_SOURCE`. `sim` (the default, and the only one this
release ships) is the seeded session generator paced in real time, SYNTHETIC data, for
smoke-testing a deployment end to end without a market-data subscription. The models come
from `ESML_MODEL_DIR` (default: the config's `model.path`; the image ships `models/`, whose
champion bundle's ensemble it trades, following the champion pointer while it runs). With
`MODEL_BUCKET` set (the stack sets it), the champion promoted to S3 (`esml models promote`)
is synced into that root at start and every `ESML_MODEL_SYNC_S` seconds, and swapped in
between two decisions. The config comes from `ESML_CONFIG` (JSON of EsmlConfig fields), the
journal from `ESML_JOURNAL`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

import boto3

from esml.alpha.manifest import ModelFileError
from esml.alpha.s3_models import sync_champion
from esml.config import ConfigError, load_config
from esml.decision.proposal import AccountState
from esml.engine.engine import Engine
from esml.engine.live import paced, run_live
from esml.engine.serving import serve
from esml.journal.sqlite import SQLiteJournal
from esml.market.calendar import trading_day
from esml.sim.synthetic import generate_session

log = logging.getLogger("esml.tick_engine")


async def run_service() -> None:
    try:
        cfg = load_config(**json.loads(os.environ.get("ESML_CONFIG", "{}")))
    except (ConfigError, json.JSONDecodeError) as e:
        log.error("bad ESML_CONFIG: %s", e)
        raise SystemExit(2) from e
    source = os.environ.get("ESML_SOURCE", "sim")
    if source != "sim":
        log.error("ESML_SOURCE=%r: only 'sim' is available in this release", source)
        raise SystemExit(2)
    model_path = Path(os.environ.get("ESML_MODEL_DIR", cfg.model.path))
    bucket = os.environ.get("MODEL_BUCKET")
    prefix = os.environ.get("MODEL_PREFIX", "models/")
    s3 = boto3.client("s3") if bucket else None
    if bucket:
        try:
            name = sync_champion(s3, bucket, prefix, model_path)
            log.info("model root %s: champion %s", model_path, name or "unchanged")
        except Exception:
            log.exception("first model sync failed; starting on the local champion")
    try:
        served = serve(model_path, cfg)
    except (ModelFileError, ValueError) as e:
        log.error("no model to serve: %s", e)
        raise SystemExit(2) from e
    journal_path = Path(os.environ.get("ESML_JOURNAL", "/tmp/esml/journal.sqlite"))
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    seed = int(os.environ.get("ESML_SIM_SEED", "1"))
    hours = float(os.environ.get("ESML_SIM_HOURS", "6.5"))
    events = generate_session(seed, duration_s=hours * 3600)
    log.info("SYNTHETIC source: seed %d, %d events; serving %s", seed, len(events),
             served.strategy.name)  # fmt: skip
    account = AccountState(trading_day(int(events["ts_recv"][0])))
    every_s = float(os.environ.get("ESML_MODEL_SYNC_S", "60"))
    sync = None
    if bucket:
        sync = asyncio.create_task(sync_models(s3, bucket, prefix, model_path, every_s))
    with SQLiteJournal(journal_path) as journal:
        engine = Engine(cfg, served.strategy, journal, account, watch=served.watch)
        try:
            await run_live(engine, paced(events, speed=1.0))
        finally:  # the data ended or ECS is stopping the task: leave nothing open
            if sync is not None:
                sync.cancel()
            engine.finish(engine.last_event_ns, "session over")
            served.close()
    st = engine.stats
    log.info("session over: %d events, %d decisions, %d signals, %d orders, %d fills; swaps %s",
             st.events, st.decisions, st.signals, st.orders, st.fills, st.swaps)  # fmt: skip


async def sync_models(s3, bucket: str, prefix: str, root: Path, every_s: float) -> None:
    """Bring each new S3 champion into the local root; the engine's watch swaps it in."""
    while True:
        await asyncio.sleep(every_s)
        try:
            name = await asyncio.to_thread(sync_champion, s3, bucket, prefix, root)
        except Exception:  # a bad bundle or S3 down: the running champion serves on
            log.exception("model sync from s3://%s/%s failed; serving on", bucket, prefix)
        else:
            if name:
                log.info("synced champion %s from s3://%s/%s", name, bucket, prefix)


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")  # fmt: skip
    loop = asyncio.new_event_loop()
    task = loop.create_task(run_service())
    for sig in (signal.SIGTERM, signal.SIGINT):  # ECS stops a task with SIGTERM
        loop.add_signal_handler(sig, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        log.info("stopped by signal")


if __name__ == "__main__":
    main()
