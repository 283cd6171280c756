"""Tradovate's two WebSockets (user/trading and market data) on loopback, for the simulator.

The protocol, as Tradovate documents it: the server opens with `o`, sends `h` heartbeats
(every `heartbeat_s`, 2.5 s by default) and data as `a[...]` (a JSON array of messages);
it closes with `c[code,"reason"]`. A client request is one text frame `url\\nid\\nquery\\nbody`;
its answer is `{"i": id, "s": status, "d": ...}`. The first request must be
`authorize\\nID\\n\\nTOKEN` (the access token on the user socket, the md access token on the
md socket): anything before it is answered 401. The client sends `[]` as its heartbeat;
a client silent for `client_timeout_s` is closed (`c[4000,"no heartbeat"]`).

User socket: `user/syncrequest` answers the snapshot (accounts, positions, orders,
orderVersions, fills, executionReports, cashBalances; with `"splitResponses": true` one
answer per entity type, in that order, all with the request's id) and from then on the
socket receives `{"e": "props", "d": {"entityType", "eventType", "entity"}}` for every
change. Any REST path (e.g. `order/placeorder`) may also be sent over it: GET with a
query, POST with a body, answered as over HTTP.

Market-data socket: `md/subscribeQuote`, `md/unsubscribeQuote`, `md/subscribeDOM`,
`md/unsubscribeDOM`, `md/getChart` and `md/cancelChart`; data arrives as
`{"e": "md", "d": {"quotes"|"doms": [...]}}` and `{"e": "chart", "d": {"charts": [...]}}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class Backend(Protocol):
    """What the sockets need from the simulator."""

    def token_ok(self, token: str, kind: str) -> bool: ...

    def rest(self, method: str, path: str, query: dict[str, str], token: str,
             body: Any) -> tuple[int, Any, str | None]: ...  # fmt: skip

    def snapshot(self) -> list[tuple[str, list[dict[str, Any]]]]: ...

    def md_request(self, url: str, body: Any, session: Session) -> tuple[int, Any]: ...


def frame(messages: list[Any]) -> str:
    return "a" + json.dumps(messages, separators=(",", ":"))


def close_frame(code: int, reason: str) -> str:
    return "c" + json.dumps([code, reason])


def parse_request(text: str) -> tuple[str, int, str, Any]:
    """`url\\nid\\nquery\\nbody` -> (url, id, query, body); ValueError when malformed."""
    parts = text.split("\n", 3)
    if len(parts) < 2:
        raise ValueError("a request is url\\nid\\nquery\\nbody")
    url, rid = parts[0].strip(), int(parts[1])
    query = parts[2] if len(parts) > 2 else ""
    raw = parts[3] if len(parts) > 3 else ""
    if url == "authorize":
        return url, rid, query, raw.strip()
    body = json.loads(raw) if raw.strip() else None
    return url, rid, query, body


@dataclass(eq=False)
class Session:
    """One open socket: its kind, token, and what it asked to receive."""

    kind: str  # "user" or "md"
    ws: ServerConnection
    token: str | None = None
    synced: bool = False
    quotes: set[int] = field(default_factory=set)
    doms: set[int] = field(default_factory=set)
    charts: dict[int, dict[str, Any]] = field(default_factory=dict)  # realtime id -> spec
    frozen_until: float = 0.0
    outbox: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)


class SocketServer:
    """Both sockets on one asyncio loop in a background thread."""

    def __init__(self, backend: Backend, *, host: str = "127.0.0.1", user_port: int = 0,
                 md_port: int = 0, heartbeat_s: float = 2.5,
                 client_timeout_s: float = 10.0) -> None:  # fmt: skip
        self.backend = backend
        self.host = host
        self.ports = {"user": user_port, "md": md_port}
        self.heartbeat_s = heartbeat_s
        self.client_timeout_s = client_timeout_s
        self.sessions: set[Session] = set()
        self.log: list[tuple[str, str]] = []  # (socket kind, what happened): opened, logged off...
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: dict[str, Server] = {}
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def boot() -> None:
            for kind in ("user", "md"):
                self._servers[kind] = await serve(
                    lambda ws, kind=kind: self._serve(ws, kind), self.host, self.ports[kind],
                    ping_interval=None,  # Tradovate's liveness is its own `h` / `[]` frames
                )  # fmt: skip
                self.ports[kind] = self._servers[kind].sockets[0].getsockname()[1]
            ready.set()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.create_task(boot())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="tradovate-sim-ws", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the simulator's WebSockets did not start")

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            for s in self._servers.values():
                s.close()
            for s in list(self.sessions):
                await s.ws.close(1001, "server shutting down")
            for s in self._servers.values():
                await s.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = self._thread = None

    def url(self, kind: str) -> str:
        return f"ws://{self.host}:{self.ports[kind]}/v1/websocket"

    # -- called from any thread ----------------------------------------------------------
    def publish(self, kind: str, messages: list[dict[str, Any]],
                wants: Callable[[Session], bool] | None = None) -> None:  # fmt: skip
        """Send `messages` (one `a[...]` frame) to every socket of `kind` that wants them
        (default: user sockets that have synced)."""
        if self._loop is None or not messages:
            return
        wants = wants or (lambda s: s.synced)
        text = frame(messages)

        def fan_out() -> None:
            for s in self.sessions:
                if s.kind == kind and s.token is not None and wants(s):
                    s.outbox.put_nowait(text)

        self._loop.call_soon_threadsafe(fan_out)

    def publish_each(self, kind: str, make: Callable[[Session], list[dict[str, Any]]]) -> None:
        """Per-socket messages (each md socket gets its own subscriptions' data)."""
        if self._loop is None:
            return

        def fan_out() -> None:
            for s in self.sessions:
                if s.kind == kind and s.token is not None:
                    messages = make(s)
                    if messages:
                        s.outbox.put_nowait(frame(messages))

        self._loop.call_soon_threadsafe(fan_out)

    def drop(self, which: str) -> None:
        """Cut the sockets without a close frame (a network failure)."""
        self._each(which, lambda s: s.ws.transport.abort())

    def freeze(self, which: str, seconds: float) -> None:
        def go(s: Session) -> None:
            s.frozen_until = asyncio.get_running_loop().time() + seconds

        self._each(which, go)

    def close_tokens(self, expired: Callable[[str], bool]) -> None:
        """Close the sockets whose token has expired."""

        def go(s: Session) -> None:
            if s.token is not None and expired(s.token):
                s.outbox.put_nowait(close_frame(1008, "Token expired"))
                s.outbox.put_nowait(None)

        self._each("all", go)

    def _each(self, which: str, act: Callable[[Session], None]) -> None:
        if self._loop is None:
            return
        done = threading.Event()

        def run() -> None:
            for s in list(self.sessions):
                if which in ("all", s.kind):
                    act(s)
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5)

    # -- one connection ----------------------------------------------------------------
    async def _serve(self, ws: ServerConnection, kind: str) -> None:
        session = Session(kind, ws)
        self.sessions.add(session)
        self.log.append((kind, "opened"))
        await ws.send("o")
        tasks = [asyncio.create_task(self._writer(session)),
                 asyncio.create_task(self._heartbeats(session))]  # fmt: skip
        try:
            await self._reader(session)
        finally:
            for t in tasks:
                t.cancel()
            self.sessions.discard(session)

    def _frozen(self, s: Session) -> bool:
        return asyncio.get_running_loop().time() < s.frozen_until

    async def _writer(self, s: Session) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                text = await s.outbox.get()
                if text is None:
                    await s.ws.close(1008, "closed by the server")
                    return
                if not self._frozen(s):
                    await s.ws.send(text)

    async def _heartbeats(self, s: Session) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            s.outbox.put_nowait("h")

    async def _reader(self, s: Session) -> None:
        while True:
            try:
                text = await asyncio.wait_for(s.ws.recv(), self.client_timeout_s)
            except TimeoutError:
                self.log.append((s.kind, "client silent: closed"))
                with contextlib.suppress(ConnectionClosed):
                    await s.ws.send(close_frame(4000, "no heartbeat from the client"))
                    await s.ws.close(4000, "no heartbeat")
                return
            except ConnectionClosed as e:
                clean = e.rcvd is not None and e.rcvd.code == 1000
                self.log.append((s.kind, "logged off" if clean else "connection lost"))
                return
            if self._frozen(s) or not isinstance(text, str) or text == "[]":
                continue  # a frozen server hears nothing; `[]` is the client's heartbeat
            for answer in self._answer(s, text):
                s.outbox.put_nowait(frame([answer]))

    def _answer(self, s: Session, text: str) -> list[dict[str, Any]]:
        try:
            url, rid, query, body = parse_request(text)
        except (ValueError, json.JSONDecodeError) as e:
            return [{"i": None, "s": 400, "d": f"malformed request: {e}"}]
        if url == "authorize":
            if not self.backend.token_ok(body, s.kind):
                return [{"i": rid, "s": 401, "d": "Access is denied"}]
            s.token = body
            return [{"i": rid, "s": 200}]
        if s.token is None or not self.backend.token_ok(s.token, s.kind):
            return [{"i": rid, "s": 401, "d": "Access is denied: authorize first"}]
        if s.kind == "md":
            status, data = self.backend.md_request(url, body, s)
            return [{"i": rid, "s": status, "d": data}]
        if url.lower() == "user/syncrequest":
            return self._sync(s, rid, body)
        return self._rest(s, rid, url, query, body)

    def _sync(self, s: Session, rid: int, body: Any) -> list[dict[str, Any]]:
        parts = self.backend.snapshot()
        s.synced = True
        if isinstance(body, dict) and body.get("splitResponses") is True:
            return [{"i": rid, "s": 200, "d": {name: rows}} for name, rows in parts]
        return [{"i": rid, "s": 200, "d": dict(parts)}]

    def _rest(self, s: Session, rid: int, url: str, query: str,
              body: Any) -> list[dict[str, Any]]:  # fmt: skip
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        method = "GET" if body is None else "POST"
        assert s.token is not None
        status, answer, after = self.backend.rest(method, "/v1/" + url.lower().lstrip("/"),
                                                  params, s.token, body)  # fmt: skip
        if after == "drop-after-accept":
            s.ws.transport.abort()
            return []
        if after == "timeout-after-accept":
            return []  # carried out; the answer never comes
        return [{"i": rid, "s": status, "d": answer}]

    def new_id(self) -> int:
        return next(self._ids)
