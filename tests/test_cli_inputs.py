"""Mistakes typed at the command line: a bad experiment name (option or YAML), a folder where
a file is expected, an out-of-range number, a file or the wrong split given as data, text
that looks like markup. Each is one clear line with exit status 2, and nothing is created."""

from __future__ import annotations

import pytest

from tests.helpers import SMALL_SPACE_YAML, error_line, write_yaml
from vpr_tune.cli import main
from vpr_tune.tune.results import check_name


@pytest.mark.parametrize("name", ["", "  ", "..", ".", "a/b", "../up", "a\\b", "tab\there",
                                  "x" * 300])
def test_bad_experiment_names(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    space = write_yaml(tmp_path, SMALL_SPACE_YAML)
    rc = main(["run", str(space), "--name", name, "--storage", str(tmp_path / "res"),
               "--dry-run"])
    assert rc == 2
    assert "--name" in error_line(capsys)
    assert not (tmp_path / "res").exists() and not (tmp_path / "up").exists()


def test_yaml_name_is_checked_and_named(tmp_path, capsys):
    space = write_yaml(tmp_path, SMALL_SPACE_YAML + "name: ../escape\n")
    assert main(["run", str(space), "--storage", str(tmp_path / "res")]) == 2
    line = error_line(capsys)
    assert f"{space}: name:" in line and "path separator" in line
    assert not (tmp_path / "escape").exists()


def test_plain_names_pass():
    for name in ("demo", "optim-lr_2", "a.b", "ü" * 100):
        assert check_name(name) == name


def test_messages_are_printed_literally(tmp_path, capsys):
    space = write_yaml(tmp_path, "optimizer: {lr: {uniform: [1]}}\n")
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
    space = write_yaml(tmp_path, SMALL_SPACE_YAML)
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
