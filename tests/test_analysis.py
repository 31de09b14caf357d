"""vpr_tune.analysis: experiment frames, ranking, helpers for the figures, the figures."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from vpr_tune import analysis as va
from vpr_tune import plots as vp
from vpr_tune.errors import UserError


@pytest.fixture
def exp(hand_experiment):
    return va.load_experiment(hand_experiment)


def test_frames(exp) -> None:
    assert list(exp.trials["trial_id"]) == ["t0", "t1", "t2", "t3", "t4", "t5"]
    assert len(exp.curves) == 4 + 1 + 1 + 2 + 4 + 2
    assert {"trial_id", "epoch", "val/R@1"} <= set(exp.curves.columns)
    assert exp.retest is None
    assert exp.synthetic  # no data root -> street-world
    assert exp.name == "hand"
    assert exp.rungs == [1, 2]  # grace 1, factor 2, max 4 epochs


def test_varying_excludes_constant_and_summary_columns(exp) -> None:
    # momentum only exists for sgd and is always 0.9; max_epochs is fixed
    assert exp.varying == [
        "optimizer.name", "optimizer.lr", "optimizer.weight_decay", "scheduler.name"
    ]
    assert "optimizer.momentum" in exp.hyperparameters
    assert "best_val/R@1" not in exp.hyperparameters


def test_ranked_excludes_error_and_diverged(exp) -> None:
    table = va.ranked(exp)
    assert list(table["trial_id"]) == ["t0", "t4", "t5", "t1"]
    assert list(table["rank"]) == [1, 2, 3, 4]
    assert list(va.ranked(exp, "val/R@5")["trial_id"]) == ["t0", "t4", "t5", "t1"]
    assert list(va.ranked(exp.trials, mode="min")["trial_id"]) == ["t1", "t5", "t4", "t0"]


def test_ranked_unknown_metric_is_user_error(exp) -> None:
    with pytest.raises(UserError, match="unknown metric 'val/R@3'.*val/R@1"):
        va.ranked(exp, "val/R@3")


def test_load_by_name_and_unknown(hand_experiment, monkeypatch) -> None:
    monkeypatch.chdir(hand_experiment.parent.parent)
    storage = str(hand_experiment.parent)
    assert va.load_experiment("hand", storage=storage).path == hand_experiment.resolve()
    assert va.load_experiment(None, storage=storage).path == hand_experiment.resolve()
    with pytest.raises(UserError, match="nope"):
        va.load_experiment("nope", storage=storage)


def test_best_so_far_is_a_running_max(exp) -> None:
    frame = va.best_so_far(exp.curves)
    assert list(frame["trial_epochs"]) == list(range(1, len(exp.curves) + 1))
    assert frame["best"].is_monotonic_increasing
    assert frame["best"].iloc[-1] == exp.curves["val/R@1"].max()  # 80: the diverged t3
    ok = va.best_so_far(exp.curves, exclude=va.failed_trials(exp))
    assert len(ok) == len(frame)  # failed trials still cost their epochs...
    assert ok["best"].iloc[-1] == 60.0  # ...but never count as best
    assert ok["best"].is_monotonic_increasing


def test_rung_spearman() -> None:
    # 4 trials reach epoch 3; the ranking at epoch 1 is reversed at epoch 3 for a pair.
    rows = []
    for tid, vals in {"a": [1, 2, 9], "b": [2, 3, 4], "c": [3, 5, 6], "d": [4, 4, 8],
                      "e": [0]}.items():
        rows += [{"trial_id": tid, "epoch": e + 1, "val/R@1": v} for e, v in enumerate(vals)]
    curves = pd.DataFrame(rows)
    result = va.rung_spearman(curves, rung_epoch=1)
    assert result.n_trials == 4  # e stopped at the rung: no later value
    # ranks at epoch 1: a<b<c<d -> 1,2,3,4; final a=9,b=4,c=6,d=8 -> 4,1,2,3
    assert result.spearman == pytest.approx(-0.2)
    same = va.rung_spearman(curves, rung_epoch=2)
    assert same.n_trials == 4
    table = va.rung_spearman_table(curves)
    assert list(table["rung_epoch"]) == [1, 2]
    too_few = va.rung_spearman(curves[curves["trial_id"].isin(["a", "b"])], 1)
    assert too_few.n_trials == 2 and math.isnan(too_few.spearman)


def test_importance_sums_to_one_and_is_deterministic(exp) -> None:
    scores = va.importance(exp.trials, "val/R@1", space=exp.space)
    assert set(scores.index) == set(exp.varying)
    assert scores.sum() == pytest.approx(1.0)
    assert scores.equals(va.importance(exp.trials, "val/R@1", space=exp.space))


def test_importance_finds_the_parameter_that_matters() -> None:
    # R@1 depends only on lr; wd is noise -> lr must dominate.
    rows = []
    for i in range(24):
        lr = 10 ** (-4 + 3 * (i % 6) / 5)
        wd = 10 ** (-5 + 3 * ((i * 7) % 11) / 10)
        rows.append({"trial_id": f"t{i}", "status": "TERMINATED", "optimizer.lr": lr,
                     "optimizer.weight_decay": wd, "best_val/R@1": 100 * lr ** 0.3})
    scores = va.importance(pd.DataFrame(rows))
    assert scores.index[0] == "optimizer.lr"
    assert scores["optimizer.lr"] > 0.7


def test_figures_are_not_empty(exp) -> None:
    figs = vp.figures(exp)
    assert set(figs) == {"curves", "best_so_far", "parallel", "by_category", "lr_wd",
                         "importance", "rung_spearman", "intervals"}
    curves_ax = figs["curves"].axes[0]
    # one line per trial (plus the ASHA/failed markers and rung lines)
    assert len(curves_ax.lines) >= len(exp.trials)
    assert len(figs["by_category"].axes) >= 2  # optimizer.name, scheduler.name
    for fig in figs.values():
        assert all(ax.has_data() for ax in fig.axes if ax.get_label() != "<colorbar>")


def test_retest_figure(exp) -> None:
    exp.retest = pd.DataFrame({
        "rank": [1, 2], "trial_id": ["t0", "t4"], "val_R@1": [60.0, 58.0],
        "val_R@5": [75.0, 73.0], "sf_test_R@1": [30.0, 33.0], "sf_test_R@5": [40.0, 41.0],
        "sf_test_R@10": [50.0, 51.0], "tokyo_R@1": [20.0, 22.0], "tokyo_R@5": [30.0, 31.0],
        "tokyo_R@10": [40.0, 41.0],
    })
    assert va.retest_columns(exp.retest) == ["sf_test_R@1", "tokyo_R@1"]
    fig = vp.plot_retest(exp)
    assert len(fig.axes[0].patches) == 2 * 3
    assert vp.plot_val_vs_test(exp).axes[0].has_data()
    transfer = va.rank_transfer(exp.retest)
    assert list(transfer["test_set"]) == ["sf_test", "tokyo"]
    assert transfer["spearman"].isna().all()  # 2 configs: too few to correlate
    three = pd.concat([exp.retest, exp.retest.iloc[[0]].assign(rank=3, trial_id="t5", **{
        "val_R@1": 30.0, "sf_test_R@1": 10.0, "tokyo_R@1": 25.0})])
    rho = va.rank_transfer(three).set_index("test_set")["spearman"]
    # val order t0 > t4 > t5; sf: t4 > t0 > t5 -> 0.5; tokyo: t5 > t4 > t0 -> -1
    assert rho["sf_test"] == pytest.approx(0.5) and rho["tokyo"] == pytest.approx(-1.0)


def test_markdown_table() -> None:
    text = va.markdown_table(pd.DataFrame({"a": [1, 2], "b": [0.0423, float("nan")]}))
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.0423 |", "| 2 |  |"]
    assert "| 12.35 |" in va.markdown_table(pd.DataFrame({"val_R@1": [12.345]}))


def test_finished_curves_drop_failed_trials(exp) -> None:
    assert set(exp.finished_curves["trial_id"]) == {"t0", "t1", "t4", "t5"}


def test_report_writes_markdown_and_pngs(hand_experiment, capsys) -> None:
    from vpr_tune.cli import main

    rc = main(["report", "hand", "--storage", str(hand_experiment.parent)])
    assert rc == 0, capsys.readouterr().err
    out = hand_experiment / "report"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(f"{s}.png" for s in (
        "curves", "best_so_far", "parallel", "by_category", "lr_wd", "importance",
        "rung_spearman", "intervals"))
    assert all((out / p).stat().st_size > 10_000 for p in pngs)  # real pictures, not blanks
    md = (out / "report.md").read_text()
    assert "synthetic" in md.lower()
    assert "Trial `t0`" in md and "| 1 | t0 | sgd |" in md
    assert "![Learning curves](curves.png)" in md
    assert "Retest on the test sets" not in md
    assert "![How sure is each R@1?](intervals.png)" in md
    assert "intervals unavailable" in md  # a hand-made experiment kept no per-query ranks


def test_report_includes_retest_when_present(hand_experiment) -> None:
    from vpr_tune.report import write_report
    from vpr_tune.retest import write_retest

    table = pd.DataFrame({"rank": [1], "trial_id": ["t0"], "val_R@1": [60.0], "val_R@5": [75.0],
                          "sf_test_R@1": [31.5], "sf_test_R@5": [40.0], "sf_test_R@10": [50.0],
                          "tokyo_R@1": [20.0], "tokyo_R@5": [30.0], "tokyo_R@10": [40.0]})
    write_retest(hand_experiment, table, synthetic=True)
    path = write_report(va.load_experiment(hand_experiment))
    md = path.read_text()
    assert "Retest on the test sets" in md and "31.50" in md
    assert (path.parent / "retest.png").exists() and (path.parent / "val_vs_test.png").exists()


def test_importance_of_a_constant_metric_is_empty(exp) -> None:
    trials = exp.trials.assign(**{"best_val/R@1": 50.0})
    assert va.importance(trials).empty
    assert va.importance(exp.trials[exp.trials["trial_id"] == "t0"]).empty  # one trial


def test_trial_ids_stay_text(tmp_path) -> None:
    """Ray's hex trial ids that look like numbers survive a CSV round trip unchanged."""
    from vpr_tune.analysis import read_table
    from vpr_tune.atomic import write_csv

    ids = ["00123456", "12e45678", "47911289", "a1b2c3d4"]
    write_csv(pd.DataFrame({"trial_id": ids, "epoch": [1, 2, 3, 4]}), tmp_path / "m.csv")
    table = read_table(tmp_path / "m.csv")
    assert table["trial_id"].tolist() == ids
    assert table["epoch"].tolist() == [1, 2, 3, 4]
