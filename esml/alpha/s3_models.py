"""Model bundles in S3: promote one to champion there, and bring the champion home.

S3 has no rename, so a bundle is made visible the way the local registry does it: every
file of it goes under `{prefix}{name}/` first, and only then does one PUT of
`{prefix}champion` (the name and a newline) switch readers over. A reader sees the old
champion or the new one, never half a bundle. A reader does not trust S3 either: the
bundle comes down into a local staging directory and goes through `registry.publish`,
which checks every file against the sha256 manifests before the local pointer moves, so a
damaged or tampered upload changes nothing where the engine looks.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from botocore.exceptions import ClientError

from esml.alpha import registry
from esml.alpha.manifest import ModelFileError, write_atomic

S3Client = Any  # a boto3 S3 client; boto3 ships no static types for it
_MISSING = {"NoSuchKey", "404"}


def promote(s3: S3Client, bundle_dir: Path, bucket: str, prefix: str) -> str:
    """Upload a verified bundle and then make it the champion in S3; returns its name."""
    bundle_dir = Path(bundle_dir)
    name = registry.check_name(bundle_dir.name)
    _check_prefix(prefix)
    registry.load_bundle(bundle_dir)  # a bundle that fails here never leaves the machine
    files = sorted(p for p in bundle_dir.rglob("*") if p.is_file())
    for path in files:
        key = f"{prefix}{name}/{path.relative_to(bundle_dir).as_posix()}"
        s3.upload_file(str(path), bucket, key)
    s3.put_object(
        Bucket=bucket,
        Key=f"{prefix}{registry.CHAMPION_FILE}",
        Body=f"{name}\n".encode(),
        ContentType="text/plain",
    )
    return name


def sync_champion(
    s3: S3Client, bucket: str, prefix: str, root: Path, *, keep: int = 2
) -> str | None:
    """Make S3's champion the champion of the local `root`; its name, or None when the
    local champion already is it or S3 has none."""
    _check_prefix(prefix)
    root = Path(root)
    name = _remote_champion(s3, bucket, prefix)
    if name is None or name == registry.champion_name(root):
        return None
    if (root / name).is_dir():  # a rollback to a bundle still kept here: re-check, re-point
        registry.load_bundle(root / name)
        write_atomic(root / registry.CHAMPION_FILE, f"{name}\n".encode())
        return name
    staged = registry.staging_dir(root, name)
    try:
        _download(s3, bucket, f"{prefix}{name}/", staged)
        registry.publish(staged, root, name, keep=keep)
    except BaseException:
        registry.discard(staged)
        raise
    return name


def _remote_champion(s3: S3Client, bucket: str, prefix: str) -> str | None:
    key = f"{prefix}{registry.CHAMPION_FILE}"
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in _MISSING:
            return None
        raise
    name = body.decode("utf-8", errors="replace").strip()
    try:
        return registry.check_name(name)
    except ValueError as e:
        raise ModelFileError(f"s3://{bucket}/{key}: {name!r} is not a bundle name") from e


def _download(s3: S3Client, bucket: str, bundle_prefix: str, staged: Path) -> None:
    """Every object under `bundle_prefix` into `staged`; a key that would land outside it
    (`..`, an absolute or empty part) is refused before anything is written for it."""
    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=bundle_prefix
        )
        for obj in page.get("Contents", [])
        if not obj["Key"].endswith("/")  # folder markers the S3 console makes
    ]
    if not keys:
        raise ModelFileError(f"s3://{bucket}/{bundle_prefix}: the champion has no objects")
    for key in keys:
        dest = staged / _relative(bucket, key, bundle_prefix)
        dest.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(dest))


def _relative(bucket: str, key: str, bundle_prefix: str) -> PurePosixPath:
    rel = key[len(bundle_prefix) :]
    parts = rel.split("/")
    if "\\" in rel or any(p in ("", ".", "..") for p in parts):
        raise ModelFileError(f"s3://{bucket}/{key}: refusing a key outside its bundle")
    return PurePosixPath(*parts)


def _check_prefix(prefix: str) -> None:
    """`models` without its slash would put bundles at `modelsNAME/`: refuse it."""
    if prefix.startswith("/") or (prefix and not prefix.endswith("/")):
        raise ValueError(f"S3 prefix {prefix!r} must be empty or end with '/', not start with it")
