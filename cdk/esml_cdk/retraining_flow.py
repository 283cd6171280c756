"""The retraining state machine's definition, in two variants built by one function.

    name the run -> train -> evaluate -> verdict -> Choice -> promote | keep as rejected
                                                                  \\-> record the run -> publish
                                                                      the outcome -> Succeed | Fail

Each SageMaker job (train, evaluate, promote: the training image run with a different
`esml_step`) is one `createTrainingJob.sync` task in the deployed variant ("sync"). The
"poll" variant runs the very same request as `aws-sdk:sagemaker:createTrainingJob`, then
waits and asks `describeTrainingJob` until the job ends: the states around it, the Choice
and every Catch are the same objects, so a test that executes the poll variant (moto runs
aws-sdk tasks, not `.sync` ones) executes the deployed logic.

Every path ends in one row of the runs table and one `RetrainingRun` metric with the
run's outcome; the failed outcomes then end the execution as failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aws_cdk import Duration
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from esml_cdk.data import DATA_PREFIX, MODEL_PREFIX
from esml_cdk.metric_names import (
    NAMESPACE,
    OUTCOME_DIMENSION,
    RETRAINING_RUN,
    RETRAINING_SERVICE,
    SERVICE_DIMENSION,
)

Variant = Literal["sync", "poll"]
CHALLENGER_PREFIX = "retraining/challengers/"
"""Training jobs write here (and only here): a challenger is kept whatever its verdict."""
EVALUATION_PREFIX = "retraining/evaluations/"
PROMOTION_PREFIX = "retraining/promotions/"
JOB_PREFIXES = {"train": "esml-train-", "evaluate": "esml-evaluate-", "promote": "esml-promote-"}
"""SageMaker job names: these plus the run's UUID (at most 50 of SageMaker's 63 characters)."""
STEP_HYPERPARAMETER = "esml_step"
JOB_METRICS = {
    "train": [f"heldout:ensemble_{m}" for m in ("accuracy", "macro_f1", "log_loss", "brier")],
    "evaluate": ["evaluation:promote"],
    "promote": [],
}
"""What SageMaker parses from each job's log (training/retrain_steps.py prints `name=value;`)
into CloudWatch: the challenger's held-out scores, and the evaluation's decision (1 promote)."""
SUCCEEDED_OUTCOMES = ("promoted", "rejected")
_RUNNING = ("InProgress", "Stopping")


@dataclass(frozen=True)
class FlowTargets:
    """What the definition names: CDK tokens in the stack, plain strings in tests."""

    bucket: str
    training_image: str
    train_role_arn: str
    evaluate_role_arn: str
    promote_role_arn: str
    verdict_function_arn: str
    runs_table: str
    instance_type: str = "ml.m5.xlarge"
    max_runtime: Duration = field(default_factory=lambda: Duration.hours(4))
    evaluation_hyperparameters: Mapping[str, str] = field(default_factory=dict)
    """The promotion policy (metrics and margins) the evaluation job judges with."""


def retraining_definition(
    scope: Construct, targets: FlowTargets, variant: Variant, *, poll_seconds: int = 60
) -> sfn.IChainable:
    """The whole flow under `scope`; `poll_seconds` is the poll variant's wait."""
    b = _Builder(scope, targets, variant, poll_seconds)
    record = b.record_chain()
    training_failed = b.failure("Training failed", "training_failed", reached="train")
    evaluation_failed = b.failure("Evaluation failed", "evaluation_failed", reached="evaluate")
    promotion_failed = b.failure("Promotion failed", "promotion_failed", reached="promote")
    for state in (training_failed, evaluation_failed, promotion_failed):
        state.next(record)

    name_run = sfn.Pass(
        scope,
        "Name the run",
        parameters={
            "id.$": "States.UUID()",
            "execution.$": "$$.Execution.Id",
            "startedAt.$": "$$.State.EnteredTime",  # the execution's first state
        },
        result_path="$.run",
    )
    promoted = b.outcome("Promoted", "promoted").next(record)
    rejected = b.outcome("Keep the challenger as rejected", "rejected").next(record)
    promote = b.job("promote", "Promote", _promote_request(targets), promotion_failed, promoted)
    verdict = sfn.CustomState(
        scope,
        "Verdict",
        state_json={
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {
                "FunctionName": targets.verdict_function_arn,
                "Payload": {"report.$": "$.evaluate.modelArtifacts"},
            },
            "ResultSelector": {
                "decision.$": "$.Payload.decision",
                "summary.$": "$.Payload.summary",
            },
            "ResultPath": "$.verdict",
        },
    )
    verdict.add_retry(
        errors=["Lambda.ServiceException", "Lambda.TooManyRequestsException"],
        max_attempts=3,
        interval=Duration.seconds(2),
    )
    verdict.add_catch(evaluation_failed, errors=[sfn.Errors.ALL], result_path="$.error")
    verdict.next(
        sfn.Choice(scope, "Beats the champion and the baselines?")
        .when(sfn.Condition.string_equals("$.verdict.decision", "promote"), promote)
        .otherwise(rejected)
    )
    evaluate = b.job("evaluate", "Evaluate", _evaluate_request(targets), evaluation_failed, verdict)
    train = b.job("train", "Train", _train_request(targets), training_failed, evaluate)
    return name_run.next(train)


