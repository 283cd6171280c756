"""The public door for TradingView alerts: one REST route, throttled, into the webhook Lambda.

Authentication is the passphrase the webhook Lambda checks (TradingView can send neither
headers nor signatures); throttling bounds what a leaked URL can cost.
"""

from __future__ import annotations

from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

RATE_LIMIT_PER_S = 10
BURST_LIMIT = 20


class WebhookApi(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, webhook: lambda_.IFunction) -> None:
        super().__init__(scope, construct_id)
        self.api = apigw.RestApi(
            self,
            "Api",
            description="esml: TradingView alerts -> webhook Lambda",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=False,  # account-wide setting; execution logs are left off
            deploy_options=apigw.StageOptions(
                stage_name="prod",
                throttling_rate_limit=RATE_LIMIT_PER_S,
                throttling_burst_limit=BURST_LIMIT,
                metrics_enabled=True,
            ),
        )
        self.webhook_resource = self.api.root.add_resource("webhook")
        self.webhook_resource.add_method("POST", apigw.LambdaIntegration(webhook, proxy=True))

    @property
    def webhook_url(self) -> str:
        return self.api.url_for_path(self.webhook_resource.path)
