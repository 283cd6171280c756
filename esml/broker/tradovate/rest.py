"""Tradovate's REST API with its tokens, rate limits and faults, as Tradovate documents them.

Every request goes through `TradovateRest.call`, which decides what each answer means:

- 200 with `p-ticket` and `p-time`: the request was *not* handled; wait `p-time` seconds and
  send it again carrying the ticket. With `p-captcha` a person must log in on Tradovate's
  site and solve a captcha: `CaptchaRequired`, nothing is retried.
- 429 (too many requests) and 423 (locked): not handled either; back off (exponential,
  jittered, `Retry-After` when given) and resend, up to `rate_limit_budget_s`; then
  `RateLimited`. Never an order reject.
- 401: the token was refused; one fresh token, one retry (nothing was processed).
- 5xx, a timeout, a dropped connection: the request may or may not have been processed.
  A read (GET) is retried; an action (POST) raises `OutcomeUnknown` and the caller must
  look the order up by its clOrdId before sending anything again.
- other 4xx: the request was wrong (`RequestRefused`).

Access tokens are requested once, renewed `renew_margin` before they expire, and requested
afresh after a 401. Each outcome is logged and counted (`Counters`). Credentials are never
logged or repr'd.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from esml.broker.base import BrokerError
from esml.broker.tradovate.backoff import backoff_delay
from esml.broker.tradovate.counters import Counters
from esml.broker.tradovate.credentials import TradovateCredentials

log = logging.getLogger(__name__)

_READS_RETRIED = 3  # a GET that met a 5xx or a lost answer is asked again this many times


class OutcomeUnknown(BrokerError):
    """The request may or may not have been processed (5xx, timeout, dropped connection):
    only a lookup can tell."""


class RateLimited(BrokerError):
    """Tradovate kept refusing with 429/423 for longer than the back-off budget; the
    request was not processed."""


class CaptchaRequired(BrokerError):
    """Tradovate wants a person: log in at trader.tradovate.com, solve the captcha, then
    restart. Automated retries would only extend the lock-out."""


class RequestRefused(BrokerError):
    """A 4xx other than 401/423/429: the request itself was wrong; nothing was processed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_time(text: str) -> datetime:
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Token:
    """What a socket authorises with: the access (or md access) token and its expiry."""

    value: str
    expires: datetime


