"""One WebSocket transport for both Tradovate sockets (user/trading and market data).

Tradovate's framing, from its documentation: the server sends text frames `o` (open), `h`
(heartbeat), `a[...]` (a JSON array of messages) and `c[code, reason]` (close). A message is
either the answer to a request, `{"i": id, "s": status, "d": data}`, or an event,
`{"e": "props" | "md" | "chart" | "shutdown" | ..., "d": data}`. The client sends requests
as `url\\nid\\nquery\\nbody` and `[]` as its heartbeat every 2.5 s; the first request on a
socket is `authorize` with the access token (the md access token on the market-data
socket).

`TradovateSocket` keeps one such socket open: it answers requests by id, sends heartbeats,
declares the socket dead when no frame came for `dead_after_s` (the server heartbeats
every 2.5 s, so a silent socket is dead within seconds), and reconnects with exponential,
jittered back-off: a fresh token, `authorize`, then the owner's `on_open` (re-subscribe
market data, resynchronise user data). A request whose socket died before its answer came
raises `SocketLost`: its outcome is unknown. Tokens are renewed on the open socket before
they expire (`renew`). `close()` logs off cleanly.

The sockets run on asyncio; `LoopThread` gives them an event loop of their own in a
daemon thread, so the synchronous Broker protocol (what the execution layer calls) can
submit work to them and drain what they received.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

import websockets
from websockets.asyncio.client import ClientConnection, connect

from esml.broker.base import BrokerError
from esml.broker.tradovate.backoff import backoff_delay
from esml.broker.tradovate.counters import Counters
from esml.broker.tradovate.rest import CaptchaRequired, Token

log = logging.getLogger(__name__)

T = TypeVar("T")


class SocketLost(BrokerError):
    """The socket closed before a request was answered: its outcome is unknown."""


class SocketRequestFailed(BrokerError):
    """Tradovate answered a socket request with a status other than 200."""

    def __init__(self, url: str, status: int, data: Any) -> None:
        super().__init__(f"{url}: status {status}: {data!r}")
        self.status = status
        self.data = data


def encode_request(url: str, request_id: int, query: str = "", body: Any = None) -> str:
    """`url\\nid\\nquery\\nbody` as Tradovate reads it; the body is JSON unless a string."""
    text = "" if body is None else body if isinstance(body, str) else json.dumps(body)
    return f"{url}\n{request_id}\n{query}\n{text}"


def decode_frame(frame: str) -> tuple[str, list[Any]]:
    """(kind, messages): kind is one of o, h, a, c; `a` carries its JSON array, `c` its
    [code, reason]. Anything else is a protocol error."""
    if not frame:
        raise BrokerError("empty frame from Tradovate")
    kind, rest = frame[0], frame[1:]
    if kind in ("o", "h"):
        return kind, []
    if kind in ("a", "c"):
        payload = json.loads(rest) if rest else []
        if not isinstance(payload, list):
            raise BrokerError(f"frame {kind!r} does not carry an array: {frame[:200]!r}")
        return kind, payload
    raise BrokerError(f"unknown frame type {kind!r}: {frame[:200]!r}")


class TradovateSocket:
    """One Tradovate WebSocket, kept open until `close()`; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        token: Callable[[str | None], Token],
        on_event: Callable[[str, Any], None],
        on_open: Callable[[TradovateSocket], Awaitable[None]] | None = None,
        renew: Callable[[TradovateSocket], Awaitable[Token]] | None = None,
        counters: Counters | None = None,
        heartbeat_s: float = 2.5,
        dead_after_s: float = 7.5,
        request_timeout_s: float = 10.0,
        renew_margin_s: float = 600.0,
        backoff_base_s: float = 0.25,
        backoff_cap_s: float = 10.0,
        rate_limit_budget_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.name = name
        self._token = token
        self._on_event = on_event
        self._on_open = on_open
        self._renew = renew
        self.counters = counters or Counters()
        self._heartbeat_s = heartbeat_s
        self._dead_after_s = dead_after_s
        self._request_timeout_s = request_timeout_s
        self._renew_margin_s = renew_margin_s
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._rate_limit_budget_s = rate_limit_budget_s
        self._rng = rng or random.Random()
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[int, Any]]] = {}
        self._closing = False
        self._expires: datetime | None = None
        self._token_value: str | None = None
        self._refused: str | None = None  # a token Tradovate refused: never offered again
        self.ready = asyncio.Event()  # authorised and past on_open
        self.connections = 0

    # -- the owner's calls ----------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, and reconnect after any loss, until `close()`."""
        failures = 0
        while not self._closing:
            try:
                await self._serve_once()
                failures = 0
            except (OSError, websockets.WebSocketException, BrokerError, TimeoutError) as e:
                if self._closing:
                    break
                log.warning("%s socket lost: %s", self.name, e)
            finally:
                self.ready.clear()
                self._fail_pending()
            if self._closing:
                break
            delay = backoff_delay(failures, *self._backoff, self._rng)
            failures += 1
            self.counters.add("ws_reconnects")
            log.info("%s socket: reconnecting in %.2f s", self.name, delay)
            await asyncio.sleep(delay)

    async def request(
        self, url: str, body: Any = None, query: str = "", *, timeout_s: float | None = None
    ) -> Any:
        """Send a request on the open socket and return its answer's `d`, with Tradovate's
        rate limits met as over REST: a p-ticket waited out and the request resent with
        it, 429/423 backed off (up to `rate_limit_budget_s`), a p-captcha raised as
        `CaptchaRequired`. Raises `SocketLost` when the socket dies before the answer
        (outcome unknown) and `SocketRequestFailed` for any other status than 200."""
        ticket: str | None = None
        started, limited = time.monotonic(), 0
        while True:
            ws = self._ws
            if ws is None:
                raise SocketLost(f"{self.name} socket is not connected: {url} not sent")
            sent = body if ticket is None else {**(body or {}), "p-ticket": ticket}
            try:
                data = await self._exchange(ws, url, sent, query, timeout_s)
            except SocketRequestFailed as e:
                delay = backoff_delay(limited, *self._backoff, self._rng)
                if e.status not in (423, 429) or time.monotonic() - started + delay > (
                    self._rate_limit_budget_s
                ):
                    raise
                self.counters.add(f"ws_{e.status}")
                log.warning("%s %s: status %d, backing off %.2f s", self.name, url, e.status, delay)
                limited += 1
                await asyncio.sleep(delay)
                continue
            if not (isinstance(data, dict) and "p-ticket" in data):
                return data
            if data.get("p-captcha"):
                self.counters.add("ws_p_captcha")
                raise CaptchaRequired(
                    f"{self.name} {url}: Tradovate requires a captcha; a person must log in at "
                    "trader.tradovate.com and solve it"
                )
            self.counters.add("ws_p_ticket")
            ticket = str(data["p-ticket"])
            await asyncio.sleep(float(data.get("p-time") or 0))

    async def close(self) -> None:
        """Log off: stop reconnecting and close the socket with a normal closure."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(code=1000, reason="log off")
        self._fail_pending()

    @property
    def token_expires(self) -> datetime | None:
        return self._expires

    # -- one connection ---------------------------------------------------------------------

    async def _serve_once(self) -> None:
        async with connect(self.url, ping_interval=None, close_timeout=2, max_size=2**24) as ws:
            first = await asyncio.wait_for(ws.recv(), self._dead_after_s)
            if decode_frame(str(first))[0] != "o":
                raise BrokerError(f"{self.name}: expected an open frame, got {first!r:.80}")
            self._ws = ws
            reader = asyncio.create_task(self._read(ws), name=f"{self.name}-reader")
            beats = asyncio.create_task(self._heartbeat(ws), name=f"{self.name}-heartbeat")
            renewer: asyncio.Task[None] | None = None
            try:
                token = self._token(self._refused)
                await self._authorize(ws, token)
                self._refused = None
                self.connections += 1
                self.counters.add("ws_connects")
                if self._on_open is not None:
                    await self._on_open(self)
                self.ready.set()
                log.info("%s socket ready (connection %d)", self.name, self.connections)
                if self._renew is not None:
                    renewer = asyncio.create_task(self._renewing(), name=f"{self.name}-renew")
                await reader  # returns or raises when the socket ends
            finally:
                self._ws = None
                for task in (reader, beats, renewer):
                    if task is not None:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await task

    async def _authorize(self, ws: ClientConnection, token: Token) -> None:
        try:
            await self._exchange(ws, "authorize", token.value, "", self._request_timeout_s, 0)
        except SocketRequestFailed as e:
            self._refused = token.value
            raise BrokerError(f"{self.name} socket: authorize refused ({e})") from None
        self._expires = token.expires
        self._token_value = token.value

    async def reauthorize(self, token: Token) -> None:
        """Authorise the open socket again with a renewed token."""
        ws = self._ws
        if ws is None:
            raise SocketLost(f"{self.name} socket is not connected")
        await self._authorize(ws, token)

    async def _exchange(
        self,
        ws: ClientConnection,
        url: str,
        body: Any,
        query: str,
        timeout_s: float | None,
        request_id: int | None = None,
    ) -> Any:
        rid = next(self._ids) if request_id is None else request_id
        answer: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = answer
        try:
            await ws.send(encode_request(url, rid, query, body))
            status, data = await asyncio.wait_for(answer, timeout_s or self._request_timeout_s)
        except (websockets.ConnectionClosed, OSError) as e:
            raise SocketLost(f"{self.name}: {url} (id {rid}) sent, socket lost: {e}") from None
        except TimeoutError:
            raise SocketLost(f"{self.name}: {url} (id {rid}) unanswered in time") from None
        finally:
            self._pending.pop(rid, None)
        if status != 200:
            raise SocketRequestFailed(url, status, data)
        return data

    async def _read(self, ws: ClientConnection) -> None:
        while True:
            try:
                frame = await asyncio.wait_for(ws.recv(), self._dead_after_s)
            except TimeoutError:
                self.counters.add("ws_dead_detected")
                raise BrokerError(
                    f"{self.name} socket silent for {self._dead_after_s:g} s: declared dead"
                ) from None
            kind, messages = decode_frame(str(frame))
            if kind == "c":
                if messages and messages[0] == 1008 and self._token_value is not None:
                    self._refused = self._token_value  # expired or revoked
                raise BrokerError(f"{self.name} socket closed by Tradovate: {messages}")
            for m in messages:
                self._dispatch(m)

    def _dispatch(self, m: Any) -> None:
        if not isinstance(m, dict):
            log.warning("%s: ignoring a message that is not an object: %r", self.name, m)
            return
        if "i" in m and "e" not in m:
            fut = self._pending.get(m["i"]) if isinstance(m["i"], int) else None
            if fut is not None and not fut.done():
                fut.set_result((int(m.get("s", 0)), m.get("d")))
            else:  # a further part of a split answer, or an answer come too late
                self._on_event("answer", m)
            return
        event = str(m.get("e", ""))
        self.counters.add("ws_events")
        if event == "shutdown":
            raise BrokerError(f"{self.name}: Tradovate announced a shutdown: {m.get('d')!r}")
        try:
            self._on_event(event, m.get("d"))
        except Exception:
            log.exception("%s: handling a %r event failed", self.name, event)

    async def _heartbeat(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            await ws.send("[]")

    async def _renewing(self) -> None:
        assert self._renew is not None
        while True:
            expires = self._expires
            if expires is None:
                return
            wait = (expires - datetime.now(expires.tzinfo)).total_seconds() - self._renew_margin_s
            await asyncio.sleep(max(wait, 0.0))
            try:
                token = await self._renew(self)
            except BrokerError as e:
                log.warning("%s socket: token renewal failed (%s); reconnecting", self.name, e)
                ws = self._ws
                if ws is not None:
                    await ws.close(code=1000, reason="renewal failed")
                return
            self._expires = token.expires
            self.counters.add("ws_token_renewals")
            log.info("%s socket: token renewed until %s", self.name, token.expires)

    def _fail_pending(self) -> None:
        for rid, fut in list(self._pending.items()):
            if not fut.done():
                fut.set_exception(SocketLost(f"{self.name}: request {rid} lost with its socket"))
        self._pending.clear()


class LoopThread:
    """An asyncio event loop in a daemon thread: the sockets live here, and synchronous
    code hands it coroutines (`run`) and waits for their results."""

    def __init__(self, name: str = "tradovate-sockets") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run `coro` on the loop and wait for it (from any thread but the loop's own)."""
        return self.submit(coro).result(timeout_s)

    def wait_until(self, event: asyncio.Event, timeout_s: float) -> bool:
        """Block the caller until `event` (owned by this loop) is set; False on timeout."""

        async def waiting() -> bool:
            try:
                await asyncio.wait_for(event.wait(), timeout_s)
            except TimeoutError:
                return False
            return True

        return self.run(waiting(), timeout_s + 5)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()
