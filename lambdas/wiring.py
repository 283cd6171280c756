"""Each function's app object: built from the environment on the first invocation and kept
for the container's life, so clients and secrets are made once per cold start."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from esml.config import ConfigError, EsmlConfig, load_config

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


def config_from_env(env: Mapping[str, str]) -> EsmlConfig:
    """ESML_CONFIG holds EsmlConfig fields as JSON; absent means the defaults."""
    raw = env.get("ESML_CONFIG") or "{}"
    try:
        fields = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"ESML_CONFIG is not valid JSON: {e}") from e
    if not isinstance(fields, dict):
        raise ConfigError(f"ESML_CONFIG must be a JSON object of EsmlConfig fields, not {raw!r}")
    return load_config(**fields)
