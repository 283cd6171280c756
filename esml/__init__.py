"""esml: machine-learning trading of CME E-mini S&P 500 futures."""

from esml._compile_cache import use_source_keyed_numba_cache

use_source_keyed_numba_cache()
