"""Sampling (no stray parameters), Optuna define-by-run, dry runs, and a small real search."""

from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
import pytest

from tests.helpers import run_cli, write_space
from vpr_tune.cli import main
from vpr_tune.config import load_space
from vpr_tune.tune.results import read_table
from vpr_tune.tune.sampling import OptunaDefineByRun, count_trials, expand_points
from vpr_tune.tune.scratch import scratch_root

SPACE = """
    optimizer:
      name: {choice: [sgd, adam, asgd]}
      lr: {loguniform: [1.0e-4, 1.0e-1]}
      momentum: {uniform: [0.8, 0.99], when: {name: sgd}}
      nesterov: {value: true, when: {name: sgd}}
      t0: {int: [10, 100], when: {name: asgd}}
    scheduler:
      name: {choice: [none, plateau]}
      patience: {randint: [1, 3], when: {name: plateau}}
    search: {algorithm: random, num_samples: 40, seed: 3}
"""


def space_file(tmp_path: Path, text: str = SPACE) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def assert_no_strays(point: dict) -> None:
    name = point["optimizer.name"]
    assert ("optimizer.momentum" in point) == (name == "sgd")
    assert ("optimizer.nesterov" in point) == (name == "sgd")
    assert ("optimizer.t0" in point) == (name == "asgd")
    assert ("scheduler.patience" in point) == (point["scheduler.name"] == "plateau")
    if "scheduler.patience" in point:
        assert point["scheduler.patience"] in (1, 2, 3)
    assert 1e-4 <= point["optimizer.lr"] <= 1e-1


def test_random_sampling_has_only_applicable_params_and_is_seeded(tmp_path):
    space = load_space(space_file(tmp_path))
    points = expand_points(space, 40, seed=3)
    assert len(points) == 40
    for p in points:
        assert_no_strays(p)
    assert {p["optimizer.name"] for p in points} == {"sgd", "adam", "asgd"}
    assert points == expand_points(space, 40, seed=3)
    assert points != expand_points(space, 40, seed=4)


def test_grid_is_a_pruned_product(tmp_path):
    space = load_space(space_file(tmp_path, """
        optimizer:
          name: {grid: [sgd, adam]}
          momentum: {grid: [0.8, 0.9, 0.95], when: {name: sgd}}
          lr: {loguniform: [1.0e-3, 1.0e-2]}
        scheduler: {name: {grid: [none, cosine]}}
        search: {algorithm: grid, num_samples: 2}
    """))
    points = expand_points(space, 2, seed=0)
    # (3 sgd momenta + 1 adam) x 2 schedulers x 2 samples; adam has no momentum
    assert len(points) == count_trials(space, 2) == 16
    keys = {(p["optimizer.name"], p.get("optimizer.momentum"), p["scheduler.name"])
            for p in points}
    assert len(keys) == 8 and ("adam", None, "none") in keys
    assert all(("optimizer.momentum" in p) == (p["optimizer.name"] == "sgd") for p in points)
    assert len({p["optimizer.lr"] for p in points}) == 16  # sampled per point


def test_optuna_define_by_run_suggests_only_applicable_params(tmp_path):
    space = load_space(space_file(tmp_path, SPACE.replace("algorithm: random",
                                                          "algorithm: optuna")))
    define = OptunaDefineByRun(space)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
                                direction="maximize")
    names = set()
    for _ in range(25):
        trial = study.ask()
        constants = define(trial) or {}
        point = {**trial.params, **constants}
        assert_no_strays(point)
        names.add(point["optimizer.name"])
        study.tell(trial, point["optimizer.lr"] * 100)
    assert names == {"sgd", "adam", "asgd"}


def _optuna_searcher(tmp_path):
    """A TPE searcher on the study file ``tmp_path/optuna.db`` ("exp"), as a search builds
    it; call again for the searcher a resumed driver builds on the same file."""
    from vpr_tune.tune.searchers import _optuna_search

    space = load_space(space_file(tmp_path, SPACE.replace("algorithm: random",
                                                          "algorithm: optuna")))
    searcher = _optuna_search(space, 4, [], None, tmp_path / "optuna.db", "exp")
    searcher.set_search_properties("val/R@1", "max", {})
    return searcher


def _result(config, epoch, value):
    """A flat Ray result of a trial with ``config`` at ``epoch``."""
    return {"val/R@1": value, "training_iteration": epoch,
            **{f"config/{k}": v for k, v in config.items()}}