class Session:
    """The tokens of one login: the access token (REST and the user socket) and the
    market-data token, with their expiry."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.access_token = str(answer["accessToken"])
        self.md_access_token = str(answer.get("mdAccessToken") or answer["accessToken"])
        self.expires = parse_time(str(answer["expirationTime"]))
        self.user_id = answer.get("userId")


class TradovateRest:
    """Authorised REST calls with the fault handling above. Thread-safe: the broker's
    calls and the sockets' token renewals may come from different threads."""

    def __init__(
        self,
        credentials: TradovateCredentials,
        base_url: str | None = None,
        *,
        http: requests.Session | None = None,
        timeout: tuple[float, float] = (3.05, 10.0),
        clock: Callable[[], datetime] = utc_now,
        renew_margin: timedelta = timedelta(minutes=10),
        rate_limit_budget_s: float = 30.0,
        backoff_base_s: float = 0.25,
        backoff_cap_s: float = 8.0,
        counters: Counters | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._creds = credentials
        self.base_url = (base_url or credentials.base_url).rstrip("/")
        self._http = http or requests.Session()
        self._timeout = timeout
        self._clock = clock
        self._renew_margin = renew_margin
        self._budget = rate_limit_budget_s
        self._backoff = (backoff_base_s, backoff_cap_s)
        self.counters = counters or Counters()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._session: Session | None = None
        self._token_lock = threading.RLock()

    def __repr__(self) -> str:
        return f"TradovateRest(user={self._creds.name!r}, base_url={self.base_url!r})"

    # -- tokens -------------------------------------------------------------------------

    def session(self) -> Session:
        """A valid session: logged in on first use, renewed inside the margin."""
        with self._token_lock:
            now = self._clock()
            s = self._session
            if s is None or now >= s.expires:
                self._session = self._login()
            elif now >= s.expires - self._renew_margin:
                self._session = self._renewed(s)
            assert self._session is not None
            return self._session

    def session_without(self, refused: str | None) -> Session:
        """A valid session whose tokens are not `refused` (one a socket was refused):
        one fresh login serves every socket that met the same refusal."""
        with self._token_lock:
            s = self._session
            if s is not None and refused in (s.access_token, s.md_access_token):
                self._session = None
            return self.session()

    def renewed_after(self, expires: datetime | None) -> Session:
        """A session that outlives `expires` (a socket's token): renewed now unless another
        socket's renewal already did it, so both sockets share one renewal."""
        with self._token_lock:
            s = self._session
            if s is None or expires is None or s.expires <= expires:
                self._session = self._login() if s is None else self._renewed(s)
            assert self._session is not None
            return self._session

    def forget_token(self) -> None:
        with self._token_lock:
            self._session = None

    def _login(self) -> Session:
        answer = self._request("POST", "/auth/accesstokenrequest", json=self._creds.token_request())
        s = _session_of(answer, "access token request")
        log.info("Tradovate session opened until %s", s.expires)
        return s

    def _renewed(self, s: Session) -> Session:
        try:
            answer = self._request("GET", "/auth/renewaccesstoken", token=s.access_token)
            renewed = _session_of(answer, "token renewal")
            log.info("Tradovate token renewed until %s", renewed.expires)
            return renewed
        except BrokerError as e:
            log.warning("token renewal failed (%s); requesting a new token", e)
            return self._login()

    # -- calls --------------------------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params or None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.call("POST", path, json=body)

    def call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """An authorised request; see the module docstring for what each answer becomes."""
        for attempt in (1, 2):
            token = self.session().access_token
            try:
                return self._request(method, path, json=json, params=params, token=token)
            except _Unauthorized:
                self.counters.add("rest_401")
                self.forget_token()
                if attempt == 2:
                    raise BrokerError(
                        f"{method} {path}: unauthorized after a fresh token"
                    ) from None
        raise AssertionError("unreachable")

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> Any:
        """One logical request: p-tickets, 429/423 and (for reads) lost answers retried."""
        started = time.monotonic()
        limited = lost = 0
        ticket: str | None = None
        while True:
            body = json if ticket is None or json is None else {**json, "p-ticket": ticket}
            query = (
                params
                if ticket is None or json is not None
                else {**(params or {}), "p-ticket": ticket}
            )
            try:
                answer = self._send(method, path, body, query, token)
            except _Throttled as e:
                self.counters.add(f"rest_{e.status}")
                waited = time.monotonic() - started
                delay = e.retry_after or backoff_delay(limited, *self._backoff, self._rng)
                if waited + delay > self._budget:
                    raise RateLimited(
                        f"{method} {path}: HTTP {e.status} for {waited:.1f} s, past the "
                        f"{self._budget:g} s back-off budget; the request was not processed"
                    ) from None
                log.warning("%s %s: HTTP %d, backing off %.2f s", method, path, e.status, delay)
                limited += 1
                self._sleep(delay)
                continue
            except OutcomeUnknown as e:
                if method != "GET" or lost >= _READS_RETRIED:
                    raise
                log.warning("%s; asking again", e)
                self._sleep(backoff_delay(lost, *self._backoff, self._rng))
                lost += 1
                continue
            if isinstance(answer, dict) and "p-ticket" in answer:
                if answer.get("p-captcha"):
                    self.counters.add("rest_p_captcha")
                    raise CaptchaRequired(
                        f"{method} {path}: Tradovate requires a captcha. A person must log in "
                        "at trader.tradovate.com with this user and solve it; automated "
                        "retries stop until then."
                    )
                self.counters.add("rest_p_ticket")
                ticket = str(answer["p-ticket"])
                wait = float(answer.get("p-time") or 0)
                log.warning("%s %s: penalty ticket, waiting %.1f s", method, path, wait)
                self._sleep(wait)
                continue
            self.counters.add("rest_ok")
            return answer

    def _send(
        self,
        method: str,
        path: str,
        json: dict[str, Any] | None,
        params: dict[str, Any] | None,
        token: str | None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            r = self._http.request(
                method,
                self.base_url + path,
                json=json,
                params=params,
                headers=headers,
                timeout=self._timeout,
            )
        except requests.Timeout:
            self.counters.add("rest_timeout")
            raise OutcomeUnknown(
                f"{method} {path}: no answer from Tradovate in time; the outcome is unknown"
            ) from None
        except requests.RequestException as e:
            self.counters.add("rest_connection_lost")
            raise OutcomeUnknown(
                f"{method} {path}: Tradovate unreachable ({type(e).__name__}); "
                "the outcome is unknown"
            ) from None
        if r.status_code == 401:
            raise _Unauthorized(f"{method} {path}: HTTP 401 unauthorized")
        if r.status_code in (423, 429):
            raise _Throttled(r.status_code, _retry_after(r))
        if r.status_code >= 500:
            self.counters.add("rest_5xx")
            raise OutcomeUnknown(
                f"{method} {path}: HTTP {r.status_code} {_error_text(r)}; the outcome is unknown"
            )
        if 400 <= r.status_code < 500:
            raise RequestRefused(f"HTTP {r.status_code}: {_error_text(r)}")
        if r.status_code >= 300:
            raise BrokerError(f"{method} {path}: HTTP {r.status_code}: {_error_text(r)}")
        try:
            return r.json()
        except ValueError:
            raise BrokerError(f"{method} {path}: answer is not JSON: {r.text[:200]!r}") from None


class _Unauthorized(BrokerError):
    pass


class _Throttled(BrokerError):
    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


def _session_of(answer: Any, what: str) -> Session:
    if not isinstance(answer, dict) or answer.get("errorText") or not answer.get("accessToken"):
        text = answer.get("errorText") if isinstance(answer, dict) else None
        raise BrokerError(f"Tradovate {what} failed: {text or 'no accessToken in answer'}")
    return Session(answer)


def _retry_after(r: requests.Response) -> float | None:
    try:
        return max(0.0, float(r.headers.get("Retry-After", "")))
    except ValueError:
        return None


def _error_text(r: requests.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:200] or r.reason
    if isinstance(body, dict) and body.get("errorText"):
        return str(body["errorText"])
    return str(body)[:200]


def as_list(answer: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(answer, list):
        raise BrokerError(f"{path}: expected a list, got {answer!r}")
    return answer
