"""trials.csv of a multi-objective search: cost columns and the `pareto` column."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import yaml

from tests.test_pareto import brute_force_flags
from vpr_tune.config import load_space
from vpr_tune.tune.results import read_table, write_tables

OBJECTIVES = [{"metric": "val/R@1", "mode": "max"}, {"metric": "descriptor_dim", "mode": "min"},
              {"metric": "query_ms", "mode": "min"}]


def fake_trial(folder: Path, trial_id: str, dim: int, rows: list[tuple[float, float]],
               status: str = "TERMINATED") -> SimpleNamespace:
    """A Ray trial as ``write_tables`` reads it: result.json with (R@1, query_ms) per epoch."""
    path = folder / f"train_{trial_id}"
    path.mkdir(parents=True)
    lines = [json.dumps({"epoch": e, "train/loss": 1.0, "lr": 0.01, "val/R@1": r1,
                         "val/R@5": r1, "val/R@10": r1, "val/R@25": r1, "descriptor_dim": dim,
                         "query_ms": ms, "params_m": 11.2, "diverged": 0, "node_id": "n0"})
             for e, (r1, ms) in enumerate(rows, start=1)]
    (path / "result.json").write_text("\n".join(lines) + "\n")
    return SimpleNamespace(trial_id=trial_id, status=status, config={"model.aggregator.dim": dim},
                           path=str(path), local_path=None, error_file=None)


def test_costs_and_pareto_column(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "space.yaml").write_text(yaml.safe_dump({
        "budget": {"max_epochs": 3}, "search": {"algorithm": "random", "scheduler": "fifo",
                                                "objectives": OBJECTIVES}}))
    space = load_space(exp / "space.yaml")
    trials = [
        fake_trial(exp, "big", 512, [(50, 3.0), (70, 9.0), (60, 4.0)]),
        fake_trial(exp, "small", 64, [(30, 1.0), (40, 1.0), (45, 1.2)]),
        fake_trial(exp, "worse", 512, [(20, 5.0), (30, 5.0), (35, 5.0)]),
        fake_trial(exp, "tie", 64, [(30, 1.0), (40, 1.0), (45, 1.2)]),
        fake_trial(exp, "crashed", 16, [(99, 0.1)], status="ERROR"),
    ]
    write_tables(exp, trials, space.base, space.base["search"]["metric"])
    table = read_table(exp / "trials.csv").set_index("trial_id")
    assert table.loc["big", "best_val/R@1"] == 70
    assert table.loc["big", "query_ms"] == 4.0  # median over its epochs, not the best epoch's
    assert table.loc["small", "descriptor_dim"] == 64 and table.loc["big", "params_m"] == 11.2
    flags = table["pareto"].astype(bool)
    assert flags.to_dict() == {"big": True, "small": True, "worse": False, "tie": True,
                               "crashed": False}
    frame = table.reset_index()
    objectives = [("best_val/R@1", "max"), ("descriptor_dim", "min"), ("query_ms", "min")]
    assert flags.tolist() == brute_force_flags(frame, objectives)
    curves = read_table(exp / "metrics.csv")
    assert {"descriptor_dim", "query_ms", "params_m"} <= set(curves.columns)
    assert curves.loc[curves["trial_id"] == "big", "query_ms"].tolist() == [3.0, 9.0, 4.0]


def test_single_objective_search_has_costs_but_no_pareto_column(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    space = load_space(_write(exp / "space.yaml", {"search": {"algorithm": "random"}}))
    write_tables(exp, [fake_trial(exp, "a", 256, [(10, 2.0)])], space.base)
    table = read_table(exp / "trials.csv")
    assert "pareto" not in table and table.loc[0, "descriptor_dim"] == 256


def _write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path
