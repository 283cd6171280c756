"""Lambda assets built on this machine, never in Docker.

`PythonFunction` bundles in a container, and CI has no Docker daemon. The function code
is a plain copy (esml/ and lambdas/), and the dependency layer is a `pip install` for the
Lambda platform (manylinux x86_64, CPython 3.14, wheels only), cached on disk under a hash
of the requirements file, so repeated synths (tests) reuse it and only a change to the
requirements downloads anything.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda as lambda_

RUNTIME = lambda_.Runtime.PYTHON_3_14
"""The newest Python Lambda runs: every pin of lambdas/requirements.txt has 3.14 wheels."""
ARCHITECTURE = lambda_.Architecture.X86_64
PIP_PLATFORM_ARGS = (
    "--platform",
    "manylinux2014_x86_64",
    "--implementation",
    "cp",
    "--python-version",
    "3.14",
    "--only-binary=:all:",
)
"""Must match RUNTIME and ARCHITECTURE: the layer's compiled wheels (pydantic-core) run
only on the platform they were chosen for."""

_CACHES = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "*.pyo", "*.nbi", "*.nbc", ".pytest_cache", ".ruff_cache", ".mypy_cache"
)


class BundlingError(RuntimeError):
    """A Lambda asset could not be built locally; Docker bundling is never the fallback."""


@jsii.implements(cdk.ILocalBundling)
class _FunctionSourceBundler:
    """esml/ and lambdas/ as packages, plus the function's own folder at the asset root,
    where the runtime looks for `handler.lambda_handler`."""

    def __init__(self, repo_root: Path, function: str) -> None:
        self._repo_root = repo_root
        self._function = function

    def try_bundle(self, output_dir: str, options: cdk.BundlingOptions) -> bool:
        out = Path(output_dir)
        shutil.copytree(self._repo_root / "esml", out / "esml", ignore=_CACHES)
        shutil.copytree(self._repo_root / "lambdas", out / "lambdas", ignore=_CACHES)
        shutil.copytree(
            self._repo_root / "lambdas" / self._function, out, ignore=_CACHES, dirs_exist_ok=True
        )
        return True


@jsii.implements(cdk.ILocalBundling)
class _LayerBundler:
    def __init__(self, requirements: Path, cache_root: Path) -> None:
        self._requirements = requirements
        self._cache_root = cache_root

    def try_bundle(self, output_dir: str, options: cdk.BundlingOptions) -> bool:
        site_packages = ensure_layer_packages(self._requirements, self._cache_root)
        shutil.copytree(site_packages, Path(output_dir) / "python", dirs_exist_ok=True)
        return True


def function_code(repo_root: Path, function: str) -> lambda_.Code:
    """The asset hash is the bundled output's, so a change to esml/ redeploys the function."""
    handler = repo_root / "lambdas" / function / "handler.py"
    if not handler.is_file():
        raise BundlingError(f"{handler} is missing: every Lambda needs handler.lambda_handler")
    return lambda_.Code.from_asset(
        str(handler.parent),
        asset_hash_type=cdk.AssetHashType.OUTPUT,
        bundling=cdk.BundlingOptions(
            image=RUNTIME.bundling_image, local=_FunctionSourceBundler(repo_root, function)
        ),
    )


def layer_code(requirements: Path, cache_root: Path) -> lambda_.Code:
    """The asset hash is the cache key: the layer changes exactly when its pins do."""
    if not requirements.is_file():
        raise BundlingError(f"{requirements} is missing: the Lambda layer is built from it")
    return lambda_.Code.from_asset(
        str(requirements.parent),
        asset_hash=layer_cache_key(requirements),
        asset_hash_type=cdk.AssetHashType.CUSTOM,
        bundling=cdk.BundlingOptions(
            image=RUNTIME.bundling_image, local=_LayerBundler(requirements, cache_root)
        ),
    )


def layer_cache_key(requirements: Path) -> str:
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update("\0".join(PIP_PLATFORM_ARGS).encode())
    return digest.hexdigest()


def ensure_layer_packages(requirements: Path, cache_root: Path) -> Path:
    """Return the cached site-packages for these requirements, installing them once.

    The install goes to a private folder renamed into place only when pip succeeded, so a
    failed or interrupted download never leaves a half-filled cache behind.
    """
    key = layer_cache_key(requirements)
    final = cache_root / key
    if final.is_dir():
        return final
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = cache_root / f".{key}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-input", "--no-compile",
        "--disable-pip-version-check", "--target", str(staging), *PIP_PLATFORM_ARGS,
        "-r", str(requirements),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BundlingError(
            f"pip could not build the Lambda layer from {requirements} "
            f"(exit {result.returncode}):\n{result.stderr[-4000:]}"
        )
    shutil.rmtree(staging / "bin", ignore_errors=True)  # console scripts: useless in a layer
    try:
        staging.rename(final)
    except OSError:  # another synth finished the same key first: keep its copy
        shutil.rmtree(staging, ignore_errors=True)
    _prune_other_keys(cache_root, keep=key)
    return final


def _prune_other_keys(cache_root: Path, keep: str) -> None:
    for entry in cache_root.iterdir():
        if entry.is_dir() and not entry.name.startswith(".") and entry.name != keep:
            shutil.rmtree(entry, ignore_errors=True)
