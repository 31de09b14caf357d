"""Faults that really happen on shared machines: the driver killed with SIGKILL or stopped
with SIGTERM mid-search, a trial's worker process killed (the OOM killer, a node reboot), two
runs of one experiment at once. Nothing finished is lost or re-run, and interrupted trials
continue from their checkpoint, not from epoch 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import write_space
from vpr_tune.analysis import read_table

pytestmark = pytest.mark.slow

def _space(tmp_path: Path, epochs: int, samples: int, failures: int = 0, batches: int = 24
           ) -> Path:
    return write_space(tmp_path / "space.yaml", data={"augment": True},
                       budget={"max_epochs": epochs, "batches_per_epoch": batches,
                               "places_per_batch": 8, "images_per_place": 4,
                               "eval_batch_size": 64},
                       search={"num_samples": samples, "seed": 1, "max_concurrent": 2,
                               "max_failures": failures})


def _reports(exp: Path) -> dict[str, list[dict]]:
    """Every epoch row each trial reported, in order, straight from Ray's result.json files
    (repeats included: a trial restarted from epoch 0 would report epoch 1 twice)."""
    out: dict[str, list[dict]] = {}
    for path in exp.glob("*/result.json"):
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # the line being written right now
                continue
        rows = [r for r in rows if "epoch" in r]
        if rows:
            out[rows[0]["trial_id"]] = rows
    return out


def _epochs_by_trial(exp: Path) -> dict[str, list[int]]:
    return {t: [int(r["epoch"]) for r in rows] for t, rows in _reports(exp).items()}


def _wait_for(condition, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the search ended before the fault could be injected:\n{out}")
        time.sleep(0.5)
    pytest.fail("timed out waiting for the search to reach the point of the fault")


def test_sigkill_driver_then_resume_keeps_finished_and_continues_running(
        tmp_path, street_world_tiny):
    epochs, samples = 12, 4  # ~3 s epochs: trials run long enough to be caught midway
    storage = tmp_path / "res"
    cmd = [sys.executable, "-m", "vpr_tune", "run", str(_space(tmp_path, epochs, samples)),
           "--data", str(street_world_tiny), "--name", "killed", "--storage", str(storage)]
    exp = storage / "killed"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        # Kill when one trial has finished and another is part-way and reported its first
        # checkpoint more than Ray's experiment-state period (10 s) ago, so the state on disk
        # knows a checkpoint of it (younger trials may rightly restart from epoch 0).
        def midway() -> bool:
            seen = _reports(exp)
            return (any(r[-1]["epoch"] == epochs for r in seen.values())
                    and any(r[-1]["epoch"] < epochs - 2 and time.time() - r[0]["timestamp"] > 12
                            for r in seen.values()))

        _wait_for(midway, 400, proc)
        seen = _reports(exp)
        before = {t: [int(r["epoch"]) for r in rows] for t, rows in seen.items()}
        finished = {t for t, e in before.items() if max(e) == epochs}
        running = {t for t, rows in seen.items() if rows[-1]["epoch"] < epochs
                   and time.time() - rows[0]["timestamp"] > 12}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        if _group_alive(proc.pid):  # Ray processes the dead driver may have left behind
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert finished and running, before
    # the dead driver's lock file is still there with its pid: it must not block --resume
    assert (exp / ".running").read_text().strip() == str(proc.pid)

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


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


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
    cmd = [sys.executable, "-m", "vpr_tune", "run",
           str(_space(tmp_path, epochs, samples, failures=1)),
           "--data", str(street_world_tiny), "--name", "worker", "--storage", str(storage)]
    exp = storage / "worker"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        _wait_for(lambda: any(2 <= max(e) <= epochs - 2
                              for e in _epochs_by_trial(exp).values()), 300, proc)
        workers = _trial_workers(proc.pid)
        assert workers, [" ".join(p.cmdline()) for p in
                         psutil.Process(proc.pid).children(recursive=True)]
        victim = workers[0].pid
        workers[0].kill()  # SIGKILL: no Python cleanup runs in the trial
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    final = read_table(exp / "trials.csv")
    assert len(final) == samples
    assert (final["status"] == "TERMINATED").all(), final[["trial_id", "status", "error"]]
    assert (final["epochs"] == epochs).all()
    reports = _reports(exp)
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
    cmd = [sys.executable, "-m", "vpr_tune", "run",
           str(_space(tmp_path, epochs, samples, batches=12)),
           "--data", str(street_world_tiny), "--name", "term", "--storage", str(storage)]
    exp = storage / "term"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        _wait_for(lambda: any(2 <= r[-1]["epoch"] <= epochs - 3
                              for r in _reports(exp).values()), 400, proc)
        os.kill(proc.pid, signal.SIGTERM)  # what a scheduler or `timeout` sends
        start = time.time()
        out, _ = proc.communicate(timeout=60)
        took = time.time() - start
    finally:
        if proc.poll() is None:
            proc.kill()
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, out
    assert took < 30, took
    assert "stopped by SIGTERM" in out and "--resume" in out, out
    assert "Traceback" not in out, out
    before = _epochs_by_trial(exp)
    saved = read_table(exp / "trials.csv")  # valid, every started trial listed
    assert saved["trial_id"].is_unique and set(before) <= set(saved["trial_id"]), saved
    assert not (saved["status"] == "ERROR").any(), saved[["trial_id", "status", "error"]]

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
    cmd = [sys.executable, "-m", "vpr_tune", "run", str(_space(tmp_path, epochs, samples)),
           "--data", str(street_world_tiny), "--name", "twice", "--storage", str(storage)]
    exp = storage / "twice"
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        _wait_for(lambda: (exp / "space.yaml").exists(), 300, first)
        for extra in ([], ["--resume"]):
            second = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stdout + second.stderr
            assert f"experiment 'twice' is already running, pid {first.pid}" in second.stderr
            assert "Traceback" not in second.stderr
        out, _ = first.communicate(timeout=400)
    finally:
        if first.poll() is None:
            first.kill()
        if _group_alive(first.pid):
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 0, out
    final = read_table(exp / "trials.csv")
    assert len(final) == samples and (final["status"] == "TERMINATED").all(), final
