"""Each function's app object: built from the environment on the first invocation and kept
for the container's life, so clients and secrets are made once per cold start."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class ColdStart(Generic[T]):
    def __init__(self, build: Callable[[Mapping[str, str]], T]) -> None:
        self._build = build
        self._app: T | None = None

    def use(self, app: T | None) -> None:
        """Replace the wiring (tests, local runs); None rebuilds from the environment."""
        self._app = app

    def get(self) -> T:
        if self._app is None:
            self._app = self._build(os.environ)
        return self._app
