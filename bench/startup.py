"""Start-up time of the `esml` command: how long `esml --help` and every subcommand's
`--help` take in a fresh interpreter (issue 15's goal: under 0.5 s on this machine).

A command that loads torch, pandas or a numba kernel just to print its help costs seconds;
tests/test_startup.py holds the import graph (`heavy_modules_after_help`), this module
measures the clock. Each figure is the best of REPEATS runs in a new process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 0.5
REPEATS = 5
# libraries that cost tenths of a second to seconds to import: only a running command loads them
HEAVY = ("torch", "xgboost", "lightgbm", "sklearn", "scipy", "pandas", "onnxruntime", "onnx",
         "numba", "plotly", "boto3", "pyarrow", "matplotlib")  # fmt: skip


def command_paths(cli: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under `cli` (typer's click command), as the words typed
    after `esml`."""
    paths = [prefix]
    commands = getattr(cli, "commands", {})  # a group's subcommands
    for name in sorted(commands):
        paths += command_paths(commands[name], (*prefix, name))
    return paths


def heavy_modules_after_help() -> dict[str, list[str]]:
    """Run every command's `--help` in this process (a fresh one: call it through
    `python -c`); for each heavy library that got imported, the first command that did it."""
    from typer.main import get_command
    from typer.testing import CliRunner

    def loaded() -> set[str]:
        return {m for m in HEAVY if m in sys.modules}

    found: dict[str, list[str]] = {}
    from esml.cli.app import app

    if heavy := loaded():
        found["import esml.cli.app"] = sorted(heavy)
    cli = get_command(app)
    runner = CliRunner()
    for path in command_paths(cli):
        seen = loaded()
        result = runner.invoke(app, [*path, "--help"])
        typed = " ".join(("esml", *path, "--help"))
        if result.exit_code != 0:
            found[typed] = [f"exit {result.exit_code}: {result.output}"]
        elif new := loaded() - seen:
            found[typed] = sorted(new)
    return found


def _best_wall_s(argv: list[str]) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t0)
    return best


def startup_seconds() -> dict[str, object]:
    """Best-of-REPEATS wall time of `esml --help` (module and entry-point forms) and the
    slowest subcommand's `--help`."""
    from typer.main import get_command

    from esml.cli.app import app

    module = [sys.executable, "-m", "esml.cli.app"]
    entry = shutil.which("esml", path=str(Path(sys.executable).parent))
    figures: dict[str, float] = {"python -m esml.cli.app --help": _best_wall_s([*module, "--help"])}
    if entry:
        figures["esml --help"] = _best_wall_s([entry, "--help"])
    per_command = {
        " ".join(("esml", *p, "--help")): _best_wall_s([*module, *p, "--help"])
        for p in command_paths(get_command(app))[1:]
    }
    slowest = max(per_command, key=per_command.__getitem__)
    return {
        "goal_s": GOAL_S,
        **figures,
        "slowest subcommand": slowest,
        "slowest subcommand s": per_command[slowest],
        "subcommands": per_command,
    }


def main() -> None:
    print(json.dumps(startup_seconds(), indent=2))


if __name__ == "__main__":
    main()
