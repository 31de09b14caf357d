"""Population-based training: explore steps follow the declared distributions, a perturbation
really changes the lr a trial trains with, and a PBT search (fake trainer) writes
perturbations.csv; the time budget ends a search. Which keys pbt.mutate may name:
test_config_search.py."""

from __future__ import annotations

import json
import math
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_cli
from vpr_tune.analysis import read_table
from vpr_tune.config import Param, space_from_dict
from vpr_tune.distributions import LOG_FACTORS
from vpr_tune.tune import trainable
from vpr_tune.tune.lineage import lineage


# ------------------------------------------------------------------------ explore step
@pytest.mark.parametrize("resample", [0.0, 0.5, 1.0])
def test_mutations_stay_in_bounds_and_follow_the_declared_scale(resample):
    rng = np.random.default_rng(0)
    lr = Param("optimizer.lr", "loguniform", [1e-4, 1e-1])
    wd = Param("optimizer.weight_decay", "uniform", [0.0, 0.01])
    t0 = Param("optimizer.t0", "int", [10, 20])
    q = Param("budget.x", "quniform", [0.0, 1.0, 0.25])
    name = Param("optimizer.name", "choice", ["sgd", "adam", "adamw"])
    logs = []
    for _ in range(300):
        v = math.exp(rng.uniform(math.log(1e-4), math.log(1e-1)))
        new, op = lr.dist.perturb(v, rng, resample)
        assert 1e-4 <= new <= 1e-1
        if op != "resample":  # a step in log space: x 0.8 or x 1.25, clipped
            assert op in {f"* {f}" for f in LOG_FACTORS}
            assert any(math.isclose(new, min(max(v * f, 1e-4), 1e-1)) for f in LOG_FACTORS)
        logs.append(math.log10(new))
        new, op = wd.dist.perturb(0.005, rng, resample)
        assert 0.0 <= new <= 0.01
        if op != "resample":  # a linear step of 10 % of the range
            assert math.isclose(abs(new - 0.005), 0.001)
        new, _ = t0.dist.perturb(20, rng, resample)
        assert isinstance(new, int) and 10 <= new <= 20
        new, _ = q.dist.perturb(0.5, rng, resample)
        assert new in (0.0, 0.25, 0.5, 0.75, 1.0)
        new, op = name.dist.perturb("adam", rng, resample)
        assert new in ("sgd", "adam", "adamw")
    if resample == 1.0:  # redraws are log-uniform: each decade gets about a third
        decades = [sum(lo <= x < lo + 1 for x in logs) for lo in (-4, -3, -2)]
        assert all(60 <= n <= 140 for n in decades), decades


@pytest.mark.parametrize("proposed", [1e-4 * (1 - 1e-15), 1e-2 * (1 + 1e-15)])
def test_pb2_proposals_one_ulp_past_a_bound_are_clipped(tmp_path, monkeypatch, proposed):
    # PB2 maps the GP's [0, 1] back with x * (high - low) + low: at an edge that can round
    # past the bound, and the trial would train outside the declared range (seen in CI)
    from dataclasses import dataclass, field
    from types import SimpleNamespace

    from ray.tune.schedulers.pb2 import PB2

    @dataclass(eq=False)  # hashable by identity, as Ray's Trial
    class Trial:
        trial_id: str
        config: dict = field(default_factory=dict)

    from vpr_tune.tune.pbt import PerturbationLog, SpacePB2

    lr = Param("optimizer.lr", "loguniform", [1e-4, 1e-2])
    log = PerturbationLog(tmp_path / "perturbations.csv")
    pb2 = SpacePB2([lr], log, metric="val/R@1", mode="max", time_attr="epoch")
    monkeypatch.setattr(PB2, "_get_new_config",
                        lambda self, t, c: ({"optimizer.lr": proposed}, {}))
    trial, source = Trial("a", {"optimizer.lr": 1e-3}), Trial("b", {"optimizer.lr": 5e-3})
    pb2._trial_state[source] = SimpleNamespace(last_result={"epoch": 4})
    new, _ = pb2._get_new_config(trial, source)
    assert 1e-4 <= new["optimizer.lr"] <= 1e-2
    assert read_table(log.path)["new"].between(1e-4, 1e-2).all()


