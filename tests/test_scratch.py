"""A trial's scratch folder outlives the trial when Ray kills its worker; the sweep removes
the folders of ended processes and only those."""

from __future__ import annotations

import os
import subprocess
import sys

from vpr_tune.tune import scratch


def test_sweep_removes_only_folders_whose_process_ended(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(scratch.tempfile, "tempdir", str(tmp_path))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead = scratch.scratch_root() / f"{int(ended.stdout)}-x1"
    (dead / "ckpt-a").mkdir(parents=True)
    (dead / "best.pt").write_bytes(b"model")
    other = scratch.scratch_root() / "not-a-pid"
    other.mkdir()

    mine = scratch.trial_scratch()  # sweeps as it starts

    assert not dead.exists() and other.exists()
    assert mine.parent == scratch.scratch_root()
    assert mine.name.startswith(f"{os.getpid()}-") and mine.is_dir()
    assert scratch.sweep_scratch() == [] and mine.is_dir()  # this process is alive
