"""Metric names and directions in one place (vpr_tune/metrics.py), and everything that picks
a best honouring them: every searchable metric gets trials.csv columns, ``search.mode`` /
the metric's direction rules the run summary, ``best``, checkpoint choice, analysis and
report; one-int ``data.image_size`` works in train, eval, retest and run."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.helpers import run_cli
from vpr_tune import analysis as va
from vpr_tune.analysis import read_table
from vpr_tune.cli import main
from vpr_tune.config import load_space
from vpr_tune.errors import UserError
from vpr_tune.tune.results import write_tables


# ------------------------------------------------------------------------- the module
def test_directions_and_helpers() -> None:
    from vpr_tune import metrics

    assert metrics.SEARCHABLE == ("val/R@1", "val/R@5", "val/R@10", "val/R@25", "val/MRR",
                                  "val/R@mean", "train/loss")
    assert metrics.direction("val/R@25") == "max" and metrics.direction("train/loss") == "min"
    assert metrics.direction("best_train/loss") == "min"
    with pytest.raises(UserError, match="unknown metric 'lr'"):
        metrics.direction("lr")
    assert metrics.best_index([1.0, None, 3.0, 3.0, math.nan], "max") == 2
    assert metrics.best_index([2.0, "", 0.5, 0.5], "min") == 2
    assert metrics.best_index([None, math.nan], "min") is None
    assert metrics.summary_columns()[:2] == ["best_val/R@1", "last_val/R@1"]
    assert len(metrics.summary_columns()) == 2 * len(metrics.SEARCHABLE)
    assert metrics.mode_of({"metric": "train/loss"}) == "min"
    assert metrics.mode_of({"metric": "val/R@5", "mode": None}) == "max"



def test_one_home_per_fact() -> None:
    """The ranking metric, best-so-far, statuses, durations, rungs, leaf values and device
    each have one definition; their doctests are their examples."""
    import doctest

    from vpr_tune import device, durations, leaf_values, metrics, rungs, statuses
    from vpr_tune.config import space_from_dict

    for module in (metrics, statuses, durations, rungs, leaf_values):
        assert doctest.testmod(module).failed == 0, module.__name__
    objectives = [{"metric": "query_ms", "mode": "min"}, {"metric": "train/loss"}]
    space = space_from_dict({"search": {"objectives": objectives, "scheduler": "asha"}})
    # what config resolves, and what space.yaml's bare objectives give the analysis
    assert metrics.ranking(space.base["search"]) == ("train/loss", "min")
    assert metrics.ranking({"objectives": objectives}) == ("train/loss", "min")
    assert metrics.ranking({"metric": "lr"}) == (metrics.DEFAULT_METRIC, "max")
    assert metrics.running_best([math.nan, 2.0, 1.0], "min")[1:] == [2.0, 1.0]
    assert set(statuses.UNRANKED) | set(statuses.FINISHED) | set(statuses.RUNNING) \
        == set(statuses.STATUSES)
    assert durations.format_duration(59.96) == "1 min 00 s"
    assert device.pick_device(use_gpu=False) == "cpu"

def test_config_mode_defaults_to_the_metric_and_a_contradiction_is_an_error(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("search: {metric: train/loss}\n")
    assert load_space(path).base["search"]["mode"] == "min"
    path.write_text("search: {metric: val/R@10}\n")
    assert load_space(path).base["search"]["mode"] == "max"
    path.write_text("search: {metric: train/loss, mode: max}\n")
    with pytest.raises(UserError, match=r"search\.mode: 'max' contradicts search\.metric"):
        load_space(path)


def test_one_int_image_size_becomes_h_w_at_load(tmp_path) -> None:
    from vpr_tune.config import materialize

    path = tmp_path / "s.yaml"
    path.write_text("data: {image_size: 48}\n")
    assert load_space(path).base["data"]["image_size"] == [48, 48]
    path.write_text("data: {image_size: {choice: [32, 48]}}\nsearch: {algorithm: random}\n")
    space = load_space(path)
    assert materialize(space.base, {"data.image_size": 32})["data"]["image_size"] == [32, 32]


# ------------------------------------------------------- trials.csv from (fake) Ray trials
def _fake_trial(folder: Path, trial_id: str, lr: float, rows: list[dict]) -> SimpleNamespace:
    """What ``trial_record`` reads of a Ray ``Trial``: result.json rows and checkpoint folders
    (``checkpoint.pt`` only, so the checkpoint is chosen by the metric)."""
    path = folder / f"train_{trial_id}"
    path.mkdir(parents=True)
    lines = []
    for r in rows:
        ckpt = path / f"checkpoint_{r['epoch']:06d}"
        ckpt.mkdir()
        (ckpt / "checkpoint.pt").write_text(trial_id)
        lines.append(json.dumps({**r, "lr": lr, "checkpoint_dir_name": ckpt.name, "diverged": 0,
                                 "time_total_s": float(r["epoch"]), "node_id": "n0"}))
    (path / "result.json").write_text("\n".join(lines) + "\n")
    return SimpleNamespace(trial_id=trial_id, status="TERMINATED", config={"optimizer.lr": lr},
                           path=str(path), local_path=None, error_file=None)


def _row(epoch: int, loss: float, r1: float, r10: float) -> dict:
    return {"epoch": epoch, "train/loss": loss, "val/R@1": r1, "val/R@5": r1 + 5,
            "val/R@10": r10, "val/R@25": r10 + 5}


SEARCH_SPACE = """
    optimizer: {{lr: {{loguniform: [1.0e-3, 1.0e-1]}}}}
    budget: {{max_epochs: 3}}
    search: {{algorithm: random, metric: {metric}, scheduler: fifo}}
