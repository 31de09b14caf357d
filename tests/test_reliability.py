"""Mistakes and accidents of shared lab machines, fast cases: every one is one clear line
(exit 2) or a clean recovery, never a traceback, and nothing already written is lost.
The process-level ones (SIGTERM, two runs at once) are in test_faults_signals.py (slow)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from vpr_tune.cli import main
from vpr_tune.config import load_space
from vpr_tune.errors import UserError
from vpr_tune.tune.results import check_name, failure_summary, lock_experiment, running_pid

SPACE = """
data: {image_size: [32, 32], augment: false}
optimizer:
  name: adam
  lr: {loguniform: [1.0e-3, 1.0e-2]}
budget: {max_epochs: 2, batches_per_epoch: 2, places_per_batch: 4, images_per_place: 2}
search: {algorithm: random, num_samples: 2, max_concurrent: 1, scheduler: fifo}
resources: {cpu: 1, gpu: 0}
"""


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------ inputs
@pytest.mark.parametrize("text", ["", "# only a comment\n\n# another\n"])
def test_empty_or_comment_only_space_is_an_error(tmp_path, text):
    with pytest.raises(UserError, match="has no content"):
        load_space(write(tmp_path, text))


def test_space_without_searched_parameter_points_to_train(tmp_path, capsys):
    space = write(tmp_path, "optimizer: {lr: 0.01}\nsearch: {num_samples: 4}\n")
    rc = main(["run", str(space), "--name", "x", "--storage", str(tmp_path / "res")])
    assert rc == 2
    line = error_line(capsys)
    assert "no searched parameter" in line and "vpr-tune train" in line
    assert not (tmp_path / "res" / "x").exists()


def test_repeats_of_a_fixed_config_by_searching_the_seed_are_allowed(tmp_path):
    space = load_space(write(tmp_path, "seed: {choice: [0, 1, 2]}\n"))
    assert list(space.params) == ["seed"]


def test_duplicate_keys_name_both_lines(tmp_path):
    path = write(tmp_path, """
        optimizer: {name: sgd}
        seed: 1
        optimizer: {name: adam}
    """)
    with pytest.raises(UserError) as exc:
        load_space(path)
    assert str(path) in str(exc.value) and "'optimizer'" in str(exc.value)
    assert "lines 2 and 4" in str(exc.value)


def test_duplicate_nested_key(tmp_path):
    with pytest.raises(UserError, match=r"'lr' is given twice, at lines 3 and 4"):
        load_space(write(tmp_path, "optimizer:\n  name: sgd\n  lr: 0.1\n  lr: 0.2\n"))


def test_exponent_without_dot_is_the_number_it_means(tmp_path):
    space = load_space(write(tmp_path, """
        optimizer:
          lr: {loguniform: [1e-4, 1e-1]}
          weight_decay: 5e-4
    """))
    assert space.params["optimizer.lr"].args == [1e-4, 1e-1]
    assert space.base["optimizer"]["weight_decay"] == 5e-4


def test_when_value_typo_is_an_error_with_did_you_mean(tmp_path):
    # a fixed name (adam): the typo used to drop momentum from the search without a word
    for name in ("adam", "{choice: [sgd, adam]}"):
        with pytest.raises(UserError, match=r"'sgdd' is not a value of optimizer.name "
                                            r"\(did you mean 'sgd'\?\)") as exc:
            load_space(write(tmp_path, f"""
                optimizer:
                  name: {name}
                  momentum: {{uniform: [0.8, 0.99], when: {{name: sgdd}}}}
            """))
        assert "optimizer.momentum.when" in str(exc.value)


def test_unknown_key_lists_the_allowed_keys(tmp_path):
    with pytest.raises(UserError, match=r"budget.max_epoch: unknown key \(did you mean "
                                        r"'max_epochs'\?\); allowed: max_epochs, "):
        load_space(write(tmp_path, "budget: {max_epoch: 3}\n"))


@pytest.mark.parametrize("budget", ["images_per_place: 1", "places_per_batch: 1",
                                    "images_per_place: {choice: [1, 4]}"])
def test_batch_that_cannot_form_pairs_is_refused(tmp_path, budget):
    with pytest.raises(UserError, match="cannot form (positives|negatives) for loss"):
        load_space(write(tmp_path, f"loss: {{name: triplet}}\nbudget: {{{budget}}}\n"))


def test_proxy_loss_needs_no_pairs(tmp_path):
    space = load_space(write(tmp_path, "loss: {name: arcface}\nbudget: {images_per_place: 1}\n"))
    assert space.base["budget"]["images_per_place"] == 1


@pytest.mark.parametrize("name", ["", "  ", "..", ".", "a/b", "../up", "a\\b", "tab\there",
                                  "x" * 300])
def test_bad_experiment_names(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    space = write(tmp_path, SPACE)
    rc = main(["run", str(space), "--name", name, "--storage", str(tmp_path / "res"),
               "--dry-run"])
    assert rc == 2
    assert "--name" in error_line(capsys)
    assert not (tmp_path / "res").exists() and not (tmp_path / "up").exists()


def test_yaml_name_is_checked_and_named(tmp_path, capsys):
    space = write(tmp_path, SPACE + "name: ../escape\n")
    assert main(["run", str(space), "--storage", str(tmp_path / "res")]) == 2
    line = error_line(capsys)
    assert f"{space}: name:" in line and "path separator" in line
    assert not (tmp_path / "escape").exists()


def test_plain_names_pass():
    for name in ("demo", "optim-lr_2", "a.b", "ü" * 100):
        assert check_name(name) == name


def test_messages_are_printed_literally(tmp_path, capsys):
    space = write(tmp_path, "optimizer: {lr: {uniform: [1]}}\n")
    assert main(["run", str(space), "--dry-run"]) == 2
    assert "uniform takes [low, high] numbers" in error_line(capsys)
    assert main(["best", "x[/bold]", "--storage", str(tmp_path)]) == 2
    assert "x[/bold]" in error_line(capsys)
    folder = tmp_path / "[red]odd"
    folder.mkdir()
    assert main(["run", str(folder / "nope.yaml"), "--dry-run"]) == 2
    assert "[red]odd" in error_line(capsys)


def test_directory_where_a_file_is_expected(tmp_path, capsys):
    assert main(["run", str(tmp_path), "--dry-run"]) == 2
    assert "is a directory" in error_line(capsys)
    assert main(["train", str(tmp_path)]) == 2
    assert "is a directory" in error_line(capsys)
    assert main(["eval", "--checkpoint", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "is a directory" in error_line(capsys)


@pytest.mark.parametrize("args", [
    ["eval", "--checkpoint", "x.pt", "--data", ".", "--batch-size", "-5"],
    ["eval", "--checkpoint", "x.pt", "--data", ".", "--batch-size", "0"],
    ["eval", "--checkpoint", "x.pt", "--data", ".", "--save-preds", "-1"],
    ["train", "x.yaml", "--threads", "-2"],
    ["train", "x.yaml", "--threads", "0"],
    ["data", "synth", "out", "--workers", "0"],
    ["run", "x.yaml", "--num-samples", "0"],
    ["report", "--top", "0"],
])
def test_numeric_options_are_checked(tmp_path, monkeypatch, capsys, args):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert "Invalid value" in error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_data_that_is_a_file_or_the_wrong_split(tmp_path, capsys, tiny_checkpoints):
    root, checkpoints = tiny_checkpoints
    space = write(tmp_path, SPACE)
    afile = tmp_path / "data.txt"
    afile.write_text("x")
    assert main(["run", str(space), "--data", str(afile), "--dry-run"]) == 2
    assert f"{afile} is a file" in error_line(capsys)
    train = root / "gsv_xs" / "train"  # a train split given where an eval split is expected
    assert main(["eval", "--checkpoint", str(checkpoints[0]), "--data", str(train)]) == 2
    line = error_line(capsys)
    assert str(train) in line and "database/ and queries/" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["run", str(space), "--data", str(empty), "--dry-run"]) == 2
    line = error_line(capsys)
    assert str(empty) in line and "expected" in line


def test_data_check_labels_tokyo(street_world_tiny, capsys):
    assert main(["data", "check", str(street_world_tiny / "tokyo_xs"), "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == ["tokyo_xs/test"]


def test_skipped_bad_file_is_one_clean_warning_line(tmp_path, street_world_tiny):
    import shutil

    root = tmp_path / "sw"
    shutil.copytree(street_world_tiny / "sf_xs", root / "sf_xs")
    victim = sorted((root / "sf_xs" / "val" / "database").glob("*.jpg"))[0]
    victim.write_bytes(b"not a jpeg")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "VPR_TUNE_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "vpr_tune", "data", "check", str(root),
                             "--skip-bad-files"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    warnings = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith("warning: skipping") and victim.name in warnings[0]
    assert "UserWarning" not in result.stderr and "warnings.warn" not in result.stderr


def test_train_resume_with_nothing_says_it_starts_fresh(tmp_path, street_world_tiny, capsys):
    cfg = write(tmp_path, """
        data: {image_size: [32, 32], augment: false, cache: false}
        budget: {max_epochs: 1, batches_per_epoch: 1, places_per_batch: 4, images_per_place: 2,
                 eval_batch_size: 32}
    """, "one.yaml")
    rc = main(["train", str(cfg), "--data", str(street_world_tiny), "--out",
               str(tmp_path / "run"), "--resume", "--threads", "1"])
    assert rc == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert (tmp_path / "run" / "last.pt").exists()


def test_train_resume_from_a_truncated_last_pt_names_the_file(tmp_path, street_world_tiny,
                                                               capsys):
    cfg = write(tmp_path, """
        data: {image_size: [32, 32], augment: false, cache: false}
        budget: {max_epochs: 1, batches_per_epoch: 1, places_per_batch: 4, images_per_place: 2,
                 eval_batch_size: 32}
    """, "one.yaml")
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"PK\x03\x04")
    rc = main(["train", str(cfg), "--data", str(street_world_tiny), "--out", str(run),
               "--resume", "--threads", "1"])
    assert rc == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"checkpoint {run / 'last.pt'} is truncated or corrupt" in line


# ----------------------------------------------------------------- resources, resume
def test_dry_run_checks_resources_like_a_run(tmp_path, capsys, street_world_tiny):
    space = write(tmp_path, SPACE.replace("gpu: 0", "gpu: 1"))
    rc = main(["run", str(space), "--data", str(street_world_tiny), "--dry-run", "--name", "g",
               "--storage", str(tmp_path / "res")])
    import torch

    if torch.cuda.device_count() >= 1:
        assert rc == 0
        return
    assert rc == 2
    line = error_line(capsys)
    assert f"{space}: resources.gpu: 1 GPUs per trial but the largest Ray node has" in line
    assert not (tmp_path / "res" / "g").exists()
    space = write(tmp_path, SPACE.replace("cpu: 1", f"cpu: {os.cpu_count() + 2}"))
    assert main(["run", str(space), "--data", str(street_world_tiny), "--dry-run"]) == 2
    assert "resources.cpu" in error_line(capsys)


def _recorded_experiment(tmp_path: Path, data_root: Path) -> tuple[Path, Path]:
    """An experiment folder as `run` leaves it: space.yaml with the resolved data root."""
    space = write(tmp_path, SPACE)
    exp = tmp_path / "res" / "rec"
    exp.mkdir(parents=True)
    raw = yaml.safe_load(space.read_text())
    raw["resolved"] = {"data_root": str(data_root), "trials": 2, "experiment": str(exp)}
    (exp / "space.yaml").write_text(yaml.safe_dump(raw))
    return space, exp


def test_resume_with_an_edited_space_shows_the_difference(tmp_path, capsys, street_world_tiny):
    space, exp = _recorded_experiment(tmp_path, street_world_tiny)
    space.write_text(space.read_text().replace("1.0e-2", "1.0e-1"))
    rc = main(["run", str(space), "--name", "rec", "--storage", str(tmp_path / "res"),
               "--resume"])
    assert rc == 2
    line = error_line(capsys)
    assert "differs from the space the search was started with" in line
    assert "optimizer.lr.loguniform: was [0.001, 0.01], now [0.001, 0.1]" in line


def test_resume_with_other_data_is_refused(tmp_path, capsys, street_world_tiny):
    space, exp = _recorded_experiment(tmp_path, street_world_tiny)
    other = tmp_path / "other"
    other.mkdir()
    rc = main(["run", str(space), "--name", "rec", "--storage", str(tmp_path / "res"),
               "--resume", "--data", str(other)])
    assert rc == 2
    line = error_line(capsys)
    assert f"--data {other} differs" in line and str(street_world_tiny) in line


def test_resume_uses_the_recorded_space_and_data(tmp_path, street_world_tiny):
    from vpr_tune.tune import _recorded_inputs

    space, exp = _recorded_experiment(tmp_path, street_world_tiny)
    recorded, data = _recorded_inputs(exp, load_space(space), None)
    assert data == str(street_world_tiny)
    assert recorded.source == str(exp / "space.yaml")
    assert list(recorded.params) == ["optimizer.lr"]


def test_running_lock_names_the_pid_and_a_dead_holder_does_not_block(tmp_path, capsys):
    space, exp = _recorded_experiment(tmp_path, Path("/nonexistent"))
    lock = lock_experiment(exp)
    try:
        assert running_pid(exp) == str(os.getpid())
        rc = main(["run", str(space), "--name", "rec", "--storage", str(tmp_path / "res"),
                   "--resume"])
        assert rc == 2
        assert f"already running, pid {os.getpid()}" in error_line(capsys)
    finally:
        lock.close()
    # the file stays with the old pid (a killed driver), but no process holds the lock
    assert (exp / ".running").read_text().strip() == str(os.getpid())
    assert running_pid(exp) is None
    (exp / ".running").write_text("999999\n")
    assert running_pid(exp) is None
    assert (exp / ".running").read_text() == "999999\n"  # only read
    lock_experiment(exp).close()
    assert (exp / ".running").read_text().strip() == str(os.getpid())


# ------------------------------------------------------------------------ failures
def test_failure_summary_names_the_most_common_error():
    trials = pd.DataFrame({"trial_id": ["a", "b", "c"], "status": ["ERROR", "ERROR", "DIVERGED"],
                           "error": ["KeyError: 'lrr'", "KeyError: 'lrr'", "loss is nan"]})
    assert failure_summary(trials) == ("2 ERROR, 1 DIVERGED; most common error (2 of 3 "
                                       "trials): KeyError: 'lrr'")


def test_best_on_an_all_failed_experiment_exits_1(tmp_path, capsys):
    from tests.helpers import write_hand_experiment

    write_hand_experiment(tmp_path / "res" / "bad", trials=[
        ("t0", "ERROR", "sgd", 0.01, 1e-3, "none", [10.0]),
        ("t1", "DIVERGED", "adam", 0.1, 1e-3, "none", [5.0]),
    ])
    assert main(["best", "bad", "--storage", str(tmp_path / "res")]) == 1
    line = error_line(capsys)
    assert "no trial finished" in line and "most common error" in line and "boom" in line


def test_full_disk_while_writing_a_table_keeps_the_old_one(tmp_path, monkeypatch):
    from vpr_tune.tune import results

    path = tmp_path / "trials.csv"
    results.write_table(pd.DataFrame({"a": [1]}), path)

    def full(frame, where):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results, "write_csv", full)
    with pytest.raises(UserError, match=f"no space left on device: {path}"):
        results.write_table(pd.DataFrame({"a": [2]}), path)
    assert pd.read_csv(path)["a"].tolist() == [1]


# --------------------------------------------------------------- corrupt checkpoints
def test_corrupt_trial_checkpoint_falls_back_to_the_previous_kept_one(tmp_path, capsys):
    from vpr_tune.tune.trainable import CHECKPOINT_FILE, _load_newest_good

    class Loader:
        def load_checkpoint(self, path):
            from vpr_tune.checkpoint import read_checkpoint

            self.state = read_checkpoint(path)

    trial = tmp_path / "trial"
    old, new = trial / "checkpoint_000001", trial / "checkpoint_000002"
    for folder in (old, new):
        folder.mkdir(parents=True)
    import torch

    from vpr_tune.checkpoint import FORMAT as CHECKPOINT_FORMAT

    torch.save({"format": CHECKPOINT_FORMAT, "epoch": 1}, old / CHECKPOINT_FILE)
    (new / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 truncated")
    loader = Loader()
    assert _load_newest_good(loader, new) == old
    assert loader.state["epoch"] == 1
    assert str(new / CHECKPOINT_FILE) in capsys.readouterr().out
    (old / CHECKPOINT_FILE).write_bytes(b"")
    with pytest.raises(UserError, match="no usable checkpoint") as exc:
        _load_newest_good(loader, new)
    assert str(old / CHECKPOINT_FILE) in str(exc.value)


def test_retest_falls_back_from_a_truncated_best_pt(tmp_path, tiny_checkpoints):
    import shutil

    from vpr_tune.checkpoint import load_model_from_checkpoint
    from vpr_tune.retest import _load_with_fallback

    _, paths = tiny_checkpoints
    trial = tmp_path / "trial"
    for i, name in enumerate(("checkpoint_000001", "checkpoint_000002")):
        (trial / name).mkdir(parents=True)
        shutil.copy(paths[i], trial / name / "best.pt")
    newest = trial / "checkpoint_000002" / "best.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    logs: list[str] = []
    model, cfg = _load_with_fallback(load_model_from_checkpoint, newest, "cpu", logs.append)
    assert cfg["seed"] == 0 and str(newest) in logs[0]
    (trial / "checkpoint_000001" / "best.pt").write_bytes(b"")
    with pytest.raises(UserError, match="truncated or corrupt"):
        _load_with_fallback(load_model_from_checkpoint, newest, "cpu", logs.append)


def test_data_fingerprint_notices_added_removed_and_rewritten_files(tmp_path):
    from vpr_tune.data.fingerprint import data_fingerprint

    (tmp_path / "a").mkdir()
    for i in range(3):
        (tmp_path / "a" / f"{i}.jpg").write_bytes(b"x" * i)
    first = data_fingerprint(tmp_path)
    assert first.startswith("3 images") and data_fingerprint(tmp_path) == first
    (tmp_path / "a" / "3.jpg").write_bytes(b"new")
    added = data_fingerprint(tmp_path)
    (tmp_path / "a" / "0.jpg").unlink()
    removed = data_fingerprint(tmp_path)
    (tmp_path / "a" / "1.jpg").write_bytes(b"yy")
    rewritten = data_fingerprint(tmp_path)
    assert len({first, added, removed, rewritten}) == 4


def test_retest_records_the_data_fingerprint_and_warns_when_it_changed(
        hand_experiment, tmp_path, street_world_tiny):
    import shutil

    from vpr_tune.analysis import load_experiment
    from vpr_tune.data.fingerprint import data_fingerprint
    from vpr_tune.retest import retest

    root = tmp_path / "data"
    shutil.copytree(street_world_tiny, root)
    space = yaml.safe_load((hand_experiment / "space.yaml").read_text())
    space["resolved"] = {"data_root": str(root), "data_fingerprint": data_fingerprint(root)}
    (hand_experiment / "space.yaml").write_text(yaml.safe_dump(space))
    calls: list[Path] = []

    def fake_eval(ckpt, data_root, tests):
        calls.append(ckpt)
        return {name: {"R@1": 1.0, "R@5": 2.0, "R@10": 3.0, "R@25": 4.0} for name in tests}

    logs: list[str] = []
    retest(load_experiment(hand_experiment), 2, log=logs.append, evaluate_fn=fake_eval)
    md = (hand_experiment / "retest.md").read_text()
    assert data_fingerprint(root) in md and "changed" not in md
    assert not any("changed" in m for m in logs)

    # a query image rewritten and one added since the search
    queries = sorted((root / "sf_xs" / "test" / "queries").glob("*.jpg"))
    queries[0].write_bytes(queries[1].read_bytes())
    shutil.copy(queries[1], queries[1].with_name("@0@0@@@@@@@@extra.jpg"))
    retest(load_experiment(hand_experiment), 2, log=logs.append, evaluate_fn=fake_eval)
    md = (hand_experiment / "retest.md").read_text()
    assert "the data changed since the search" in md
    assert any("the data changed since the search" in m for m in logs)
    assert len(calls) == 4  # the cached results of the old data were not reused


# ------------------------------------------------------ a full disk in a real (fake) search
class DiskFullTrainer:
    """Trains nothing; its checkpoint write fails with ENOSPC from epoch 2 while the file
    ``disk-full`` exists in ``data.root`` (the disk is freed by deleting it)."""

    def __init__(self, cfg, data_root, device=None, num_threads=None, log=print):
        self.cfg, self.epoch, self.is_best = cfg, 0, True
        self.flag = Path(cfg["data"]["root"]) / "disk-full"

    def run_epoch(self):
        self.epoch += 1
        r1 = 10.0 * self.epoch
        return {"epoch": self.epoch, "train/loss": 1.0, "lr": 0.01, "val/R@1": r1,
                "val/R@5": r1, "val/R@10": r1, "val/R@25": r1}

    def save_checkpoint(self, path):
        if self.epoch >= 2 and self.flag.exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        Path(path).write_text(json.dumps({"epoch": self.epoch}))
        return Path(path)

    save_model = save_checkpoint

    def load_checkpoint(self, path):
        self.epoch = json.loads(Path(path).read_text())["epoch"]


def test_full_disk_in_trials_then_resume_finishes(tmp_path, monkeypatch, capsys,
                                                  street_world_tiny):
    import ray.cloudpickle

    from vpr_tune.tune import trainable
    from vpr_tune.tune.results import read_table

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(trainable, "TRAINER_FACTORY", DiskFullTrainer)
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "disk-full").write_text("")
    space = write(tmp_path, f"""
        data: {{root: {flags}, image_size: [32, 32], cache: false}}
        optimizer: {{lr: {{grid: [0.1, 0.2]}}}}
        budget: {{max_epochs: 3}}
        search: {{algorithm: grid, num_samples: 1, max_concurrent: 2, scheduler: fifo}}
    """)
    args = ["run", str(space), "--data", str(street_world_tiny), "--name", "full",
            "--storage", str(tmp_path / "res")]
    try:
        rc = main(args)
        captured = capsys.readouterr()
        assert rc == 1, captured.out + captured.err
        trials = read_table(tmp_path / "res" / "full" / "trials.csv")
        assert (trials["status"] == "ERROR").all() and len(trials) == 2
        assert trials["error"].str.startswith("no space left on device: /").all(), trials["error"]
        assert "no trial finished: 2 ERROR; most common error" in captured.err
        assert "no space left on device" in captured.err
        last = captured.err.strip().splitlines()[-1]
        assert last.startswith("error: experiment full: no trial finished"), last
        assert "Traceback" not in captured.err, captured.err  # in each trial's error.txt

        (flags / "disk-full").unlink()  # space freed
        assert main([*args, "--resume"]) == 0
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    trials = read_table(tmp_path / "res" / "full" / "trials.csv")
    assert (trials["status"] == "TERMINATED").all() and (trials["epochs"] == 3).all(), trials
    metrics = read_table(tmp_path / "res" / "full" / "metrics.csv")
    assert len(metrics) == 6 and not metrics.duplicated(["trial_id", "epoch"]).any()
