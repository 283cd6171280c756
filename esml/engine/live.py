"""The live loop: an asyncio task feeding the engine chunks as a source yields them.

A source is any async iterator of event arrays: Tradovate's market-data socket, the
simulator paced in real time, or a recorded file paced as fast as it will go. The demo,
`esml live` and the tick-engine container all run through here. Between chunks the loop
reads a remote broker's news when the market is quiet, reports a status snapshot every
`status_every_s` of wall time, and stops after `stop_after_s` (`--for`): the caller then
closes what is open (`Engine.finish`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import numpy as np

from esml.data.book import snapshot_end
from esml.engine.engine import Engine
from esml.engine.status import Snapshot, snapshot

NS = 1_000_000_000
END_OF_DATA = "end of data"
TIME_UP = "time up"


async def paced(
    events: np.ndarray, *, speed: float | None = None, chunk_ns: int = NS // 10
) -> AsyncIterator[np.ndarray]:
    """Yield `events` in slices of `chunk_ns` of event time; with `speed`, sleep so event
    time runs `speed` times faster than the wall clock (None: no sleeping). The clock starts
    at the first event after a leading snapshot (a file's snapshot may be stamped hours
    before the market opens)."""
    if len(events) == 0:
        return
    ts = events["ts_recv"].astype(np.int64)  # once: a strided uint64 view is copied per search
    start = int(ts[min(snapshot_end(events), len(ts) - 1)])
    i = 0
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while i < len(events):
        bucket_end = ((int(ts[i]) - start) // chunk_ns + 1) * chunk_ns + start
        j = int(np.searchsorted(ts, bucket_end, side="left"))
        if speed:
            delay = (int(ts[i]) - start) / NS / speed - (loop.time() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)  # let other tasks (order updates, health) run
        yield events[i:j]
        i = j


async def run_live(
    engine: Engine,
    source: AsyncIterator[np.ndarray],
    on_chunk: Callable[[int], None] | None = None,
    *,
    stop_after_s: float | None = None,
    on_status: Callable[[Snapshot], None] | None = None,
    status_every_s: float = 1.0,
    poll_every_s: float = 0.5,
) -> str:
    """Feed `source` to `engine` until it ends or `stop_after_s` of wall time has passed;
    returns why it stopped (`END_OF_DATA` or `TIME_UP`)."""
    if stop_after_s is not None and not stop_after_s > 0:
        raise ValueError(f"the run length must be positive, got {stop_after_s}")
    last_data = time.monotonic()
    ticker = None
    if on_status is not None or engine.paper is None:

        async def tick() -> None:  # status and a quiet market's broker news
            every = min(status_every_s, poll_every_s) if engine.paper is None else status_every_s
            shown = 0.0
            while True:
                await asyncio.sleep(every)
                if engine.paper is None:
                    engine.poll()
                now = time.monotonic()
                if on_status is not None and now - shown >= status_every_s:
                    on_status(snapshot(engine, now - last_data))
                    shown = now

        ticker = asyncio.create_task(tick())
    deadline = asyncio.timeout(stop_after_s)
    try:
        async with deadline:
            async for chunk in source:
                last_data = time.monotonic()
                engine.on_events(chunk)
                if on_chunk is not None:
                    on_chunk(len(chunk))
    except TimeoutError:
        if not deadline.expired():
            raise
        return TIME_UP
    finally:
        if ticker is not None:
            ticker.cancel()
        if on_status is not None:
            on_status(snapshot(engine, time.monotonic() - last_data))
    return END_OF_DATA
