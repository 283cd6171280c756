"""The whole deployment in one stack: the order path, the tick engine, retraining and
their monitoring share tables and secrets, and one stack keeps those references plain
(no cross-stack exports that would pin a table in place)."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CfnOutput, Environment, Stack, Tags
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from constructs import Construct

from esml_cdk.data import DataStore
from esml_cdk.drift import Drift
from esml_cdk.functions import log_group
from esml_cdk.monitoring import Monitoring
from esml_cdk.nag import acknowledge_stack_findings
from esml_cdk.order_functions import OrderFunctions
from esml_cdk.retraining import Retraining
from esml_cdk.settings import Settings
from esml_cdk.trading_service import TradingService
from esml_cdk.webhook_api import WebhookApi


class EsmlStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, repo_root: Path, settings: Settings
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            env=Environment(account=settings.account, region=settings.region),
            description="esml: E-mini S&P 500 futures trading (webhook, tick engine, retraining)",
        )
        self.settings = settings
        Tags.of(self).add("project", "esml")

        self.data = DataStore(self, "Data")
        self.functions = OrderFunctions(
            self,
            "OrderPath",
            repo_root=repo_root,
            data=self.data,
            settings=settings,
        )
        self.webhook_api = WebhookApi(self, "WebhookApi", webhook=self.functions.webhook)
        self.trading = TradingService(
            self,
            "Trading",
            repo_root=repo_root,
            data=self.data,
            risk_function=self.functions.risk,
            tradovate_secret=self.functions.tradovate_secret,
            esml_config_json=settings.esml_config_json,
            tradovate_base_url=settings.tradovate_base_url,
        )
        self.trading.vpc.add_flow_log(
            "FlowLogs",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(log_group(self, "VpcFlowLogs")),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        self.retraining = Retraining(
            self,
            "Retraining",
            repo_root=repo_root,
            bucket=self.data.model_bucket,
            layer=self.functions.layer,
            instance_type=settings.training_instance_type,
            evaluation_hyperparameters={
                "promotion_metrics": ",".join(settings.promotion_metrics),
                "margin_vs_champion": str(settings.margin_vs_champion),
                "margin_vs_baselines": str(settings.margin_vs_baselines),
            },
        )
        self.drift = Drift(
            self,
            "Drift",
            repo_root=repo_root,
            bucket=self.data.model_bucket,
            orders=self.data.orders,
            fills=self.data.fills,
            window_hours=settings.drift_window_hours,
        )
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            api=self.webhook_api.api,
            functions={
                "Webhook": self.functions.webhook,
                "Risk": self.functions.risk,
                "Router": self.functions.router,
            },
            service=self.trading.service,
            service_alarms=self.trading.alarms,
            state_machine=self.retraining.state_machine,
            drift=self.drift,
            drift_max_log_loss_excess=settings.drift_max_log_loss_excess,
            drift_max_calibration_error=settings.drift_max_calibration_error,
            alarm_email=settings.alarm_email,
        )
        self.drift_trigger = events.Rule(
            self,
            "RetrainOnDrift",
            description="esml: the ModelDrift alarm starts a retraining run",
            event_pattern=events.EventPattern(
                source=["aws.cloudwatch"],
                detail_type=["CloudWatch Alarm State Change"],
                resources=[self.monitoring.drift_alarm.alarm_arn],
                detail={"state": {"value": ["ALARM"]}},
            ),
            targets=[self.retraining.start_target("drift-alarm")],
        )
        acknowledge_stack_findings(self)

        CfnOutput(self, "WebhookUrl", value=self.webhook_api.webhook_url)
        CfnOutput(
            self,
            "WebhookPassphraseSecretArn",
            value=self.functions.passphrase_secret.secret_arn,
            description="TradingView alerts carry this secret's 'passphrase' value",
        )
        CfnOutput(
            self,
            "TradovateSecretName",
            value=self.functions.tradovate_secret.secret_name,
            description="fill in the Tradovate credentials here before trading",
        )
        CfnOutput(self, "ModelBucketName", value=self.data.model_bucket.bucket_name)
        CfnOutput(
            self, "RetrainingStateMachineArn", value=self.retraining.state_machine.state_machine_arn
        )
        CfnOutput(self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn)
        CfnOutput(
            self,
            "RetrainingRunsTable",
            value=self.retraining.runs.table_name,
            description="one row per retraining run: outcome, challenger, evaluation report",
        )
