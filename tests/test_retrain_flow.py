"""The retraining state machine executed by moto's Step Functions, on every branch.

The definition is the deployed one's poll variant (same states, Choice and Catches; each
`.sync` SageMaker task becomes create, wait, describe). moto runs the aws-sdk SageMaker,
DynamoDB and CloudWatch tasks against its own services. Two things moto cannot do are
done here, and only these: a SageMaker job's work (moto completes every job at once and
writes nothing), which `JobRunner` plays by writing each job's output archive (or
failing it, as the scenario asks); and running a Lambda's code (moto needs Docker for
that), which the simple Lambda backend is pointed at: the state machine's payload goes to
the real verdict handler, in this process, against moto's S3.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import SageMakerModelBackend

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk import aws_stepfunctions as sfn

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "cdk"))

from esml_cdk.metric_names import NAMESPACE, RETRAINING_RUN  # noqa: E402
from esml_cdk.retraining_flow import FlowTargets, retraining_definition  # noqa: E402

from lambdas.retrain_verdict import handler as verdict_handler  # noqa: E402

REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "esml-models"
RUNS_TABLE = "esml-retraining-runs"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/esml-test"


def poll_definition() -> str:
    stack = cdk.Stack(cdk.App(), "FlowUnderTest")
    targets = FlowTargets(
        bucket=BUCKET,
        training_image=f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/esml-training:test",
        train_role_arn=f"{ROLE}-train",
        evaluate_role_arn=f"{ROLE}-evaluate",
        promote_role_arn=f"{ROLE}-promote",
        verdict_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:esml-verdict",
        runs_table=RUNS_TABLE,
        evaluation_hyperparameters={"promotion_metrics": "log_loss,brier"},
    )
    chain = retraining_definition(stack, targets, "poll", poll_seconds=0)
    return json.dumps(sfn.StateGraph(chain.start_state, "retraining").to_graph_json())


DEFINITION = poll_definition()


def archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


@dataclass
class JobRunner:
    """Plays SageMaker's part: what each created job would have written, or how it fails."""

    decision: str = "promote"
    fail_step: str | None = None
    refuse_evaluation: bool = False
    created: list[dict[str, Any]] = field(default_factory=list)

    def create(self, backend: SageMakerModelBackend, **request: Any) -> Any:
        step = request["hyper_parameters"]["esml_step"]
        if step == "evaluate" and self.refuse_evaluation:
            raise ValidationError("the evaluation image could not be pulled")
        self.created.append(request)
        job = ORIGINAL_CREATE(backend, **request)
        bucket, key = job.model_artifacts["S3ModelArtifacts"][5:].split("/", 1)
        if step == self.fail_step:
            job.training_job_status = "Failed"
            job.failure_reason = f"AlgorithmError: the {step} step exited with status 2"
            return job
        outputs = {
            "train": {"dataset.json": b"{}"},
            "evaluate": {
                "evaluation.json": json.dumps(
                    {
                        "decision": self.decision,
                        "summary": f"challenger: {self.decision}",
                        "challenger": "es_bundle_20261206",
                        "champion": None,
                    }
                ).encode()
            },
            "promote": {"promoted.json": b'{"champion": "es_bundle_20261206"}'},
        }[step]
        boto3.client("s3", region_name=REGION).put_object(
            Bucket=bucket, Key=key, Body=archive(outputs)
        )
        return job


ORIGINAL_CREATE = SageMakerModelBackend.create_training_job


def run_verdict(
    backend: LambdaSimpleBackend, function_name: str, qualifier: Any, body: Any, *args: Any
) -> bytes:
    assert function_name.endswith("esml-verdict"), function_name
    return json.dumps(verdict_handler.lambda_handler(json.loads(body), LambdaContext())).encode()


