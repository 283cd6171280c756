"""The tick engine's CloudWatch metrics, as Embedded Metric Format records on stdout (the
awslogs driver ships them; CloudWatch extracts the metrics, no API call on the hot path).

Counts are the change since the previous record, so a metric's Sum over any period is
what happened in it; position, P&L, data age, the mismatch with the broker and
`WarmingWindows` (how many of the features and model windows still fill: the start's
warm-up, `esml.engine.warm_start`) are levels; decision latency carries each decision's
time since the previous record (EMF keeps up to 100 values per metric per record).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from esml.engine.engine import Engine
from esml.engine.status import Snapshot

COUNTS = ("Decisions", "Signals", "Orders", "Fills", "Rejects", "BrokerErrors")
UNITS = {"DataAge": "Seconds", "DecisionLatency": "Microseconds", "OpenPnL": "None",
         "RealizedPnL": "None", "Position": "Count", "PositionMismatch": "Count",
         "Warming": "Count", "WarmingWindows": "Count"}  # fmt: skip
MAX_VALUES = 100
log = logging.getLogger(__name__)


class EmfReporter:
    """One record per call, for one engine; `namespace` and `dimensions` as the alarms
    of the stack expect them (`cdk/esml_cdk/trading_service.py`)."""

    def __init__(self, namespace: str, dimensions: dict[str, str]) -> None:
        self.namespace = namespace
        self.dimensions = dimensions
        self._last: dict[str, float] = dict.fromkeys(COUNTS, 0.0)
        self._warming: tuple[str, ...] | None = None

    def record(self, engine: Engine, snap: Snapshot, broker_position: int | None) -> dict[str, Any]:
        levels = snap.metrics()
        totals = {**{k: levels.pop(k) for k in COUNTS[:-1]},
                  "BrokerErrors": engine.stats.broker_errors}  # fmt: skip
        values: dict[str, Any] = {k: totals[k] - self._last[k] for k in COUNTS}
        self._last = {k: float(totals[k]) for k in COUNTS}
        values.update(levels)
        values["WarmingWindows"] = len(snap.warming)  # features and model windows still filling
        if snap.warming != self._warming:  # said once per change, in the log
            left = ", ".join(snap.warming)
            log.info("warm-up: %s", f"still filling {left}" if left else "every window is full")
            self._warming = snap.warming
        if broker_position is not None:
            values["PositionMismatch"] = abs(broker_position - snap.position)
        latencies = engine.stats.decision_us
        if latencies:
            values["DecisionLatency"] = [round(v, 1) for v in latencies[-MAX_VALUES:]]
            latencies.clear()
        metrics = [{"Name": k, "Unit": UNITS.get(k, "Count")} for k in values]
        return {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [sorted(self.dimensions)],
                    "Metrics": metrics,
                }],
            },
            **self.dimensions,
            **values,
            "status": snap.line(),
        }  # fmt: skip

    def emit(self, engine: Engine, snap: Snapshot, broker_position: int | None) -> str:
        line = json.dumps(self.record(engine, snap, broker_position))
        print(line, flush=True)
        return line