def test_resume_adopts_a_trial_the_saved_searcher_never_saw(tmp_path):
    # A driver killed mid-upload can leave Ray's experiment state newer than the searcher's:
    # --resume then reports results of a trial the restored searcher has no Optuna trial for
    # (a KeyError in Ray's OptunaSearch, seen in CI). It takes back the trial's RUNNING
    # Optuna trial, its epochs before the kill included.
    db = tmp_path / "optuna.db"
    first = _optuna_searcher(tmp_path)
    config_a = first.suggest("a")
    first.on_trial_result("a", _result(config_a, 1, 10.0))
    first.save(str(tmp_path / "searcher.pkl"))  # the searcher state the bucket holds
    config_b = first.suggest("b")  # flat: {"optimizer.name": ..., "optimizer.lr": ...}
    # the experiment state that reached the bucket has "b"
    first.on_trial_result("b", _result(config_b, 1, 30.0))

    resumed = _optuna_searcher(tmp_path)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.on_trial_result("b", _result(config_b, 2, 20.0))
    resumed.on_trial_complete("b", _result(config_b, 2, 20.0))
    resumed.on_trial_result("a", _result(config_a, 2, 12.0))
    resumed.on_trial_complete("a", _result(config_a, 2, 12.0))
    # no RUNNING Optuna trial to take back (an older study file): a new one, same config
    config_z = {**config_a, "optimizer.lr": 0.05}
    resumed.on_trial_complete("z", _result(config_z, 3, 40.0))

    study = optuna.load_study(study_name="exp", storage=f"sqlite:///{db}")
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert [t.value for t in trials] == [12.0, 30.0, 40.0]  # b's best came before the kill
    assert all(config_b[k] == v for k, v in trials[1].params.items())
    assert trials[1].intermediate_values == {1: 30.0, 2: 20.0}
    assert all(config_z[k] == v for k, v in trials[2].params.items())


def test_resume_runs_again_a_trial_the_study_was_told_of_before_the_kill(tmp_path):
    # The study file is written at once, Ray's state every few seconds (to S3 every 10): a
    # driver killed between a trial's end and the next save resumes that trial from its
    # last checkpoint, and its results went to a finished Optuna trial
    # (UpdateFinishedTrialError, seen in CI's S3 kill/resume test). The study keeps the
    # value it was told; the resumed search goes on.
    db = tmp_path / "optuna.db"
    first = _optuna_searcher(tmp_path)
    config = first.suggest("a")

    def result(epoch, value):
        return _result(config, epoch, value)

    first.on_trial_result("a", result(1, 10.0))
    first.save(str(tmp_path / "searcher.pkl"))  # Ray's last save before the kill
    first.on_trial_result("a", result(2, 14.0))
    first.on_trial_complete("a", result(2, 14.0))  # told; then the kill

    resumed = _optuna_searcher(tmp_path)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.on_trial_result("a", result(2, 14.0))  # epoch 2 again, from the checkpoint
    resumed.on_trial_complete("a", result(2, 14.0))
    assert resumed.suggest("b") is not None  # the search goes on

    study = optuna.load_study(study_name="exp", storage=f"sqlite:///{db}")
    told = study.get_trials()[0]
    assert told.state.name == "COMPLETE" and told.value == 14.0
    assert told.intermediate_values == {1: 10.0, 2: 14.0}