class _Builder:
    def __init__(
        self, scope: Construct, targets: FlowTargets, variant: Variant, poll_seconds: int
    ) -> None:
        self.scope = scope
        self.targets = targets
        self.variant = variant
        self.poll_seconds = poll_seconds

    def job(
        self,
        step: str,
        label: str,
        request: dict[str, Any],
        on_failure: sfn.IChainable,
        then: sfn.IChainable,
    ) -> sfn.IChainable:
        """A SageMaker job whose result lands in `$.<step>` as {jobName, status,
        modelArtifacts}; any failure goes to `on_failure` with `$.error` {Error, Cause}."""
        request = {
            **request,
            "TrainingJobName.$": f"States.Format('{JOB_PREFIXES[step]}{{}}', $.run.id)",
        }
        selector = {
            "jobName.$": "$.TrainingJobName",
            "status.$": "$.TrainingJobStatus",
            "modelArtifacts.$": "$.ModelArtifacts.S3ModelArtifacts",
        }
        if self.variant == "sync":
            task = self._task(
                label,
                "arn:aws:states:::sagemaker:createTrainingJob.sync",
                request,
                ResultSelector=selector,
                ResultPath=f"$.{step}",
            )
            task.add_catch(on_failure, errors=[sfn.Errors.ALL], result_path="$.error")
            return task.next(then)
        create = self._task(
            label,
            "arn:aws:states:::aws-sdk:sagemaker:createTrainingJob",
            request,
            ResultPath="$.created",  # a JSON null here would be dropped from the ASL
        )
        wait = sfn.Wait(
            self.scope,
            f"{label}: wait",
            time=sfn.WaitTime.duration(Duration.seconds(self.poll_seconds)),
        )
        describe = self._task(
            f"{label}: status",
            "arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob",
            {"TrainingJobName.$": f"States.Format('{JOB_PREFIXES[step]}{{}}', $.run.id)"},
            # Only what every answer has (a path that matches nothing is a runtime error).
            ResultSelector={"name.$": "$.TrainingJobName", "status.$": "$.TrainingJobStatus"},
            ResultPath="$.describe",
        )
        why = self._task(
            f"{label}: why",
            "arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob",
            {"TrainingJobName.$": "$.describe.name"},
            ResultSelector={
                "Error": f"{label}JobFailed",
                "Cause.$": "States.Format('{} failed: {}', $.TrainingJobName, $.FailureReason)",
            },
            ResultPath="$.error",
        )
        for task in (create, describe, why):
            task.add_catch(on_failure, errors=[sfn.Errors.ALL], result_path="$.error")
        why.next(on_failure)
        completed = sfn.Pass(
            self.scope,
            f"{label}: completed",
            parameters={
                "jobName.$": "$.describe.name",
                "status.$": "$.describe.status",
                # SageMaker's documented layout of a job's model archive.
                "modelArtifacts.$": f"States.Format('{request['OutputDataConfig']['S3OutputPath']}"
                "{}/output/model.tar.gz', $.describe.name)",
            },
            result_path=f"$.{step}",
        )
        stopped = sfn.Pass(
            self.scope,
            f"{label}: stopped",
            parameters={
                "Error": f"{label}JobStopped",
                "Cause.$": "States.Format('{} ended {}', $.describe.name, $.describe.status)",
            },
            result_path="$.error",
        )
        stopped.next(on_failure)
        create.next(wait).next(describe).next(
            sfn.Choice(self.scope, f"{label}: done?")
            .when(
                sfn.Condition.or_(
                    *(sfn.Condition.string_equals("$.describe.status", s) for s in _RUNNING)
                ),
                wait,
            )
            .when(
                sfn.Condition.string_equals("$.describe.status", "Completed"), completed.next(then)
            )
            .when(sfn.Condition.string_equals("$.describe.status", "Failed"), why)
            .otherwise(stopped)
        )
        return create

    def _task(self, label: str, resource: str, parameters: dict[str, Any], **fields: Any):
        return sfn.CustomState(
            self.scope,
            label,
            state_json={"Type": "Task", "Resource": resource, "Parameters": parameters, **fields},
        )

    def outcome(self, label: str, outcome: str) -> sfn.Pass:
        return sfn.Pass(
            self.scope,
            label,
            parameters={
                "outcome": outcome,
                "detail.$": "$.verdict.summary",
                "challenger.$": "$.train.modelArtifacts",
                "report.$": "$.evaluate.modelArtifacts",
            },
            result_path="$.record",
        )

    def failure(self, label: str, outcome: str, *, reached: str) -> sfn.Pass:
        """The record of a run that failed in step `reached`: what it made before is named."""
        made = {"challenger": "$.train.modelArtifacts", "report": "$.evaluate.modelArtifacts"}
        kept = {"train": (), "evaluate": ("challenger",), "promote": ("challenger", "report")}
        parameters = {"outcome": outcome, "detail.$": "$.error.Cause"}
        for key, path in made.items():
            if key in kept[reached]:
                parameters[f"{key}.$"] = path
            else:
                parameters[key] = "-"
        return sfn.Pass(self.scope, label, parameters=parameters, result_path="$.record")

    def record_chain(self) -> sfn.IChainable:
        """One runs-table row and one metric per run, then the execution's own verdict."""
        put = self._task(
            "Record the run",
            "arn:aws:states:::dynamodb:putItem",
            {
                "TableName": self.targets.runs_table,
                "Item": {
                    "run_id": {"S.$": "$.run.id"},
                    "started_at": {"S.$": "$.run.startedAt"},
                    "finished_at": {"S.$": "$$.State.EnteredTime"},
                    "execution": {"S.$": "$.run.execution"},
                    "outcome": {"S.$": "$.record.outcome"},
                    "detail": {"S.$": "$.record.detail"},
                    "challenger": {"S.$": "$.record.challenger"},
                    "report": {"S.$": "$.record.report"},
                },
            },
            ResultPath="$.recorded",
        )
        publish = self._task(
            "Publish the outcome",
            "arn:aws:states:::aws-sdk:cloudwatch:putMetricData",
            {
                "Namespace": NAMESPACE,
                "MetricData": [
                    {
                        "MetricName": RETRAINING_RUN,
                        "Dimensions": [
                            {"Name": SERVICE_DIMENSION, "Value": RETRAINING_SERVICE},
                            {"Name": OUTCOME_DIMENSION, "Value.$": "$.record.outcome"},
                        ],
                        "Value": 1,
                        "Unit": "Count",
                    }
                ],
            },
            ResultPath="$.published",
        )
        for task in (put, publish):
            task.add_retry(errors=[sfn.Errors.ALL], max_attempts=3, interval=Duration.seconds(2))
        succeeded = sfn.Condition.or_(
            *(sfn.Condition.string_equals("$.record.outcome", o) for o in SUCCEEDED_OUTCOMES)
        )
        return put.next(publish).next(
            sfn.Choice(self.scope, "Run succeeded?")
            .when(succeeded, sfn.Succeed(self.scope, "Done"))
            .otherwise(
                sfn.Fail(
                    self.scope,
                    "Retraining failed",
                    error="RetrainingFailed",
                    cause="a retraining step failed: see the runs table and the job's logs",
                )
            )
        )


