"""The order path's three Lambdas (webhook -> risk -> router), their layer and secrets,
and the schedule that keeps the shared account level with the broker between alerts.

Each function gets exactly the grants its contract needs: the webhook cannot touch orders,
the router cannot invoke anything, and only the router reads the Tradovate credentials.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from esml_cdk.bundling import ARCHITECTURE, RUNTIME, layer_code
from esml_cdk.data import DataStore
from esml_cdk.functions import esml_function
from esml_cdk.settings import Settings

PASSPHRASE_ROTATION = Duration.days(180)
"""Each rotation makes every TradingView alert carry the new passphrase (docs/aws.md): a
rare, scheduled change rather than a silent one."""
TRADOVATE_SECRET_TEMPLATE = (
    '{"name": "", "password": "", "appId": "", "appVersion": "1.0", '
    '"cid": "", "sec": "", "env": "demo"}'
)
"""Filled in by the user after the first deploy; deviceId is generated once and then kept,
as Tradovate expects one stable id per device. `env` stays "demo" until going live is a
deliberate edit."""
ROUTER_TIMEOUT = Duration.seconds(15)
"""Under 60 s, the read timeout of risk's invoke (lambdas/risk/handler.py), so risk hears
the router's own timeout rather than losing the answer; and under 120 s, the window in
which a sync leaves a fresh reservation alone (esml.decision.broker_sync.IN_FLIGHT_S), so
no sync can release a reservation whose router may still be sending its order."""
SYNC_EVERY = Duration.minutes(1)
"""The router's scheduled `{"op": "sync"}`: bracket legs that filled at the exchange free
the position, and limit entries past their cancel_after_s are cancelled, with no alert."""
ROUTER_DATA_ACCESS = {
    "orders": ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"),
    "fills": ("dynamodb:BatchGetItem", "dynamodb:PutItem"),
    "risk_state": ("dynamodb:GetItem", "dynamodb:PutItem"),
}
"""What the router does to each table, and nothing more. Orders: claim (conditional put),
look up by client id, record the broker's state (conditional update). Fills: which fill
ids have a row (batch reads), and each new fill's row; risk state: the account item read
and written under its version. A fill's row and the account item are one
TransactWriteItems, which IAM authorises as the PutItem of each item."""

RISK_STATE_ACCESS = ("dynamodb:GetItem", "dynamodb:PutItem")
"""Risk reserves through `AccountStore`: a consistent read of the account item and its
conditional put under the version it read. No scan, delete or batch: nothing else."""


class OrderFunctions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        repo_root: Path,
        data: DataStore,
        settings: Settings,
    ) -> None:
        super().__init__(scope, construct_id)
        self._repo_root = repo_root
        self.passphrase_secret = secretsmanager.Secret(
            self,
            "WebhookPassphrase",
            description="esml: passphrase TradingView alerts must carry (JSON key 'passphrase')",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template="{}",
                generate_string_key="passphrase",
                exclude_punctuation=True,
                password_length=40,
            ),
        )
        self.layer = lambda_.LayerVersion(
            self,
            "Dependencies",
            code=layer_code(
                repo_root / "lambdas" / "requirements.txt", repo_root / "build" / "lambda-layer"
            ),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="esml Lambda dependencies (lambdas/requirements.txt)",
        )

        self.rotation = esml_function(
            self,
            "PassphraseRotation",
            repo_root=repo_root,
            folder="passphrase_rotation",
            layer=self.layer,
            timeout=Duration.seconds(30),
            environment={},
        )
        self.passphrase_secret.add_rotation_schedule(
            "Rotation",
            rotation_lambda=self.rotation,
            automatically_after=PASSPHRASE_ROTATION,
            rotate_immediately_on_update=False,
        )
        self.tradovate_secret = secretsmanager.Secret(
            self,
            "TradovateCredentials",
            description="esml: Tradovate API credentials; fill in every field before trading",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=TRADOVATE_SECRET_TEMPLATE,
                generate_string_key="deviceId",
                exclude_punctuation=True,
                password_length=32,
            ),
            removal_policy=RemovalPolicy.RETAIN,
        )
        # One set of limits: risk and router read the same ESML_CONFIG (absent: defaults).
        config_env = {"ESML_CONFIG": settings.esml_config_json} if settings.esml_config_json else {}
        router_env = {
            "ORDERS_TABLE": data.orders.table_name,
            "FILLS_TABLE": data.fills.table_name,
            "RISK_STATE_TABLE": data.risk_state.table_name,
            "TRADOVATE_SECRET_ARN": self.tradovate_secret.secret_arn,
            **config_env,
        }
        if settings.tradovate_base_url:
            router_env["TRADOVATE_BASE_URL"] = settings.tradovate_base_url
        # The timeouts nest (router 15 s < risk 20 s < webhook 25 s < API Gateway's 29 s) so
        # a slow broker surfaces as the inner function's timeout, answered by the outer one.
        self.router = self._function("Router", "router", ROUTER_TIMEOUT, router_env)
        for table, allowed in ROUTER_DATA_ACCESS.items():
            getattr(data, table).grant(self.router, *allowed)
        self.tradovate_secret.grant_read(self.router)
        self.sync_schedule = events.Rule(
            self,
            "RouterSync",
            description="esml: the router syncs the shared account with Tradovate",
            schedule=events.Schedule.rate(SYNC_EVERY),
            targets=[
                targets.LambdaFunction(
                    self.router,
                    event=events.RuleTargetInput.from_object({"op": "sync"}),
                    # a missed sync is not retried: the next one comes within a minute
                    retry_attempts=0,
                    max_event_age=SYNC_EVERY,
                )
            ],
        )

        risk_env = {
            "RISK_STATE_TABLE": data.risk_state.table_name,
            "ROUTER_FUNCTION_NAME": self.router.function_name,
            "ALERT_MIN_CONFIDENCE": f"{settings.alert_min_confidence:g}",
            **config_env,
        }
        self.risk = self._function("Risk", "risk", Duration.seconds(20), risk_env)
        data.risk_state.grant(self.risk, *RISK_STATE_ACCESS)
        self.router.grant_invoke(self.risk)

        self.webhook = self._function(
            "Webhook",
            "webhook",
            Duration.seconds(25),
            {
                "SECRET_ARN": self.passphrase_secret.secret_arn,
                "IDEMPOTENCY_TABLE": data.idempotency.table_name,
                "RISK_FUNCTION_NAME": self.risk.function_name,
                "ALERT_MAX_AGE_S": f"{settings.alert_max_age_s:g}",
                "ALERT_MAX_SKEW_S": f"{settings.alert_max_skew_s:g}",
            },
        )
        data.idempotency.grant_read_write_data(self.webhook)
        self.passphrase_secret.grant_read(self.webhook)
        self.risk.grant_invoke(self.webhook)

    def _function(
        self, construct_id: str, folder: str, timeout: Duration, environment: dict[str, str]
    ) -> lambda_.Function:
        return esml_function(
            self,
            construct_id,
            repo_root=self._repo_root,
            folder=folder,
            layer=self.layer,
            timeout=timeout,
            environment=environment,
        )
