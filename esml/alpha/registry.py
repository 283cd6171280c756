"""Model bundles on disk: publish atomically, point `champion` at one, find it again.

A bundle is built in a hidden temporary directory beside its final place, renamed into
place in one step (rename within a filesystem is atomic), and only then does the
`champion` pointer file change, itself replaced atomically. A reader that follows the
pointer therefore always finds a complete, immutable bundle: the engine can load the new
one while running and swap it in, and a crash at any point leaves the old champion
serving. The pointer holds the bundle's directory name and a newline, nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from esml.alpha.bundle_manifest import (
    BUNDLE_FILE,
    BundleManifest,
    BundleMember,
    EnsembleManifest,
    RegimeManifest,
    load_json,
)
from esml.alpha.manifest import MODEL_FILE, ModelFileError, ModelManifest, file_sha256, write_atomic
from esml.alpha.sequence_model import SequenceManifest

CHAMPION_FILE = "champion"
TMP_PREFIX = ".tmp-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_name(name: str) -> str:
    """A bundle name is one plain path component: never `..`, a slash or a hidden file."""
    if not _NAME.match(name):
        raise ValueError(f"bundle name {name!r}: letters, digits, '.', '_' and '-' only")
    return name


def champion_name(root: Path) -> str | None:
    """What the pointer names now, unverified (cheap: one small read), or None."""
    try:
        return (Path(root) / CHAMPION_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def staging_dir(root: Path, name: str) -> Path:
    """A fresh hidden directory under `root` to build a bundle in."""
    check_name(name)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{name}-", dir=root))


def publish(staged: Path, root: Path, name: str, *, keep: int = 2, champion: bool = True) -> Path:
    """Move a complete staged bundle to root/name, make it the champion (unless `champion`
    is False: a bundle that did not earn promotion stays beside it, for inspection), and
    prune all but the newest `keep` bundles (the champion and the new bundle always stay)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    check_name(name)
    load_bundle(staged)  # complete and verified, or nothing moves
    final = root / name
    if final.exists():
        raise FileExistsError(f"{final} exists; bundles are never overwritten")
    staged.chmod(0o755)  # mkdtemp made it private; a bundle is for every reader
    os.rename(staged, final)
    _fsync_dir(root)
    if champion:
        write_atomic(root / CHAMPION_FILE, f"{name}\n".encode())
    prune(root, keep, spare=name)
    return final


def champion(root: Path) -> Path:
    """The champion bundle's directory, verified complete."""
    pointer = Path(root) / CHAMPION_FILE
    try:
        name = pointer.read_text().strip()
    except FileNotFoundError as e:
        raise ModelFileError(f"{pointer}: no champion has been published") from e
    if not _NAME.match(name):
        raise ModelFileError(f"{pointer}: {name!r} is not a bundle name")
    path = Path(root) / name
    load_bundle(path)
    return path


def load_bundle(path: Path) -> BundleManifest:
    """bundle.json, with every member's manifest checked against the sha256 recorded there
    and every model file against the sha256 its manifest records."""
    manifest = load_json(BundleManifest, Path(path) / BUNDLE_FILE)
    onnx = {}
    for m in manifest.members:
        onnx[m.kind] = _verify_member(Path(path), m)
    ensemble = next((m for m in manifest.members if m.kind == "ensemble"), None)
    if ensemble is not None:
        em = load_json(EnsembleManifest, Path(path) / ensemble.directory / ensemble.manifest)
        for member in em.members:
            if onnx.get(member.name) != member.onnx_sha256:
                raise ModelFileError(
                    f"{Path(path) / ensemble.directory}: member {member.name} is not the "
                    f"model in this bundle"
                )
    return manifest


def _verify_member(bundle: Path, m: BundleMember) -> str | None:
    """Check one member; its model file's sha256 (None for the ensemble, which has none)."""
    directory = bundle / m.directory
    path = directory / m.manifest
    actual = file_sha256(path)
    if actual != m.manifest_sha256:
        raise ModelFileError(
            f"{path}: sha256 {actual} differs from {m.manifest_sha256} in "
            f"{bundle / BUNDLE_FILE}; the bundle was modified after training"
        )
    if m.kind == "trees":
        return ModelManifest.load(directory).onnx_sha256
    if m.kind in ("tick_lstm", "bar_lstm", "deeplob"):
        return SequenceManifest.load(directory).onnx_sha256
    if m.kind == "regime":
        want = load_json(RegimeManifest, path).onnx_sha256
        got = file_sha256(directory / MODEL_FILE)
        if got != want:
            raise ModelFileError(f"{directory / MODEL_FILE}: sha256 {got} differs from {want}")
        return got
    return None


def bundles(root: Path) -> list[Path]:
    """Published bundles under `root`, oldest first (by the time their manifest was made)."""
    found = [
        p
        for p in Path(root).iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / BUNDLE_FILE).is_file()
    ]
    return sorted(found, key=lambda p: ((p / BUNDLE_FILE).stat().st_mtime_ns, p.name))


def prune(root: Path, keep: int, spare: str | None = None) -> list[Path]:
    """Delete the oldest bundles beyond `keep`, never the champion nor `spare`; returns
    what went."""
    current = champion_name(root)
    older = [p for p in bundles(root) if p.name not in (current, spare)]
    if spare is not None and spare != current:
        keep -= 1  # the spared bundle takes one of the `keep` places
    doomed = older[: max(0, len(older) - (keep - 1))]
    for p in doomed:
        shutil.rmtree(p)
    return doomed


def discard(staged: Path) -> None:
    """Remove a staging directory after a failed build."""
    if staged.name.startswith(TMP_PREFIX):
        shutil.rmtree(staged, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
