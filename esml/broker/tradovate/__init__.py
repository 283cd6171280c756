"""Tradovate: REST, the user and market-data WebSockets, and the Broker built on them.

`transport` (the WebSocket protocol), `rest` (tokens, rate limits, faults), `user_sync`
(orders and fills from the user socket), `market_data` (quotes, DOM, charts as esml
events), `orders` (requests and views) and `broker` (`TradovateClient`, the Broker).
"""

from esml.broker.tradovate.broker import ProductSpec, TradovateClient
from esml.broker.tradovate.counters import Counters
from esml.broker.tradovate.credentials import (
    TRADOVATE_MD_URLS,
    TRADOVATE_URLS,
    TRADOVATE_WS_URLS,
    TradovateCredentials,
)
from esml.broker.tradovate.orders import (
    OrderSpec,
    bracket_prices,
    leg_client_id,
    role_of_client_id,
)
from esml.broker.tradovate.rest import CaptchaRequired, OutcomeUnknown, RateLimited

__all__ = [
    "TRADOVATE_MD_URLS",
    "TRADOVATE_URLS",
    "TRADOVATE_WS_URLS",
    "CaptchaRequired",
    "Counters",
    "OrderSpec",
    "OutcomeUnknown",
    "ProductSpec",
    "RateLimited",
    "TradovateClient",
    "TradovateCredentials",
    "bracket_prices",
    "leg_client_id",
    "role_of_client_id",
]
