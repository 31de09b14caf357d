"""Retest: every recall, queries without a positive, val -> test rank transfer, --top all."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from vpr_tune.analysis import rank_transfer
from vpr_tune.cli import main
from vpr_tune.metrics import RECALLS


def test_rank_transfer_on_a_hand_made_table():
    retest = pd.DataFrame({
        "val_R@1": [50.0, 40.0, 30.0, 20.0],
        "sf_test_R@1": [45.0, 35.0, 25.0, 15.0],   # same order: +1, +1
        "tokyo_R@1": [10.0, 30.0, 20.0, 40.0],     # nearly reversed
    })
    frame = rank_transfer(retest).set_index("test_set")
    assert list(frame.index) == ["sf_test", "tokyo"]
    assert frame.loc["sf_test", "spearman"] == pytest.approx(1.0)
    assert frame.loc["sf_test", "kendall"] == pytest.approx(1.0)
    # ranks (4,1) (3,3) (2,2) (1,4): rho = 1 - 6 * 18 / (4 * 15); 1 concordant, 5 discordant
    assert frame.loc["tokyo", "spearman"] == pytest.approx(-0.8)
    assert frame.loc["tokyo", "kendall"] == pytest.approx(-4 / 6)
    assert (frame["configs"] == 4).all()


def test_rank_transfer_needs_three_configs():
    frame = rank_transfer(pd.DataFrame({"val_R@1": [1.0, 2.0], "tokyo_R@1": [2.0, 1.0]}))
    assert frame.loc[0, "configs"] == 2
    assert math.isnan(frame.loc[0, "spearman"]) and math.isnan(frame.loc[0, "kendall"])


def fake_eval(checkpoint, root, tests):
    n = int(str(checkpoint).split("train_t")[1][0])  # the hand experiment's trial number
    return {s: {**{r: 10.0 * n + i for i, r in enumerate(RECALLS)}, "queries": 100,
                "database": 300, "queries_without_positive": 3 + i}
            for i, s in enumerate(tests)}


def test_retest_has_every_recall_and_no_positive_counts(hand_experiment, monkeypatch, capsys,
                                                        street_world_tiny):
    from vpr_tune import retest as retest_mod

    monkeypatch.setattr(retest_mod, "make_evaluator", lambda log=print: fake_eval)
    rc = main(["best", str(hand_experiment), "--retest", "--top", "all",
               "--data", str(street_world_tiny)])
    out = capsys.readouterr().out
    assert rc == 0, out
    table = pd.read_csv(hand_experiment / "retest.csv", dtype={"trial_id": str})
    for s in ("sf_test", "tokyo"):
        assert [f"{s}_{r}{x}" for r in RECALLS for x in ("", "_lo", "_hi")] + [
            f"{s}_within_noise"] == [c for c in table.columns if c.startswith(s)]
    assert len(table) == 4  # --top all: every finished trial (ERROR/DIVERGED never rank)
    md = (hand_experiment / "retest.md").read_text()
    assert "sf_test: 100 queries, 3 without a positive" in md
    assert "tokyo: 100 queries, 4 without a positive" in md
    assert "Kendall" in md and "Spearman" in md
    assert "without a positive" in out and "Kendall" in out


@pytest.mark.parametrize("top, msg", [("0", "not in the range x>=1"),
                                      ("some", "a number or 'all'")])
def test_bad_top_is_one_line(hand_experiment, capsys, top, msg):
    assert main(["best", str(hand_experiment), "--top", top]) == 2
    assert msg in capsys.readouterr().err
