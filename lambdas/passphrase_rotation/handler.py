"""Rotation Lambda of the webhook passphrase (Secrets Manager's four-step protocol).

createSecret stages a new random passphrase as AWSPENDING; setSecret has nothing to set
(the passphrase lives in this secret only: TradingView alerts carry it, and a person pastes
the new one into them); testSecret checks the staged value is a well-formed passphrase;
finishSecret makes it AWSCURRENT. Each step is idempotent on the rotation token, as
Secrets Manager may call a step again.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

PASSPHRASE_KEY = "passphrase"
PASSPHRASE_LENGTH = 40
PENDING = "AWSPENDING"
CURRENT = "AWSCURRENT"

logger = Logger(service="esml-passphrase-rotation")


class RotationError(RuntimeError):
    """The rotation cannot go on safely; the current passphrase stays."""


def create_secret(client: Any, arn: str, token: str) -> None:
    try:
        client.get_secret_value(SecretId=arn, VersionId=token, VersionStage=PENDING)
        return  # staged by an earlier call for this token
    except client.exceptions.ResourceNotFoundException:
        pass
    current = json.loads(
        client.get_secret_value(SecretId=arn, VersionStage=CURRENT)["SecretString"]
    )
    passphrase = client.get_random_password(
        PasswordLength=PASSPHRASE_LENGTH, ExcludePunctuation=True
    )["RandomPassword"]
    client.put_secret_value(
        SecretId=arn,
        ClientRequestToken=token,
        SecretString=json.dumps({**current, PASSPHRASE_KEY: passphrase}),
        VersionStages=[PENDING],
    )


def test_secret(client: Any, arn: str, token: str) -> None:
    staged = json.loads(
        client.get_secret_value(SecretId=arn, VersionId=token, VersionStage=PENDING)["SecretString"]
    )
    passphrase = staged.get(PASSPHRASE_KEY)
    if not isinstance(passphrase, str) or len(passphrase) != PASSPHRASE_LENGTH:
        raise RotationError(f"the staged secret has no {PASSPHRASE_LENGTH}-character passphrase")
    if not passphrase.isalnum():
        raise RotationError("the staged passphrase holds characters an alert cannot carry")


def finish_secret(client: Any, arn: str, token: str) -> None:
    versions = client.describe_secret(SecretId=arn)["VersionIdsToStages"]
    current = next((v for v, stages in versions.items() if CURRENT in stages), None)
    if current == token:
        return  # finished by an earlier call
    client.update_secret_version_stage(
        SecretId=arn, VersionStage=CURRENT, MoveToVersionId=token, RemoveFromVersionId=current
    )


STEPS = {
    "createSecret": create_secret,
    "setSecret": lambda client, arn, token: None,
    "testSecret": test_secret,
    "finishSecret": finish_secret,
}


def rotate(client: Any, event: dict[str, Any]) -> None:
    arn, token, step = event["SecretId"], event["ClientRequestToken"], event["Step"]
    if step not in STEPS:
        raise RotationError(f"unknown rotation step {step!r}")
    metadata = client.describe_secret(SecretId=arn)
    if not metadata.get("RotationEnabled"):
        raise RotationError(f"{arn} does not have rotation enabled")
    stages = metadata["VersionIdsToStages"].get(token)
    if stages is None:
        raise RotationError(f"version {token} is not a version of {arn}")
    if CURRENT in stages and step != "finishSecret":
        return  # already current: nothing left to do for this token
    if PENDING not in stages and CURRENT not in stages:
        raise RotationError(f"version {token} is not staged for rotation")
    STEPS[step](client, arn, token)
    logger.info("rotation step done", extra={"step": step, "token": token})


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> None:
    rotate(boto3.client("secretsmanager"), event)
