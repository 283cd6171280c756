"""`esml --help` and every subcommand's `--help` answer at once: they import none of the
heavy libraries (torch, xgboost, sklearn, pandas, onnxruntime, numba, ...). The clock is
measured by `make bench` (bench/startup.py); this test holds the import graph."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _fresh(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    return done.stdout


def test_every_help_imports_no_heavy_library() -> None:
    out = _fresh(
        "import json; from bench.startup import heavy_modules_after_help as h; "
        "print(json.dumps(h()))"
    )
    assert json.loads(out) == {}, "commands whose --help imports a heavy library"


def test_the_walk_reaches_every_command() -> None:
    out = _fresh(
        "import json; from typer.main import get_command; from esml.cli.app import app; "
        "from bench.startup import command_paths; "
        "print(json.dumps([' '.join(p) for p in command_paths(get_command(app))]))"
    )
    paths = set(json.loads(out))
    assert {"", "backtest", "demo", "data", "data info", "data ingest", "sim generate",
            "sim calibrate", "models promote", "train", "evaluate"} <= paths  # fmt: skip


def test_help_lists_the_commands() -> None:
    out = _fresh("import sys; sys.argv = ['esml', '--help']; from esml.cli.app import main; main()")
    for name in ("backtest", "demo", "data", "sim", "train", "evaluate"):
        assert name in out
