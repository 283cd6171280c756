"""The tick engine's container health check: healthy while the live loop has touched its
health file (ESML_HEALTH_FILE) within ESML_HEALTH_MAX_AGE_S seconds (30). Standard library
only, so that running it every 30 s costs next to nothing beside the engine."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

HEALTH_FILE = "/tmp/esml/health"


def healthy(env: Mapping[str, str]) -> bool:
    path = Path(env.get("ESML_HEALTH_FILE", HEALTH_FILE))
    max_age = float(env.get("ESML_HEALTH_MAX_AGE_S", "30"))
    try:
        return time.time() - path.stat().st_mtime < max_age
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(0 if healthy(os.environ) else 1)