def test_an_exploit_redone_after_a_resume_is_logged_once(tmp_path):
    # a driver killed after an exploit but before its effect was saved redoes it on
    # --resume (the crash-consistency test saw it logged three times): one row per key
    from types import SimpleNamespace

    from vpr_tune.tune.pbt import PerturbationLog

    a, b, c = (SimpleNamespace(trial_id=t, config={"optimizer.lr": lr})
               for t, lr in (("a", 1e-3), ("b", 5e-3), ("c", 2e-3)))
    path = tmp_path / "perturbations.csv"
    PerturbationLog(path).add(a, b, 2, {"optimizer.lr": 4e-3}, ["optimizer.lr"])
    resumed = PerturbationLog(path)  # a new driver reads what the killed one wrote
    resumed.add(a, b, 2, {"optimizer.lr": 4e-3}, ["optimizer.lr"])
    resumed.add(c, b, 2, {"optimizer.lr": 6e-3}, ["optimizer.lr"])
    resumed.add(a, c, 4, {"optimizer.lr": 5e-3}, ["optimizer.lr"])
    rows = read_table(path)
    assert list(zip(rows["trial_id"], rows["epoch"], rows["new"], strict=True)) == [
        ("a", 2, 4e-3), ("c", 2, 6e-3), ("a", 4, 5e-3)]


def test_an_exploit_the_restored_state_never_had_leaves_the_log(tmp_path):
    # The log is written at each exploit, Ray's state when it syncs: a driver killed in
    # between left an exploit in perturbations.csv that --resume's trial (config from
    # before it) never made, and the lineage said an lr the trial did not train with.
    from types import SimpleNamespace

    from vpr_tune.tune.pbt import PerturbationLog

    a, b = (SimpleNamespace(trial_id=t, config={"optimizer.lr": lr, "optimizer.name": "adam"})
            for t, lr in (("a", 1e-3), ("b", 5e-3)))
    path = tmp_path / "perturbations.csv"
    log = PerturbationLog(path)
    log.add(a, b, 2, {"optimizer.lr": 0.1 / 3, "optimizer.name": "sgd"},
            ["optimizer.lr", "optimizer.name"])
    log.add(a, b, 4, {"optimizer.lr": 0.3, "optimizer.name": "adam"},
            ["optimizer.lr", "optimizer.name"])
    log.add(b, a, 4, {"optimizer.lr": 0.2, "optimizer.name": "adam"},
            ["optimizer.lr", "optimizer.name"])

    resumed = PerturbationLog(path)
    # restored: a holds its epoch-2 exploit (read back from the CSV, the same value), not
    # the one at epoch 4; b holds its exploit
    resumed.forget_unsaved(SimpleNamespace(trial_id="a", config={
        "optimizer.lr": 0.1 / 3, "optimizer.name": "sgd"}))
    resumed.forget_unsaved(SimpleNamespace(trial_id="b", config={
        "optimizer.lr": 0.2, "optimizer.name": "adam"}))
    resumed.forget_unsaved(SimpleNamespace(trial_id="new", config={"optimizer.lr": 1.0}))
    rows = read_table(path)
    assert sorted(set(zip(rows["trial_id"], rows["epoch"], strict=True))) == [
        ("a", 2), ("b", 4)]
    # restored before any exploit: all of its rows go
    PerturbationLog(path).forget_unsaved(SimpleNamespace(trial_id="a", config={
        "optimizer.lr": 1e-3, "optimizer.name": "adam"}))
    assert set(read_table(path)["trial_id"]) == {"b"}


def test_a_lineage_shows_the_mutated_lr_when_no_exploit_stayed_in_the_log(tmp_path):
    # Found by CI: --resume dropped every exploit a killed driver had not saved and the
    # search ended before another; the lineage then had no optimizer.lr column at all.
    import pandas as pd
    import yaml

    exp = tmp_path / "pbt"
    exp.mkdir()
    (exp / "space.yaml").write_text(yaml.safe_dump({
        "optimizer": {"lr": {"loguniform": [1e-4, 1e-2]}}, "budget": {"max_epochs": 2},
        "search": {"scheduler": "pbt"},
        "pbt": {"perturbation_interval": 2, "mutate": ["optimizer.lr"]},
        "resolved": {"data_root": "/data", "trials": 1}}))  # as record_space writes it
    pd.DataFrame(columns=["trial_id", "epoch", "source_trial_id", "param", "old", "new"]
                 ).to_csv(exp / "perturbations.csv", index=False)
    pd.DataFrame([{"trial_id": "p0", "epochs": 2, "optimizer.lr": 2e-3}]
                 ).to_csv(exp / "trials.csv", index=False)
    pd.DataFrame([{"trial_id": "p0", "epoch": e, "lr": 2e-3, "val/R@1": 10.0 * e}
                  for e in (1, 2)]).to_csv(exp / "metrics.csv", index=False)
    path = lineage(exp, "p0")
    assert list(path["optimizer.lr"]) == [2e-3, 2e-3] == list(path["trained_lr"])


