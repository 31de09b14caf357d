"""A real tiny multi-objective search: run, trials.csv front, best, report (slow suite)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli, write_space
from tests.test_pareto import brute_force_flags
from vpr_tune.cli import main
from vpr_tune.tune.results import read_table


@pytest.mark.slow
def test_tiny_multi_objective_search_end_to_end(tmp_path, capsys, street_world_tiny) -> None:
    path = write_space(
        tmp_path / "s.yaml",
        model={"aggregator": {"name": {"choice": ["gem", "cosplace"]},
                              "dim": {"choice": [8, 32], "when": {"name": "cosplace"}}}},
        budget={"max_epochs": 3, "batches_per_epoch": 2, "places_per_batch": 8,
                "images_per_place": 4, "eval_batch_size": 64},
        # reproducible: MO-ASHA's stops do not depend on which result arrives first
        search={"algorithm": "optuna", "num_samples": 5, "seed": 0, "max_concurrent": 2,
                "scheduler": "asha", "reproducible": True, "objectives": [
                    {"metric": "val/R@1", "mode": "max"},
                    {"metric": "descriptor_dim", "mode": "min"}]},
        asha={"grace_period": 1, "reduction_factor": 2})
    storage = tmp_path / "res"
    rc = run_cli(["run", str(path), "--data", str(street_world_tiny), "--name", "mo",
                  "--storage", str(storage)])
    out = capsys.readouterr().out
    assert rc == 0, out
    trials = read_table(storage / "mo" / "trials.csv")
    curves = read_table(storage / "mo" / "metrics.csv")
    assert len(trials) == 5 and set(trials["status"]) <= {"TERMINATED", "STOPPED_EARLY"}
    # MO-ASHA did stop trials, each at a rung (grace 1, factor 2, 3 epochs: rungs 1 and 2)
    stopped = trials[trials["status"] == "STOPPED_EARLY"]
    assert len(stopped) >= 1 and set(stopped["epochs"]) <= {1, 2}, trials
    assert (curves["descriptor_dim"] > 0).all() and (curves["query_ms"] > 0).all()
    assert (curves["params_m"] > 0).all()
    objectives = [("best_val/R@1", "max"), ("descriptor_dim", "min")]
    assert trials["pareto"].astype(bool).tolist() == brute_force_flags(trials, objectives)
    assert "Pareto front" in out

    assert main(["best", "mo", "--json", "--storage", str(storage)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pareto_front"] and len(data["trials"]) == int(trials["pareto"].sum())
    assert main(["report", "mo", "--storage", str(storage)]) == 0
    assert (storage / "mo" / "report" / "pareto.png").is_file()
