"""What the report draws and says (issue 36): a figure only when it has something to show
(report.md says why one is absent), the hypervolume's reference point, legends off the
curves, and a PBT report that speaks of exploits and lineages."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from tests.helpers import write_hand_experiment
from vpr_tune import analysis as va
from vpr_tune import plots as vp
from vpr_tune.report import write_report
from vpr_tune.tune.lineage import exploits, read_perturbations
from vpr_tune.tune.results import read_table


def test_report_leaves_out_empty_figures_and_says_why(tmp_path, monkeypatch):
    monkeypatch.delenv("VPR_TUNE_DATA", raising=False)
    exp_dir = write_hand_experiment(tmp_path / "results" / "plain", trials=[
        ("t0", "TERMINATED", "sgd", 0.01, 1e-3, "none", [20.0, 40.0, 55.0, 60.0]),
        ("t1", "TERMINATED", "sgd", 1e-3, 1e-3, "none", [10.0, 12.0, 13.0, 14.0]),
        ("t2", "TERMINATED", "sgd", 3e-3, 1e-3, "none", [15.0, 30.0, 35.0, 36.0]),
    ])
    trials = read_table(exp_dir / "trials.csv").drop(columns=["optimizer.weight_decay"])
    trials.to_csv(exp_dir / "trials.csv", index=False)
    report = exp_dir / "report"
    report.mkdir()
    (report / "lr_wd.png").write_bytes(b"an old report's picture")
    md = write_report(va.load_experiment(exp_dir)).read_text()
    pngs = {p.name for p in report.glob("*.png")}
    assert "lr_wd.png" not in pngs and "by_category.png" not in pngs
    assert "lr_wd.png" not in md and "by_category.png" not in md
    assert "Not drawn: no column optimizer.weight_decay." in md
    assert "Not drawn: no categorical hyperparameter varies." in md
    assert {"curves.png", "best_so_far.png", "parallel.png"} <= pngs
    figs, missing = vp.figure_set(va.load_experiment(exp_dir))
    assert set(missing) == {"lr_wd", "by_category"} and not set(missing) & set(figs)


def test_legends_sit_outside_the_axes(hand_experiment):
    exp = va.load_experiment(hand_experiment)
    for fig in (vp.plot_curves(exp), vp.plot_best_so_far(exp)):
        fig.canvas.draw()
        ax = fig.axes[0]
        legend = ax.get_legend().get_window_extent()
        assert legend.x0 >= ax.get_window_extent().x1  # covers no curve


def test_hypervolume_figure_and_report_name_the_reference_point(hand_experiment):
    trials = read_table(hand_experiment / "trials.csv")
    trials["descriptor_dim"] = [512, 32, 16, 16, 128, 512]
    trials.to_csv(hand_experiment / "trials.csv", index=False)
    space = yaml.safe_load((hand_experiment / "space.yaml").read_text())
    space["search"] = {"scheduler": "asha", "objectives": [
        {"metric": "val/R@1", "mode": "max"}, {"metric": "descriptor_dim", "mode": "min"}]}
    (hand_experiment / "space.yaml").write_text(yaml.safe_dump(space))
    exp = va.load_experiment(hand_experiment)
    ref = va.reference_point(exp)  # R@1: worst 10 - 5 (10 % of 50); dim: 512 + 48
    assert ref == [5.0, 560.0]
    title = vp.plot_hypervolume(exp).texts[0].get_text()
    assert "reference point: val/R@1 = 5, descriptor_dim = 560" in title
    md = write_report(exp).read_text()
    assert "reference point: val/R@1 = 5, descriptor_dim = 560" in md


# ------------------------------------------------------------------------------- PBT
PBT_TRIALS = [  # id, status, opt, lr, wd, sched, R@1 per epoch (its own rows)
    ("p0", "TERMINATED", "adam", 1e-3, 1e-4, "none", [10.0, 30.0, 35.0, 40.0]),
    ("p1", "TERMINATED", "adam", 2e-3, 2e-4, "none", [20.0, 25.0, 50.0, 70.0]),
    ("p2", "TERMINATED", "adam", 3e-3, 3e-4, "none", [5.0, 8.0, 9.0, 10.0]),
    ("p3", "TERMINATED", "adam", 4e-3, 4e-4, "none", [6.0, 7.0, 20.0, 30.0]),
]


@pytest.fixture
def pbt_experiment(tmp_path, monkeypatch):
    """A hand-made PBT experiment: at epoch 2, p1 copies p0 and p3 copies p2, each
    mutating lr and weight decay (2 exploits, 4 rows of perturbations.csv). p1 wins (70);
    its lineage's epochs 1-2 are p0's (10, 30), not its own (20, 25). p3 ran its epochs 3
    and 4 twice (restored from an older checkpoint): 18 trial-epochs ran, metrics.csv keeps
    16."""
    monkeypatch.delenv("VPR_TUNE_DATA", raising=False)
    exp = write_hand_experiment(tmp_path / "results" / "pbt", trials=PBT_TRIALS)
    space = yaml.safe_load((exp / "space.yaml").read_text())
    space.pop("asha")
    space["search"] = {"scheduler": "pbt", "metric": "val/R@1", "mode": "max"}
    space["pbt"] = {"perturbation_interval": 2,
                    "mutate": ["optimizer.lr", "optimizer.weight_decay"]}
    (exp / "space.yaml").write_text(yaml.safe_dump(space))
    pd.DataFrame([
        ("p1", 2, "p0", "optimizer.lr", 2e-3, 1.2e-3),
        ("p1", 2, "p0", "optimizer.weight_decay", 2e-4, 1.2e-4),
        ("p3", 2, "p2", "optimizer.lr", 4e-3, 3.6e-3),
        ("p3", 2, "p2", "optimizer.weight_decay", 4e-4, 3.6e-4),
    ], columns=["trial_id", "epoch", "source_trial_id", "param", "old", "new"]).to_csv(
        exp / "perturbations.csv", index=False)
    curves = read_table(exp / "metrics.csv")
    rows = [*curves.to_dict("records"),
            *curves[(curves["trial_id"] == "p3") & (curves["epoch"] > 2)].to_dict("records")]
    (exp / "epochs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return exp


def test_exploits_are_counted_once_each(pbt_experiment):
    moves = read_perturbations(pbt_experiment)
    table = exploits(moves)
    assert len(moves) == 4 and len(table) == 2
    assert list(table["params"]) == ["optimizer.lr, optimizer.weight_decay"] * 2


def test_pbt_curves_draw_the_best_trials_lineage(pbt_experiment):
    exp = va.load_experiment(pbt_experiment)
    fig = vp.plot_curves(exp)
    ax = fig.axes[0]
    bold = [ln for ln in ax.lines if str(ln.get_label()).startswith("best:")]
    assert len(bold) == 1 and "lineage" in bold[0].get_label()
    assert list(bold[0].get_ydata()) == [10.0, 30.0, 50.0, 70.0]  # not p1's own 20, 25
    labels = [str(ln.get_label()) for ln in ax.lines]
    assert not any("ASHA" in label or "stopped early" in label for label in labels)
    assert "ASHA" not in fig.texts[0].get_text()


def test_pbt_report_speaks_of_exploits_and_lineages(pbt_experiment):
    exp = va.load_experiment(pbt_experiment)
    assert exp.trial_epochs == 18 and len(exp.curves) == 16
    md = write_report(exp).read_text()
    assert "2 exploit(s) in `perturbations.csv`" in md and "perturbation(s)" not in md
    assert "trial-epochs spent: 18" in md
    assert "ASHA" not in md and "rung" not in md.lower()
    assert "lineage" in md
    assert "importance.png" not in md
    assert "Not drawn: PBT mutates hyperparameters while training" in md
    report = pbt_experiment / "report"
    assert not (report / "importance.png").exists()
    assert not (report / "rung_spearman.png").exists()
    assert vp.plot_best_so_far(exp).axes[0].lines[0].get_xdata()[-1] == 18
