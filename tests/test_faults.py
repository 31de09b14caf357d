"""Faults that really happen on shared machines: the driver killed with SIGKILL or stopped
with SIGTERM mid-search, a trial's worker process killed (the OOM killer, a node reboot), two
runs of one experiment at once. Nothing finished is lost or re-run, and interrupted trials
continue from their checkpoint, not from epoch 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import CliRun, live_reports, ray_reports, write_space
from vpr_tune.analysis import read_table

pytestmark = pytest.mark.slow
# Ray writes the experiment state every 10 s: a trial whose first report is older than this
# has a checkpoint the state on disk knows (a younger one may rightly restart from epoch 0).
STATE_PERIOD_S = 12

def _space(tmp_path: Path, epochs: int, samples: int, failures: int = 0, batches: int = 24
           ) -> Path:
    return write_space(tmp_path / "space.yaml", data={"augment": True},
                       budget={"max_epochs": epochs, "batches_per_epoch": batches,
                               "places_per_batch": 8, "images_per_place": 4,
                               "eval_batch_size": 64},
                       search={"num_samples": samples, "seed": 1, "max_concurrent": 2,
                               "max_failures": failures})


def _epochs_by_trial(exp: Path) -> dict[str, list[int]]:
    return {t: [int(r["epoch"]) for r in rows] for t, rows in ray_reports(exp).items()}


def _run_args(space: Path, data: Path, name: str, storage: Path) -> list[str]:
    return ["run", str(space), "--data", str(data), "--name", name, "--storage", str(storage)]


def _known_to_state(rows: list[dict]) -> bool:
    """The trial's first report (and checkpoint) is older than Ray's state period."""
    return time.time() - rows[0]["timestamp"] > STATE_PERIOD_S


def test_sigkill_driver_then_resume_keeps_finished_and_continues_running(
        tmp_path, street_world_tiny):
    epochs, samples = 12, 4  # trials run long enough to be caught midway
    storage = tmp_path / "res"
    args = _run_args(_space(tmp_path, epochs, samples), street_world_tiny, "killed", storage)
    exp = storage / "killed"
    with CliRun(args, tmp_path / "run.log") as run:
        # Kill when one trial has finished and another is part-way with a checkpoint the
        # state on disk knows (so it must continue from it, not from epoch 0).
        def midway() -> bool:
            seen = ray_reports(exp)
            return (any(r[-1]["epoch"] == epochs for r in seen.values())
                    and any(r[-1]["epoch"] < epochs - 2 and _known_to_state(r)
                            for r in seen.values()))

        run.wait_for(midway, 400, "a finished trial and one part-way in result.json")
        seen = ray_reports(exp)
        before = {t: [int(r["epoch"]) for r in rows] for t, rows in seen.items()}
        finished = {t for t, e in before.items() if max(e) == epochs}
        running = {t for t, rows in seen.items() if rows[-1]["epoch"] < epochs
                   and _known_to_state(rows)}
        run.signal(signal.SIGKILL)
        run.wait(30)
    assert run.returncode == -signal.SIGKILL
    assert finished and running, before
    # the dead driver's lock file is still there with its pid: it must not block --resume
    assert (exp / ".running").read_text().strip() == str(run.pid)

    cmd = [sys.executable, "-m", "vpr_tune", *args]
    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=500)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    final = read_table(exp / "trials.csv")
    assert len(final) == samples and final["trial_id"].is_unique, final
    assert (final["status"] == "TERMINATED").all(), final[["trial_id", "status", "error"]]
    assert (final["epochs"] == epochs).all()
    after = _epochs_by_trial(exp)
    for trial in finished:  # not re-run: no epoch reported after the kill
        assert after[trial] == before[trial], (trial, before[trial], after[trial])
    for trial in running:  # continued from a checkpoint: never back to epoch 1
        new = after[trial][len(before[trial]):]
        assert new and new[0] > 1, (trial, before[trial], after[trial])
        assert after[trial].count(1) == 1
    metrics = read_table(exp / "metrics.csv")
    assert not metrics.duplicated(["trial_id", "epoch"]).any()
    assert len(metrics) == samples * epochs


def _trial_workers(driver: int) -> list[psutil.Process]:
    """Ray worker processes running a trial (their title names the trainable)."""
    found = []
    for p in psutil.Process(driver).children(recursive=True):
        try:
            title = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if title.startswith("ray::") and ("train_trial" in title or "ImplicitFunc" in title):
            found.append(p)
    return found


def test_killed_trial_worker_is_retried_from_its_checkpoint(tmp_path, street_world_tiny):
    epochs, samples = 8, 2
    storage = tmp_path / "res"
    args = _run_args(_space(tmp_path, epochs, samples, failures=1), street_world_tiny,
                     "worker", storage)
    exp = storage / "worker"
    with CliRun(args, tmp_path / "run.log") as run:
        run.wait_for(lambda: any(2 <= max(e) <= epochs - 2
                                 for e in _epochs_by_trial(exp).values()), 300,
                     "a trial part-way in result.json")
        workers = _trial_workers(run.pid)
        assert workers, [" ".join(p.cmdline()) for p in
                         psutil.Process(run.pid).children(recursive=True)]
        victim = workers[0].pid
        workers[0].kill()  # SIGKILL: no Python cleanup runs in the trial
        run.wait(400)
    assert run.returncode == 0, run.output()
    final = read_table(exp / "trials.csv")
    assert len(final) == samples
    assert (final["status"] == "TERMINATED").all(), final[["trial_id", "status", "error"]]
    assert (final["epochs"] == epochs).all()
    reports = ray_reports(exp)
    killed = [rows for rows in reports.values() if rows[0]["pid"] == victim]
    assert len(killed) == 1, reports
    rows = killed[0]
    restarted = [r for r in rows if r["pid"] != victim]
    # Ray retried it in a new process, which went on from the last checkpoint (epoch > 1)
    assert restarted and restarted[0]["epoch"] > 1, [(r["epoch"], r["pid"]) for r in rows]
    assert [r["epoch"] for r in rows].count(1) == 1
    assert rows[-1]["epoch"] == epochs


def test_sigterm_saves_tables_says_how_to_resume_and_resume_finishes(
        tmp_path, street_world_tiny):
    epochs, samples = 6, 3
    storage = tmp_path / "res"
    args = _run_args(_space(tmp_path, epochs, samples, batches=12), street_world_tiny, "term",
                     storage)
    exp = storage / "term"
    with CliRun(args, tmp_path / "run.log") as run:
        # the live epoch log: Ray copies result.json to the experiment folder only when it
        # syncs its state, which a fast run can finish before (CI: exited before the wait)
        run.wait_for(lambda: any(2 <= r[-1]["epoch"] <= epochs - 3
                                 for r in live_reports(exp).values()), 400,
                     "a trial part-way in epochs.jsonl")
        run.signal(signal.SIGTERM)  # what a scheduler or `timeout` sends
        run.wait(60)  # it stops by itself (a hang fails here)
    out = run.output()
    assert run.returncode == 143, out
    assert "stopped by SIGTERM" in out and "--resume" in out, out
    assert "Traceback" not in out, out
    before = _epochs_by_trial(exp)
    saved = read_table(exp / "trials.csv")  # valid, every started trial listed
    assert saved["trial_id"].is_unique and set(before) <= set(saved["trial_id"]), saved
    assert not (saved["status"] == "ERROR").any(), saved[["trial_id", "status", "error"]]

    cmd = [sys.executable, "-m", "vpr_tune", *args]
    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=500)
    assert again.returncode == 0, again.stdout + again.stderr
    final = read_table(exp / "trials.csv")
    assert len(final) == samples and final["trial_id"].is_unique, final
    assert (final["status"] == "TERMINATED").all(), final[["trial_id", "status", "error"]]
    assert (final["epochs"] == epochs).all()
    after = _epochs_by_trial(exp)
    for trial, epochs_before in before.items():  # nothing run twice from scratch
        assert after[trial][:len(epochs_before)] == epochs_before
        assert after[trial].count(1) == 1, (trial, after[trial])
    metrics = read_table(exp / "metrics.csv")
    assert not metrics.duplicated(["trial_id", "epoch"]).any()
    assert len(metrics) == samples * epochs


def test_second_run_of_a_running_experiment_refuses_and_the_first_finishes(
        tmp_path, street_world_tiny):
    epochs, samples = 3, 2
    storage = tmp_path / "res"
    args = _run_args(_space(tmp_path, epochs, samples), street_world_tiny, "twice", storage)
    exp = storage / "twice"
    cmd = [sys.executable, "-m", "vpr_tune", *args]
    with CliRun(args, tmp_path / "first.log") as first:
        first.wait_for(lambda: (exp / "space.yaml").exists(), 300, "space.yaml of the experiment")
        for extra in ([], ["--resume"]):
            second = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stdout + second.stderr
            assert f"experiment 'twice' is already running, pid {first.pid}" in second.stderr
            assert "Traceback" not in second.stderr
        first.wait(400)
    assert first.returncode == 0, first.output()
    final = read_table(exp / "trials.csv")
    assert len(final) == samples and (final["status"] == "TERMINATED").all(), final