class LambdaContext:
    function_name = "esml-verdict"
    memory_limit_in_mb = 256
    invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:esml-verdict"
    aws_request_id = "test-request"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[JobRunner]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    runner = JobRunner()
    monkeypatch.setattr(
        SageMakerModelBackend,
        "create_training_job",
        lambda backend, **request: runner.create(backend, **request),
    )
    monkeypatch.setattr(LambdaSimpleBackend, "invoke", run_verdict)
    config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    with mock_aws(config=config):  # type: ignore[arg-type]
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        boto3.client("dynamodb", region_name=REGION).create_table(
            TableName=RUNS_TABLE,
            KeySchema=[{"AttributeName": "run_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "run_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        iam = boto3.client("iam", region_name=REGION)
        iam.create_role(RoleName="esml-test", AssumeRolePolicyDocument="{}")
        boto3.client("lambda", region_name=REGION).create_function(
            FunctionName="esml-verdict",
            Runtime="python3.14",
            Role=ROLE,
            Handler="handler.lambda_handler",
            Code={"ZipFile": archive({"handler.py": b""})},
        )
        yield runner


@dataclass(frozen=True)
class Run:
    status: str
    output: dict[str, Any] | None
    row: dict[str, str]
    metrics: list[dict[str, Any]]
    history: list[str]


def execute(runner: JobRunner) -> Run:
    sfn_client = boto3.client("stepfunctions", region_name=REGION)
    machine = sfn_client.create_state_machine(
        name="esml-retraining", definition=DEFINITION, roleArn=ROLE
    )["stateMachineArn"]
    execution = sfn_client.start_execution(
        stateMachineArn=machine, input=json.dumps({"trigger": "test"})
    )["executionArn"]
    deadline = time.monotonic() + 120  # a loaded CI machine
    while (described := sfn_client.describe_execution(executionArn=execution))[
        "status"
    ] == "RUNNING":
        assert time.monotonic() < deadline, "the execution did not finish"
        time.sleep(0.05)
    history = sfn_client.get_execution_history(executionArn=execution)["events"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in history
               if "stateEnteredEventDetails" in e]  # fmt: skip
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName=RUNS_TABLE)["Items"]
    assert len(items) == 1, items
    row = {k: v["S"] for k, v in items[0].items()}
    metrics = boto3.client("cloudwatch", region_name=REGION).list_metrics(
        Namespace=NAMESPACE, MetricName=RETRAINING_RUN
    )["Metrics"]
    output = json.loads(described["output"]) if "output" in described else None
    return Run(described["status"], output, row, metrics, entered)


def outcome_of(run: Run) -> str:
    (metric,) = run.metrics
    dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
    assert dims["service"] == "esml-retraining"
    assert dims["outcome"] == run.row["outcome"]
    return dims["outcome"]


def steps_created(runner: JobRunner) -> list[str]:
    return [r["hyper_parameters"]["esml_step"] for r in runner.created]


def test_a_challenger_that_wins_is_promoted(aws: JobRunner) -> None:
    run = execute(aws)
    assert run.status == "SUCCEEDED"
    assert outcome_of(run) == "promoted"
    assert steps_created(aws) == ["train", "evaluate", "promote"]
    train, evaluate, promote = aws.created
    challenger = run.row["challenger"]
    assert challenger == (
        f"s3://{BUCKET}/retraining/challengers/{train['training_job_name']}/output/model.tar.gz"
    )
    assert train["role_arn"].endswith("-train")
    assert train["input_data_config"][0]["DataSource"]["S3DataSource"]["S3Uri"] == (
        f"s3://{BUCKET}/data/"
    )
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                for c in evaluate["input_data_config"]}  # fmt: skip
    assert channels == {"data": f"s3://{BUCKET}/data/", "challenger": challenger}
    assert evaluate["hyper_parameters"]["promotion_metrics"] == "log_loss,brier"
    assert promote["role_arn"].endswith("-promote")
    assert promote["input_data_config"][0]["DataSource"]["S3DataSource"]["S3Uri"] == challenger
    assert run.row["report"].startswith(f"s3://{BUCKET}/retraining/evaluations/esml-evaluate-")
    assert run.row["detail"] == "challenger: promote"
    assert run.row["run_id"] in train["training_job_name"]


def test_a_challenger_that_loses_is_kept_with_its_report_and_not_promoted(
    aws: JobRunner,
) -> None:
    aws.decision = "reject"
    run = execute(aws)
    assert run.status == "SUCCEEDED"
    assert outcome_of(run) == "rejected"
    assert steps_created(aws) == ["train", "evaluate"]
    assert "Promote" not in run.history
    s3 = boto3.client("s3", region_name=REGION)
    for uri in (run.row["challenger"], run.row["report"]):
        bucket, key = uri[5:].split("/", 1)
        s3.head_object(Bucket=bucket, Key=key)  # both kept
    assert not s3.list_objects_v2(Bucket=BUCKET, Prefix="models/").get("Contents")


def test_a_failed_training_job_is_recorded_and_fails_the_run(aws: JobRunner) -> None:
    aws.fail_step = "train"
    run = execute(aws)
    assert run.status == "FAILED"
    assert outcome_of(run) == "training_failed"
    assert steps_created(aws) == ["train"]
    assert "the train step exited with status 2" in run.row["detail"]
    assert run.row["challenger"] == "-"
    assert "Training failed" in run.history and "Retraining failed" in run.history


def test_a_refused_evaluation_job_is_caught_recorded_and_fails_the_run(aws: JobRunner) -> None:
    aws.refuse_evaluation = True
    run = execute(aws)
    assert run.status == "FAILED"
    assert outcome_of(run) == "evaluation_failed"
    assert steps_created(aws) == ["train"]
    assert "could not be pulled" in run.row["detail"]  # the Catch's $.error.Cause
    assert run.row["challenger"].endswith("/output/model.tar.gz")


def test_an_unreadable_verdict_is_an_evaluation_failure_never_a_promotion(
    aws: JobRunner,
) -> None:
    aws.decision = "maybe"
    run = execute(aws)
    assert run.status == "FAILED"
    assert outcome_of(run) == "evaluation_failed"
    assert steps_created(aws) == ["train", "evaluate"]


def test_a_failed_promotion_is_recorded_and_fails_the_run(aws: JobRunner) -> None:
    aws.fail_step = "promote"
    run = execute(aws)
    assert run.status == "FAILED"
    assert outcome_of(run) == "promotion_failed"
    assert steps_created(aws) == ["train", "evaluate", "promote"]
    assert "the promote step exited with status 2" in run.row["detail"]
    assert run.row["report"].endswith("/output/model.tar.gz")  # the evidence is kept
