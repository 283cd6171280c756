"""The hourly drift check (lambdas/drift) and the metrics it publishes.

A container-image Lambda from the training image (the same Dockerfile and build context,
so the same image: Docker builds it once per deploy), run by an hourly EventBridge rule.
It reads the orders table (journaled signals), models/ (the champion) and data/ (the
recorded market data), and writes only metrics.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from esml_cdk import metric_names as names
from esml_cdk.data import DATA_PREFIX, MODEL_PREFIX
from esml_cdk.functions import log_group
from esml_cdk.nag import acknowledge, acknowledge_lambda_basics, logical_id
from esml_cdk.retraining import TRAINING_IMAGE, list_whole_bucket

DRIFT_PERIOD = Duration.hours(1)


class Drift(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        repo_root: Path,
        bucket: s3.IBucket,
        orders: dynamodb.ITable,
        fills: dynamodb.ITable,
        window_hours: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.function = lambda_.DockerImageFunction(
            self,
            "Check",
            code=lambda_.DockerImageCode.from_image_asset(
                str(repo_root),
                **TRAINING_IMAGE,
                entrypoint=["python", "-m", "awslambdaric"],
                cmd=["lambdas.drift.handler.lambda_handler"],
            ),
            architecture=lambda_.Architecture.X86_64,
            memory_size=3008,
            timeout=Duration.minutes(10),
            log_group=log_group(self, "Logs"),
            tracing=lambda_.Tracing.ACTIVE,
            description="esml drift check (lambdas/drift): live signals vs realised outcomes",
            environment={
                "ORDERS_TABLE": orders.table_name,
                "FILLS_TABLE": fills.table_name,
                "MODEL_BUCKET": bucket.bucket_name,
                "MODEL_PREFIX": MODEL_PREFIX,
                "DATA_PREFIX": DATA_PREFIX,
                "WINDOW_HOURS": str(window_hours),
                # numba caches compiled kernels beside its modules; only /tmp is writable
                "NUMBA_CACHE_DIR": "/tmp/numba-cache",
                "POWERTOOLS_SERVICE_NAME": names.DRIFT_SERVICE,
                "POWERTOOLS_METRICS_NAMESPACE": names.NAMESPACE,
            },
        )
        acknowledge_lambda_basics(self.function)
        role = self.function.role
        assert role is not None
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["dynamodb:Scan", "dynamodb:GetItem"], resources=[orders.table_arn]
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[bucket.arn_for_objects(f"{p}*") for p in (DATA_PREFIX, MODEL_PREFIX)],
            )
        )
        role.add_to_principal_policy(list_whole_bucket(bucket))
        bucket_id = logical_id(bucket)
        for prefix in (DATA_PREFIX, MODEL_PREFIX):
            acknowledge(
                role,
                "AwsSolutions-IAM5",
                f"Resource::<{bucket_id}.Arn>/{prefix}*",
                f"reads the recorded data and the champion: objects under {prefix} only",
            )
        self.schedule = events.Rule(
            self,
            "Hourly",
            description="esml: hourly drift check of the champion",
            schedule=events.Schedule.rate(DRIFT_PERIOD),
            targets=[targets.LambdaFunction(self.function, retry_attempts=0)],
        )

    def metric(self, name: str, statistic: str = "Maximum") -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=names.NAMESPACE,
            metric_name=name,
            dimensions_map={names.SERVICE_DIMENSION: names.DRIFT_SERVICE},
            statistic=statistic,
            period=DRIFT_PERIOD,
            label=name,
        )