def _job_request(
    targets: FlowTargets,
    role_arn: str,
    step: str,
    output_prefix: str,
    channels: list[dict[str, Any]],
    hyperparameters: Mapping[str, str],
) -> dict[str, Any]:
    """CreateTrainingJob's request as the API spells it (both variants send exactly this)."""
    return {
        "AlgorithmSpecification": {
            "TrainingImage": targets.training_image,
            "TrainingInputMode": "File",
            "MetricDefinitions": [
                {"Name": name, "Regex": rf"{name}=([-+0-9.eE]+);"} for name in JOB_METRICS[step]
            ],
        },
        "RoleArn": role_arn,
        "HyperParameters": {STEP_HYPERPARAMETER: step, **hyperparameters},
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": f"s3://{targets.bucket}/{output_prefix}"},
        "ResourceConfig": {
            "InstanceCount": 1,
            "InstanceType": targets.instance_type,
            "VolumeSizeInGB": 30,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": targets.max_runtime.to_seconds()},
    }


def _channel(name: str, uri: str | None = None, uri_path: str | None = None) -> dict[str, Any]:
    source: dict[str, Any] = {"S3DataType": "S3Prefix", "S3DataDistributionType": "FullyReplicated"}
    if uri_path is not None:
        source["S3Uri.$"] = uri_path
    else:
        source["S3Uri"] = uri
    return {"ChannelName": name, "DataSource": {"S3DataSource": source}}


def _train_request(targets: FlowTargets) -> dict[str, Any]:
    data = _channel("data", f"s3://{targets.bucket}/{DATA_PREFIX}")
    return _job_request(targets, targets.train_role_arn, "train", CHALLENGER_PREFIX, [data], {})


def _evaluate_request(targets: FlowTargets) -> dict[str, Any]:
    channels = [
        _channel("data", f"s3://{targets.bucket}/{DATA_PREFIX}"),
        _channel("challenger", uri_path="$.train.modelArtifacts"),
    ]
    hyperparameters = {
        "bucket": targets.bucket,
        "models_prefix": MODEL_PREFIX,
        **targets.evaluation_hyperparameters,
    }
    return _job_request(
        targets, targets.evaluate_role_arn, "evaluate", EVALUATION_PREFIX, channels,
        hyperparameters,
    )  # fmt: skip


def _promote_request(targets: FlowTargets) -> dict[str, Any]:
    channels = [_channel("challenger", uri_path="$.train.modelArtifacts")]
    hyperparameters = {"bucket": targets.bucket, "models_prefix": MODEL_PREFIX}
    return _job_request(
        targets, targets.promote_role_arn, "promote", PROMOTION_PREFIX, channels, hyperparameters
    )
