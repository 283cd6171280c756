"""Shared pieces of the AWS tests: moto-backed tables and secrets with the CDK's key
schemas, a Lambda context, API Gateway events, realistic TradingView alerts, and the
loopback Tradovate server. Imported by the test modules (not a conftest)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from esml.sim.tradovate_api import TradovateSim

REGION = "us-east-1"
ORDERS_TABLE = "esml-orders"
FILLS_TABLE = "esml-fills"
RISK_STATE_TABLE = "esml-risk-state"
IDEMPOTENCY_TABLE = "esml-idempotency"
PASSPHRASE = "kX9#mountain-ledger-42"

TRADOVATE_LOGIN = {
    "name": "esml.bot",
    "password": "correct horse battery staple",
    "appId": "esml",
    "appVersion": "0.1.0",
    "cid": 8123,
    "sec": "f3a1c2e4-9b7d-4c1e-8a2f-6d5e4b3a2c1d",
    "deviceId": "6a0f3c1e-2b4d-4e8f-9a1b-3c5d7e9f0a2b",
}
ACCOUNT_SPEC = "DEMO4417283"

# Synthetic, illustrative quotes near where ES traded in early March 2025; the front
# contract is March (ESH5) until the 13 March roll.
MARKET = {"ESH5": 5772.25, "MESH5": 5772.25, "ESM5": 5818.50}


@pytest.fixture(scope="module")
def aws_session() -> Iterator[None]:
    """Fake credentials and every AWS call served by moto, once per test module (starting
    moto resets boto3's default session, and re-loading API models costs a second)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "POWERTOOLS_METRICS_NAMESPACE": "esml-test",
        }.items():
            mp.setenv(key, value)
        with mock_aws():
            yield


@pytest.fixture
def aws(aws_session: None) -> Iterator[None]:
    """An empty moto account for one test: its tables and secrets are deleted after it."""
    yield
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    for name in dynamodb.list_tables()["TableNames"]:
        dynamodb.delete_table(TableName=name)
    secrets = boto3.client("secretsmanager", region_name=REGION)
    for secret in secrets.list_secrets()["SecretList"]:
        secrets.delete_secret(SecretId=secret["ARN"], ForceDeleteWithoutRecovery=True)


KEYS = {
    ORDERS_TABLE: "client_id",
    FILLS_TABLE: "fill_id",
    RISK_STATE_TABLE: "account",
    IDEMPOTENCY_TABLE: "id",
}


def create_tables(*names: str) -> dict[str, Any]:
    """The tables (all four by default) with the key schemas the CDK stack creates."""
    dynamodb = boto3.resource("dynamodb", region_name=REGION)
    tables = {}
    for name in names or tuple(KEYS):
        key = KEYS[name]
        tables[name] = dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    if IDEMPOTENCY_TABLE in tables:
        boto3.client("dynamodb", region_name=REGION).update_time_to_live(
            TableName=IDEMPOTENCY_TABLE,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"},
        )
    return tables


def create_secret(name: str, value: dict[str, Any]) -> str:
    client = boto3.client("secretsmanager", region_name=REGION)
    return client.create_secret(Name=name, SecretString=json.dumps(value))["ARN"]


def all_items(table: Any) -> list[dict[str, Any]]:
    return table.scan(ConsistentRead=True)["Items"]


@dataclass
class LocalContext:
    """The attributes of a Lambda context that Powertools reads."""

    function_name: str = "esml-test"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:esml-test"
    aws_request_id: str = "5f0c8c62-6c1f-4a47-9d2b-1f1e2a3b4c5d"

    def get_remaining_time_in_millis(self) -> int:
        return 25_000


def sim_arguments(**overrides: Any) -> dict[str, Any]:
    """The test account's login, account and market, for any `TradovateSim` (or subclass)."""
    return {
        "name": TRADOVATE_LOGIN["name"],
        "password": TRADOVATE_LOGIN["password"],
        "cid": TRADOVATE_LOGIN["cid"],
        "sec": TRADOVATE_LOGIN["sec"],
        "accounts": [ACCOUNT_SPEC],
        "prices": MARKET,
        **overrides,
    }


def tradovate_sim(**overrides: Any) -> TradovateSim:
    return TradovateSim(**sim_arguments(**overrides))


def alert(**overrides: Any) -> dict[str, Any]:
    """A TradingView alert as its message template renders it (Friday 2025-03-07, 09:30 Chicago)."""
    body: dict[str, Any] = {
        "passphrase": PASSPHRASE,
        "ticker": "ES1!",
        "action": "buy",
        "contracts": 1,
        "price": 5772.25,
        "time": "2025-03-07T15:30:05Z",
    }
    body.update(overrides)
    return body


def api_event(body: str) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event as TradingView's POST produces it."""
    return {
        "resource": "/webhook",
        "path": "/webhook",
        "httpMethod": "POST",
        "headers": {
            "Content-Type": "text/plain; charset=utf-8",
            "User-Agent": "Go-http-client/1.1",
        },
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/webhook",
            "httpMethod": "POST",
            "path": "/prod/webhook",
            "stage": "prod",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "52.89.214.238"},
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
        },
        "body": body,
        "isBase64Encoded": False,
    }
