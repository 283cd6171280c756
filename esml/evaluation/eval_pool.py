"""`esml evaluate --jobs N`: data sets evaluated at once, one process each, their progress
relayed to the parent's progress bar.

Each data set is independent and every model in it trains with fixed seeds on one thread,
so a data set scores the same in a worker as in the parent; the report lists them in the
order given. Workers are spawned (not forked): torch and xgboost hold thread pools that a
fork would copy half-alive.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from queue import Queue

from rich.progress import Progress, TaskID

from esml.config import FeatureConfig
from esml.evaluation.datasets import EvalDataset, Skipped
from esml.evaluation.model_eval import (
    NET_KINDS,
    DatasetResult,
    EvalSettings,
    ModelBudget,
    evaluate_dataset,
)

_DONE = None  # the relay thread's stop message


class RelayedProgress:
    """The calls `evaluate_dataset` makes on a progress bar (one task), sent as messages
    (worker key, method, keyword arguments) to the parent, which applies them."""

    def __init__(self, queue: Queue, key: int) -> None:
        self._queue, self._key = queue, key

    def add_task(self, description: str, total: float | None = 100.0) -> TaskID:
        self._queue.put((self._key, "add_task", {"description": description, "total": total}))
        return TaskID(0)

    def update(self, task_id: TaskID, **kwargs: object) -> None:
        self._queue.put((self._key, "update", kwargs))

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        self._queue.put((self._key, "advance", {"advance": advance}))

    def reset(self, task_id: TaskID, **kwargs: object) -> None:
        self._queue.put((self._key, "reset", kwargs))


def _relay(queue: Queue, progress: Progress) -> None:
    tasks: dict[int, TaskID] = {}
    while (message := queue.get()) is not _DONE:
        key, method, kwargs = message
        if method == "add_task":
            tasks[key] = progress.add_task(**kwargs)
        else:
            getattr(progress, method)(tasks[key], **kwargs)


def evaluate_in_parallel(
    datasets: Sequence[EvalDataset],
    features: FeatureConfig,
    settings: EvalSettings,
    budget: ModelBudget,
    jobs: int,
    progress: Progress,
    nets: Sequence[str] = NET_KINDS,
) -> tuple[list[DatasetResult], list[Skipped]]:
    """Every data set evaluated in up to `jobs` worker processes, largest first (the run
    ends when the last one does); results in the order given. A data set too small for the
    folds is returned as skipped, with the reason, as the sequential run does."""
    ctx = mp.get_context("spawn")
    order = sorted(range(len(datasets)), key=lambda k: -_size(datasets[k]))
    results: dict[int, DatasetResult] = {}
    skipped: list[Skipped] = []
    with ctx.Manager() as manager:
        queue = manager.Queue()
        relay = threading.Thread(target=_relay, args=(queue, progress), daemon=True)
        relay.start()
        try:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
                futures = {
                    k: pool.submit(
                        evaluate_dataset,
                        datasets[k],
                        features,
                        settings,
                        budget,
                        nets=nets,
                        progress=RelayedProgress(queue, k),
                    )
                    for k in order
                }
                for k in sorted(futures):
                    try:
                        results[k] = futures[k].result()
                    except ValueError as e:  # too little data for the folds
                        skipped.append(Skipped(datasets[k].title, str(e)))
        finally:
            queue.put(_DONE)
            relay.join()
    return [results[k] for k in sorted(results)], skipped


def _size(ds: EvalDataset) -> int:
    """Events in the data set: what its evaluation time grows with."""
    return sum(len(s.events) for s in ds.sources)
