"""A tracking URI MLflow cannot use is refused before anything is written: one line, no
experiment folder, no Ray state; ``--dry-run`` refuses it the same way."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli, write_space
from vpr_tune.tune.tracking import tracking_uri_problem


@pytest.mark.parametrize(("uri", "why"), [
    ("ftp://nowhere", "no tracking store for ftp://"),
    ("http://127.0.0.1:1", "no MLflow server answers"),
    ("sqlite:////no/such/folder/mlflow.db", "/no/such/folder does not exist"),
])
def test_unusable_uris(uri, why):
    assert why in (tracking_uri_problem(uri) or "")


def test_usable_uris(tmp_path):
    assert tracking_uri_problem(f"sqlite:///{tmp_path}/mlflow.db") is None
    assert tracking_uri_problem(str(tmp_path / "mlruns")) is None
    assert not list(tmp_path.iterdir())  # checking created nothing


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_refused_run_leaves_nothing(tmp_path, capsys, dry_run):
    space = write_space(tmp_path / "s.yaml")
    storage = tmp_path / "results"
    args = ["run", str(space), "--name", "x", "--storage", str(storage), "--mlflow",
            "ftp://nowhere", *(["--dry-run"] if dry_run else [])]
    assert run_cli(args) == 2
    err = capsys.readouterr().err
    assert "--mlflow ftp://nowhere: MLflow has no tracking store for ftp://" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (storage / "x").exists()


def test_doctor_checks_the_tracking_uri(tmp_path):
    from vpr_tune.doctor import Context, check_tracking, run_checks

    bad, = run_checks(Context(mlflow="ftp://nowhere"), [check_tracking])
    assert bad.status == "✘" and "no tracking store for ftp://" in bad.detail
    good, = run_checks(Context(mlflow=f"sqlite:///{tmp_path}/m.db"), [check_tracking])
    assert good.status == "✔"
