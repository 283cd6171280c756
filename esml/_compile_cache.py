"""Numba's on-disk cache keyed by the whole package's source.

Numba invalidates a cached function when its own file changes, but not when a function
it calls from another file does: a stale caller then runs old code (or crashes). Keying
the cache directory by a hash of every compiled module's source rules that out.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def use_source_keyed_numba_cache() -> None:
    if "NUMBA_CACHE_DIR" in os.environ:
        return
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(path.read_bytes())
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    os.environ["NUMBA_CACHE_DIR"] = str(root / "esml-numba" / digest.hexdigest()[:16])
