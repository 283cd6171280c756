"""The TradingView path wired for tests: the three real handlers over moto's DynamoDB and
Secrets Manager, chained through LocalInvoker (moto cannot run Lambda code without
Docker), trading the loopback Tradovate simulator over real HTTP, on a server clock the
test moves. Imported by the test modules (not a conftest)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.client
import pytest

from esml.broker.tradovate import TradovateClient, TradovateCredentials
from esml.decision.account_store import AccountStore
from esml.decision.proposal import SharedAccount
from esml.sim.tradovate_api import TradovateSim
from lambdas.invoker import LocalInvoker
from lambdas.risk import handler as risk_handler
from lambdas.router import handler as router_handler
from lambdas.webhook import handler as webhook_handler
from tests.aws_fixtures import (
    ACCOUNT_SPEC,
    FILLS_TABLE,
    IDEMPOTENCY_TABLE,
    ORDERS_TABLE,
    PASSPHRASE,
    RISK_STATE_TABLE,
    TRADOVATE_LOGIN,
    LocalContext,
    all_items,
    api_event,
    create_secret,
    create_tables,
    tradovate_sim,
)

ALERT_TIME = datetime(2025, 3, 7, 15, 30, 5, tzinfo=UTC)  # Friday 09:30:05 Chicago


@dataclass
class Clock:
    """The server's clock, moved by the test."""

    now: datetime = ALERT_TIME + timedelta(seconds=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Stack:
    tables: dict[str, Any]
    sim: TradovateSim
    env: dict[str, str]
    clock: Clock
    broker: TradovateClient
    store: AccountStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = AccountStore(self.tables[RISK_STATE_TABLE], self.clock)

    def post(self, payload: dict[str, Any] | str) -> tuple[int, dict[str, Any]]:
        body = payload if isinstance(payload, str) else json.dumps(payload)
        answer = webhook_handler.lambda_handler(api_event(body), LocalContext())
        return answer["statusCode"], json.loads(answer["body"])

    def items(self, table: str) -> list[dict[str, Any]]:
        return all_items(self.tables[table])

    def orders(self, role: str | None = None) -> list[dict[str, Any]]:
        items = [i for i in self.items(ORDERS_TABLE) if i["kind"] == "order"]
        return [i for i in items if role is None or i["role"] == role]

    def account(self) -> SharedAccount:
        return self.store.load("primary")

    def position(self, symbol: str = "ESH5") -> int:
        return self.account().position(symbol)

    def broker_position(self, symbol: str = "ESH5") -> int:
        return self.sim.net_position(ACCOUNT_SPEC, symbol)

    def sync(self) -> dict[str, Any]:
        return router_handler.lambda_handler({"op": "sync"}, LocalContext("esml-router"))

    def working(self) -> list[dict[str, Any]]:
        """The simulator's live orders (bracket legs held for their entry included)."""
        return [o for o in self.sim.orders() if o["ordStatus"] in ("Working", "Suspended")]


def broker_for(sim: TradovateSim) -> TradovateClient:
    """The router's Tradovate client, with short timeouts so lost answers are quick."""
    creds = TradovateCredentials.model_validate(
        {**TRADOVATE_LOGIN, "env": "demo", "accountSpec": ACCOUNT_SPEC}
    )
    return TradovateClient(
        creds,
        base_url=sim.base_url,
        timeout=(1.0, 0.6),
        rate_limit_budget_s=0.5,
        lookup_grace_s=0.05,
    )


def wire(env: dict[str, str], clock: Clock, broker: TradovateClient) -> None:
    """Build the three Lambdas as a cold start would, chained through LocalInvoker."""
    router = router_handler.Router.from_env(env, broker=broker, clock=clock)
    router_handler.use(router)
    to_router = LocalInvoker(router_handler.lambda_handler, LocalContext("esml-router"))
    risk_handler.use(risk_handler.Risk.from_env(env, router=to_router, clock=clock))
    to_risk = LocalInvoker(risk_handler.lambda_handler, LocalContext("esml-risk"))
    webhook_handler.use(webhook_handler.Webhook.from_env(env, risk=to_risk, clock=clock))


def stack_env(sim: TradovateSim, esml_config: dict[str, Any] | None) -> dict[str, str]:
    return {
        "SECRET_ARN": create_secret("esml/webhook", {"passphrase": PASSPHRASE}),
        "IDEMPOTENCY_TABLE": IDEMPOTENCY_TABLE,
        "RISK_FUNCTION_NAME": "esml-risk",
        "RISK_STATE_TABLE": RISK_STATE_TABLE,
        "ROUTER_FUNCTION_NAME": "esml-router",
        "ORDERS_TABLE": ORDERS_TABLE,
        "FILLS_TABLE": FILLS_TABLE,
        "TRADOVATE_SECRET_ARN": create_secret(
            "esml/tradovate", {**TRADOVATE_LOGIN, "env": "demo", "accountSpec": ACCOUNT_SPEC}
        ),
        "TRADOVATE_BASE_URL": sim.base_url,
        "ESML_CONFIG": json.dumps(esml_config or {}),
    }


@pytest.fixture
def make_stack(aws: None) -> Iterator[Callable[..., Stack]]:
    sims: list[TradovateSim] = []

    def make(esml_config: dict[str, Any] | None = None, **sim_overrides: Any) -> Stack:
        tables = create_tables()
        sim = tradovate_sim(**sim_overrides).__enter__()
        sims.append(sim)
        clock = Clock()
        env = stack_env(sim, esml_config)
        broker = broker_for(sim)
        wire(env, clock, broker)
        return Stack(tables, sim, env, clock, broker)

    yield make
    for module in (webhook_handler, risk_handler, router_handler):
        module.use(None)
    for sim in sims:
        sim.__exit__(None, None, None)


@pytest.fixture
def atomic_aws() -> Iterator[None]:
    """Every AWS call atomic, as DynamoDB applies each request atomically: moto's
    conditional writes are not atomic under threads (a check and its write can interleave
    with another thread's), so each call runs under one lock. The races between calls,
    which the code must survive, stay."""
    lock = threading.Lock()
    original = botocore.client.BaseClient._make_api_call

    def atomic(self: Any, operation: str, params: dict[str, Any]) -> Any:
        with lock:
            return original(self, operation, params)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(botocore.client.BaseClient, "_make_api_call", atomic)
        yield
