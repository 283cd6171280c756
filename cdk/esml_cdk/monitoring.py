"""One dashboard and the alarms that mean "a person should look now", sent to one SNS topic
whose e-mail subscriber is required at deploy (esml:alarmEmail).

Alarms fire on the first error: the order path handles a few alerts a day, so a single
failed alert or a stopped tick engine is already an incident, not noise. esml's own
metrics (names and dimensions: cdk/esml_cdk/metric_names.py) are watched as well as
AWS's: orders whose outcome is unknown, rejected orders, unauthorised alerts, a webhook
that cannot read its secret, the daily loss limit, failed retraining runs and model
drift; the tick engine's own alarms (stale data, broker errors, position mismatch, daily
loss: trading_service.py) reach the same topic and dashboard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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

from esml_cdk import metric_names as names
from esml_cdk.drift import Drift

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
        service_alarms: Mapping[str, cloudwatch.Alarm],
        state_machine: sfn.StateMachine,
        drift: Drift,
        drift_max_log_loss_excess: float,
        drift_max_calibration_error: float,
        alarm_email: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "AlarmTopic", display_name="esml alarms", enforce_ssl=True)
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

        trading = {
            name: esml_metric_sum(name, services) for name, services in names.EMITTERS.items()
        }
        failed_runs = cloudwatch.MathExpression(
            expression=" + ".join(f"FILL({o}, 0)" for o in names.FAILED_OUTCOMES),
            using_metrics={o: retraining_runs(o) for o in names.FAILED_OUTCOMES},
            label="failed retraining runs",
            period=Duration.hours(1),
        )
        trading_alarms = [
            self._alarm(f"{name}Alarm", trading[name], description, threshold=threshold)
            for name, description, threshold in (
                (names.ORDER_OUTCOME_UNKNOWN, "an order's outcome is unknown: the broker's "
                 "answer was lost; its reservation holds until a sync finds it", 1),
                (names.ORDER_REJECTED, "the broker rejected an order", 1),
                (names.ALERT_UNAUTHORIZED, "alerts with a wrong passphrase (3 in 5 min)", 3),
                (names.WEBHOOK_MISCONFIGURED, "the webhook cannot read its passphrase secret "
                 "or its settings: every alert is refused with 500", 1),
            )
        ]  # fmt: skip
        daily_loss = esml_metric(
            names.PROPOSAL_REJECTED,
            names.RISK_SERVICE,
            extra={names.GATE_DIMENSION: names.DAILY_LOSS_GATE},
        )
        trading_alarms.append(
            self._alarm(
                "DailyLossAlarm",
                daily_loss,
                "an alert was refused: the account's daily loss limit is reached",
            )
        )
        for alarm in service_alarms.values():
            self._notify(alarm)
        excess = drift.metric(names.DRIFT_LOG_LOSS_EXCESS)
        calibration = drift.metric(names.DRIFT_CALIBRATION_ERROR)
        self.drift_alarm = self._alarm(
            "ModelDrift",
            cloudwatch.MathExpression(
                expression=f"IF(excess > {drift_max_log_loss_excess} OR "
                f"calibration > {drift_max_calibration_error}, 1, 0)",
                using_metrics={"excess": excess, "calibration": calibration},
                label="drift over its threshold",
                period=Duration.hours(1),
            ),
            f"the champion drifted: live log loss over its held-out one by more than "
            f"{drift_max_log_loss_excess}, or calibration error over "
            f"{drift_max_calibration_error}; a retraining run starts",
        )
        self.alarms: list[cloudwatch.Alarm] = [
            *trading_alarms,
            *service_alarms.values(),
            self._alarm("RetrainingRunFailed", failed_runs, "a retraining run failed a step"),
            self.drift_alarm,
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
            cloudwatch.GraphWidget(
                title="Tick engine tasks (left) and its alarms' metrics (right)",
                left=[running_tasks],
                right=[alarm.metric for alarm in service_alarms.values()],
                width=12,
            ),
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
                title="esml order path events (5 min sums)",
                left=[*trading.values(), daily_loss],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Model drift (live vs the champion)",
                left=[excess, calibration],
                right=[drift.metric(names.DRIFT_HIT_RATE), drift.metric(names.DRIFT_LOG_LOSS)],
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
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Retraining outcomes",
                left=[retraining_runs(o) for o in names.RETRAINING_OUTCOMES],
                width=12,
            ),
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
        self._notify(alarm)
        return alarm

    def _notify(self, alarm: cloudwatch.Alarm) -> None:
        """The topic hears the alarm go off and come back."""
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        alarm.add_ok_action(cw_actions.SnsAction(self.topic))


def esml_metric_sum(name: str, services: Sequence[str]) -> cloudwatch.IMetric:
    """One esml metric summed over the services that emit it (missing data counts 0)."""
    prefix = name[0].lower() + name[1:]  # math ids are unique per graph: one name each
    parts = {f"{prefix}{i}": esml_metric(name, s) for i, s in enumerate(services)}
    if len(parts) == 1:
        return next(iter(parts.values()))
    return cloudwatch.MathExpression(
        expression=" + ".join(f"FILL({key}, 0)" for key in parts),
        using_metrics=parts,
        label=name,
        period=FIVE_MINUTES,
    )


def esml_metric(
    name: str,
    service: str,
    *,
    statistic: str = "Sum",
    period: Duration = FIVE_MINUTES,
    extra: Mapping[str, str] | None = None,
) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace=names.NAMESPACE,
        metric_name=name,
        dimensions_map={names.SERVICE_DIMENSION: service, **(extra or {})},
        statistic=statistic,
        period=period,
        label=f"{name} ({service})" if not extra else f"{name} {dict(extra)}",
    )


def retraining_runs(outcome: str) -> cloudwatch.Metric:
    return esml_metric(
        names.RETRAINING_RUN,
        names.RETRAINING_SERVICE,
        period=Duration.hours(1),
        extra={names.OUTCOME_DIMENSION: outcome},
    )
