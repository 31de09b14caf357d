"""The CLI shell: help, version, and one-line user errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys

from vpr_tune import __version__
from vpr_tune.cli import main

GROUPS = ("data", "train", "eval", "run", "best", "report", "bench", "doctor")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vpr_tune.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_every_command_group() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for group in GROUPS:
        assert group in result.stdout


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_unknown_command_is_one_line_exit_2() -> None:
    result = _run("nosuchcmd")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "nosuchcmd" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_argument_is_exit_2() -> None:
    assert main(["run"]) == 2


def test_debug_shows_traceback() -> None:
    result = _run("--debug", "nosuchcmd")
    assert result.returncode != 0
    assert "Traceback" in result.stderr
