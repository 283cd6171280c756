"""How often each outcome of talking to Tradovate happened: a small thread-safe tally the
engine exports as metrics (`snapshot()`), one name per outcome."""

from __future__ import annotations

import threading
from collections import Counter

# The outcomes counted, so a dashboard knows every name even before it first happens.
OUTCOMES = (
    "rest_ok",
    "rest_p_ticket",  # 200 with p-ticket: waited p-time, resent with the ticket
    "rest_p_captcha",  # 200 with p-captcha: stopped, a person must act
    "rest_429",  # too many requests: backed off, resent
    "rest_423",  # locked: backed off, resent
    "rest_5xx",  # server error: outcome unknown until looked up
    "rest_timeout",  # no answer in time: outcome unknown until looked up
    "rest_connection_lost",  # connection refused or dropped: outcome unknown
    "rest_401",  # token refused: one fresh token, one retry
    "rest_rejected",  # Tradovate refused an order: nothing placed
    "lookup_found",  # a lost answer's order was found by its clOrdId
    "lookup_absent",  # ... was not at Tradovate: safe to send again
    "resent_after_lookup",
    "ws_p_ticket",  # the same outcomes for requests sent over a socket
    "ws_p_captcha",
    "ws_429",
    "ws_423",
    "ws_connects",
    "ws_reconnects",
    "ws_dead_detected",  # no frame for too long: the socket was closed and reopened
    "ws_token_renewals",
    "ws_events",
    "ws_resyncs",
    "ws_orders_recovered_by_resync",  # order changes a resync found that events had missed
    "ws_fills_recovered_by_resync",
)


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter({name: 0 for name in OUTCOMES})

    def add(self, name: str, n: int = 1) -> None:
        if name not in OUTCOMES:
            raise KeyError(f"unknown Tradovate outcome {name!r}")
        with self._lock:
            self._counts[name] += n

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