# ------------------------------------------------- a perturbation reaches the optimizer
@pytest.mark.parametrize("scheduler", ["none", "cosine"])
def test_new_lr_weight_decay_momentum_apply_after_restoring_a_checkpoint(
        tmp_path, street_world_tiny, scheduler):
    from vpr_tune.config import defaults
    from vpr_tune.train import Trainer

    cfg = defaults()
    cfg["data"].update(image_size=[32, 32], augment=False)
    cfg["budget"].update(max_epochs=4, batches_per_epoch=1, places_per_batch=4,
                         images_per_place=2, eval_batch_size=32)
    cfg["optimizer"].update(name="sgd", lr=0.01, weight_decay=1e-3, momentum=0.9)
    cfg["scheduler"] = {"name": scheduler}
    source = Trainer(cfg, street_world_tiny, device="cpu", log=lambda _m: None)
    source.run_epoch()
    source.run_epoch()
    old_lr = source.lr  # cosine: already decayed below 0.01
    source.save_checkpoint(tmp_path / "c.pt")
    cfg["optimizer"].update(lr=0.002, weight_decay=5e-4, momentum=0.8)  # the explore step
    clone = Trainer(cfg, street_world_tiny, device="cpu", log=lambda _m: None)
    clone.load_checkpoint(tmp_path / "c.pt")
    row = clone.run_epoch()
    assert clone.epoch == 3
    expected = 0.002 * old_lr / 0.01  # the schedule keeps its progress on the new base
    assert math.isclose(row["lr"], expected, rel_tol=1e-9), (row["lr"], expected)
    group = clone.optimizer.param_groups[0]
    assert group["weight_decay"] == 5e-4 and group["momentum"] == 0.8
    # the same config restored (an ordinary resume) keeps the decayed lr as it was
    again = Trainer(cfg, street_world_tiny, device="cpu", log=lambda _m: None)
    clone.save_checkpoint(tmp_path / "d.pt")
    again.load_checkpoint(tmp_path / "d.pt")
    assert again.lr == clone.lr


