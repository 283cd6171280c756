"""The state that outlives every deploy: DynamoDB tables and the model bucket."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from constructs import Construct

from esml_cdk.nag import acknowledge

DATA_PREFIX = "data/"
"""Training input: the live engine's recorded market data (and anything a person uploads);
the retraining jobs' `data` channel reads everything under it."""
MODEL_PREFIX = "models/"
"""The champion bundles and the `champion` pointer the tick engine follows; only the
retraining state machine's promote job writes here."""


class DataStore(Construct):
    """Orders and fills are the audit trail: retained and protected from deletion. The
    idempotency table holds only short-lived de-duplication records and goes with the stack."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.orders = self._table("Orders", "client_id", RemovalPolicy.RETAIN)
        self.fills = self._table("Fills", "fill_id", RemovalPolicy.RETAIN)
        self.risk_state = self._table("RiskState", "account", RemovalPolicy.RETAIN)
        self.idempotency = self._table(
            "Idempotency", "id", RemovalPolicy.DESTROY, ttl_attribute="expiration"
        )
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            removal_policy=RemovalPolicy.RETAIN,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
        )
        acknowledge(
            self.access_logs,
            "AwsSolutions-S1",
            None,
            "the access-log bucket itself: logging its own writes would loop",
        )
        self.model_bucket = s3.Bucket(
            self,
            "ModelBucket",
            versioned=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            removal_policy=RemovalPolicy.RETAIN,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="model-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    noncurrent_version_expiration=Duration.days(90),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
        )

    def _table(
        self,
        construct_id: str,
        partition_key: str,
        removal_policy: RemovalPolicy,
        ttl_attribute: str | None = None,
    ) -> dynamodb.Table:
        return dynamodb.Table(
            self,
            construct_id,
            partition_key=dynamodb.Attribute(
                name=partition_key, type=dynamodb.AttributeType.STRING
            ),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=ttl_attribute,
            removal_policy=removal_policy,
            deletion_protection=removal_policy == RemovalPolicy.RETAIN,
        )
