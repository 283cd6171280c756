"""SageMaker's bring-your-own-container contract, mapped onto training/train.py.

SageMaker starts the image as `IMAGE train` with its inputs under /opt/ml. The SM_* variables
train.py reads are normally set by the sagemaker-training toolkit, which this image does not
carry (it would pull in a second copy of half the ML stack), so this script derives them from
/opt/ml, passes hyper-parameters as `--key value` the way the toolkit does, and on failure
writes /opt/ml/output/failure: the text SageMaker reports as the job's FailureReason.
Standard library only: it must run before anything else in the image is known to work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

ML_ROOT = Path("/opt/ml")
TRAIN_SCRIPT = Path(__file__).resolve().parents[2] / "training" / "train.py"
RETRAIN_SCRIPT = TRAIN_SCRIPT.with_name("retrain_steps.py")
STEP_HYPERPARAMETER = "esml_step"
"""Set by the retraining state machine: run its step (train, evaluate, promote) instead."""
FAILURE_TAIL_LINES = 20


class ContractError(ValueError):
    """SageMaker handed the container something this image cannot use."""


def sagemaker_environment(ml_root: Path) -> dict[str, str]:
    """The SM_* variables the toolkit would set, from the files SageMaker mounts."""
    config_dir = ml_root / "input" / "config"
    channels = sorted(_read_json_object(config_dir / "inputdataconfig.json"))
    hyperparameters = read_hyperparameters(ml_root)
    env = {
        "SM_INPUT_DIR": str(ml_root / "input"),
        "SM_INPUT_CONFIG_DIR": str(config_dir),
        "SM_MODEL_DIR": str(ml_root / "model"),
        "SM_OUTPUT_DIR": str(ml_root / "output"),
        "SM_OUTPUT_DATA_DIR": str(ml_root / "output" / "data"),
        "SM_CHANNELS": json.dumps(channels),
        "SM_HPS": json.dumps(hyperparameters, sort_keys=True),
    }
    for channel in channels:
        env[f"SM_CHANNEL_{channel.upper()}"] = str(ml_root / "input" / "data" / channel)
    return env


def read_hyperparameters(ml_root: Path) -> dict[str, str]:
    raw = _read_json_object(ml_root / "input" / "config" / "hyperparameters.json")
    return {str(key): _decode(value) for key, value in raw.items()}


def hyperparameter_args(hyperparameters: Mapping[str, str]) -> list[str]:
    args: list[str] = []
    for key in sorted(hyperparameters):
        args += [f"--{key}", hyperparameters[key]]
    return args


def run_training(
    argv: Sequence[str],
    *,
    ml_root: Path = ML_ROOT,
    train_script: Path = TRAIN_SCRIPT,
    environ: Mapping[str, str] = os.environ,
) -> int:
    """Run train.py for SageMaker's `train` command; return the exit status to exit with."""
    if list(argv) != ["train"]:
        print(
            f"this image only trains (SageMaker runs it as `train`), got {list(argv)!r}",
            file=sys.stderr,
        )
        return 2
    try:
        derived = sagemaker_environment(ml_root)
        hyperparameters = read_hyperparameters(ml_root)
        args = hyperparameter_args(hyperparameters)
    except ContractError as e:
        _report_failure(ml_root, str(e))
        return 2
    for directory in ("SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR"):
        Path(derived[directory]).mkdir(parents=True, exist_ok=True)
    env = {**derived, **environ}  # a variable set on the job itself wins
    if STEP_HYPERPARAMETER in hyperparameters:
        train_script = train_script.with_name(RETRAIN_SCRIPT.name)
    command = [sys.executable, str(train_script), *args]
    process = subprocess.Popen(
        command, env=env, stderr=subprocess.PIPE, text=True, errors="replace"
    )
    tail: deque[str] = deque(maxlen=FAILURE_TAIL_LINES)
    assert process.stderr is not None
    for line in process.stderr:
        sys.stderr.write(line)
        tail.append(line)
    status = process.wait()
    if status != 0:
        _report_failure(
            ml_root, f"{train_script.name} exited with status {status}:\n" + "".join(tail)
        )
    return status


def _read_json_object(path: Path) -> dict[str, object]:
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text())
    except ValueError as e:
        raise ContractError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise ContractError(f"{path} must hold a JSON object, not {type(value).__name__}")
    return value


def _decode(value: object) -> str:
    """SageMaker stores every hyper-parameter as a string, and the SageMaker SDK JSON-encodes
    string values ('"abc"'); unwrap those, keep everything else as written."""
    text = value if isinstance(value, str) else json.dumps(value)
    try:
        decoded = json.loads(text)
    except ValueError:
        return text
    return decoded if isinstance(decoded, str) else text


def _report_failure(ml_root: Path, reason: str) -> None:
    print(reason, file=sys.stderr)
    failure = ml_root / "output" / "failure"
    failure.parent.mkdir(parents=True, exist_ok=True)
    failure.write_text(reason)


if __name__ == "__main__":
    sys.exit(run_training(sys.argv[1:]))
