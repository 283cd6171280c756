"""Replay the real ES file through the engine into a SQLite journal, as `esml backtest`
does, with a rule strategy (no trained model needed): the monitor test's running engine.

    python -m tests.monitor_replay JOURNAL
"""

from __future__ import annotations

import sys

from esml.alpha.rules import make_rule_strategy
from esml.config import load_config
from esml.data.dbn import main_instrument, read_mbo
from esml.engine.session import run_session
from esml.journal.sqlite import SQLiteJournal
from tests.conftest import ES_FILE

RULE = "zscore_regime"  # trades 20 round trips on the real file


def main(journal: str) -> None:
    cfg = load_config()
    ev = read_mbo(ES_FILE)
    ev = ev[ev["instrument_id"] == main_instrument(ev)]
    with SQLiteJournal(journal) as j:
        strategy = make_rule_strategy(RULE, tick_size=cfg.instrument_spec.tick_size)
        run_session(ES_FILE.name, ev, cfg, strategy, j)


if __name__ == "__main__":
    main(sys.argv[1])
