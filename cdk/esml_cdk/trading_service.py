"""The tick engine on ECS Fargate: one task, always, and never two.

Networking: the task needs outbound internet (Tradovate's REST and WebSocket APIs) and no
inbound at all. Public subnets with a public IP and a security group without ingress rules
give exactly that with no NAT gateway, which would cost more per month than the task
itself; S3 and DynamoDB traffic goes through free gateway endpoints instead.

The container runs `esml live` from its environment (`containers/tick_engine/main.py`):
the market source, the broker (paper first, then Tradovate demo, then live), the contract,
what SIGTERM does, the tables (the journal and the shared account every order is reserved
on, in process: the task never invokes the risk Lambda) and the credentials secret. The
market data it receives is kept in hourly files under the bucket's data prefix (`live/`),
for retraining. Its EMF metrics feed four alarms: stale market data, broker errors, a
position that differs from the broker's, and the daily loss limit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from esml.config import EsmlConfig, load_config
from esml_cdk.data import DATA_PREFIX, MODEL_PREFIX, DataStore

TICK_ENGINE_DOCKERFILE = "containers/tick_engine/Dockerfile"
METRICS_NAMESPACE = "esml"


@dataclass(frozen=True)
class EngineSettings:
    """What the tick engine trades and how (the container's ESML_* settings)."""

    source: str = "tradovate"  # Tradovate's md socket
    broker: str = "paper"  # paper (live data, simulated fills) until switched to tradovate
    symbol: str | None = None  # the contract; None: the instrument's front month
    strategy: str = "model"
    on_stop: str = "flatten"  # or "leave": SIGTERM leaves the exchange-held bracket
    lockout_s: float = 10.0
    stale_data_s: float = 30.0  # the stale-data alarm's threshold
    tradovate_ws_url: str | None = None
    tradovate_md_url: str | None = None


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
        engine: EngineSettings | None = None,
    ) -> None:
        """`risk_function` is the alerts' path; the engine runs the same gate code in
        process on the same table and is not granted to invoke it."""
        super().__init__(scope, construct_id)
        engine = engine or EngineSettings()
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
            "TRADOVATE_SECRET_ARN": tradovate_secret.secret_arn,
            "ESML_SOURCE": engine.source,
            "ESML_BROKER": engine.broker,
            "ESML_STRATEGY": engine.strategy,
            "ESML_ON_STOP": engine.on_stop,
            "ESML_LOCKOUT_S": f"{engine.lockout_s:g}",
            "ESML_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "ESML_CAPTURE_DIR": "/app/runs/capture",  # hourly files, uploaded as they close
            "DATA_PREFIX": DATA_PREFIX,
        }
        optional = {
            "ESML_SYMBOL": engine.symbol,
            "ESML_CONFIG": esml_config_json,
            "ESML_TRADOVATE_REST": tradovate_base_url,
            "ESML_TRADOVATE_WS": engine.tradovate_ws_url,
            "ESML_TRADOVATE_MD": engine.tradovate_md_url,
        }
        environment.update({k: v for k, v in optional.items() if v})
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
            health_check=ecs.HealthCheck(
                command=["CMD", "python", "containers/tick_engine/health.py"],
                interval=Duration.seconds(30),
                timeout=Duration.seconds(5),
                retries=3,
                start_period=Duration.seconds(300),  # model load, warm-up, reconciliation
            ),
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
        data.model_bucket.grant_read(task.task_role, f"{MODEL_PREFIX}*")
        data.model_bucket.grant_put(task.task_role, f"{DATA_PREFIX}live/*")  # captured data
        data.model_bucket.grant_read(task.task_role, f"{DATA_PREFIX}live/*")  # its warm start
        for table in (data.orders, data.fills, data.risk_state):
            table.grant_read_write_data(task.task_role)
        tradovate_secret.grant_read(task.task_role)
        self.alarms = self._alarms(engine, engine_config(esml_config_json))

    def _alarms(self, engine: EngineSettings, cfg: EsmlConfig) -> dict[str, cloudwatch.Alarm]:
        """Alarms on the engine's EMF metrics (no actions here: the monitoring construct
        routes alarms to its topic). The daily-loss threshold and the `Instrument`
        dimension come from `cfg`, the config the container trades with (its ESML_CONFIG),
        so the alarm watches the limit the engine enforces, under the name it emits."""

        def metric(name: str, stat: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace=METRICS_NAMESPACE, metric_name=name, statistic=stat,
                period=Duration.minutes(1),
                dimensions_map={"Service": "tick-engine", "Instrument": cfg.instrument},
            )  # fmt: skip

        above = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
        specs = {
            "StaleData": ("DataAge", "Maximum", engine.stale_data_s, above, 3,
                          "no market data for longer than the threshold"),
            "BrokerErrors": ("BrokerErrors", "Sum", 0, above, 3,
                             "the broker's news could not be read"),
            "PositionMismatch": ("PositionMismatch", "Maximum", 0, above, 2,
                                 "the engine's position differs from the broker's"),
            "DailyLoss": ("RealizedPnL", "Minimum", -cfg.risk.max_daily_loss,
                          cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD, 1,
                          "today's realised loss reached the daily limit"),
        }  # fmt: skip
        missing = cloudwatch.TreatMissingData
        alarms = {}
        for name, (m, stat, threshold, op, periods, why) in specs.items():
            alarms[name] = cloudwatch.Alarm(
                self, f"{name}Alarm", metric=metric(m, stat), threshold=threshold,
                comparison_operator=op, evaluation_periods=periods,
                alarm_description=f"esml tick engine: {why}",
                # silence is stale data; for the others it is nothing to report
                treat_missing_data=missing.BREACHING if name == "StaleData"
                else missing.NOT_BREACHING,
            )  # fmt: skip
        return alarms


def engine_config(esml_config_json: str | None) -> EsmlConfig:
    """The config the container loads from its ESML_CONFIG (`containers/tick_engine/main.py`):
    the same JSON, the same loader, the defaults when the stack passes none."""
    return load_config(**json.loads(esml_config_json or "{}"))
