"""Paper and live give the same trades (issue 11 item 9): the first half hour of trading of
the real ES file, the `momentum` strategy, once on the paper broker (`--source replay
--broker paper`) and once against the Tradovate simulator replaying the same recording
in lockstep (`--source replay --broker tradovate`, orders over REST, fills over the user
socket): the same round trips, side, quantity, entry and exit time and price."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from esml.config import load_config
from esml.data.dbn import main_instrument, write_mbo_dbn
from esml.engine.live_run import (
    Endpoints,
    LiveSettings,
    LiveSetupError,
    make_strategy,
    replay_events,
    run,
    tradovate_client,
    with_defaults,
)
from esml.evaluation.trades import round_trips
from esml.journal.sqlite import SQLiteJournal
from esml.market.instruments import ES
from esml.sim.tradovate_api import TradovateSim
from esml.sim.tradovate_market import ReplayMarket
from tests.aws_fixtures import ACCOUNT_SPEC, TRADOVATE_LOGIN, sim_arguments

SYMBOL = "ESH4"
OPEN_NS = 1_703_545_200 * 10**9  # 17:00 CT, the session's open in the file
UNTIL_NS = OPEN_NS + 1_830 * 10**9  # three round trips in


@pytest.fixture(scope="module")
def recording(es_events: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real file's front contract up to half an hour after the open."""
    ev = es_events[es_events["instrument_id"] == main_instrument(es_events)]
    ev = ev[ev["ts_recv"] <= UNTIL_NS]
    path = tmp_path_factory.mktemp("paper_live") / "esh4-first-half-hour.mbo.dbn.zst"
    return write_mbo_dbn(path, ev, symbols={SYMBOL: int(ev["instrument_id"][0])})


def _trades(settings: LiveSettings, journal: Path, **broker: object) -> list[tuple]:
    cfg = load_config()
    with SQLiteJournal(journal) as j:
        asyncio.run(run(settings, cfg, make_strategy("momentum", cfg, lambda: None), j,
                        **broker))  # type: ignore[arg-type]  # fmt: skip
        fills = j.fills()
    return [
        (t.side, t.qty, t.entry_ts_ns, t.entry_price, t.exit_ts_ns, t.exit_price, t.exit_role)
        for t in round_trips(fills, ES)
    ]


def test_paper_and_live_on_the_same_recording_make_the_same_trades(
    recording: Path, tmp_path: Path
) -> None:
    common = {"source": "replay", "data": recording, "strategy": "momentum", "lockout_s": 0,
              "symbol": SYMBOL}  # fmt: skip
    paper = _trades(LiveSettings(broker="paper", **common), tmp_path / "paper.sqlite")

    cfg = load_config()  # the simulator: the same recording, the paper broker's exchange
    market = ReplayMarket(replay_events(recording), SYMBOL, speed=None,
                          config=cfg.paper_exchange, lockstep=True)  # fmt: skip
    with TradovateSim(**sim_arguments(prices=None, market=market)) as sim:
        creds = with_defaults({**TRADOVATE_LOGIN, "accountSpec": ACCOUNT_SPEC})
        client = tradovate_client(creds, Endpoints(sim.base_url, sim.ws_url, sim.md_url),
                                  cfg.execution.commission_per_side, orders=True)  # fmt: skip
        root = sim.base_url.removesuffix("/v1")
        try:
            live = _trades(LiveSettings(broker="tradovate", lockstep=root, **common),
                           tmp_path / "live.sqlite", broker=client)  # fmt: skip
        finally:
            client.close()
        assert sim.net_position(ACCOUNT_SPEC, SYMBOL) == 0
        assert len(sim.calls("/order/placeoso")) == len(live), "each entry went to Tradovate"

    assert len(paper) >= 3, paper
    assert live == paper


def test_lockstep_needs_a_replay_traded_at_tradovate() -> None:
    with pytest.raises(LiveSetupError, match="--lockstep needs"):
        LiveSettings(source="replay", broker="paper", data=Path("x"), lockstep="http://h")
