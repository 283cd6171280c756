"""esml: machine-learning trading of CME E-mini S&P 500 futures."""

import os

from esml._compile_cache import use_source_keyed_numba_cache

use_source_keyed_numba_cache()
# OpenMP threads (xgboost's, torch's) that spin while they wait steal the other core on a
# shared two-core box: a 1M-row tree fit burned 150 CPU-s instead of 60 with spinning, and
# costs nothing without a neighbour. Read once, when the first OpenMP library loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
