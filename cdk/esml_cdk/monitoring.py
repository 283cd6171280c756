"""One dashboard and the alarms that mean "a person should look now", sent to one SNS topic.

Alarms fire on the first error: the order path handles a few alerts a day, so a single
failed alert or a stopped tick engine is already an incident, not noise.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

FIVE_MINUTES = Duration.minutes(5)
TICK_ENGINE_DOWN_MINUTES = 5
"""A deploy stops the old task before the new one starts (about two minutes without a
task): only a longer gap is an outage."""


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        api: apigw.RestApi,
        functions: Mapping[str, lambda_.Function],
        service: ecs.FargateService,
        state_machine: sfn.StateMachine,
        alarm_email: str | None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "AlarmTopic", display_name="esml alarms", enforce_ssl=True)
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))

        api_5xx = api.metric_server_error(period=FIVE_MINUTES, statistic="Sum")
        running_tasks = cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name="RunningTaskCount",
            dimensions_map={
                "ClusterName": service.cluster.cluster_name,
                "ServiceName": service.service_name,
            },
            statistic="Minimum",
            period=Duration.minutes(1),
            label="running tasks",
        )
        retraining_failures = cloudwatch.MathExpression(
            expression="failed + timedOut",
            using_metrics={
                "failed": state_machine.metric_failed(period=Duration.hours(1), statistic="Sum"),
                "timedOut": state_machine.metric_timed_out(
                    period=Duration.hours(1), statistic="Sum"
                ),
            },
            label="failed or timed-out executions",
            period=Duration.hours(1),
        )

        self.alarms: list[cloudwatch.Alarm] = [
            self._alarm(
                "WebhookApi5xx",
                api_5xx,
                "the webhook API answered 5xx: a TradingView alert was not handled",
            ),
            *(
                self._alarm(
                    f"{name}Errors",
                    function.metric_errors(period=FIVE_MINUTES, statistic="Sum"),
                    f"the {name.lower()} Lambda failed an invocation",
                )
                for name, function in functions.items()
            ),
            self._alarm(
                "TickEngineNotRunning",
                running_tasks,
                "no tick engine task has been running for 5 minutes",
                threshold=1,
                comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                evaluation_periods=TICK_ENGINE_DOWN_MINUTES,
                missing=cloudwatch.TreatMissingData.BREACHING,
            ),
            self._alarm(
                "RetrainingFailed",
                retraining_failures,
                "a retraining execution failed or timed out",
            ),
        ]

        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", default_interval=Duration.days(1))
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=24, height=4)
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Webhook API requests and errors",
                left=[
                    api.metric_count(period=FIVE_MINUTES, statistic="Sum"),
                    api.metric_client_error(period=FIVE_MINUTES, statistic="Sum"),
                    api_5xx,
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Webhook API latency (p99)",
                left=[
                    api.metric_latency(period=FIVE_MINUTES, statistic="p99"),
                    api.metric_integration_latency(period=FIVE_MINUTES, statistic="p99"),
                ],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Lambda invocations (left) and errors (right)",
                left=[
                    f.metric_invocations(period=FIVE_MINUTES, statistic="Sum", label=name)
                    for name, f in functions.items()
                ],
                right=[
                    f.metric_errors(period=FIVE_MINUTES, statistic="Sum", label=f"{name} errors")
                    for name, f in functions.items()
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Lambda duration (p95)",
                left=[
                    f.metric_duration(period=FIVE_MINUTES, statistic="p95", label=name)
                    for name, f in functions.items()
                ],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Tick engine tasks", left=[running_tasks], width=12),
            cloudwatch.GraphWidget(
                title="Tick engine CPU and memory (%)",
                left=[
                    service.metric_cpu_utilization(period=Duration.minutes(1)),
                    service.metric_memory_utilization(period=Duration.minutes(1)),
                ],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Retraining executions",
                left=[
                    state_machine.metric_started(period=Duration.hours(1), statistic="Sum"),
                    state_machine.metric_succeeded(period=Duration.hours(1), statistic="Sum"),
                    retraining_failures,
                ],
                width=24,
            )
        )

    def _alarm(
        self,
        construct_id: str,
        metric: cloudwatch.IMetric,
        description: str,
        *,
        threshold: float = 1,
        comparison: cloudwatch.ComparisonOperator = (
            cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
        ),
        evaluation_periods: int = 1,
        missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            alarm_description=f"esml: {description}",
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=evaluation_periods,
            treat_missing_data=missing,
        )
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        alarm.add_ok_action(cw_actions.SnsAction(self.topic))
        return alarm
