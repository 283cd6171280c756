"""The order path's three Lambdas (webhook -> risk -> router), their layer and secrets.

Each function gets exactly the grants its contract needs: the webhook cannot touch orders,
the router cannot invoke anything, and only the router reads the Tradovate credentials.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from esml_cdk.bundling import ARCHITECTURE, RUNTIME, layer_code
from esml_cdk.data import DataStore
from esml_cdk.functions import esml_function

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


class OrderFunctions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        repo_root: Path,
        data: DataStore,
        esml_config_json: str | None,
        tradovate_base_url: str | None,
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
        router_env = {
            "ORDERS_TABLE": data.orders.table_name,
            "FILLS_TABLE": data.fills.table_name,
            "TRADOVATE_SECRET_ARN": self.tradovate_secret.secret_arn,
        }
        if tradovate_base_url:
            router_env["TRADOVATE_BASE_URL"] = tradovate_base_url
        # The timeouts nest (router < risk < webhook < API Gateway's 29 s) so a slow broker
        # surfaces as the inner function's timeout, answered by the outer one.
        self.router = self._function("Router", "router", Duration.seconds(15), router_env)
        data.orders.grant_read_write_data(self.router)
        data.fills.grant_read_write_data(self.router)
        self.tradovate_secret.grant_read(self.router)

        risk_env = {
            "RISK_STATE_TABLE": data.risk_state.table_name,
            "ROUTER_FUNCTION_NAME": self.router.function_name,
        }
        if esml_config_json:
            risk_env["ESML_CONFIG"] = esml_config_json
        self.risk = self._function("Risk", "risk", Duration.seconds(20), risk_env)
        data.risk_state.grant_read_write_data(self.risk)
        self.router.grant_invoke(self.risk)

        self.webhook = self._function(
            "Webhook",
            "webhook",
            Duration.seconds(25),
            {
                "SECRET_ARN": self.passphrase_secret.secret_arn,
                "IDEMPOTENCY_TABLE": data.idempotency.table_name,
                "RISK_FUNCTION_NAME": self.risk.function_name,
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
