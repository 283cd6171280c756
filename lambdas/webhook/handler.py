"""Webhook Lambda: TradingView alert in (API Gateway proxy event), risk's verdict out.

Order of checks, each answering before anything is written, each answer a stable code
(`{"error": CODE, "message": ...}`) and never an exception's text:
1. the body must be at most 4 KiB                                  -> else 413 body_too_large;
2. its `passphrase` must equal the secret's (constant-time), read
   before any other field, so an unauthenticated caller learns
   nothing about the alert language                                -> else 401 unauthorized;
   a secret that cannot be read or has no passphrase is ours       -> 500 misconfigured
   (and the `WebhookMisconfigured` metric, for an alarm);
3. the alert must be valid, field by field                         -> else 422 invalid_alert;
4. its `time` must be at most ALERT_MAX_AGE_S (60) old and at most
   ALERT_MAX_SKEW_S (5) ahead, by the server's clock               -> else 422 stale_alert /
                                                                      future_alert;
5. de-duplicated by Powertools idempotency (the same alert again gets the first answer
   and reaches nothing downstream; 409 in_progress while it is being processed);
6. risk is invoked synchronously and its answer returned (200; 502 downstream_failed).
Nothing escapes the handler: an unexpected failure is 500 internal_error.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
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

from esml.decision.alerts import AlertOrder, parse_alert
from lambdas.invoker import DownstreamError, Invoker, LambdaInvoker
from lambdas.messages import RiskAnswer, RiskRequest
from lambdas.wiring import ColdStart

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "esml-webhook"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "esml"))

MAX_BODY_BYTES = 4096  # an alert is a few hundred bytes
SECRET_MAX_AGE_S = 300  # a rotated passphrase is picked up within five minutes
DEDUP_WINDOW_S = 24 * 3600  # the orders table's conditional put guards beyond this
MAX_AGE_S = 60.0
MAX_SKEW_S = 5.0


class Misconfigured(RuntimeError):
    """The webhook's own secret is missing or malformed: our fault, not the caller's."""


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(code)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def _answer(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
    }


def _refuse(r: _Refusal) -> dict[str, Any]:
    metrics.add_metric(name=f"Alert{r.status}", unit=MetricUnit.Count, value=1)
    return _answer(r.status, {"error": r.code, "message": r.message, **r.extra})


def _fields(e: ValidationError) -> list[str]:
    """Field-by-field reasons, without echoing the input (it may hold the passphrase)."""
    out = []
    for err in e.errors(include_input=False, include_url=False, include_context=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        out.append(f"{where}: {err['msg']}")
    return out


def body_text(event: Any) -> str:
    """The body as text, or a 413 / 401 refusal (an unreadable body carries no
    passphrase, so it is unauthenticated)."""
    raw = event.get("body") if isinstance(event, dict) else None
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        raise _Refusal(401, "unauthorized", "missing or wrong passphrase")
    if len(raw) > 2 * MAX_BODY_BYTES:
        raise _Refusal(413, "body_too_large", f"an alert is at most {MAX_BODY_BYTES} bytes")
    data = raw.encode("utf-8", "surrogatepass")
    if isinstance(event, dict) and event.get("isBase64Encoded") is True:
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise _Refusal(401, "unauthorized", "missing or wrong passphrase") from None
    if len(data) > MAX_BODY_BYTES:
        raise _Refusal(413, "body_too_large", f"an alert is at most {MAX_BODY_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refusal(401, "unauthorized", "missing or wrong passphrase") from None


def claimed_passphrase(body: str) -> str | None:
    """The `passphrase` string of a JSON object body, without validating anything else."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    value = doc.get("passphrase") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Webhook:
    secret_arn: str
    secrets: SecretsProvider
    persistence: DynamoDBPersistenceLayer
    risk: Invoker
    clock: Callable[[], datetime] = _utc_now
    max_age_s: float = MAX_AGE_S
    max_skew_s: float = MAX_SKEW_S
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
    def from_env(
        cls,
        env: Mapping[str, str],
        risk: Invoker | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> Webhook:
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
            clock=clock,
            max_age_s=float(env.get("ALERT_MAX_AGE_S") or MAX_AGE_S),
            max_skew_s=float(env.get("ALERT_MAX_SKEW_S") or MAX_SKEW_S),
        )

    def handle(self, event: Any, context: LambdaContext) -> dict[str, Any]:
        try:
            return self._handle(event, context)
        except _Refusal as r:
            return _refuse(r)
        except Misconfigured as e:
            logger.error("webhook misconfigured", problem=str(e))
            metrics.add_metric(name="WebhookMisconfigured", unit=MetricUnit.Count, value=1)
            return _answer(500, {"error": "misconfigured", "message": "the webhook is not set up"})
        except Exception as e:  # nothing escapes: an unexpected failure is ours
            logger.exception("webhook failed", error=type(e).__name__)
            metrics.add_metric(name="WebhookError", unit=MetricUnit.Count, value=1)
            return _answer(500, {"error": "internal_error", "message": "please retry later"})

    def _handle(self, event: Any, context: LambdaContext) -> dict[str, Any]:
        body = body_text(event)
        if not self._authentic(claimed_passphrase(body)):
            logger.warning("alert with a missing or wrong passphrase")
            raise _Refusal(401, "unauthorized", "missing or wrong passphrase")
        try:
            alert = parse_alert(body)
        except ValidationError as e:
            reasons = _fields(e)
            logger.warning("invalid alert", reasons=reasons)
            raise _Refusal(422, "invalid_alert", "the alert is not valid", fields=reasons) from None
        age = (self.clock() - alert.time).total_seconds()
        if age > self.max_age_s:
            raise _Refusal(422, "stale_alert", f"the alert is older than {self.max_age_s:g} s")
        if age < -self.max_skew_s:
            raise _Refusal(422, "future_alert", "the alert's time is ahead of the server's clock")
        order = alert.order()
        logger.info("alert accepted", alert=order.model_dump(mode="json"))
        self.idempotency.register_lambda_context(context)
        try:
            verdict = self._forward_once(order=order.model_dump(mode="json"))
        except IdempotencyAlreadyInProgressError:
            raise _Refusal(409, "in_progress", "this alert is already being processed") from None
        except DownstreamError as e:
            logger.error("risk failed", error=type(e).__name__)
            metrics.add_metric(name="DownstreamError", unit=MetricUnit.Count, value=1)
            return _answer(
                502, {"error": "downstream_failed", "message": "the alert could not be processed"}
            )
        metrics.add_metric(name="AlertProcessed", unit=MetricUnit.Count, value=1)
        return _answer(200, verdict)

    def _authentic(self, given: str | None) -> bool:
        try:
            secret = self.secrets.get(self.secret_arn, transform="json", max_age=SECRET_MAX_AGE_S)
        except Exception as e:
            raise Misconfigured(f"secret unreadable ({type(e).__name__})") from None
        expected = secret.get("passphrase") if isinstance(secret, dict) else None
        if not isinstance(expected, str) or not expected:
            raise Misconfigured("the secret has no 'passphrase' string")
        if given is None:
            return False
        return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())

    def _forward(self, order: dict[str, Any]) -> dict[str, Any]:
        request = RiskRequest(alert=AlertOrder.model_validate(order))
        answer = self.risk(request.model_dump(mode="json"))
        return RiskAnswer.model_validate(answer).model_dump(mode="json")


_app: ColdStart[Webhook] = ColdStart(Webhook.from_env)
use = _app.use


@metrics.log_metrics
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        app = _app.get()
    except Exception as e:  # a cold start without its settings: ours, and said so
        logger.error("webhook cannot start", error=type(e).__name__)
        metrics.add_metric(name="WebhookMisconfigured", unit=MetricUnit.Count, value=1)
        return _answer(500, {"error": "misconfigured", "message": "the webhook is not set up"})
    return app.handle(event, context)
