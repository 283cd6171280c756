"""Train the bar-level models on the real ES 5-minute bars and write their bundle: a
SageMaker training entry point that also runs locally.

In SageMaker the bars come from `SM_CHANNEL_TRAINING` (the folder holding
es-5m-sierra.parquet and its .sha256) and the bundle goes to `SM_MODEL_DIR`. Locally:

    python training/bar_train.py                       # shipped bars -> models/
    python training/bar_train.py --data FILE --out DIR --net-epochs 3

The same code as `esml bars train` (esml.alpha.bar_bundle.train_bar_bundle). The data is
REAL (Sierra Chart exports, see data/samples/NOTICE); the manifest records its sha256.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console

from esml.alpha.bar_bundle import frame_from_shipped, train_bar_bundle
from esml.alpha.bar_models import BarBudget
from esml.data.sierra import SHIPPED_BARS


def _default_data() -> Path:
    channel = os.environ.get("SM_CHANNEL_TRAINING")
    return Path(channel) / SHIPPED_BARS.name if channel else SHIPPED_BARS


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=_default_data())
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("SM_MODEL_DIR", "models")))
    parser.add_argument("--held-out-years", type=int, default=2, help="last years left out")
    for name, field in BarBudget.model_fields.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(field.default), default=None)
    args = parser.parse_args(argv)
    overrides = {k: v for k in BarBudget.model_fields if (v := getattr(args, k)) is not None}
    budget = BarBudget(**overrides)
    shipped = frame_from_shipped(args.data)
    path = train_bar_bundle(shipped, args.out, budget, held_out_years=args.held_out_years)
    Console().print(f"bar bundle written to {path}")
    return path


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
