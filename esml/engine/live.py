"""The live loop: an asyncio task feeding the engine chunks as a source yields them.

A source is any async iterator of event arrays: Tradovate's market-data socket, the
simulator paced in real time, or a recorded file paced as fast as it will go. The demo
and the tick-engine container both run through here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import numpy as np

from esml.engine.engine import Engine

NS = 1_000_000_000


async def paced(
    events: np.ndarray, *, speed: float | None = None, chunk_ns: int = NS // 10
) -> AsyncIterator[np.ndarray]:
    """Yield `events` in slices of `chunk_ns` of event time; with `speed`, sleep so event
    time runs `speed` times faster than the wall clock (None: no sleeping)."""
    if len(events) == 0:
        return
    ts = events["ts_recv"].astype(np.int64)  # once: a strided uint64 view is copied per search
    start = int(ts[0])
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
) -> None:
    async for chunk in source:
        engine.on_events(chunk)
        if on_chunk is not None:
            on_chunk(len(chunk))
