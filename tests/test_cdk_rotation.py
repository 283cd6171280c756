"""The webhook passphrase's rotation Lambda, driven by moto's Secrets Manager: RotateSecret
calls the four steps with one token, as the service does. moto cannot run a Lambda's code
without Docker, so its simple Lambda backend hands each step's event to the real handler."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend

from lambdas.passphrase_rotation.handler import RotationError, rotate

REGION = "us-east-1"


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str, str, list[str]]]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    steps: list[str] = []

    def run_rotation(backend: Any, name: str, qualifier: Any, body: Any, **_: Any) -> bytes:
        event = json.loads(body)
        steps.append(event["Step"])
        rotate(boto3.client("secretsmanager", region_name=REGION), event)
        return b"null"

    monkeypatch.setattr(LambdaSimpleBackend, "invoke", run_rotation)
    with mock_aws(config={"lambda": {"use_docker": False}}):  # type: ignore[arg-type]
        client = boto3.client("secretsmanager", region_name=REGION)
        arn = client.create_secret(
            Name="esml-webhook-passphrase", SecretString=json.dumps({"passphrase": "a" * 40})
        )["ARN"]
        role = boto3.client("iam", region_name=REGION).create_role(
            RoleName="rotation", AssumeRolePolicyDocument="{}"
        )["Role"]["Arn"]
        function = boto3.client("lambda", region_name=REGION).create_function(
            FunctionName="rotation", Runtime="python3.14", Role=role,
            Handler="handler.lambda_handler", Code={"ZipFile": b"PK\x05\x06" + b"\0" * 18},
        )["FunctionArn"]  # fmt: skip
        yield client, arn, function, steps


def passphrase(client: Any, arn: str) -> str:
    return json.loads(client.get_secret_value(SecretId=arn)["SecretString"])["passphrase"]


def test_rotation_makes_a_new_passphrase_current(secret) -> None:
    client, arn, function, steps = secret
    old = passphrase(client, arn)
    token = client.rotate_secret(
        SecretId=arn, RotationLambdaARN=function, RotationRules={"AutomaticallyAfterDays": 180}
    )["VersionId"]
    assert steps == ["createSecret", "setSecret", "testSecret", "finishSecret"]
    new = passphrase(client, arn)
    assert new != old and len(new) == 40 and new.isalnum()
    assert "AWSCURRENT" in client.describe_secret(SecretId=arn)["VersionIdsToStages"][token]
    # a step called again for the same token changes nothing (Secrets Manager may retry)
    for step in ("createSecret", "finishSecret"):
        rotate(client, {"SecretId": arn, "ClientRequestToken": token, "Step": step})
    assert passphrase(client, arn) == new


def test_rotation_refuses_what_it_cannot_rotate_safely(secret) -> None:
    client, arn, function, _ = secret
    with pytest.raises(RotationError, match="does not have rotation enabled"):
        rotate(client, {"SecretId": arn, "ClientRequestToken": "t", "Step": "createSecret"})
    client.rotate_secret(
        SecretId=arn, RotationLambdaARN=function, RotationRules={"AutomaticallyAfterDays": 180}
    )
    with pytest.raises(RotationError, match="not a version"):
        rotate(client, {"SecretId": arn, "ClientRequestToken": "nope", "Step": "createSecret"})
    with pytest.raises(RotationError, match="unknown rotation step"):
        rotate(client, {"SecretId": arn, "ClientRequestToken": "x", "Step": "dropSecret"})
