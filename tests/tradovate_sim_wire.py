"""A tiny test-side speaker of Tradovate's socket protocol, raw over a real socket, so the
simulator's conformance tests depend on nothing of our own client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import requests
from websockets.sync.client import ClientConnection, connect

from tests.aws_fixtures import ACCOUNT_SPEC, TRADOVATE_LOGIN


def login(rest: str) -> dict[str, Any]:
    r = requests.post(f"{rest}/auth/accesstokenrequest", json=TRADOVATE_LOGIN, timeout=5)
    r.raise_for_status()
    return r.json()


def rest_caller(base_url: str) -> Callable[..., tuple[int, Any]]:
    """`call(path, body=None, **query)` -> (HTTP status, JSON answer), logged in: a GET
    without a body, a POST with one."""
    headers = {"Authorization": f"Bearer {login(base_url)['accessToken']}"}

    def call(path: str, body: Any = None, **params: Any) -> tuple[int, Any]:
        if body is None:
            r = requests.get(f"{base_url}{path}", params=params, headers=headers, timeout=5)
        else:
            r = requests.post(f"{base_url}{path}", json=body, headers=headers, timeout=5)
        return r.status_code, r.json()

    return call


def order_body(
    action: str = "Buy", qty: int = 1, kind: str = "Market", *, symbol: str = "ESH5", **extra: Any
) -> dict[str, Any]:
    """A `placeorder` body for the test account, as an automated client sends it."""
    return {
        "accountSpec": ACCOUNT_SPEC,
        "action": action,
        "symbol": symbol,
        "orderQty": qty,
        "orderType": kind,
        "isAutomated": True,
        **extra,
    }


class Wire:
    """One socket: `send` a request, `answer` waits for its reply, `events` collects pushes."""

    def __init__(self, url: str) -> None:
        self._cm = connect(url, open_timeout=5)
        self.ws: ClientConnection = self._cm.__enter__()
        self.ids = 0
        self.pushed: list[dict[str, Any]] = []
        self.answers: dict[int | None, list[dict[str, Any]]] = {}  # None: unparseable
        self.heartbeats = 0
        self.closed: list[Any] | None = None
        assert self.ws.recv(timeout=5) == "o"

    def close(self) -> None:
        self._cm.__exit__(None, None, None)

    def send(self, url: str, body: Any = None, query: str = "") -> int:
        self.ids += 1
        raw = body if isinstance(body, str) else ("" if body is None else json.dumps(body))
        self.ws.send(f"{url}\n{self.ids}\n{query}\n{raw}")
        return self.ids

    def authorize(self, token: str) -> dict[str, Any]:
        return self.answer(self.send("authorize", token))

    def read(self, timeout: float = 5.0) -> str:
        """One frame, sorted into answers, pushed events, heartbeats or the close."""
        text = self.ws.recv(timeout=timeout)
        assert isinstance(text, str)
        if text == "h":
            self.heartbeats += 1
        elif text.startswith("c"):
            self.closed = json.loads(text[1:])
        elif text.startswith("a"):
            for m in json.loads(text[1:]):
                if "e" in m:
                    self.pushed.append(m)
                else:
                    self.answers.setdefault(m["i"], []).append(m)
        return text

    def answer(self, rid: int, timeout: float = 5.0) -> dict[str, Any]:
        return self.answers_of(rid, 1, timeout)[0]

    def answers_of(self, rid: int | None, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.answers.get(rid, [])) < n:
            self.read(max(deadline - time.monotonic(), 0.01))
        return self.answers.pop(rid)

    def events(self, kind: str, until: Any, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Pushed messages of `kind` ("props", "md", "chart") until `until(them)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            got = [m for m in self.pushed if m["e"] == kind]
            if until(got):
                return got
            self.read(max(deadline - time.monotonic(), 0.01))