# ------------------------------------------------------------ trials.csv speaks of lineages
def test_best_columns_of_a_pbt_trial_are_over_its_lineage(tmp_path):
    """At epoch 2, p1 copies p0 and p3 copies p2 (issue 36). p1's own epochs 1-2 (a lucky
    R@1 50, loss 0.1) ran in weights it then dropped: not its best. p3's epochs 1-2 are p2's
    (44, loss 0.35), the weights and best.pt it goes on from: they count, and so do p2's val
    ranks for the interval. The same epochs as the lineage the report draws."""
    from types import SimpleNamespace

    import pandas as pd

    from vpr_tune.tune.results import write_tables
    from vpr_tune.uncertainty import ranks_path, save_ranks

    exp = tmp_path / "pbt"
    exp.mkdir()
    base = space_from_dict({"optimizer": {"lr": {"loguniform": [1e-4, 1e-2]}},
                            "budget": {"max_epochs": 4}, "search": {"scheduler": "pbt"},
                            "pbt": {"perturbation_interval": 2, "mutate": ["optimizer.lr"]}},
                           "p.yaml").base
    curves = {  # (val/R@1, train/loss) per epoch, as each trial reported them
        "p0": [(10.0, 0.9), (30.0, 0.5), (35.0, 0.4), (40.0, 0.3)],
        "p1": [(50.0, 0.1), (25.0, 0.8), (45.0, 0.6), (48.0, 0.45)],
        "p2": [(38.0, 0.7), (44.0, 0.35), (46.0, 0.3), (47.0, 0.25)],
        "p3": [(5.0, 0.95), (8.0, 0.9), (20.0, 0.85), (30.0, 0.8)],
    }
    rows = [{"trial_id": t, "epoch": e, "val/R@1": r1, "val/R@5": r1, "val/R@10": r1,
             "val/R@25": r1, "train/loss": loss, "diverged": 0, "timestamp": 10 * i + e}
            for i, (t, curve) in enumerate(curves.items())
            for e, (r1, loss) in enumerate(curve, 1)]
    (exp / "epochs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for t, curve in curves.items():  # 100 val queries: R@1 of them hit at rank 1
        save_ranks(ranks_path(exp, t), {e: np.array([1] * int(r1) + [0] * (100 - int(r1)))
                                        for e, (r1, _) in enumerate(curve, 1)})
    pd.DataFrame([("p1", 2, "p0", "optimizer.lr", 2e-3, 1.2e-3),
                  ("p3", 2, "p2", "optimizer.lr", 4e-3, 3.6e-3)],
                 columns=["trial_id", "epoch", "source_trial_id", "param", "old", "new"]
                 ).to_csv(exp / "perturbations.csv", index=False)
    trials = [SimpleNamespace(trial_id=t, status="TERMINATED", config={"optimizer.lr": lr},
                              path=None, local_path=None, error_file=None)
              for t, lr in (("p0", 1e-3), ("p1", 1.2e-3), ("p2", 3e-3), ("p3", 3.6e-3))]
    frame = write_tables(exp, trials, base, "val/R@1").set_index("trial_id")
    best = frame["best_val/R@1"].to_dict()
    assert best == {"p0": 40.0, "p1": 48.0, "p2": 47.0, "p3": 44.0}  # p1: not 50; p3: not 30
    assert frame.loc["p1", "best_train/loss"] == 0.45  # not its dropped epoch 1's 0.1
    assert frame.loc["p3", "best_train/loss"] == 0.35  # p2's epoch 2, inherited
    assert frame.loc["p1", "last_val/R@1"] == 48.0 and frame.loc["p3", "last_val/R@1"] == 30.0
    lo, hi = frame.loc["p3", ["best_val/R@1_lo", "best_val/R@1_hi"]]
    assert 30 < lo < 44 < hi  # around p2's epoch 2, not p3's own epoch 4 (30)
    assert len(read_table(exp / "metrics.csv")) == 16  # what each trial ran stays there
    for trial_id in curves:
        assert lineage(exp, trial_id)["val/R@1"].max() == best[trial_id]
    # "within noise" pairs the same epochs: p3's ranks at its best are p2's epoch 2 (44 hits)
    from vpr_tune.noise import ValRanks

    ranks = ValRanks(SimpleNamespace(path=exp, curves=read_table(exp / "metrics.csv"),
                                     trials=frame.reset_index()))
    assert {t: int((ranks.at_best(t, "val/R@1", "max") == 1).sum()) for t in curves} == best


# ------------------------------------------------------------ a PBT search, fake trainer
class PBTFakeTrainer:
    """Trains nothing: R@1 grows with the lr it was given; reports that lr."""

    def __init__(self, cfg, data_root, device=None, num_threads=None, log=print):
        self.cfg, self.epoch, self.is_best, self.score = cfg, 0, True, 0.0

    def run_epoch(self):
        time.sleep(0.3)
        self.epoch += 1
        lr = self.cfg["optimizer"]["lr"]
        self.score += 1000 * lr
        return {"epoch": self.epoch, "train/loss": 1.0, "lr": lr, "val/R@1": self.score,
                "val/R@5": self.score, "val/R@10": self.score, "val/R@25": self.score}

    def save_checkpoint(self, path):
        Path(path).write_text(json.dumps({"epoch": self.epoch, "score": self.score}))
        return Path(path)

    def save_model(self, path):
        return self.save_checkpoint(path)

    def load_checkpoint(self, path):
        state = json.loads(Path(path).read_text())
        self.epoch, self.score = state["epoch"], state["score"]


@pytest.fixture
def pbt_fake(monkeypatch):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(trainable, "TRAINER_FACTORY", PBTFakeTrainer)
    yield PBTFakeTrainer
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


FAKE_SPACE = """
    data: {{image_size: [32, 32], cache: false}}
    optimizer: {{name: adam, lr: {{loguniform: [1.0e-4, 1.0e-2]}}}}
    budget: {{max_epochs: {epochs}}}
    search: {{algorithm: random, num_samples: 4, max_concurrent: 4, scheduler: {sched},
             seed: 1{extra}}}
    pbt: {{perturbation_interval: 2, quantile_fraction: 0.25, resample_probability: 0.25,
          mutate: [optimizer.lr]}}
    resources: {{cpu: 0.5, gpu: 0}}
"""


def _run(tmp_path, street_world_tiny, name, sched="pbt", epochs=8, extra="", args=()):
    space = tmp_path / f"{name}.yaml"
    space.write_text(textwrap.dedent(FAKE_SPACE.format(sched=sched, epochs=epochs,
                                                       extra=extra)))
    rc = run_cli(["run", str(space), "--data", str(street_world_tiny), "--name", name,
                  "--storage", str(tmp_path / "res"), *args])
    return rc, tmp_path / "res" / name


@pytest.mark.parametrize("sched", ["pbt", pytest.param("pb2", marks=pytest.mark.slow)])
def test_pbt_search_logs_perturbations_and_trials_train_with_the_new_lr(
        tmp_path, pbt_fake, street_world_tiny, capsys, sched):
    rc, exp = _run(tmp_path, street_world_tiny, sched, sched)
    out = capsys.readouterr().out
    assert rc == 0, out
    trials = read_table(exp / "trials.csv")
    assert len(trials) == 4 and (trials["status"] == "TERMINATED").all(), trials
    perturbations = read_table(exp / "perturbations.csv")
    assert list(perturbations.columns) == ["trial_id", "epoch", "source_trial_id", "param",
                                           "old", "new"]
    assert len(perturbations) >= 1, out
    assert (perturbations["param"] == "optimizer.lr").all()
    assert perturbations["new"].between(1e-4, 1e-2).all()
    assert (perturbations["epoch"] % 2 == 0).all()  # at perturbation intervals
    assert (perturbations["trial_id"] != perturbations["source_trial_id"]).all()
    metrics = read_table(exp / "metrics.csv").set_index(["trial_id", "epoch"])
    for row in perturbations.itertuples():
        # the next epoch the trial reports trained with the new lr (unless it was
        # perturbed again at the same epoch: the later row wins)
        later = perturbations[(perturbations["trial_id"] == row.trial_id)
                              & (perturbations["epoch"] == row.epoch)]
        if later.index[-1] != row.Index or (row.trial_id, row.epoch + 1) not in metrics.index:
            continue  # an exploit at the last epoch has no next epoch to train with it
        assert math.isclose(metrics.loc[(row.trial_id, row.epoch + 1), "lr"], row.new), row
    # the winner's lineage: every epoch trained with the lr the schedule says, the score
    # (carried in the fake's checkpoints) never drops along it
    best = trials.loc[trials["best_val/R@1"].idxmax(), "trial_id"]
    path = lineage(exp, best)
    assert list(path["epoch"]) == list(range(1, 9))
    assert (path["trained_lr"] - path["optimizer.lr"]).abs().max() < 1e-12
    assert path["val/R@1"].is_monotonic_increasing
    from vpr_tune.cli import main

    assert main(["best", sched, "--storage", str(exp.parent)]) == 0
    out = capsys.readouterr().out
    assert f"Schedule of {best}" in out and "ran_in" in out
    # --export writes the lineage as a replay: base values = its first epoch's, then one
    # entry per change
    assert main(["best", sched, "--storage", str(exp.parent), "--export",
                 str(tmp_path / "winner.yaml")]) == 0
    import yaml

    exported = yaml.safe_load((tmp_path / "winner.yaml").read_text())
    assert math.isclose(exported["optimizer"]["lr"], path["optimizer.lr"].iloc[0])
    changes = [int(e) for e, lr in zip(path["epoch"][1:], path["optimizer.lr"].diff()[1:],
                                       strict=True) if lr != 0]
    assert [entry["epoch"] for entry in exported["replay"]] == changes
    for entry in exported["replay"]:
        assert math.isclose(entry["optimizer.lr"],
                            path.loc[path["epoch"] == entry["epoch"], "optimizer.lr"].iloc[0])
    assert main(["report", sched, "--storage", str(exp.parent)]) == 0
    assert (exp / "report" / "lr_schedule.png").stat().st_size > 10_000
    assert "Schedule of the best trial" in (exp / "report" / "report.md").read_text()


def test_time_budget_ends_a_search_with_stopped_budget(tmp_path, pbt_fake, street_world_tiny,
                                                       capsys):
    rc, exp = _run(tmp_path, street_world_tiny, "budget", "fifo", epochs=200,
                   args=["--time-budget", "8s"])
    out = capsys.readouterr().out
    assert rc == 0, out
    trials = read_table(exp / "trials.csv")
    assert (trials["status"] == "STOPPED_BUDGET").any(), trials
    assert (trials["epochs"] < 200).all()
    assert "time budget 8s spent" in out and "STOPPED_BUDGET" in out


def test_bad_time_budget_is_a_user_error(tmp_path, street_world_tiny, capsys):
    rc, _ = _run(tmp_path, street_world_tiny, "bad", "fifo", args=["--time-budget", "6 weeks"])
    assert rc == 2
    assert "--time-budget: '6 weeks' is not a duration" in capsys.readouterr().err
