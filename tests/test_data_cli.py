"""``vpr-tune data synth`` and ``vpr-tune data check`` through the CLI, errors with exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vpr_tune.cli import main


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """Image cache and scan verdicts go to a temp folder, not the user's ~/.cache."""
    monkeypatch.setenv("VPR_TUNE_CACHE", str(tmp_path_factory.mktemp("cache")))


def test_synth_then_check_json_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    env = {**os.environ, "VPR_TUNE_CACHE": str(tmp_path / "cache")}
    synth = subprocess.run(
        [sys.executable, "-m", "vpr_tune.cli", "data", "synth", str(out), "--size", "tiny",
         "--preview"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert synth.returncode == 0, synth.stderr
    assert "SYNTHETIC" in synth.stdout and (out / "preview.png").exists()
    check = subprocess.run(
        [sys.executable, "-m", "vpr_tune.cli", "data", "check", str(out), "--json"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert check.returncode == 0, check.stderr
    info = json.loads(check.stdout)
    assert set(info) == {"gsv_xs/train", "sf_xs/val", "sf_xs/test", "tokyo_xs/test"}
    train = info["gsv_xs/train"]
    assert isinstance(train["images"], int) and train["places"] == 30
    for rel in ("sf_xs/val", "sf_xs/test", "tokyo_xs/test"):
        v = info[rel]
        assert all(isinstance(v[k], int) for k in ("database", "queries",
                                                    "queries_without_positive"))
        assert v["database"] > v["queries"] > v["queries_without_positive"] >= 0
        assert v["synthetic"] is True
    marker = json.loads((out / "STREET_WORLD.json").read_text())
    assert info["sf_xs/val"]["database"] == marker["counts"]["sf_xs/val"]["database"]


def test_check_table_and_split_folder(street_world_tiny: Path, capsys) -> None:
    assert main(["data", "check", str(street_world_tiny)]) == 0
    out = capsys.readouterr().out
    assert "synthetic" in out and "tokyo_xs/test" in out
    assert main(["data", "check", str(street_world_tiny / "sf_xs" / "val"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert list(info) == ["sf_xs/val"] and info["sf_xs/val"]["queries"] == 20


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("case", ["missing_root", "no_split", "missing_queries", "empty_db",
                                  "bad_utm", "truncated"])
def test_bad_data_is_one_line_exit_2(street_world_tiny: Path, tmp_path: Path, capsys,
                                     case: str) -> None:
    val = street_world_tiny / "sf_xs" / "val"
    target = tmp_path / "val"
    expect = ""
    if case == "missing_root":
        target, expect = tmp_path / "nope", "nope"
    elif case == "no_split":
        target.mkdir()
        expect = "no dataset split"
    else:
        _copy(val, target)
        if case == "missing_queries":
            shutil.rmtree(target / "queries")
            expect = "missing queries/"
        elif case == "empty_db":
            for p in (target / "database").iterdir():
                p.unlink()
            expect = "empty database"
        elif case == "bad_utm":
            (target / "queries" / "IMG_1234.jpg").write_bytes(
                next((target / "queries").iterdir()).read_bytes()
            )
            expect = "IMG_1234.jpg"
        elif case == "truncated":
            victim = sorted((target / "queries").iterdir())[3]
            victim.write_bytes(victim.read_bytes()[:300])
            expect = victim.name
    assert main(["data", "check", str(target)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert expect in err.replace("\n", "") and "Traceback" not in err
    assert len(lines) <= 3  # one message (rich may wrap a long path)
    if case == "truncated":
        with pytest.warns(UserWarning):
            assert main(["data", "check", str(target), "--skip-bad-files", "--json"]) == 0
        (only,) = json.loads(capsys.readouterr().out).values()  # keyed "<parent>/val"
        assert only["queries"] == 19


def test_synth_refuses_non_empty_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "keep.txt").write_text("x")
    assert main(["data", "synth", str(tmp_path), "--size", "tiny"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["data", "synth", str(tmp_path / "x"), "--size", "huge"]) == 2


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
