"""The public door for TradingView alerts: one REST route, throttled, into the webhook Lambda.

Authentication is the passphrase the webhook Lambda checks (TradingView can send neither
headers nor signatures); throttling bounds what a leaked URL can cost. API Gateway checks
the body's shape before the Lambda runs (a JSON object carrying a passphrase string), logs
every request to its access log, and logs errors of its own execution.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from esml_cdk.functions import log_group
from esml_cdk.nag import acknowledge

RATE_LIMIT_PER_S = 10
BURST_LIMIT = 20
ALERT_SCHEMA = apigw.JsonSchema(
    schema=apigw.JsonSchemaVersion.DRAFT4,
    type=apigw.JsonSchemaType.OBJECT,
    required=["passphrase"],
    properties={"passphrase": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, min_length=1)},
)
"""The least every alert has; the webhook Lambda validates the rest (and answers 422)."""


class WebhookApi(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, webhook: lambda_.IFunction) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = log_group(self, "AccessLogs", logs.RetentionDays.THREE_MONTHS)
        self.api = apigw.RestApi(
            self,
            "Api",
            description="esml: TradingView alerts -> webhook Lambda",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # API Gateway logs through one role per account and region (AWS::ApiGateway::
            # Account); the stack sets it and leaves it in place on destroy (docs/aws.md).
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name="prod",
                throttling_rate_limit=RATE_LIMIT_PER_S,
                throttling_burst_limit=BURST_LIMIT,
                metrics_enabled=True,
                tracing_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # bodies carry the passphrase: never logged
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=False,
                ),
            ),
        )
        model = self.api.add_model(
            "Alert", content_type="application/json", model_name="Alert", schema=ALERT_SCHEMA
        )
        validator = self.api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        self.webhook_resource = self.api.root.add_resource("webhook")
        self.webhook_resource.add_method(
            "POST",
            apigw.LambdaIntegration(webhook, proxy=True),
            request_models={"application/json": model},
            request_validator=validator,
        )
        for rule in ("AwsSolutions-APIG4", "AwsSolutions-COG4"):
            acknowledge(
                self.api,
                rule,
                None,
                "TradingView webhooks can send neither headers nor credentials: the alert "
                "carries a 40-character passphrase the webhook Lambda compares in constant "
                "time (rotated by the stack), and the stage is throttled",
            )
        acknowledge(
            self.api,
            "AwsSolutions-APIG3",
            None,
            "WAF costs more per month than the rest of the API; the stage's throttling and "
            "the passphrase bound what a leaked URL can do",
        )
        acknowledge(
            self.api,
            "AwsSolutions-IAM4",
            "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs",
            "API Gateway's account-wide logging role needs exactly this AWS-managed policy",
        )

    @property
    def webhook_url(self) -> str:
        return self.api.url_for_path(self.webhook_resource.path)
