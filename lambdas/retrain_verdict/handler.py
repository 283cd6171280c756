"""Retraining verdict Lambda: hand the state machine the evaluation job's decision.

The evaluation job (training/retrain_steps.py, `evaluate`) writes `evaluation.json` into its
model archive; this reads it back and answers {decision, summary, challenger, champion} so
the state machine's Choice can branch on `decision`. It decides nothing itself: a report
that is missing, unreadable or holds anything but "promote" or "reject" is an error, and
the state machine records the run as an evaluation failure, never as a promotion.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

REPORT_FILE = "evaluation.json"
DECISIONS = ("promote", "reject")
MAX_ARCHIVE_BYTES = 64 * 1024 * 1024

logger = Logger(service="esml-retraining")


class ReportError(ValueError):
    """The evaluation report cannot be trusted to decide a promotion."""


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not isinstance(uri, str) or not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ReportError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    if not bucket or not key:
        raise ReportError(f"not an s3://bucket/key URI: {uri!r}")
    return bucket, key


def read_report(archive: bytes) -> dict[str, Any]:
    """evaluation.json from a SageMaker model archive (a gzipped tar)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            member = next(
                (m for m in tar.getmembers() if m.isfile() and m.name.lstrip("./") == REPORT_FILE),
                None,
            )
            if member is None:
                raise ReportError(f"the evaluation archive holds no {REPORT_FILE}")
            handle = tar.extractfile(member)
            assert handle is not None
            report = json.loads(handle.read())
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        if isinstance(e, ReportError):
            raise
        raise ReportError(f"unreadable evaluation archive: {e}") from e
    if not isinstance(report, dict):
        raise ReportError(f"{REPORT_FILE} must hold an object")
    return report


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    decision = report.get("decision")
    if decision not in DECISIONS:
        raise ReportError(f"decision must be one of {DECISIONS}, not {decision!r}")
    summary = report.get("summary")
    if not isinstance(summary, str) or not summary:
        raise ReportError("the report has no summary")
    return {
        "decision": decision,
        "summary": summary,
        "challenger": str(report.get("challenger", "")),
        "champion": str(report.get("champion") or "none"),
    }


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    bucket, key = split_s3_uri(event.get("report", ""))
    obj = boto3.client("s3").get_object(Bucket=bucket, Key=key)
    if obj["ContentLength"] > MAX_ARCHIVE_BYTES:
        raise ReportError(f"s3://{bucket}/{key} is {obj['ContentLength']} bytes: not a report")
    answer = verdict(read_report(obj["Body"].read()))
    logger.info("evaluation verdict", extra={"report": f"s3://{bucket}/{key}", **answer})
    return answer
