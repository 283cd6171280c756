"""CDK entry point; cdk.json runs it with the repo's .venv (`make synth`, `npx cdk deploy`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from esml_cdk import build

REPO_ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    app = cdk.App()
    # cdk-nag's AwsSolutions pack: any finding without a written acknowledgment fails the synth.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    stack = build(app, repo_root=REPO_ROOT, environ=os.environ)
    if stack.settings.offline:
        print(
            f"esml: no AWS credentials, synthesised for the placeholder account "
            f"{stack.settings.account} in {stack.settings.region}",
            file=sys.stderr,
        )
    app.synth()


if __name__ == "__main__":
    main()
