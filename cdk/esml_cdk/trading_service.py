"""The tick engine on ECS Fargate: one task, always, and never two.

Networking: the task needs outbound internet (Tradovate's REST and WebSocket APIs) and no
inbound at all. Public subnets with a public IP and a security group without ingress rules
give exactly that with no NAT gateway, which would cost more per month than the task
itself; S3 and DynamoDB traffic goes through free gateway endpoints instead.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from esml_cdk.data import MODEL_PREFIX, DataStore

TICK_ENGINE_DOCKERFILE = "containers/tick_engine/Dockerfile"


class TradingService(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        repo_root: Path,
        data: DataStore,
        risk_function: lambda_.IFunction,
        tradovate_secret: secretsmanager.ISecret,
        esml_config_json: str | None,
        tradovate_base_url: str | None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24
                )
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDB": ec2.GatewayVpcEndpointOptions(
                    service=ec2.GatewayVpcEndpointAwsService.DYNAMODB
                ),
            },
        )
        self.cluster = ecs.Cluster(
            self, "Cluster", vpc=self.vpc, container_insights_v2=ecs.ContainerInsights.ENABLED
        )
        task = ecs.FargateTaskDefinition(
            self,
            "TickEngineTask",
            cpu=1024,
            memory_limit_mib=2048,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        log_group = logs.LogGroup(
            self,
            "TickEngineLogs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=RemovalPolicy.DESTROY,
        )
        environment = {
            "ORDERS_TABLE": data.orders.table_name,
            "FILLS_TABLE": data.fills.table_name,
            "RISK_STATE_TABLE": data.risk_state.table_name,
            "MODEL_BUCKET": data.model_bucket.bucket_name,
            "MODEL_PREFIX": MODEL_PREFIX,
            "RISK_FUNCTION_NAME": risk_function.function_name,
            "TRADOVATE_SECRET_ARN": tradovate_secret.secret_arn,
        }
        if esml_config_json:
            environment["ESML_CONFIG"] = esml_config_json
        if tradovate_base_url:
            environment["TRADOVATE_BASE_URL"] = tradovate_base_url
        task.add_container(
            "TickEngine",
            image=ecs.ContainerImage.from_asset(
                str(repo_root),
                file=TICK_ENGINE_DOCKERFILE,
                platform=ecr_assets.Platform.LINUX_AMD64,
                # Training code is not in this image: editing it must not restart trading.
                exclude=["training", "containers/training"],
            ),
            environment=environment,
            logging=ecs.LogDrivers.aws_logs(stream_prefix="tick-engine", log_group=log_group),
            # Fargate's maximum: time to persist state and leave the broker flat on SIGTERM.
            stop_timeout=Duration.seconds(120),
        )
        security_group = ec2.SecurityGroup(
            self,
            "TickEngineSecurityGroup",
            vpc=self.vpc,
            description="esml tick engine: outbound only, nothing may connect in",
            allow_all_outbound=True,
        )
        # One writer: desired 1, and a deploy stops the old task before starting the new
        # one (min 0 %, max 100 %), so two tick loops never trade at the same time.
        self.service = ecs.FargateService(
            self,
            "TickEngine",
            cluster=self.cluster,
            task_definition=task,
            desired_count=1,
            min_healthy_percent=0,
            max_healthy_percent=100,
            assign_public_ip=True,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            security_groups=[security_group],
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
        )
        risk_function.grant_invoke(task.task_role)
        data.model_bucket.grant_read(task.task_role, f"{MODEL_PREFIX}*")
        for table in (data.orders, data.fills, data.risk_state):
            table.grant_read_write_data(task.task_role)
        tradovate_secret.grant_read(task.task_role)