def test_dry_run_starts_nothing(tmp_path, capsys, monkeypatch, street_world_tiny):
    import ray

    monkeypatch.setenv("VPR_TUNE_RESULTS", str(tmp_path / "results"))
    rc = main(["run", str(space_file(tmp_path)), "--data", str(street_world_tiny),
               "--name", "dry", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "40 trials" in out and "1 CPU / 0 GPU per trial" in out
    assert "optimizer.momentum" in out and "dry run: nothing started" in out
    assert "train images" in out
    assert not ray.is_initialized()
    assert not (tmp_path / "results" / "dry").exists()


def test_dry_run_reports_missing_data(tmp_path, capsys):
    rc = main(["run", str(space_file(tmp_path)), "--data", str(tmp_path / "nodata"),
               "--dry-run"])
    assert rc == 2
    assert "nodata" in capsys.readouterr().err


def test_existing_name_and_missing_resume_are_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VPR_TUNE_RESULTS", str(tmp_path / "results"))
    (tmp_path / "results" / "taken").mkdir(parents=True)
    (tmp_path / "results" / "taken" / "space.yaml").write_text("x: 1\n")
    space = str(space_file(tmp_path))
    assert main(["run", space, "--name", "taken"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["run", space, "--name", "ghost", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "no experiment 'ghost'" in err and "taken" in err


def tiny_search(tmp_path: Path, samples: int = 4, batches: int = 2) -> Path:
    """A real tiny search: sgd or adam, ASHA halving at epochs 1 and 2 of 3."""
    return write_space(tmp_path / "s.yaml", optimizer={
        "name": {"choice": ["sgd", "adam"]}, "momentum": {"value": 0.9, "when": {"name": "sgd"}}},
        budget={"max_epochs": 3, "batches_per_epoch": batches, "places_per_batch": 8,
                "images_per_place": 4, "eval_batch_size": 64},
        search={"num_samples": samples, "seed": 1, "max_concurrent": 2, "scheduler": "asha"},
        data={"augment": True})


@pytest.mark.slow
def test_small_real_search_writes_trials_csv(tmp_path, capsys, street_world_tiny):
    path = tiny_search(tmp_path)
    storage = tmp_path / "res"
    scratch_before = set(scratch_root().glob("*"))
    rc = run_cli(["run", str(path), "--data", str(street_world_tiny), "--name", "small",
                  "--storage", str(storage)])
    out = capsys.readouterr().out
    assert rc == 0, out
    # the stopped trials' workers were killed mid-epoch; their scratch folders went too
    assert set(scratch_root().glob("*")) <= scratch_before
    exp = storage / "small"
    trials = read_table(exp / "trials.csv")
    metrics = read_table(exp / "metrics.csv")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"TERMINATED", "STOPPED_EARLY"}
    assert (trials["status"] == "STOPPED_EARLY").any()  # ASHA halves at epochs 1 and 2
    stopped = trials[trials["status"] == "STOPPED_EARLY"]
    assert (stopped["epochs"] < 3).all()
    assert (trials.loc[trials["status"] == "TERMINATED", "epochs"] == 3).all()
    sgd = trials["optimizer.name"] == "sgd"
    assert trials.loc[sgd, "optimizer.momentum"].eq(0.9).all()
    assert trials.loc[~sgd, "optimizer.momentum"].isna().all()
    for row in trials.itertuples():
        assert Path(row.checkpoint).is_file()
        curve = metrics[metrics["trial_id"] == row.trial_id]
        assert len(curve) == row.epochs
    assert trials["best_val/R@1"].ge(trials["last_val/R@1"]).all()
    assert trials["node_id"].notna().all()
    assert (exp / "space.yaml").exists()
    assert "best trial" in out and "synthetic" in out


@pytest.mark.slow
def test_ctrl_c_keeps_results_and_resume_finishes(tmp_path, street_world_tiny):
    import signal
    import subprocess
    import sys
    import time

    path = tiny_search(tmp_path, samples=6, batches=6)
    storage = tmp_path / "res"
    cmd = [sys.executable, "-m", "vpr_tune", "run", str(path), "--data", str(street_world_tiny),
           "--name", "cc", "--storage", str(storage)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    csv = storage / "cc" / "trials.csv"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if csv.exists() and (read_table(csv)["status"] != "RUNNING").sum() >= 1:
            break
        time.sleep(1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out  # interrupted, as a shell expects of Ctrl-C
    assert "interrupted; tables saved in" in out and "--resume" in out
    first = read_table(csv)
    assert len(first) >= 1
    done = first[first["status"].isin(["TERMINATED", "STOPPED_EARLY"])]
    assert len(done) >= 1 and len(done) < 6, out

    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout + again.stderr
    final = read_table(csv)
    assert len(final) == 6 and final["trial_id"].is_unique
    assert set(final["status"]) <= {"TERMINATED", "STOPPED_EARLY"}
    # finished trials kept their results (not re-run)
    kept = final.set_index("trial_id").loc[done["trial_id"]]
    assert (kept["epochs"].values == done["epochs"].values).all()
    assert (kept["time_s"].values == done["time_s"].values).all()


def test_stop_ray_stops_every_process_of_the_ray_we_started():
    """stop_ray kills Ray's autoscaler monitor before ray.shutdown(); a Ray of our own must
    still go entirely (run in a fresh interpreter: its Ray is the only one)."""
    import subprocess
    import sys

    code = textwrap.dedent("""
        import psutil, ray
        from vpr_tune.tune.ray_session import init_ray, stop_ray
        assert init_ray("local")
        kids = psutil.Process().children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in kids)
        assert "monitor.py" in names and "gcs_server" in names, names
        stop_ray()
        alive = [p for p in kids if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        print("alive", len(alive), "initialized", ray.is_initialized())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "alive 0 initialized False" in out.stdout
