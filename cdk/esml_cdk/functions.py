"""One way to define an esml Lambda: its folder's handler, the shared layer, its own log
group, X-Ray tracing and the Powertools service name the metric names module expects."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from esml_cdk.bundling import ARCHITECTURE, RUNTIME, function_code
from esml_cdk.metric_names import NAMESPACE
from esml_cdk.nag import acknowledge_lambda_basics


def esml_function(
    scope: Construct,
    construct_id: str,
    *,
    repo_root: Path,
    folder: str,
    layer: lambda_.ILayerVersion,
    timeout: Duration,
    environment: dict[str, str],
    service: str | None = None,
    memory_size: int = 512,
) -> lambda_.Function:
    """`lambdas/<folder>/handler.lambda_handler`, traced and logged for a month."""
    function = lambda_.Function(
        scope,
        construct_id,
        runtime=RUNTIME,
        architecture=ARCHITECTURE,
        handler="handler.lambda_handler",
        code=function_code(repo_root, folder),
        layers=[layer],
        timeout=timeout,
        memory_size=memory_size,
        log_group=log_group(scope, f"{construct_id}Logs"),
        tracing=lambda_.Tracing.ACTIVE,
        environment={
            **environment,
            "POWERTOOLS_SERVICE_NAME": service or f"esml-{folder}",
            "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
        },
        description=f"esml {folder} (lambdas/{folder})",
    )
    acknowledge_lambda_basics(function)
    return function


def log_group(
    scope: Construct,
    construct_id: str,
    retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
) -> logs.LogGroup:
    """A log group with a retention, removed with the stack (logs are not the audit trail:
    the journal's tables are)."""
    return logs.LogGroup(
        scope, construct_id, retention=retention, removal_policy=RemovalPolicy.DESTROY
    )
