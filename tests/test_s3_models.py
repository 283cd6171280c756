"""Bundles promoted to S3 and synced into a local model root, on a moto bucket, with the
tiny SYNTHETIC stack bundle the session trains once."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from esml.alpha import registry
from esml.alpha.manifest import MANIFEST_FILE, ModelFileError
from esml.alpha.s3_models import promote, sync_champion
from esml.cli import models_cmd
from esml.config import EsmlConfig
from esml.engine.serving import serve
from tests.aws_fixtures import REGION

PREFIX = "models/"
_BUCKETS = itertools.count()


@pytest.fixture
def s3(aws_session: None) -> Any:
    return boto3.client("s3", region_name=REGION)


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    """A fresh, empty bucket per test, emptied and deleted after it."""
    name = f"esml-models-{next(_BUCKETS)}"
    s3.create_bucket(Bucket=name)
    yield name
    for obj in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def _keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def _copy(bundle: Path, where: Path, name: str) -> Path:
    """The tiny bundle under another name (a bundle does not record its own name)."""
    return Path(shutil.copytree(bundle, where / name))


def _publish_copy(bundle: Path, root: Path, name: str) -> Path:
    staged = registry.staging_dir(root, name)
    shutil.rmtree(staged)
    shutil.copytree(bundle, staged)
    return registry.publish(staged, root, name, keep=5)


def _local_champion(root: Path) -> str:
    return (root / registry.CHAMPION_FILE).read_text()


def _staging_left(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.name.startswith(registry.TMP_PREFIX)]


def _tamper(data: bytes) -> bytes:
    return data.replace(b'"synthetic_training_data": true', b'"synthetic_training_data": false')


def test_a_promoted_bundle_syncs_into_an_empty_root_once(stack, s3, bucket, tmp_path) -> None:
    name = promote(s3, stack.path, bucket, PREFIX)
    assert name == stack.path.name
    files = sorted(p.relative_to(stack.path).as_posix() for p in stack.path.rglob("*")
                   if p.is_file())  # fmt: skip
    want = sorted([f"{PREFIX}{name}/{f}" for f in files] + [f"{PREFIX}champion"])
    assert _keys(s3, bucket) == want
    champion = s3.get_object(Bucket=bucket, Key=f"{PREFIX}champion")["Body"].read()
    assert champion == f"{name}\n".encode()

    root = tmp_path / "engine-models"
    assert sync_champion(s3, bucket, PREFIX, root) == name
    assert _local_champion(root) == f"{name}\n"
    assert registry.champion(root) == root / name
    for f in files:
        assert (root / name / f).read_bytes() == (stack.path / f).read_bytes()
    assert _staging_left(root) == []
    assert sync_champion(s3, bucket, PREFIX, root) is None  # nothing new


def test_no_champion_in_s3_changes_nothing(s3, bucket, tmp_path) -> None:
    root = tmp_path / "engine-models"
    assert sync_champion(s3, bucket, PREFIX, root) is None
    assert not root.exists()


def test_a_tampered_object_in_s3_is_refused_and_the_old_champion_stays(
    stack, s3, bucket, tmp_path
) -> None:
    root = tmp_path / "engine-models"
    promote(s3, _copy(stack.path, tmp_path, "b1"), bucket, PREFIX)
    assert sync_champion(s3, bucket, PREFIX, root) == "b1"
    promote(s3, _copy(stack.path, tmp_path, "b2"), bucket, PREFIX)
    key = f"{PREFIX}b2/trees/{MANIFEST_FILE}"
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=_tamper(original))

    with pytest.raises(ModelFileError, match="modified after training"):
        sync_champion(s3, bucket, PREFIX, root)
    assert _local_champion(root) == "b1\n"
    assert registry.champion(root) == root / "b1"
    assert not (root / "b2").exists() and _staging_left(root) == []


def test_keys_and_names_that_escape_the_root_are_refused(stack, s3, bucket, tmp_path) -> None:
    root = tmp_path / "engine-models"
    promote(s3, _copy(stack.path, tmp_path, "b1"), bucket, PREFIX)
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}b1/../../escaped.json", Body=b"{}")
    with pytest.raises(ModelFileError, match="outside its bundle"):
        sync_champion(s3, bucket, PREFIX, root)
    assert _staging_left(root) == [] and not (root / registry.CHAMPION_FILE).exists()
    assert not any(p.name == "escaped.json" for p in tmp_path.rglob("*"))

    s3.put_object(Bucket=bucket, Key=f"{PREFIX}champion", Body=b"../../etc\n")
    with pytest.raises(ModelFileError, match="not a bundle name"):
        sync_champion(s3, bucket, PREFIX, root)
    assert not root.exists() or list(root.iterdir()) == []


def test_promote_refuses_a_tampered_bundle_and_uploads_nothing(stack, s3, bucket, tmp_path) -> None:
    bad = _copy(stack.path, tmp_path, "bad")
    manifest = bad / "trees" / MANIFEST_FILE
    manifest.write_bytes(_tamper(manifest.read_bytes()))
    with pytest.raises(ModelFileError, match="modified after training"):
        promote(s3, bad, bucket, PREFIX)
    assert _keys(s3, bucket) == []
    with pytest.raises(ValueError, match="must be empty or end with '/'"):
        promote(s3, stack.path, bucket, "models")
    assert _keys(s3, bucket) == []


def test_a_rollback_to_a_bundle_still_kept_locally_repoints(stack, s3, bucket, tmp_path) -> None:
    root = tmp_path / "engine-models"
    b1 = _copy(stack.path, tmp_path, "b1")
    promote(s3, b1, bucket, PREFIX)
    sync_champion(s3, bucket, PREFIX, root)
    promote(s3, _copy(stack.path, tmp_path, "b2"), bucket, PREFIX)
    assert sync_champion(s3, bucket, PREFIX, root) == "b2"
    promote(s3, b1, bucket, PREFIX)  # back to b1
    assert sync_champion(s3, bucket, PREFIX, root) == "b1"
    assert registry.champion(root) == root / "b1" and (root / "b2").is_dir()


def test_the_running_engine_swaps_in_a_synced_champion(stack, s3, bucket, tmp_path) -> None:
    root = tmp_path / "engine-models"
    _publish_copy(stack.path, root, "b1")
    served = serve(root, EsmlConfig(), background=False)
    assert served.watch is not None and served.strategy.name == "b1"
    ts = 1_741_361_405_000_000_000
    assert served.watch.poll(ts) is None  # b1 is what it serves

    promote(s3, _copy(stack.path, tmp_path, "b2"), bucket, PREFIX)
    assert sync_champion(s3, bucket, PREFIX, root) == "b2"
    swapped = served.watch.poll(ts + 3_600 * 10**9)
    assert swapped is not None and swapped.name == "b2" and served.watch.serving == "b2"
    served.close()


def test_the_cli_promotes_a_bundle(stack, s3, bucket, tmp_path) -> None:
    runner = CliRunner()
    args = ["promote", str(stack.path), "--bucket", bucket, "--prefix", PREFIX]
    result = runner.invoke(models_cmd.app, args)
    assert result.exit_code == 0, result.output
    champion = s3.get_object(Bucket=bucket, Key=f"{PREFIX}champion")["Body"].read()
    assert champion == f"{stack.path.name}\n".encode()

    missing = runner.invoke(models_cmd.app, ["promote", str(tmp_path), "--bucket", bucket])
    assert missing.exit_code == 2 and "nothing was promoted" in missing.output
