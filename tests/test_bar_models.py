"""The bar-level stack on a slice of the shipped real bars (2015-2016): no look-ahead in the
features, labels as defined, purge and embargo by year, and a small walk-forward end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from esml.alpha.bar_features import (
    BAR_NS,
    DEAD_ZONE_TICKS,
    FEATURE_NAMES,
    bar_features,
    windows,
)
from esml.alpha.bar_models import BarBudget
from esml.alpha.bar_transformer import BarTransformer
from esml.alpha.torch_onnx import export_net
from esml.data.continuous import chain_bars, roll_table
from esml.data.sierra import SHIPPED_BARS, read_shipped_bars
from esml.evaluation.bar_report import BarReportContext, render_markdown
from esml.evaluation.bar_walkforward import (
    BarEvalSettings,
    evaluate_year,
    previous_labels,
    year_split,
)
from esml.features.labels import DOWN, FLAT, UP
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def chained():
    bars = read_shipped_bars(ROOT / SHIPPED_BARS)
    return chain_bars({c: b for c, b in bars.items() if c.year <= 2016})


@pytest.fixture(scope="module")
def frame(chained):
    return bar_features(chained)


def test_features_read_no_bar_after_the_decision(chained, frame) -> None:
    cut = 40_000
    early = bar_features(chained.iloc[:cut].reset_index(drop=True))
    assert np.array_equal(early.x, frame.x[:cut])  # later bars change no earlier feature
    assert early.x.shape[1] == len(FEATURE_NAMES) and np.isfinite(frame.x).all()


def test_direction_label_is_the_close_thirty_minutes_later(frame) -> None:
    close = frame.prices["close"].to_numpy()
    rows = np.flatnonzero(frame.dir_valid)[:5000]
    h = 6 * BAR_NS  # the last bar closing at or before t + 30 min, at most 7.5 min short
    later = np.searchsorted(frame.ts_end, frame.ts_end[rows] + h, side="right") - 1
    assert np.all(frame.ts_end[later] >= frame.ts_end[rows] + h - h // 4)
    assert np.mean(later == rows + 6) > 0.95  # quiet overnight bars may be missing
    move = (close[later] - close[rows]) / 0.25
    want = np.where(move > DEAD_ZONE_TICKS, UP, np.where(move < -DEAD_ZONE_TICKS, DOWN, FLAT))
    assert np.array_equal(frame.y_dir[rows], want)
    # no label window crosses a roll or a halt
    roll = (
        np.flatnonzero(
            frame.prices["contract"].to_numpy()[1:] != frame.prices["contract"].to_numpy()[:-1]
        )
        + 1
    )
    assert roll.size and not frame.dir_valid[roll[0] - 3]
    decisions = frame.decision & frame.dir_valid
    minute = frame.column("minute_ct")[decisions]
    assert minute.min() == 8 * 60 + 35 and minute.max() == 14 * 60 + 30


def test_year_split_purges_and_embargoes(frame) -> None:
    rows = np.flatnonzero(frame.decision & frame.dir_valid)
    train, test = year_split(frame, rows, 2016, 6, 86_400.0)
    assert set(frame.year[test]) == {2016} and frame.year[train].max() <= 2015
    gap = frame.ts_end[test].min() - frame.ts_end[train].max()
    assert gap > 6 * BAR_NS + 86_400 * 10**9
    prev = previous_labels(frame.y_dir, frame.dir_valid, frame.ts_end, 6)
    known = np.flatnonzero(prev >= 0)
    # the previous label's window ends at the decision: it is known then, not later
    assert np.array_equal(prev[known], frame.y_dir[known - 6])
    assert np.all(frame.ts_end[known - 6] + 6 * BAR_NS == frame.ts_end[known])


def test_transformer_reads_windows_and_exports_to_onnx(frame) -> None:
    win = windows(frame.x, np.arange(100, 140))
    assert win.shape == (40, 60, 11)
    assert np.array_equal(win[0, -1], frame.x[100, :11]) and np.array_equal(
        win[0, 0], frame.x[41, :11]
    )
    torch.manual_seed(0)
    net = BarTransformer().eval()
    _, worst = export_net(net, win)
    assert worst <= 1e-5
    with pytest.raises(ValueError, match="needs 59 bars"):
        windows(frame.x, np.array([10]))


def test_walk_forward_year_scores_and_trades(chained, frame) -> None:
    budget = BarBudget(
        tree_rounds=40, regime_max_rows=3000, regime_trees=20, regime_mlp_iter=20, threads=1
    )
    settings = BarEvalSettings(test_years=(2016,), nets=(), n_boot=100, budget=budget)
    r = evaluate_year(frame, 2016, settings)
    assert set(r.direction_scores) == {"trees", "ensemble", "majority", "persistence", "momentum"}
    assert {c.baseline for c in r.direction_comparisons} == {"majority", "persistence", "momentum"}
    assert set(r.regime_scores) == {"regime", "majority", "previous_regime"}
    trees, ens = r.direction_scores["trees"], r.direction_scores["ensemble"]
    assert trees.metrics["log_loss"].value == pytest.approx(ens.metrics["log_loss"].value)
    assert 15_000 < r.test_rows < 19_000 and r.train_rows > 15_000
    for name, m in r.trading.items():
        assert m.costs == pytest.approx(4.5 * m.trades), name
    assert r.trading["momentum"].trades > 100
    md = render_markdown(
        [r],
        BarReportContext(
            "esml bars evaluate --years 2016",
            1.0,
            "slice",
            len(chained),
            settings,
            roll_table(chained),
        ),
    )
    assert "## Verdict" in md and "| 2016 | " in md and "### 2016" in md
    beat = all(c.beats_all for c in r.direction_comparisons if c.model == "trees")
    paid = r.trading["trees"].net_pnl > 0
    assert ("both beat every baseline" in md) == (beat and paid)
