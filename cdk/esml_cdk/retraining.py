"""Retraining that closes the loop: a schedule or the drift alarm starts the state machine
(cdk/esml_cdk/retraining_flow.py), which trains a challenger, judges it against the
champion and the baselines, and promotes it only when it wins.

Least privilege by role, one role per job kind, each writing one prefix of the bucket:

| role | reads | writes |
| --- | --- | --- |
| train job | data/ | retraining/challengers/ |
| evaluate job | data/, retraining/challengers/, models/ | retraining/evaluations/ |
| promote job | retraining/challengers/ | models/ (the only writer of the champion) |
| verdict Lambda | retraining/evaluations/ | nothing |

The schedule runs Sunday 12:00 UTC, while CME Globex is closed (it reopens 17:00 CT).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from esml_cdk.data import DATA_PREFIX, MODEL_PREFIX
from esml_cdk.functions import esml_function, log_group
from esml_cdk.metric_names import NAMESPACE, RETRAINING_SERVICE
from esml_cdk.nag import acknowledge, logical_id
from esml_cdk.retraining_flow import (
    CHALLENGER_PREFIX,
    EVALUATION_PREFIX,
    JOB_PREFIXES,
    PROMOTION_PREFIX,
    FlowTargets,
    retraining_definition,
)

TRAINING_IMAGE = {
    "file": "containers/training/Dockerfile",
    "platform": ecr_assets.Platform.LINUX_AMD64,
    "exclude": ["models", "containers/tick_engine"],
}
"""The training image's build: the jobs and the drift Lambda use the same one."""
SCHEDULE = events.Schedule.cron(minute="0", hour="12", week_day="SUN")
MAX_JOB_TIME = Duration.hours(4)
SAGEMAKER_EVENTS_RULE = "StepFunctionsGetEventsForSageMakerTrainingJobsRule"
"""The rule Step Functions manages to learn when a `.sync` training job ends."""


