"""The esml CDK app: one stack built from small constructs (deploy guide: docs/aws.md)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import aws_cdk as cdk

from esml_cdk.settings import Settings
from esml_cdk.stack import EsmlStack

STACK_NAME = "Esml"


def build(app: cdk.App, *, repo_root: Path, environ: Mapping[str, str]) -> EsmlStack:
    """The one place the app is assembled, shared by cdk/app.py and the tests."""
    settings = Settings.from_context(app.node.try_get_context, environ)
    return EsmlStack(app, STACK_NAME, repo_root=repo_root, settings=settings)
