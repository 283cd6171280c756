"""Faults the Tradovate simulator injects on demand, so a client can rehearse every failure.

One `Faults` object per simulator (`TradovateSim.faults`). Each method is also reachable
while the simulator runs, over loopback: `POST {rest root}/sim/fault` with the JSON body
`{"fault": METHOD, ...keyword arguments}` (e.g. `{"fault": "rest", "kind": "p-ticket",
"path": "/order/placeorder"}`), so `esml sim tradovate` users can rehearse them too.

Request faults (`rest`) wait in a queue; each request (HTTP, or a REST call sent over the
user WebSocket) takes the first armed fault whose `path` matches (case-insensitive, None
matches any request but the token request) and uses it up after `times` requests:

- `p-ticket`: not carried out; 200 `{"p-ticket": T, "p-time": S, "p-captcha": false}`.
  The resend is carried out only if it carries `"p-ticket": T` and S seconds have passed
  (sooner: the same ticket again with the seconds left); a resend without it: a new ticket.
- `p-captcha`: not carried out; 200 `{"p-ticket": T, "p-time": S, "p-captcha": true}`: a
  person must log in on the web site; every request of this user gets it until `clear()`.
- `429`, `423`, `500`, `502`, `503`, `504`: not carried out; that HTTP status with
  `{"errorText": ...}`.
- `500-after-accept`: carried out (the order exists); the answer is a 500.
- `drop-after-accept`: carried out; the connection is closed without an answer.
- `timeout-after-accept`: carried out; over HTTP the answer comes after `delay_s` seconds
  (the client's timeout fires first), over the socket it never comes.
- `reject`: not carried out; 200 `{"failureReason": reason, "failureText": text}`.

Market and session faults act at once:
- `cap_fills(max_qty)`: from now on a resting or market order fills at most `max_qty`
  contracts per price change (partial fills) in a price-set market; `cap_fills(None)`
  lifts it. A replayed book makes partial fills of its own (an order takes at most the
  displayed size, a resting order what trades past its queue) and ignores the cap.
- `drop_sockets(which)`: the user and/or md WebSockets are cut (TCP closed, no close frame).
- `freeze_sockets(which, seconds)`: the server goes silent on those sockets (no heartbeat,
  no data, requests unanswered) for `seconds`: a dead peer that keeps its TCP connection.
- `expire_tokens()`: every access and md token expires now: REST answers 401, the sockets
  authorised with them are closed (`c[1008,"Token expired"]`).
- `clear()`: disarm every queued request fault and lift the captcha lock and the fill cap.

Every fault served is counted in `counts` (kind -> times).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

REQUEST_FAULTS = frozenset({
    "p-ticket", "p-captcha", "429", "423", "500", "502", "503", "504",
    "500-after-accept", "drop-after-accept", "timeout-after-accept", "reject",
})  # fmt: skip
CARRIED_OUT = frozenset({"500-after-accept", "drop-after-accept", "timeout-after-accept"})
SOCKETS = ("user", "md", "all")
TICKET_LIFE_S = 300.0  # how long after its p-time a ticket is still honoured


class FaultError(ValueError):
    """A fault asked for with bad arguments: nothing is armed."""


@dataclass
class RequestFault:
    kind: str
    path: str | None = None
    times: int = 1
    p_time: float = 1.0
    delay_s: float = 10.0
    reason: str = "RiskCheck"
    text: str = "Rejected by the simulator's injected fault"

    def matches(self, path: str) -> bool:
        if path.endswith("/auth/accesstokenrequest") and self.path is None:
            return False
        return self.path is None or path.lower().endswith(self.path.lower())


@dataclass
class Verdict:
    """What the simulator does with one request. `answer` set: answer it without carrying
    it out; `after` set: carry it out, then do this instead of the normal answer."""

    answer: tuple[int, Any] | None = None
    after: str | None = None
    delay_s: float = 0.0
    kind: str = ""


@dataclass
class _Ticket:
    path: str
    ready_at: float


@dataclass
class Faults:
    """The simulator's fault switchboard (thread-safe). `sockets` is set by the simulator:
    callbacks `drop(which)`, `freeze(which, seconds)`, `expire()`."""

    sockets: dict[str, Callable[..., None]] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    fill_cap: int | None = None
    captcha: bool = False
    clock: Callable[[], float] = time.monotonic
    _queue: list[RequestFault] = field(default_factory=list)
    _tickets: dict[str, _Ticket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- the API ------------------------------------------------------------------------
    def rest(
        self,
        kind: str,
        *,
        path: str | None = None,
        times: int = 1,
        p_time: float = 1.0,
        delay_s: float = 10.0,
        reason: str = "RiskCheck",
        text: str = "Rejected by the simulator's injected fault",
    ) -> None:
        """Arm a request fault for the next `times` requests to `path` (see the table)."""
        if kind not in REQUEST_FAULTS:
            raise FaultError(f"unknown request fault {kind!r}; one of {sorted(REQUEST_FAULTS)}")
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            raise FaultError(f"times must be a positive integer, got {times!r}")
        if not 0 <= p_time <= 3600 or not 0 <= delay_s <= 3600:
            raise FaultError("p_time and delay_s must be between 0 and 3600 seconds")
        with self._lock:
            self._queue.append(RequestFault(kind, path, times, p_time, delay_s, reason, text))

    def cap_fills(self, max_qty: int | None) -> None:
        """At most `max_qty` contracts per order per market step (None: no cap)."""
        if max_qty is not None and (not isinstance(max_qty, int) or max_qty < 1):
            raise FaultError(f"max_qty must be a positive integer or None, got {max_qty!r}")
        with self._lock:
            self.fill_cap = max_qty
            self.counts["cap_fills"] += 1

    def drop_sockets(self, which: str = "all") -> None:
        self._socket_fault("drop", which)

    def freeze_sockets(self, which: str = "all", seconds: float = 30.0) -> None:
        if not 0 < seconds <= 3600:
            raise FaultError(f"seconds must be in (0, 3600], got {seconds!r}")
        self._socket_fault("freeze", which, seconds)

    def expire_tokens(self) -> None:
        with self._lock:
            self.counts["expire_tokens"] += 1
        self.sockets["expire"]()

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._tickets.clear()
            self.captcha = False
            self.fill_cap = None

    def armed(self) -> list[RequestFault]:
        with self._lock:
            return list(self._queue)

    def apply(self, body: dict[str, Any]) -> None:
        """The admin endpoint: `{"fault": METHOD, ...arguments}` calls that method."""
        if not isinstance(body, dict) or not isinstance(body.get("fault"), str):
            raise FaultError('the body must be {"fault": METHOD, ...arguments}')
        args = {k: v for k, v in body.items() if k != "fault"}
        method = body["fault"]
        if method not in _ADMIN:
            raise FaultError(f"unknown fault method {method!r}; one of {sorted(_ADMIN)}")
        try:
            getattr(self, method)(**args)
        except TypeError as e:
            raise FaultError(str(e)) from None

    # -- what the simulator asks per request ------------------------------------------
    def verdict(self, path: str, body: Any) -> Verdict:
        """Decide one request's fate; a p-ticket resend is checked here too."""
        with self._lock:
            if self.captcha and not path.endswith("/auth/accesstokenrequest"):
                return self._served("p-captcha", self._ticket_answer(path, 3600.0, True))
            given = body.get("p-ticket") if isinstance(body, dict) else None
            if given is not None:
                ticket = self._tickets.get(given)
                if ticket is not None and ticket.path == path:
                    left = ticket.ready_at - self.clock()
                    if left > 0:
                        return Verdict(answer=(200, self._ticket_body(given, left, False)))
                    del self._tickets[given]
                    return Verdict()
            elif any(t.path == path and t.ready_at > self.clock() for t in self._tickets.values()):
                # a request without the ticket while the penalty runs: a new penalty
                return self._served("p-ticket", self._ticket_answer(path, 1.0, False))
            fault = next((f for f in self._queue if f.matches(path)), None)
            if fault is None:
                return Verdict()
            fault.times -= 1
            if fault.times == 0:
                self._queue.remove(fault)
            return self._served(fault.kind, self._verdict_of(fault, path))

    # -- internals ----------------------------------------------------------------------
    def _verdict_of(self, f: RequestFault, path: str) -> Verdict:
        if f.kind == "p-ticket":
            return self._ticket_answer(path, f.p_time, False)
        if f.kind == "p-captcha":
            self.captcha = True
            return self._ticket_answer(path, f.p_time, True)
        if f.kind == "reject":
            return Verdict(answer=(200, {"failureReason": f.reason, "failureText": f.text}))
        if f.kind in CARRIED_OUT:
            return Verdict(after=f.kind, delay_s=f.delay_s)
        why = {"429": "Too Many Requests", "423": "Locked"}.get(f.kind, "Server error")
        return Verdict(answer=(int(f.kind), {"errorText": f"{why} (injected fault)"}))

    def _ticket_answer(self, path: str, p_time: float, captcha: bool) -> Verdict:
        now = self.clock()
        for old, t in list(self._tickets.items()):  # a ticket nobody resent expires
            if t.ready_at < now - TICKET_LIFE_S:
                del self._tickets[old]
        ticket = secrets.token_urlsafe(12)
        if not captcha:
            self._tickets[ticket] = _Ticket(path, self.clock() + p_time)
        return Verdict(answer=(200, self._ticket_body(ticket, p_time, captcha)))

    @staticmethod
    def _ticket_body(ticket: str, p_time: float, captcha: bool) -> dict[str, Any]:
        return {"p-ticket": ticket, "p-time": max(1, round(p_time)), "p-captcha": captcha}

    def _served(self, kind: str, v: Verdict) -> Verdict:
        self.counts[kind] += 1
        v.kind = kind
        return v

    def _socket_fault(self, action: str, which: str, *args: float) -> None:
        if which not in SOCKETS:
            raise FaultError(f"which must be one of {SOCKETS}, got {which!r}")
        with self._lock:
            self.counts[f"{action}_sockets"] += 1
        self.sockets[action](which, *args)


_ADMIN = frozenset({"rest", "cap_fills", "drop_sockets", "freeze_sockets", "expire_tokens",
                    "clear"})  # fmt: skip