class Retraining(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        repo_root: Path,
        bucket: s3.IBucket,
        layer: lambda_.ILayerVersion,
        instance_type: str,
        evaluation_hyperparameters: Mapping[str, str],
    ) -> None:
        super().__init__(scope, construct_id)
        self._bucket = bucket
        self.image = ecr_assets.DockerImageAsset(
            self, "TrainingImage", directory=str(repo_root), **TRAINING_IMAGE
        )
        self.train_role = self._job_role(
            "Train", reads=[DATA_PREFIX], lists=[DATA_PREFIX], writes=CHALLENGER_PREFIX
        )
        self.evaluate_role = self._job_role(
            "Evaluate",
            reads=[DATA_PREFIX, CHALLENGER_PREFIX, MODEL_PREFIX],
            lists=[DATA_PREFIX, CHALLENGER_PREFIX, MODEL_PREFIX],
            writes=EVALUATION_PREFIX,
        )
        self.evaluate_role.add_to_policy(list_whole_bucket(bucket))
        self.promote_role = self._job_role(
            "Promote", reads=[CHALLENGER_PREFIX], lists=[CHALLENGER_PREFIX], writes=PROMOTION_PREFIX
        )
        self.promote_role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteTheChampion",
                actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{MODEL_PREFIX}*")],
            )
        )
        acknowledge(
            self.promote_role,
            "AwsSolutions-IAM5",
            f"Resource::<{logical_id(bucket)}.Arn>/{MODEL_PREFIX}*",
            "the promotion writes the new bundle's files under models/<bundle>/ and then "
            "the models/champion pointer; no other role may write there",
        )
        self.runs = dynamodb.Table(
            self,
            "Runs",
            partition_key=dynamodb.Attribute(name="run_id", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.verdict = esml_function(
            self,
            "Verdict",
            repo_root=repo_root,
            folder="retrain_verdict",
            layer=layer,
            timeout=Duration.seconds(60),
            environment={},
            service=RETRAINING_SERVICE,
            memory_size=256,
        )
        self.verdict.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[bucket.arn_for_objects(f"{EVALUATION_PREFIX}*")],
            )
        )
        acknowledge(
            self.verdict.role,
            "AwsSolutions-IAM5",
            f"Resource::<{logical_id(bucket)}.Arn>/{EVALUATION_PREFIX}*",
            "reads the evaluation reports, one per job, under their prefix only",
        )

        flow = FlowTargets(
            bucket=bucket.bucket_name,
            training_image=self.image.image_uri,
            train_role_arn=self.train_role.role_arn,
            evaluate_role_arn=self.evaluate_role.role_arn,
            promote_role_arn=self.promote_role.role_arn,
            verdict_function_arn=self.verdict.function_arn,
            runs_table=self.runs.table_name,
            instance_type=instance_type,
            max_runtime=MAX_JOB_TIME,
            evaluation_hyperparameters=evaluation_hyperparameters,
        )
        self.log_group = log_group(self, "StateMachineLogs", logs.RetentionDays.THREE_MONTHS)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(
                retraining_definition(Construct(self, "Flow"), flow, "sync")
            ),
            timeout=Duration.hours(3 * MAX_JOB_TIME.to_hours() + 1),  # three jobs and the rest
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
            tracing_enabled=True,
        )
        self._grant_state_machine(self.state_machine.role)
        self.schedule = events.Rule(
            self,
            "WeeklySchedule",
            description="esml: retrain while the market is closed (Sunday 12:00 UTC)",
            schedule=SCHEDULE,
            targets=[self.start_target("weekly-schedule")],
        )

    def start_target(self, trigger: str) -> targets.SfnStateMachine:
        return targets.SfnStateMachine(
            self.state_machine, input=events.RuleTargetInput.from_object({"trigger": trigger})
        )

    def _job_role(self, name: str, *, reads: list[str], lists: list[str], writes: str) -> iam.Role:
        """A SageMaker job's role: read `reads`, list `lists` (SageMaker lists each input
        channel's prefix before it downloads), write its own output prefix."""
        stack = Stack.of(self)
        log_group = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name="/aws/sagemaker/TrainingJobs",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        b = self._bucket
        statements = [
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[b.arn_for_objects(f"{p}*") for p in reads]
            ),
            iam.PolicyStatement(
                actions=["s3:PutObject"], resources=[b.arn_for_objects(f"{writes}*")]
            ),
            iam.PolicyStatement(
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:DescribeLogStreams",
                ],
                resources=[log_group, f"{log_group}:log-stream:*"],
            ),
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
            ),
        ]
        if lists:
            statements.append(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[b.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in lists]}},
                )
            )
        role = iam.Role(
            self,
            f"{name}JobRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"esml {name.lower()} jobs: write {writes} only",
            inline_policies={"Job": iam.PolicyDocument(statements=statements)},
        )
        self.image.repository.grant_pull(role)
        bucket_id = logical_id(b)
        for prefix in {*reads, writes}:
            acknowledge(
                role,
                "AwsSolutions-IAM5",
                f"Resource::<{bucket_id}.Arn>/{prefix}*",
                f"objects under {prefix} only: the job's keys are named at run time",
            )
        acknowledge(
            role,
            "AwsSolutions-IAM5",
            f"Resource::{log_group}:log-stream:*",
            "SageMaker names one log stream per job under its fixed log group",
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5",
            "Resource::*",
            "cloudwatch:PutMetricData has no resource-level permission; the condition "
            "limits it to SageMaker's /aws/sagemaker/ namespaces. ecr:GetAuthorizationToken "
            "(image pull) has no resource either",
        )
        return role

    def _grant_state_machine(self, role: iam.IRole) -> None:
        """Exactly the calls its states make, on exactly esml's jobs, roles and table."""
        stack = Stack.of(self)
        jobs = [
            stack.format_arn(service="sagemaker", resource="training-job",
                             resource_name=f"{prefix}*")
            for prefix in JOB_PREFIXES.values()
        ]  # fmt: skip
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob",
                         "sagemaker:StopTrainingJob", "sagemaker:AddTags"],
                resources=jobs,
            )
        )  # fmt: skip
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[r.role_arn for r in (self.train_role, self.evaluate_role,
                                                self.promote_role)],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )  # fmt: skip
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[stack.format_arn(service="events", resource="rule",
                                            resource_name=SAGEMAKER_EVENTS_RULE)],
            )
        )  # fmt: skip
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["lambda:InvokeFunction"],
                                resources=[self.verdict.function_arn])
        )  # fmt: skip
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["dynamodb:PutItem"], resources=[self.runs.table_arn])
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": NAMESPACE}},
            )
        )
        for job in jobs:
            acknowledge(
                role,
                "AwsSolutions-IAM5",
                f"Resource::{job}",
                "one SageMaker job per run, named by the run's UUID after this prefix",
            )
        acknowledge(
            role,
            "AwsSolutions-IAM5",
            "Resource::*",
            "cloudwatch:PutMetricData (condition: namespace esml), X-Ray trace segments and "
            "CloudWatch Logs log delivery have no resource-level permissions",
        )


def list_whole_bucket(bucket: s3.IBucket) -> iam.PolicyStatement:
    """S3 answers a GET of a missing key with 404 only to a caller that may list the
    bucket (403 otherwise), and "no models/champion yet" must read as a 404: the first run
    has no champion. Listing shows key names, never contents."""
    return iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn])
