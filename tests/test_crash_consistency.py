"""Reproducible searches and crash consistency (slow suite): a reproducible search (real
trainer, tiny data) killed with SIGKILL at 10 seeded random moments, and resumed with
``--resume`` after each, ends with the same trials.csv and metrics.csv (but the columns
that measure the machine) as the same search run once, never killed — for ASHA (TPE),
MO-ASHA (random sampler), PBT and PB2 (their population is drawn at random: Ray's PBT takes
no searcher). So the same YAML twice gives the same tables
(``search.reproducible``), and a kill at any moment changes nothing.

Equal tables prove the three claims at once: no trial lost (same rows), none run twice and
no epoch counted twice (same ``epochs`` and metrics rows), every finished trial's values
unchanged (same cells). The moments are spread over the run: start-up (before any epoch),
mid-epoch and just after an epoch is logged (its checkpoint being written, its rung
decision being made, a PBT exploit), and just before the end.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import CliRun, run_cli, write_space
from vpr_tune.tune.results import EPOCH_LOG, read_result_rows, read_table

pytestmark = pytest.mark.slow

# what measures the machine (times, ids that Ray draws at random, paths): docs/searches.md
MACHINE = ["trial_id", "query_ms", "time_s", "node_id", "checkpoint", "timestamp"]
BUDGET = {"max_epochs": 4, "batches_per_epoch": 2, "places_per_batch": 4,
          "images_per_place": 2, "eval_batch_size": 32}

KILLS = 10
ASHA = {"grace_period": 1, "reduction_factor": 2}
POPULATION = {"perturbation_interval": 2, "quantile_fraction": 0.25,
              "mutate": ["optimizer.lr"]}
LR = {"optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-3, 1.0e-1]}}}
CASES = {
    "asha-tpe": dict(**LR, budget=BUDGET, asha=ASHA, search={
        "algorithm": "optuna", "num_samples": 5, "max_concurrent": 2, "scheduler": "asha"}),
    "moasha-random": dict(
        model={"aggregator": {"name": {"choice": ["gem", "cosplace"]},
                              "dim": {"choice": [8, 32], "when": {"name": "cosplace"}}}},
        budget=BUDGET, asha=ASHA,
        search={"algorithm": "random", "num_samples": 5, "max_concurrent": 2,
                "scheduler": "asha", "objectives": [{"metric": "val/R@1", "mode": "max"},
                                                    {"metric": "descriptor_dim",
                                                     "mode": "min"}]}),
    # the population trains together (synchronous PBT pauses every trial at an interval)
    "pbt": dict(**LR, budget=BUDGET, pbt=POPULATION, resources={"cpu": 0.5}, search={
        "algorithm": "random", "num_samples": 4, "max_concurrent": 4, "scheduler": "pbt"}),
    "pb2": dict(**LR, budget=BUDGET, pbt=POPULATION, resources={"cpu": 0.5}, search={
        "algorithm": "random", "num_samples": 4, "max_concurrent": 4, "scheduler": "pb2"}),
}


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


def exploits_by_sample(exp: Path) -> pd.DataFrame:
    """perturbations.csv with trial ids as sampling indices (Ray draws the ids at random)."""
    frame = read_table(exp / "perturbations.csv")
    index = dict(zip(read_table(exp / "trials.csv")["trial_id"], range(1000), strict=False))
    frame["trial_id"] = frame["trial_id"].map(index)
    frame["source_trial_id"] = frame["source_trial_id"].map(index)
    return frame


def _rows(exp: Path) -> int:
    return len(read_result_rows(exp, EPOCH_LOG))


def killed_at_random_moments(tmp_path: Path, data: Path, name: str, sections: dict,
                             total_rows: int, seed: int) -> tuple[Path, list[str]]:
    """Run the search, SIGKILL it at ``KILLS`` seeded moments (resuming after each), then
    resume it to the end. Returns the experiment folder and the moments, in words."""
    rng = random.Random(seed)
    space = write_space(tmp_path / f"{name}.yaml", **sections)
    storage = tmp_path / "res"
    exp = storage / name
    args = ["run", str(space), "--data", str(data), "--name", name, "--storage", str(storage)]
    # epoch rows logged before each kill: 0 = at start-up; the last = just before the end
    marks = sorted([0, total_rows - 1, *rng.sample(range(1, total_rows - 1), KILLS - 2)])
    moments, resume = [], []
    for i, mark in enumerate(marks):
        with CliRun([*args, *resume], tmp_path / f"run{i}.log") as run:
            start = _rows(exp) if exp.exists() else 0
            if mark > start:
                run.wait_for(lambda t=mark: _rows(exp) >= t or run.returncode is not None,
                             900, f"{mark} epoch rows")
            elif not resume:  # at start-up
                run.wait_for(lambda: (exp / "space.yaml").exists(), 300, "the experiment")
            else:  # the rows passed this mark already (several land at once): kill the
                # resume while it restores the search, rather than wait for a row and let
                # the run end before its last kills (CI had 7 of 10 kills once)
                run.wait_for(lambda: "experiment " in run.output()
                             or run.returncode is not None, 300, "the resumed experiment")
            if run.returncode is not None:  # it finished before this moment came
                assert run.returncode == 0, run.output()[-5000:]
                break
            time.sleep(rng.uniform(0.0, 1.5))  # mid-epoch, checkpoint, rung decision...
            run.signal(signal.SIGKILL)
            run.wait(30)
            moments.append(f"after {_rows(exp)} epoch rows")
        resume = ["--resume"]
    else:
        done = subprocess.run([sys.executable, "-m", "vpr_tune", *args, "--resume"],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
        assert "reproducible: yes" in done.stdout
    return exp, moments


@pytest.mark.parametrize("case", list(CASES))
def test_killed_ten_times_and_resumed_equals_never_killed(case, tmp_path, street_world_tiny):
    sections = dict(CASES[case])
    sections["search"] = {**sections["search"], "reproducible": True}
    reference = search(tmp_path / "ref", street_world_tiny, "ref", **sections)
    total = _rows(reference)
    exp, moments = killed_at_random_moments(tmp_path / "kill", street_world_tiny, "killed",
                                            sections, total, seed=sorted(CASES).index(case))
    assert len(moments) >= KILLS - 1, moments  # (a kill that landed after the end is moot)
    assert_same(reference, exp)
    assert "reproducible: true" in (exp / "space.yaml").read_text()
    trials = read_table(reference / "trials.csv")
    if sections["search"]["scheduler"] == "asha":  # the rungs did stop trials
        assert (trials["status"] == "STOPPED_EARLY").any() and (trials["epochs"] < 4).any()
    else:  # the same exploits: the same trial cloned the same source at the same epoch
        assert len(read_table(reference / "perturbations.csv")) >= 1
        pd.testing.assert_frame_equal(exploits_by_sample(reference), exploits_by_sample(exp),
                                      check_exact=True)
