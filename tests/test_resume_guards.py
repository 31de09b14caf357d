"""``run --resume`` resumes what was started: an edited space is refused with the difference,
other data is refused, the recorded space and data are used, and a running driver's lock
refuses a second one while a dead driver's lock does not block."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from tests.helpers import SMALL_SPACE_YAML, error_line, write_yaml
from vpr_tune.cli import main
from vpr_tune.config import load_space
from vpr_tune.tune.results import lock_experiment, running_pid


def _recorded_experiment(tmp_path: Path, data_root: Path) -> tuple[Path, Path]:
    """An experiment folder as `run` leaves it: space.yaml with the resolved data root."""
    space = write_yaml(tmp_path, SMALL_SPACE_YAML)
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
    from vpr_tune.tune.space_record import recorded_inputs

    space, exp = _recorded_experiment(tmp_path, street_world_tiny)
    recorded, data = recorded_inputs(exp, load_space(space), None)
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
