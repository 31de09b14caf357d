"""A PBT search survives its driver being killed (SIGKILL): ``--resume`` finishes every
trial, keeps the exploits already logged, and no epoch is counted twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import CliRun, ray_reports
from vpr_tune.tune.lineage import lineage
from vpr_tune.tune.results import read_table

pytestmark = pytest.mark.slow

SPACE = """
    seed: 0
    data: {image_size: [32, 32]}
    model: {backbone: resnet18, cut: layer3, freeze_stages: 0, aggregator: {name: gem}}
    loss: {name: multisimilarity}
    miner: {name: multisimilarity}
    optimizer: {name: adam, lr: {loguniform: [1.0e-4, 1.0e-2]}}
    budget: {max_epochs: 10, batches_per_epoch: 12, places_per_batch: 8, images_per_place: 4,
             eval_batch_size: 64}
    search: {algorithm: random, num_samples: 4, seed: 1, max_concurrent: 4, scheduler: pbt}
    pbt: {perturbation_interval: 2, quantile_fraction: 0.25, mutate: [optimizer.lr]}
    resources: {cpu: 0.5, gpu: 0, precision: fp32}
"""


def test_pbt_search_resumes_after_a_driver_kill(tmp_path, street_world_tiny):
    space = tmp_path / "pbt.yaml"
    space.write_text(textwrap.dedent(SPACE))
    storage = tmp_path / "res"
    exp = storage / "pbt"
    args = ["run", str(space), "--data", str(street_world_tiny), "--name", "pbt",
            "--storage", str(storage)]
    with CliRun(args, tmp_path / "run.log") as run:
        # Kill after the first exploit, with every trial part-way and its first checkpoint
        # known to Ray's experiment state on disk: Ray copies the trials' result.json to
        # the experiment folder in the same sync as its state, so a row there is one the
        # state knows. float32 (in SPACE) keeps trials slow enough for that window on CPUs
        # where auto would pick bfloat16. (Up to epoch 9: Ray syncs rarely, and a quiet
        # machine ended the search before a sync showed every trial below epoch 8.)
        def midway() -> bool:
            seen = ray_reports(exp)
            return ((exp / "perturbations.csv").exists() and len(seen) == 4
                    and all(2 <= r[-1]["epoch"] < 10
                            for r in seen.values()))

        run.wait_for(midway, 600, "an exploit and every trial part-way in result.json")
        before = read_table(exp / "perturbations.csv")
        run.signal(signal.SIGKILL)
        run.wait(30)
    assert run.returncode == -signal.SIGKILL
    cmd = [sys.executable, "-m", "vpr_tune", *args]

    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=900)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    trials = read_table(exp / "trials.csv")
    assert len(trials) == 4 and (trials["status"] == "TERMINATED").all(), trials
    assert (trials["epochs"] == 10).all()
    after = read_table(exp / "perturbations.csv")
    # An exploit logged before the kill stays, unless Ray's saved state never had it (the
    # log is written at each exploit, the state when Ray syncs): the resumed trial went on
    # without it, and the log says so (the lineage check below holds either way).
    gone = before.merge(after, how="left", indicator=True).query("_merge == 'left_only'")
    for trial_id, rows in gone.groupby("trial_id"):  # only a trial's latest exploits go
        mine = before[before["trial_id"] == trial_id]
        assert (mine["epoch"] >= rows["epoch"].min()).sum() == len(rows), (before, after)
    metrics = read_table(exp / "metrics.csv")
    assert not metrics.duplicated(["trial_id", "epoch"]).any()
    for trial_id in trials["trial_id"]:
        path = lineage(exp, trial_id)
        assert list(path["epoch"]) == list(range(1, 11))
        # every epoch trained with the lr its lineage says (constant schedule, no warm-up):
        # the perturbed value after each exploit, restored with the weights on --resume
        assert ((path["trained_lr"] - path["optimizer.lr"]).abs()
                <= 1e-6 * path["optimizer.lr"]).all(), path
