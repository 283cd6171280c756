"""Hot swap: follow a model root's `champion` pointer and hand the engine each new bundle.

Retraining publishes a bundle and then flips the pointer (`esml.alpha.registry.publish`),
so whatever the pointer names is complete. The engine asks `poll` at its decisions; at
most once per `check_every_s` of market time it reads the pointer (one small file), and a
new name is loaded off the event loop's thread, because building onnxruntime sessions
takes longer than the engine may pause. The engine swaps between two decisions, never in
the middle of one. A bundle that fails to load is logged and skipped, and the running
strategy goes on serving: a bad publish changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from esml.alpha.manifest import ModelFileError
from esml.alpha.registry import champion_name
from esml.alpha.strategy import Strategy

log = logging.getLogger(__name__)
_NS = 1_000_000_000


class ChampionWatch:
    def __init__(
        self,
        root: Path,
        build: Callable[[Path], Strategy],
        *,
        serving: str,
        check_every_s: float = 5.0,
        background: bool = True,
    ) -> None:
        if check_every_s <= 0:
            raise ValueError(f"check_every_s must be positive, got {check_every_s}")
        self.root = Path(root)
        self.serving = serving  # the bundle name now in service
        self.failed: dict[str, str] = {}  # bundle name → why it was not swapped in
        self._build = build
        self._every = round(check_every_s * _NS)
        self._checked: int | None = None
        self._loading: tuple[str, Future[Strategy]] | None = None
        self._pool = ThreadPoolExecutor(1, "esml-model-load") if background else None

    def poll(self, ts_ns: int) -> Strategy | None:
        """A newly loaded champion's strategy, once, or None."""
        if self._loading is not None:
            return self._collect()
        if self._checked is not None and ts_ns - self._checked < self._every:
            return None
        self._checked = ts_ns
        name = champion_name(self.root)
        if name is None or name == self.serving or name in self.failed:
            return None
        future: Future[Strategy]
        if self._pool is None:
            future = Future()
            try:
                future.set_result(self._build(self.root / name))
            except Exception as e:  # reported by _collect, like a background failure
                future.set_exception(e)
        else:
            future = self._pool.submit(self._build, self.root / name)
        self._loading = (name, future)
        return self._collect()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _collect(self) -> Strategy | None:
        assert self._loading is not None
        name, future = self._loading
        if not future.done():
            return None
        self._loading = None
        try:
            strategy = future.result()
        except (ModelFileError, ValueError, OSError) as e:
            self.failed[name] = str(e)
            log.error("champion %s not swapped in; still serving %s: %s", name, self.serving, e)
            return None
        log.info("champion %s loaded; replacing %s", name, self.serving)
        self.serving = name
        return strategy