"""


def _experiment(tmp_path: Path, metric: str) -> Path:
    """results/<metric-ish>/ written by ``write_tables`` the way a search writes it.

    a: highest R@1 (60), lowest R@10 (61), loss 0.9 -> 0.7
    b: R@1 40, highest R@10 (90 at epoch 2, then 80), lowest loss (0.2 at epoch 2)
    c: R@1 50, R@10 70, loss 0.5
    """
    exp = tmp_path / "results" / "exp"
    exp.mkdir(parents=True)
    space_yaml = exp / "space.yaml"
    space_yaml.write_text(textwrap.dedent(SEARCH_SPACE.format(metric=metric)))
    space = load_space(space_yaml)
    trials = [
        _fake_trial(exp, "a", 0.01, [_row(1, 0.9, 50, 55), _row(2, 0.8, 60, 61),
                                     _row(3, 0.7, 55, 60)]),
        _fake_trial(exp, "b", 0.02, [_row(1, 0.6, 30, 70), _row(2, 0.2, 40, 90),
                                     _row(3, 0.3, 35, 80)]),
        _fake_trial(exp, "c", 0.03, [_row(1, 0.5, 50, 70)]),
    ]
    write_tables(exp, trials, space.base, metric)
    return exp


def test_every_searchable_metric_has_best_and_last_columns(tmp_path, capsys) -> None:
    from vpr_tune.tune import _report_best

    exp = _experiment(tmp_path, "val/R@10")
    trials = read_table(exp / "trials.csv").set_index("trial_id")
    for m in ("val/R@1", "val/R@5", "val/R@10", "val/R@25", "train/loss"):
        assert {f"best_{m}", f"last_{m}"} <= set(trials.columns), m
    assert trials.loc["b", "best_val/R@10"] == 90 and trials.loc["b", "last_val/R@10"] == 80
    assert trials.loc["b", "best_train/loss"] == 0.2  # the lowest loss is the best one
    assert trials.loc["a", "best_val/R@25"] == 66
    # the checkpoint follows the search metric: epoch 2 of b has its best R@10
    assert "checkpoint_000002" in trials.loc["b", "checkpoint"]

    lines: list[str] = []
    _report_best(exp, "val/R@10", "max", lines.append)
    assert lines[0].startswith("best trial b: val/R@10 90"), lines

    storage = ["--storage", str(exp.parent)]
    assert main(["best", "exp", "--metric", "val/R@10", "--json", *storage]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [t["trial_id"] for t in out["trials"]] == ["b", "c", "a"]
    assert out["trials"][0]["val_R@10"] == 90
    assert main(["best", "exp", "--json", *storage]) == 0  # default: the search's metric
    assert json.loads(capsys.readouterr().out)["metric"] == "val/R@10"
    assert main(["best", "exp", "--metric", "val/R@25", *storage]) == 0
    assert main(["best", "exp", "--metric", "lr", *storage]) == 2
    assert "unknown metric 'lr'" in capsys.readouterr().err


def test_a_min_metric_is_honoured_wherever_a_best_is_chosen(tmp_path, capsys) -> None:
    from vpr_tune.report import write_report
    from vpr_tune.tune import _report_best

    exp_dir = _experiment(tmp_path, "train/loss")
    trials = read_table(exp_dir / "trials.csv").set_index("trial_id")
    assert "checkpoint_000002" in trials.loc["b", "checkpoint"]  # b's lowest loss, not max

    lines: list[str] = []
    _report_best(exp_dir, "train/loss", "min", lines.append)
    assert lines[0].startswith("best trial b: train/loss 0.2"), lines

    assert main(["best", "exp", "--json", "--storage", str(exp_dir.parent)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metric"] == "train/loss"
    assert [t["trial_id"] for t in out["trials"]] == ["b", "c", "a"]
    assert out["trials"][0]["train_loss"] == 0.2

    exp = va.load_experiment(exp_dir)
    assert exp.metric == "train/loss" and exp.mode == "min"
    assert list(va.ranked(exp)["trial_id"]) == ["b", "c", "a"]
    assert list(va.ranked(exp, "val/R@1")["trial_id"]) == ["a", "c", "b"]  # its own direction
    so_far = va.best_so_far(exp.curves, "train/loss")
    assert so_far["best"].iloc[-1] == 0.2 and so_far["best"].is_monotonic_decreasing

    report = write_report(exp).read_text()
    assert "Trial `b`: best train/loss 0.2" in report


# -------------------------------------------------------------------- Trainer best.pt
def test_trainer_best_follows_train_loss_downwards(street_world_tiny, monkeypatch,
                                                   tmp_path) -> None:
    from vpr_tune.config import defaults
    from vpr_tune.train import Trainer

    monkeypatch.setenv("VPR_TUNE_CACHE", str(tmp_path / "cache"))
    cfg = defaults()
    cfg["data"].update(image_size=[32, 32], augment=False)
    cfg["budget"].update(max_epochs=3, batches_per_epoch=2, places_per_batch=4,
                         images_per_place=2, eval_batch_size=32)
    cfg["search"].update(metric="train/loss", mode="min")
    t = Trainer(cfg, street_world_tiny, device="cpu", num_threads=1, log=lambda *_: None)
    t.validate()  # epoch 0: no loss yet, the untrained model is the best so far
    assert t.is_best
    losses = []
    for _ in range(3):
        losses.append(t.run_epoch()["train/loss"])
    assert t.best["metric"] == "train/loss"
    assert t.best["value"] == min(losses)
    assert t.best["epoch"] == 1 + losses.index(min(losses))


# ----------------------------------------------------------- image_size: one int
def _int_size_yaml(path: Path, extra: str = "") -> Path:
    path.write_text(textwrap.dedent("""
        data: {image_size: 32, augment: false}
        model: {freeze_stages: 0}
        budget: {max_epochs: 1, batches_per_epoch: 1, places_per_batch: 4, images_per_place: 2,
                 eval_batch_size: 32}
    """) + extra)
    return path


def test_train_and_eval_with_one_int_image_size(street_world_tiny, tmp_path, monkeypatch,
                                                capsys) -> None:
    import torch

    monkeypatch.setenv("VPR_TUNE_CACHE", str(tmp_path / "cache"))
    cfg = _int_size_yaml(tmp_path / "t.yaml")
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--data", str(street_world_tiny), "--out", str(out)]) == 0
    capsys.readouterr()
    # a checkpoint whose stored config says 224-style one int (read back, normalised)
    state = torch.load(out / "best.pt", weights_only=True)
    assert state["config"]["data"]["image_size"] == [32, 32]
    state["config"]["data"]["image_size"] = 32
    torch.save(state, out / "int.pt")
    for ckpt in ("best.pt", "int.pt"):
        rc = main(["eval", "--checkpoint", str(out / ckpt), "--data", str(street_world_tiny),
                   "--json"])
        assert rc == 0, capsys.readouterr().err
        assert 0 <= json.loads(capsys.readouterr().out)["R@1"] <= 100


def test_retest_reads_back_an_int_image_size(hand_experiment, tiny_checkpoints, capsys) -> None:
    import shutil

    import torch
    import yaml

    root, checkpoints = tiny_checkpoints
    space = yaml.safe_load((hand_experiment / "space.yaml").read_text())
    space["data"] = {"root": str(root)}
    (hand_experiment / "space.yaml").write_text(yaml.safe_dump(space))
    trials = read_table(hand_experiment / "trials.csv").set_index("trial_id")
    for tid, src in zip(("t0", "t4"), checkpoints, strict=False):
        shutil.copy2(src, trials.loc[tid, "checkpoint"])
        state = torch.load(trials.loc[tid, "checkpoint"], weights_only=True)
        state["config"]["data"]["image_size"] = 32
        torch.save(state, trials.loc[tid, "checkpoint"])
    rc = main(["best", "hand", "--top", "2", "--retest", "--json",
               "--storage", str(hand_experiment.parent)])
    assert rc == 0, capsys.readouterr().err
    retest = json.loads(capsys.readouterr().out)["retest"]
    assert [r["trial_id"] for r in retest] == ["t0", "t4"]
    assert all(0 <= r["sf_test_R@1"] <= 100 for r in retest)


@pytest.mark.slow
def test_run_and_best_retest_with_one_int_image_size(street_world_tiny, tmp_path, capsys
                                                     ) -> None:
    space = _int_size_yaml(tmp_path / "s.yaml", textwrap.dedent("""
        optimizer: {lr: {choice: [0.01, 0.02]}}
        search: {algorithm: random, num_samples: 1, max_concurrent: 1, scheduler: fifo}
        resources: {cpu: 1, gpu: 0}
    """))
    storage = tmp_path / "res"
    rc = run_cli(["run", str(space), "--data", str(street_world_tiny), "--name", "int",
                  "--storage", str(storage)])
    out = capsys.readouterr().out
    assert rc == 0, out
    trials = read_table(storage / "int" / "trials.csv")
    assert len(trials) == 1 and (trials["status"] == "TERMINATED").all(), trials["error"]
    assert "best trial" in out
    rc = main(["best", "int", "--retest", "--json", "--storage", str(storage)])
    assert rc == 0, capsys.readouterr().err
    assert len(json.loads(capsys.readouterr().out)["retest"]) == 1


def test_table_rows_of_finished_trials_are_built_once(tmp_path) -> None:
    """A search rewrites its tables at every trial end: finished trials' rows come from the
    cache (their result.json is not read again), running ones are read afresh."""
    from vpr_tune.tune.results import trial_tables

    exp = _experiment(tmp_path, "val/R@1")
    space = load_space(exp / "space.yaml")
    done = _fake_trial(exp, "d", 0.01, [_row(1, 0.9, 50, 55)])
    live = _fake_trial(exp, "e", 0.02, [_row(1, 0.9, 20, 25)])
    live.status = "RUNNING"
    cache: dict = {}
    trial_tables(exp, [done, live], space.base, "val/R@1", cache=cache)
    assert set(cache) == {"d"}
    for t in (done, live):  # new epochs on disk: only the running trial's are read
        (Path(t.path) / "result.json").write_text("\n".join(json.dumps({
            **_row(e, 0.5, 70, 75), "checkpoint_dir_name": "", "diverged": 0,
            "time_total_s": 1.0}) for e in (1, 2)) + "\n")
    frame, curves = trial_tables(exp, [done, live], space.base, "val/R@1", cache=cache)
    rows = frame.set_index("trial_id")
    assert rows.loc["d", "epochs"] == 1 and rows.loc["e", "epochs"] == 2
    assert len(curves) == 3
    done.status = "ERROR"  # a status change is a new row
    assert trial_tables(exp, [done], space.base, "val/R@1", cache=cache)[0]["epochs"].iloc[0] == 2
