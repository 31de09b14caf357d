"""``search.reproducible`` end to end (slow suite): real tiny searches, 2 trials at a time,
run twice give trials.csv and metrics.csv equal cell by cell except the columns that measure
the machine (killed and resumed: tests/test_crash_consistency.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import run_cli, write_space
from vpr_tune.tune.results import read_table

pytestmark = pytest.mark.slow

# what measures the machine (times, ids that Ray draws at random, paths): docs/searches.md
MACHINE = ["trial_id", "query_ms", "time_s", "node_id", "checkpoint", "timestamp"]
BUDGET = {"max_epochs": 4, "batches_per_epoch": 2, "places_per_batch": 4,
          "images_per_place": 2, "eval_batch_size": 32}
ASHA = dict(optimizer={"name": {"choice": ["sgd", "adam"]},
                       "lr": {"loguniform": [1.0e-3, 1.0e-1]}},
            budget=BUDGET,
            search={"algorithm": "optuna", "num_samples": 6, "max_concurrent": 2,
                    "scheduler": "asha", "reproducible": True},
            asha={"grace_period": 1, "reduction_factor": 2})


def tables(exp: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials = read_table(exp / "trials.csv")
    metrics = read_table(exp / "metrics.csv")
    return (trials.drop(columns=[c for c in MACHINE if c in trials]),
            metrics.drop(columns=[c for c in MACHINE if c in metrics]))


def assert_same(a: Path, b: Path) -> None:
    for left, right in zip(tables(a), tables(b), strict=True):
        pd.testing.assert_frame_equal(left, right, check_exact=True)


def search(tmp_path: Path, data: Path, name: str, **sections) -> Path:
    space = write_space(tmp_path / f"{name}.yaml", **sections)
    storage = tmp_path / "res"
    assert run_cli(["run", str(space), "--data", str(data), "--name", name,
                    "--storage", str(storage)]) == 0
    return storage / name


@pytest.fixture(scope="module")
def asha_run(tmp_path_factory, street_world_tiny) -> Path:
    return search(tmp_path_factory.mktemp("asha"), street_world_tiny, "first", **ASHA)


def test_asha_search_twice_gives_the_same_tables(asha_run, tmp_path, street_world_tiny):
    trials = read_table(asha_run / "trials.csv")
    assert (trials["status"] == "STOPPED_EARLY").any() and (trials["epochs"] < 4).any()
    again = search(tmp_path, street_world_tiny, "second", **ASHA)
    assert_same(asha_run, again)
    space = (again / "space.yaml").read_text()
    assert "reproducible: true" in space


def test_pbt_search_twice_gives_the_same_tables(tmp_path, street_world_tiny):
    # the population runs together (synchronous PBT pauses every trial at each interval)
    pbt = dict(budget=BUDGET, resources={"cpu": 0.5},
               search={"algorithm": "random", "num_samples": 4, "max_concurrent": 4,
                       "scheduler": "pbt", "reproducible": True},
               pbt={"perturbation_interval": 2, "quantile_fraction": 0.25,
                    "mutate": ["optimizer.lr"]})
    first = search(tmp_path, street_world_tiny, "pbt1", **pbt)
    second = search(tmp_path, street_world_tiny, "pbt2", **pbt)
    assert_same(first, second)
    exploits = [read_table(e / "perturbations.csv") for e in (first, second)]
    assert len(exploits[0]) >= 1
    ids = [dict(zip(read_table(e / "trials.csv")["trial_id"], range(4), strict=True))
           for e in (first, second)]
    for frame, index in zip(exploits, ids, strict=True):  # whom each cloned, by sample
        frame["trial_id"] = frame["trial_id"].map(index)
        frame["source_trial_id"] = frame["source_trial_id"].map(index)
    pd.testing.assert_frame_equal(*exploits, check_exact=True)


def test_multi_objective_search_twice_gives_the_same_tables(tmp_path, street_world_tiny):
    mo = dict(model={"aggregator": {"name": {"choice": ["gem", "cosplace"]},
                                    "dim": {"choice": [8, 32], "when": {"name": "cosplace"}}}},
              budget=BUDGET,
              search={"algorithm": "optuna", "num_samples": 6, "max_concurrent": 2,
                      "scheduler": "asha", "reproducible": True, "objectives": [
                          {"metric": "val/R@1", "mode": "max"},
                          {"metric": "descriptor_dim", "mode": "min"}]},
              asha={"grace_period": 1, "reduction_factor": 2})
    first = search(tmp_path, street_world_tiny, "mo1", **mo)
    second = search(tmp_path, street_world_tiny, "mo2", **mo)
    assert (read_table(first / "trials.csv")["status"] == "STOPPED_EARLY").any()
    assert_same(first, second)
