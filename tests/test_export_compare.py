"""best --export (a trial as a train YAML that repeats its curve), compare, --save-preds."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from tests.helpers import write_hand_experiment, write_space
from vpr_tune.analysis import load_experiment
from vpr_tune.cli import main
from vpr_tune.compare import compare_table, differing_hyperparameters


def test_export_refuses_unknown_trial_and_bad_name(hand_experiment, capsys):
    hand = str(hand_experiment)
    assert main(["best", hand, "--export", "x.yaml", "--trial", "nope"]) == 2
    assert "--trial 'nope' is not a trial of hand" in capsys.readouterr().err
    assert main(["best", hand, "--export", "x.txt"]) == 2
    assert "expected a .yaml file name" in capsys.readouterr().err


def test_compare_two_hand_experiments(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VPR_TUNE_DATA", raising=False)
    a = write_hand_experiment(tmp_path / "results" / "a")
    b = write_hand_experiment(tmp_path / "results" / "b", trials=[
        ("u0", "TERMINATED", "adam", 2e-3, 1e-4, "none", [30.0, 35.0]),
        ("u1", "ERROR", "sgd", 0.05, 1e-2, "none", [70.0]),
    ])
    pd.DataFrame({"rank": [1], "trial_id": ["u0"], "val_R@1": [35.0], "sf_test_R@1": [20.0],
                  "sf_test_R@5": [30.0], "tokyo_R@1": [10.0]}).to_csv(b / "retest.csv",
                                                                      index=False)
    exps = [load_experiment(a), load_experiment(b)]
    table = compare_table(exps).set_index("experiment")
    assert table.loc["a", "trials"] == 6 and table.loc["a", "trial_epochs"] == 14
    assert table.loc["a", "best_trial"] == "t0" and table.loc["a", "val_R@1"] == 60.0
    assert table.loc["b", "failed"] == 1 and table.loc["b", "sf_test_R@1"] == 20.0
    assert pd.isna(table.loc["a", "sf_test_R@1"])  # a was never retested
    diff = differing_hyperparameters(exps).set_index("key")
    assert diff.loc["optimizer.name", "a"] == "sgd" and diff.loc["optimizer.name", "b"] == "adam"
    assert "budget.max_epochs" not in diff.index  # the same in both
    rc = main(["compare", "a", "b", "--plot", str(tmp_path / "cmp.png")])
    out = capsys.readouterr().out
    assert rc == 0 and "optimizer.name" in out and "t0" in out and "u0" in out
    assert (tmp_path / "cmp.png").stat().st_size > 1000
    assert main(["compare", "a"]) == 2
    assert "at least two" in capsys.readouterr().err


@pytest.mark.slow
def test_export_then_train_repeats_the_trial_curve(tmp_path, street_world_tiny, capsys):
    from vpr_tune.train import load_train_config

    space = write_space(tmp_path / "s.yaml", data={"augment": True},
                        optimizer={"lr": {"grid": [0.003]}},
                        search={"algorithm": "grid", "num_samples": 1},
                        resources={"cpu": 1, "gpu": 0, "precision": "fp32"})
    storage = tmp_path / "results"
    assert main(["run", str(space), "--name", "one", "--storage", str(storage),
                 "--data", str(street_world_tiny)]) == 0
    out_yaml = tmp_path / "trial.yaml"
    assert main(["best", str(storage / "one"), "--export", str(out_yaml)]) == 0
    assert "vpr-tune train" in capsys.readouterr().out
    cfg = load_train_config(out_yaml)
    assert cfg["optimizer"]["lr"] == 0.003 and cfg["resources"]["precision"] == "fp32"
    # exactly the command the header prints (no --threads): resources.cpu sets the threads
    assert main(["train", str(out_yaml), "--data", str(street_world_tiny),
                 "--out", str(tmp_path / "train")]) == 0
    assert "threads: 1 (resources.cpu" in capsys.readouterr().out
    rows = pd.read_csv(tmp_path / "train" / "metrics.csv").to_dict("records")
    trained = [round(float(r["val/R@1"]), 4) for r in rows if int(r["epoch"]) > 0]
    curve = pd.read_csv(storage / "one" / "metrics.csv")
    assert trained == [round(v, 4) for v in curve["val/R@1"]]
    losses = [round(float(r["train/loss"]), 5) for r in rows if int(r["epoch"]) > 0]
    assert losses == [round(v, 5) for v in curve["train/loss"]]


@pytest.mark.slow
def test_save_preds_and_compare_on_real_experiments(searched_experiment, tmp_path, capsys):
    assert main(["best", str(searched_experiment), "--save-preds", "3"]) == 0
    out = capsys.readouterr().out
    preds = list((searched_experiment / "preds").glob("*/*/predictions.csv"))
    assert {p.parent.name for p in preds} == {"val", "sf_test", "tokyo"}
    assert any((p.parent / "preds").glob("*.png") for p in preds)
    assert "without a positive" in out
    other = tmp_path / "elsewhere" / searched_experiment.name
    shutil.copytree(searched_experiment, other)
    assert main(["compare", str(searched_experiment), str(other)]) == 2  # same name
    assert "different experiments" in capsys.readouterr().err


def test_export_refuses_a_missing_folder_and_a_directory(hand_experiment, tmp_path, capsys):
    # issue 36: the folders were created silently; a directory gave an IsADirectoryError
    hand = str(hand_experiment)
    missing = tmp_path / "nonexistent" / "dir" / "x.yaml"
    assert main(["best", hand, "--export", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"folder {missing.parent} does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "nonexistent").exists()
    folder = tmp_path / "d.yaml"
    folder.mkdir()
    assert main(["best", hand, "--export", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"--export {folder}: is a directory" in err
    assert "IsADirectoryError" not in err and len(err.strip().splitlines()) == 1


def test_compare_counts_stopped_early_apart_and_says_when_nothing_differs(
        tmp_path, monkeypatch, capsys):
    # issue 36: stopped-early trials were counted as finished; identical best configs gave
    # an empty "where their best configs differ" table with only its header
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VPR_TUNE_DATA", raising=False)
    trials = [("u0", "TERMINATED", "sgd", 0.01, 1e-3, "cosine", [20.0, 40.0, 55.0, 60.0]),
              ("u1", "STOPPED_EARLY", "adam", 1e-3, 1e-4, "none", [10.0]),
              ("u2", "STOPPED_EARLY", "adam", 2e-3, 1e-4, "none", [12.0, 14.0]),
              ("u3", "ERROR", "sgd", 0.05, 1e-2, "none", [70.0])]
    write_hand_experiment(tmp_path / "results" / "a", trials=trials)
    write_hand_experiment(tmp_path / "results" / "b", trials=trials)
    table = compare_table([load_experiment("a"), load_experiment("b")]).set_index("experiment")
    assert table.loc["a", "finished"] == 1 and table.loc["a", "stopped_early"] == 2
    assert table.loc["a", "failed"] == 1 and table.loc["a", "trials"] == 4
    assert main(["compare", "a", "b"]) == 0
    out = capsys.readouterr().out
    assert "Their best configs do not differ in any hyperparameter." in out
    assert "Where their best configs differ" not in out


def test_compare_plot_refuses_a_missing_folder_and_a_directory(tmp_path, monkeypatch, capsys):
    # issue 36: --plot created the missing folders silently, as --export did
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VPR_TUNE_DATA", raising=False)
    write_hand_experiment(tmp_path / "results" / "a")
    write_hand_experiment(tmp_path / "results" / "b")
    missing = tmp_path / "missing" / "dir" / "cmp.png"
    assert main(["compare", "a", "b", "--plot", str(missing)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines == [f"error: --plot {missing}: folder {missing.parent} does not exist; "
                     "create it first or pick another path"], captured.err
    assert captured.out == ""  # refused before the tables: nothing to scroll back through
    assert not (tmp_path / "missing").exists()
    folder = tmp_path / "plots"
    folder.mkdir()
    assert main(["compare", "a", "b", "--plot", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"--plot {folder}: is a directory" in err
    assert "Error" not in err and len(err.strip().splitlines()) == 1
