"""cdk-nag (AwsSolutions pack, cdk-nag 3) acknowledgments, each with its written reason.

A finding is acknowledged on the construct it is reported on, or on one above it (an
acknowledgment applies to the construct's whole subtree), with the exact finding text
cdk-nag prints ("AwsSolutions-IAM5[Resource::...]"), so a new wildcard is a new,
unacknowledged finding and fails the test that runs the pack (tests/test_cdk.py).
"""

from __future__ import annotations

import aws_cdk as cdk
from constructs import IConstruct

PLUGIN = "AwsSolutions"


def acknowledge(construct: IConstruct, rule: str, finding: str | None, reason: str) -> None:
    """Acknowledge `rule` (with its `finding` detail, for granular rules) under `construct`."""
    rule_id = f"{rule}[{finding}]" if finding else rule
    cdk.Validations.of(construct).acknowledge(
        cdk.Acknowledgment(id=f"{PLUGIN}::{rule_id}", reason=reason)
    )


def logical_id(construct: IConstruct) -> str:
    """The logical id of a construct's resource, as a finding names it (`<Id.Arn>`)."""
    return cdk.Stack.of(construct).get_logical_id(construct.node.default_child)  # type: ignore[arg-type]


def acknowledge_lambda_basics(function: IConstruct) -> None:
    """What every esml Lambda's role carries from CDK: logging and X-Ray tracing."""
    acknowledge(
        function,
        "AwsSolutions-IAM4",
        "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        "the AWS-managed Lambda logging policy (CreateLogStream, PutLogEvents): the "
        "function logs to its own log group, created by the stack",
    )
    acknowledge(
        function,
        "AwsSolutions-IAM5",
        "Resource::*",
        "xray:PutTraceSegments and xray:PutTelemetryRecords (active tracing) have no "
        "resource-level permissions",
    )


def acknowledge_stack_findings(stack: cdk.Stack) -> None:
    """Findings on constructs defined elsewhere (the order path's grants, the tick engine's
    task, owned by its own module), acknowledged here with the reason for each."""
    functions, trading, data = stack.functions, stack.trading, stack.data  # type: ignore[attr-defined]
    for caller, callee in ((functions.webhook, functions.risk), (functions.risk, functions.router)):
        acknowledge(
            caller,
            "AwsSolutions-IAM5",
            f"Resource::<{logical_id(callee)}.Arn>:*",
            "lambda:InvokeFunction on the function and its versions/aliases (grantInvoke): "
            "one function, never another",
        )  # fmt: skip
    acknowledge(
        functions.tradovate_secret,
        "AwsSolutions-SMG4",
        None,
        "Tradovate issues these API credentials (name, password, cid, sec); they can only "
        "be changed at Tradovate, by the account holder, and then pasted here",
    )
    task = trading.service.task_definition
    acknowledge(
        task,
        "AwsSolutions-ECS2",
        None,
        "the environment holds resource names and the model prefix only; the Tradovate "
        "credentials come from Secrets Manager at run time",
    )
    acknowledge(
        task.execution_role,
        "AwsSolutions-IAM5",
        "Resource::*",
        "ecr:GetAuthorizationToken (pulling the tick engine image) has no resource-level "
        "permission",
    )
    for action in ("s3:GetBucket*", "s3:GetObject*", "s3:List*"):
        acknowledge(
            task.task_role,
            "AwsSolutions-IAM5",
            f"Action::{action}",
            "read-only access (bucket.grantRead) to the model bucket's models/ prefix: the "
            "engine follows the champion pointer and downloads the bundle it names",
        )
    acknowledge(
        task.task_role,
        "AwsSolutions-IAM5",
        f"Resource::<{logical_id(data.model_bucket)}.Arn>/models/*",
        "the champion bundles and pointer, read-only",
    )
    acknowledge(
        task.task_role,
        "AwsSolutions-IAM5",
        "Action::s3:Abort*",
        "bucket.grantPut on the captured market data: s3:AbortMultipartUpload of an hourly "
        "file's interrupted upload, nothing else",
    )
    acknowledge(
        task.task_role,
        "AwsSolutions-IAM5",
        f"Resource::<{logical_id(data.model_bucket)}.Arn>/data/live/*",
        "put and read (bucket.grantPut, grantRead) under data/live/ only: the hourly stores "
        "of market data the engine received, for retraining and its own warm start; the "
        "champion under models/ stays read-only",
    )
