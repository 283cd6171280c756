"""`esml models`: put a trained bundle where the deployed engines take their champion from."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    help="Model bundles: promote a verified bundle to champion in S3, where the tick "
    "engine syncs it from.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(soft_wrap=True)


@app.callback()
def models() -> None:
    """Model bundles and the champion the engines serve."""


@app.command()
def promote(
    bundle_dir: Path = typer.Argument(..., help="a bundle directory (holds bundle.json)"),
    bucket: str = typer.Option(..., "--bucket", envvar="MODEL_BUCKET", help="S3 bucket"),
    prefix: str = typer.Option(
        "models/", "--prefix", envvar="MODEL_PREFIX", help="key prefix, ending in '/'"
    ),
) -> None:
    """Upload the bundle, then make it the champion: engines see all of it or none."""
    import boto3
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    from esml.alpha.s3_models import promote as s3_promote

    try:
        name = s3_promote(boto3.client("s3"), bundle_dir, bucket, prefix)
    except ValueError as e:  # a bad name or prefix, or a bundle failing verification
        console.print(f"[red]{e}[/red]\nnothing was promoted")
        raise typer.Exit(2) from e
    except (Boto3Error, BotoCoreError, ClientError) as e:
        console.print(f"[red]S3: {e}[/red]\nthe champion in s3://{bucket}/{prefix} is unchanged")
        raise typer.Exit(1) from e
    console.print(f"champion s3://{bucket}/{prefix}champion -> {name}")
