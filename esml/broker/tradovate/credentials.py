"""Who logs in to Tradovate, and where: the credentials secret and the three endpoints.

Tradovate runs two environments with the same API: `demo` (simulated money, real market
data) and `live`. Each has a REST base, a user/trading WebSocket (orders, fills,
positions) and a market-data WebSocket (quotes, DOM, charts).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

Environment = Literal["demo", "live"]

TRADOVATE_URLS: dict[str, str] = {
    "demo": "https://demo.tradovateapi.com/v1",
    "live": "https://live.tradovateapi.com/v1",
}
TRADOVATE_WS_URLS: dict[str, str] = {
    "demo": "wss://demo.tradovateapi.com/v1/websocket",
    "live": "wss://live.tradovateapi.com/v1/websocket",
}
TRADOVATE_MD_URLS: dict[str, str] = {
    "demo": "wss://md-demo.tradovateapi.com/v1/websocket",
    "live": "wss://md.tradovateapi.com/v1/websocket",
}


class TradovateCredentials(BaseModel):
    """The API key and user of one Tradovate account, as kept in Secrets Manager.

    `name`/`password` are the user's login; `appId`/`appVersion`/`cid`/`sec` the API key
    (cid is its id, sec its secret); `deviceId` a stable id of this installation. The
    endpoint overrides point a client at the loopback simulator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    password: SecretStr
    appId: str = Field(min_length=1)
    appVersion: str = Field(min_length=1)
    cid: int
    sec: SecretStr
    deviceId: str = Field(min_length=1)
    env: Environment
    accountSpec: str | None = None
    accountId: int | None = None

    @property
    def base_url(self) -> str:
        return TRADOVATE_URLS[self.env]

    @property
    def ws_url(self) -> str:
        return TRADOVATE_WS_URLS[self.env]

    @property
    def md_url(self) -> str:
        return TRADOVATE_MD_URLS[self.env]

    def token_request(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "password": self.password.get_secret_value(),
            "appId": self.appId,
            "appVersion": self.appVersion,
            "cid": self.cid,
            "sec": self.sec.get_secret_value(),
            "deviceId": self.deviceId,
        }
