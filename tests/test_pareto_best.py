"""`vpr-tune best` and `report` on a multi-objective experiment: the front, its figures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from vpr_tune import analysis, metrics
from vpr_tune.cli import main
from vpr_tune.tune.results import read_table

COSTS = {  # trial: (descriptor_dim, query_ms); R@1 of the hand experiment in the comment
    "t0": (512, 5.0),  # 60: the best recall
    "t1": (32, 1.0),  # 10: the cheapest finished one
    "t2": (16, 0.5),  # ERROR: would dominate, never counts
    "t3": (16, 0.5),  # DIVERGED: likewise
    "t4": (128, 2.0),  # 58: between the two
    "t5": (512, 6.0),  # 30: worse than t0 on everything
}


@pytest.fixture
def mo_experiment(hand_experiment: Path) -> Path:
    trials = read_table(hand_experiment / "trials.csv")
    trials["descriptor_dim"] = trials["trial_id"].map(lambda t: COSTS[t][0])
    trials["query_ms"] = trials["trial_id"].map(lambda t: COSTS[t][1])
    trials["params_m"] = 11.2
    trials.to_csv(hand_experiment / "trials.csv", index=False)
    space = yaml.safe_load((hand_experiment / "space.yaml").read_text())
    space["search"] = {"scheduler": "asha", "objectives": [
        {"metric": "val/R@1", "mode": "max"}, {"metric": "descriptor_dim", "mode": "min"},
        {"metric": "query_ms", "mode": "min"}]}
    (hand_experiment / "space.yaml").write_text(yaml.safe_dump(space))
    return hand_experiment


def best(capsys, *args: str) -> tuple[int, str]:
    rc = main(["best", *args])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out.out


def test_best_json_is_the_front_sorted_by_the_first_objective(mo_experiment, capsys) -> None:
    rc, out = best(capsys, "hand", "--json", "--storage", str(mo_experiment.parent))
    assert rc == 0
    data = json.loads(out)
    assert data["pareto_front"] is True
    assert [o["metric"] for o in data["objectives"]] == ["val/R@1", "descriptor_dim", "query_ms"]
    rows = data["trials"]
    assert [r["trial_id"] for r in rows] == ["t0", "t4", "t1"]
    assert rows[1]["val_R@1"] == 58.0 and rows[1]["descriptor_dim"] == 128.0
    assert rows[1]["query_ms"] == 2.0 and rows[1]["params_m"] == 11.2
    assert {"optimizer.name", "optimizer.lr"} <= set(rows[0])  # the varying hyperparameters


def test_best_table_and_metric_option(mo_experiment, capsys) -> None:
    rc, out = best(capsys, "hand", "--storage", str(mo_experiment.parent))
    assert rc == 0 and "Pareto front of hand" in out and "3 of 6 trials on the front" in out
    assert "descriptor_dim" in out or "descriptor" in out
    rc, out = best(capsys, "hand", "--json", "--metric", "val/R@1", "--top", "2",
                   "--storage", str(mo_experiment.parent))
    assert [r["trial_id"] for r in json.loads(out)["trials"]] == ["t0", "t4"]


def test_front_retest_covers_every_front_trial(mo_experiment, tmp_path) -> None:
    from vpr_tune.retest import retest

    def fake_evaluate(ckpt, root, tests):
        recalls = {r: float(i) for i, r in enumerate(metrics.RECALLS, start=1)}
        return {name: {**recalls, "queries": 10, "database": 20, "queries_without_positive": 0}
                for name in tests}

    exp = analysis.load_experiment(mo_experiment)
    table = retest(exp, data=str(tmp_path), evaluate_fn=fake_evaluate, front=True,
                   log=lambda _m: None)
    assert table["trial_id"].tolist() == ["t0", "t4", "t1"]
    assert {"descriptor_dim", "query_ms", "sf_test_R@1", "tokyo_R@10"} <= set(table.columns)
    assert "Pareto front" in (mo_experiment / "retest.md").read_text()


def test_report_writes_pareto_and_hypervolume_figures(mo_experiment, capsys) -> None:
    assert main(["report", "hand", "--storage", str(mo_experiment.parent)]) == 0
    report = mo_experiment / "report"
    assert (report / "pareto.png").stat().st_size > 1000
    assert (report / "hypervolume.png").stat().st_size > 1000
    md = (report / "report.md").read_text()
    assert "## Pareto front (3 trials)" in md and "![Pareto front](pareto.png)" in md


def test_analysis_front_and_hypervolume_curve(mo_experiment) -> None:
    exp = analysis.load_experiment(mo_experiment)
    assert exp.multi_objective and exp.objectives[1] == ("descriptor_dim", "min")
    assert "descriptor_dim" not in exp.varying and "pareto" not in exp.hyperparameters
    curve = analysis.hypervolume_curve(exp)
    assert curve.is_monotonic_increasing and curve.iloc[-1] > 0
    assert curve.iloc[2] == curve.iloc[1]  # t2 (ERROR) adds nothing


def test_single_objective_experiment_is_unchanged(hand_experiment) -> None:
    exp = analysis.load_experiment(hand_experiment)
    assert not exp.multi_objective
    import matplotlib.pyplot as plt

    from vpr_tune import plots

    try:
        assert "pareto" not in plots.figures(exp)
    finally:
        plt.close("all")
    assert isinstance(analysis.top_table(exp), pd.DataFrame)


def test_ranking_metric_of_a_multi_objective_search(mo_experiment) -> None:
    space = yaml.safe_load((mo_experiment / "space.yaml").read_text())
    space["search"]["objectives"] = [{"metric": "query_ms"}, {"metric": "val/R@5"}]
    (mo_experiment / "space.yaml").write_text(yaml.safe_dump(space))
    exp = analysis.load_experiment(mo_experiment)
    assert exp.metric == "val/R@5" and exp.mode == "max"  # what best.pt followed


def test_best_metric_takes_any_objective_of_the_search(mo_experiment, capsys) -> None:
    # issue 36: `--metric descriptor_dim` was "unknown metric" though the footer offers it
    rc, out = best(capsys, "hand", "--json", "--metric", "descriptor_dim", "--storage",
                   str(mo_experiment.parent))
    assert rc == 0
    rows = json.loads(out)["trials"]
    assert [r["trial_id"] for r in rows] == ["t1", "t4", "t0", "t5"]  # smallest first
    assert [r["descriptor_dim"] for r in rows] == [32.0, 128.0, 512.0, 512.0]
    assert main(["best", "hand", "--metric", "params_m", "--storage",
                 str(mo_experiment.parent)]) == 2  # a cost that is not an objective
    assert "params_m ranks only a search that lists it" in capsys.readouterr().err


def test_export_of_a_front_says_which_trial_and_why(mo_experiment, tmp_path, capsys) -> None:
    # issue 36: it silently took the highest R@1 of the front
    for tid in ("t0", "t1", "t4", "t5"):  # the checkpoints are placeholders: Ray's params
        (mo_experiment / f"train_{tid}" / "params.json").write_text(json.dumps(
            {"optimizer.name": "sgd", "optimizer.lr": 0.01, "optimizer.weight_decay": 1e-3,
             "scheduler.name": "none"}))
    out_yaml = tmp_path / "x.yaml"
    rc, out = best(capsys, "hand", "--export", str(out_yaml), "--storage",
                   str(mo_experiment.parent))
    assert rc == 0 and out_yaml.exists()
    assert "exported t0, one of the 3 trials on the Pareto front, by the best val/R@1" in out
    assert "--trial ID" in out
    rc, out = best(capsys, "hand", "--export", str(out_yaml), "--metric", "query_ms",
                   "--storage", str(mo_experiment.parent))
    assert rc == 0 and "exported t1" in out and "best query_ms (--metric)" in out
    rc, out = best(capsys, "hand", "--export", str(out_yaml), "--trial", "t4", "--storage",
                   str(mo_experiment.parent))
    assert rc == 0 and "note:" not in out  # chosen by the user: nothing to explain
