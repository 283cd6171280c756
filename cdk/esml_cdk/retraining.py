"""Weekly retraining: EventBridge schedule -> Step Functions -> SageMaker training job.

The job reads s3://bucket/data/ as its `train` channel and writes the model archive under
s3://bucket/models/; promoting a candidate to the tick engine stays a deliberate step.
It runs Sunday 12:00 UTC, while CME Globex is closed (it reopens Sunday 17:00 CT).
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from esml_cdk.data import DATA_PREFIX, MODEL_PREFIX

TRAINING_DOCKERFILE = "containers/training/Dockerfile"
SCHEDULE = events.Schedule.cron(minute="0", hour="12", week_day="SUN")
MAX_TRAINING_TIME = Duration.hours(4)
TRAINING_METRICS = {
    name: rf"{name}=([-+0-9.eE]+);"
    for name in (
        "validation:accuracy",
        "validation:macro_f1",
        "validation:log_loss",
        "validation:majority_baseline_accuracy",
    )
}
"""Parsed by SageMaker from the job's log (training/train.py prints `name=value;`) into
CloudWatch metrics, so a candidate model is judged against the majority baseline."""


class Retraining(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        repo_root: Path,
        bucket: s3.IBucket,
        instance_type: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.training_role = self._training_role()
        train = tasks.SageMakerCreateTrainingJob(
            self,
            "Train",
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            # SageMaker job names are unique per account and region: one UUID per execution.
            training_job_name=sfn.JsonPath.format("esml-{}", sfn.JsonPath.uuid()),
            role=self.training_role,
            algorithm_specification=tasks.AlgorithmSpecification(
                training_image=tasks.DockerImage.from_asset(
                    self,
                    "TrainingImage",
                    directory=str(repo_root),
                    file=TRAINING_DOCKERFILE,
                    platform=ecr_assets.Platform.LINUX_AMD64,
                    exclude=["models", "containers/tick_engine"],
                ),
                training_input_mode=tasks.InputMode.FILE,
                metric_definitions=[
                    tasks.MetricDefinition(name=name, regex=regex)
                    for name, regex in TRAINING_METRICS.items()
                ],
            ),
            input_data_config=[
                tasks.Channel(
                    channel_name="train",
                    data_source=tasks.DataSource(
                        s3_data_source=tasks.S3DataSource(
                            s3_location=tasks.S3Location.from_bucket(bucket, DATA_PREFIX),
                            s3_data_type=tasks.S3DataType.S3_PREFIX,
                            s3_data_distribution_type=tasks.S3DataDistributionType.FULLY_REPLICATED,
                        )
                    ),
                )
            ],
            output_data_config=tasks.OutputDataConfig(
                s3_output_location=tasks.S3Location.from_bucket(bucket, MODEL_PREFIX)
            ),
            resource_config=tasks.ResourceConfig(
                instance_count=1,
                instance_type=ec2.InstanceType(instance_type.removeprefix("ml.")),
                volume_size=Size.gibibytes(30),
            ),
            stopping_condition=tasks.StoppingCondition(max_runtime=MAX_TRAINING_TIME),
            result_selector={
                "jobName.$": "$.TrainingJobName",
                "status.$": "$.TrainingJobStatus",
                "modelArtifacts.$": "$.ModelArtifacts.S3ModelArtifacts",
            },
            result_path="$.training",
        )
        failed = sfn.Fail(
            self,
            "TrainingFailed",
            error="TrainingFailed",
            cause="the SageMaker training job did not complete; see its CloudWatch logs",
        )
        train.add_catch(failed, errors=[sfn.Errors.ALL], result_path="$.error")
        record = sfn.Pass(
            self,
            "RecordCandidateModel",
            comment="The execution's output names the candidate model for review and promotion",
            parameters={
                "candidateModel.$": "$.training.modelArtifacts",
                "trainingJob.$": "$.training.jobName",
                "execution.$": "$$.Execution.Id",
            },
        )
        completed = (
            sfn.Choice(self, "Completed?")
            .when(sfn.Condition.string_equals("$.training.status", "Completed"), record)
            .otherwise(failed)
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(train.next(completed)),
            timeout=MAX_TRAINING_TIME.plus(Duration.hours(1)),
            logs=sfn.LogOptions(
                destination=logs.LogGroup(
                    self,
                    "StateMachineLogs",
                    retention=logs.RetentionDays.THREE_MONTHS,
                    removal_policy=RemovalPolicy.DESTROY,
                ),
                level=sfn.LogLevel.ERROR,
            ),
        )
        self.schedule = events.Rule(
            self,
            "WeeklySchedule",
            description="esml: retrain while the market is closed (Sunday 12:00 UTC)",
            schedule=SCHEDULE,
            targets=[
                targets.SfnStateMachine(
                    self.state_machine,
                    input=events.RuleTargetInput.from_object({"trigger": "weekly-schedule"}),
                )
            ],
        )

    def _training_role(self) -> iam.Role:
        """Only what a training job does: pull its image (granted by the image asset), read
        data/, write models/ (granted by the task's S3 locations), log and emit metrics."""
        stack = Stack.of(self)
        log_group = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name="/aws/sagemaker/TrainingJobs",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        return iam.Role(
            self,
            "SageMakerExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="esml training jobs: bucket data/ and models/ only",
            inline_policies={
                "TrainingJob": iam.PolicyDocument(
                    statements=[
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
                )
            },
        )
