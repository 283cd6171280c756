"""Webhook Lambda: TradingView alert in (API Gateway proxy event), risk's verdict out.

Order of checks, each answering before anything is written:
1. the body must be a valid alert (JSON, every field present and typed)  -> else 422;
2. its passphrase must equal the secret's (constant-time compare)       -> else 401;
3. the alert minus its passphrase is de-duplicated by Powertools idempotency: the same
   alert again gets the first answer and reaches nothing downstream. The record is kept
   only when risk answered; a failure deletes it, so a retry is processed afresh;
4. risk is invoked synchronously and its answer returned (200; 502 if it failed; 409
   while the same alert is still being processed).
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
)
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from pydantic import ValidationError

from esml.decision.alerts import AlertOrder, TradingViewAlert, parse_alert
from lambdas.invoker import DownstreamError, Invoker, LambdaInvoker
from lambdas.messages import RiskAnswer, RiskRequest
from lambdas.wiring import ColdStart

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "esml-webhook"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "esml"))

MAX_BODY_BYTES = 4096  # an alert is a few hundred bytes
SECRET_MAX_AGE_S = 300  # a rotated passphrase is picked up within five minutes
DEDUP_WINDOW_S = 24 * 3600  # the orders table's conditional put guards beyond this


def _answer(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
    }


def _invalid(e: ValidationError) -> list[str]:
    """Field-by-field reasons, without echoing the input (it may hold the passphrase)."""
    out = []
    for err in e.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        out.append(f"{where}: {err['msg']}")
    return out


@dataclass
class Webhook:
    secret_arn: str
    secrets: SecretsProvider
    persistence: DynamoDBPersistenceLayer
    risk: Invoker
    idempotency: IdempotencyConfig = field(
        default_factory=lambda: IdempotencyConfig(expires_after_seconds=DEDUP_WINDOW_S)
    )

    def __post_init__(self) -> None:
        self._forward_once = idempotent_function(
            data_keyword_argument="order",
            persistence_store=self.persistence,
            config=self.idempotency,
        )(self._forward)

    @classmethod
    def from_env(cls, env: Mapping[str, str], risk: Invoker | None = None) -> Webhook:
        if risk is None:
            no_retries = Config(read_timeout=60, retries={"total_max_attempts": 1})
            risk = LambdaInvoker(
                env["RISK_FUNCTION_NAME"], boto3.client("lambda", config=no_retries)
            )
        return cls(
            secret_arn=env["SECRET_ARN"],
            # clients of the default session share its loaded API models: a faster cold start
            secrets=SecretsProvider(boto3_client=boto3.client("secretsmanager")),
            persistence=DynamoDBPersistenceLayer(
                table_name=env["IDEMPOTENCY_TABLE"], boto3_client=boto3.client("dynamodb")
            ),
            risk=risk,
        )

    def handle(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        try:
            body = APIGatewayProxyEvent(event).decoded_body or ""
        except ValueError:  # bad base64 or not UTF-8
            metrics.add_metric(name="AlertInvalid", unit=MetricUnit.Count, value=1)
            return _answer(422, {"error": "invalid alert", "details": ["body: not UTF-8 text"]})
        if len(body.encode()) > MAX_BODY_BYTES:
            metrics.add_metric(name="AlertInvalid", unit=MetricUnit.Count, value=1)
            return _answer(413, {"error": f"alert body exceeds {MAX_BODY_BYTES} bytes"})
        try:
            alert = parse_alert(body)
        except ValidationError as e:
            reasons = _invalid(e)
            logger.warning("invalid alert", reasons=reasons)
            metrics.add_metric(name="AlertInvalid", unit=MetricUnit.Count, value=1)
            return _answer(422, {"error": "invalid alert", "details": reasons})
        if not self._authentic(alert):
            logger.warning("alert with a wrong passphrase", ticker=alert.ticker)
            metrics.add_metric(name="AlertUnauthorized", unit=MetricUnit.Count, value=1)
            return _answer(401, {"error": "unauthorized"})
        order = alert.order()
        logger.info("alert accepted", alert=order.model_dump(mode="json"))
        self.idempotency.register_lambda_context(context)
        try:
            verdict = self._forward_once(order=order.model_dump(mode="json"))
        except IdempotencyAlreadyInProgressError:
            return _answer(409, {"error": "this alert is already being processed"})
        except DownstreamError as e:
            logger.error("risk or router failed", error=str(e))
            metrics.add_metric(name="DownstreamError", unit=MetricUnit.Count, value=1)
            return _answer(502, {"error": "the order could not be processed", "detail": str(e)})
        metrics.add_metric(name="AlertProcessed", unit=MetricUnit.Count, value=1)
        return _answer(200, verdict)

    def _authentic(self, alert: TradingViewAlert) -> bool:
        secret = self.secrets.get(self.secret_arn, transform="json", max_age=SECRET_MAX_AGE_S)
        expected = secret.get("passphrase") if isinstance(secret, dict) else None
        if not isinstance(expected, str) or not expected:
            raise RuntimeError(f"secret {self.secret_arn} has no 'passphrase' string")
        given = alert.passphrase.get_secret_value()
        return hmac.compare_digest(given.encode(), expected.encode())

    def _forward(self, order: dict[str, Any]) -> dict[str, Any]:
        request = RiskRequest(alert=AlertOrder.model_validate(order))
        answer = self.risk(request.model_dump(mode="json"))
        return RiskAnswer.model_validate(answer).model_dump(mode="json")


_app: ColdStart[Webhook] = ColdStart(Webhook.from_env)
use = _app.use


@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return _app.get().handle(event, context)
