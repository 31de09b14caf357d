"""A search on an S3-compatible object store (moto's server on 127.0.0.1): search, the driver
killed with SIGKILL, --resume, then best --retest, report and compare from the bucket alone
(the local copy deleted), checkpoints downloaded from the bucket. The endpoint comes once from
AWS_ENDPOINT_URL and once from the URI's endpoint_override parameter."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import write_space
from vpr_tune.tune import storage
from vpr_tune.tune.results import read_table

BUCKET = "vpr-bucket"



def test_uri_helpers_keep_parameters_at_the_end():
    uri = "s3://b/p?endpoint_override=http://h:9&secret_key=s"
    assert storage.join(uri, "exp") == "s3://b/p/exp?endpoint_override=http://h:9&secret_key=s"
    assert storage.split(storage.join(uri, "exp")) == (uri, "exp")
    assert "secret_key" not in storage.public(uri) and "endpoint_override" in storage.public(uri)
    assert storage.with_params("s3://b/p/x/best.pt", uri).startswith("s3://b/p/x/best.pt?")
    assert storage.split("/abs/results/demo") == ("/abs/results", "demo")
    assert not storage.is_remote("/abs") and not storage.is_remote("file:///abs")


def test_unreachable_store_is_one_line(monkeypatch, capsys):
    from vpr_tune.cli import main

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    uri = "s3://nobucket/x?endpoint_override=http://127.0.0.1:1"
    assert main(["best", "ghost", "--storage", uri]) == 2
    err = capsys.readouterr().err
    assert "storage s3://nobucket/x/ghost?endpoint_override=http://127.0.0.1:1:" in err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """(endpoint URL, env with test credentials) of a moto S3 server with one bucket."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "server.log"
    try:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT)
    except OSError as exc:
        pytest.skip(f"the local S3 server (moto) cannot start: {exc}")
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.skip(f"the local S3 server (moto) did not start: {log.read_text()[-500:]}")
            time.sleep(0.3)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    import boto3

    boto3.client("s3", endpoint_url=endpoint, **_creds(env)).create_bucket(Bucket=BUCKET)
    yield endpoint, env
    proc.terminate()
    proc.wait(timeout=30)


def _creds(env: dict) -> dict:
    return {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
            "region_name": env["AWS_DEFAULT_REGION"]}


def _keys(endpoint: str, env: dict, prefix: str) -> set[str]:
    import boto3

    pages = boto3.client("s3", endpoint_url=endpoint, **_creds(env)).get_paginator(
        "list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


@pytest.mark.slow
def test_search_kill_resume_retest_report_on_s3(tmp_path, s3_server, street_world_tiny):
    endpoint, creds = s3_server
    # one trial at a time, so the kill (12 s after the first trial ends) finds some trials
    # finished and the last not yet run: on a free fast machine a trial takes ~4 s, so
    # three trials were not enough (all had finished by the kill)
    samples = 8
    space = write_space(tmp_path / "s3.yaml", budget={
        "max_epochs": 8, "batches_per_epoch": 8, "places_per_batch": 8, "images_per_place": 4,
        "eval_batch_size": 64}, search={"algorithm": "optuna", "num_samples": samples,
                                        "seed": 1, "max_concurrent": 1, "scheduler": "fifo"})
    local = tmp_path / "local"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(creds, VPR_TUNE_RESULTS=str(local))
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = [sys.executable, "-m", "vpr_tune", "run", str(space), "--data",
           str(street_world_tiny), "--name", "s3exp", "--mlflow", mlflow_uri]

    # 1. the search, endpoint from AWS_ENDPOINT_URL; killed once a trial has finished
    proc = subprocess.Popen([*run, "--storage", f"s3://{BUCKET}/vpr"],
                            env={**env, "AWS_ENDPOINT_URL": endpoint}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    csv = local / "s3exp" / "trials.csv"
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            if csv.exists() and (read_table(csv)["status"] == "TERMINATED").any():
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(12)  # one more experiment-state upload (every 10 s) before the kill
        before = read_table(csv)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # Ray processes the dead driver left behind
    finished = before.loc[before["status"] == "TERMINATED", "trial_id"].tolist()
    assert finished and len(finished) < samples, before
    keys = _keys(endpoint, creds, "vpr/s3exp/")
    assert "vpr/s3exp/trials.csv" in keys and "vpr/s3exp/space.yaml" in keys
    assert any(k.endswith("/best.pt") for k in keys)  # Ray's checkpoints are in the bucket

    # 2. --resume, endpoint from the URI this time (no AWS_ENDPOINT_URL)
    uri = f"s3://{BUCKET}/vpr?endpoint_override={endpoint}"
    again = subprocess.run([*run, "--storage", uri, "--resume"], env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    final = read_table(csv)
    assert len(final) == samples and (final["status"] == "TERMINATED").all(), (
        final.to_string() + again.stdout + again.stderr[-3000:])
    kept = final.set_index("trial_id").loc[finished]
    assert (kept["time_s"].values == before.set_index("trial_id").loc[finished, "time_s"]
            .values).all()  # finished trials were not re-run
    assert final["checkpoint"].str.startswith(f"s3://{BUCKET}/vpr/s3exp/").all()
    # the same Optuna study and the same MLflow runs went on: one per trial, all finished
    import optuna
    from mlflow import MlflowClient

    study = optuna.load_study(study_name="s3exp",
                              storage=f"sqlite:///{local / 's3exp' / 'optuna.db'}")
    done = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert sorted(t.value for t in done) == pytest.approx(sorted(final["best_val/R@1"]))
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("s3exp").experiment_id])
    ended = [r for r in runs if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["trial_id"] for r in ended) == sorted(final["trial_id"])
    assert {r.data.tags["status"] for r in ended} == {"TERMINATED"}
    assert {r.data.tags["checkpoint"] for r in ended} == set(final["checkpoint"])
    # a trial started just before the kill that Ray's saved state did not have yet: its
    # run is closed, not left RUNNING
    lost = [r for r in runs if r.info.status != "FINISHED"]
    assert {(r.info.status, r.data.tags["status"]) for r in lost} <= {("KILLED", "LOST")}
    assert not set(r.data.tags["trial_id"] for r in lost) & set(final["trial_id"])

    # 3. best --retest and report from the bucket alone: the local copy is gone
    shutil.rmtree(local)
    cli = [sys.executable, "-m", "vpr_tune"]
    best = subprocess.run([*cli, "best", "s3exp", "--storage", uri, "--retest", "--top", "2"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert best.returncode == 0, best.stdout + best.stderr
    retest = read_table(local / "s3exp" / "retest.csv")
    assert len(retest) == 2 and retest["sf_test_R@1"].notna().all()
    assert len(list((local / "s3exp" / storage.CHECKPOINTS).glob("*/best.pt"))) == 2
    report = subprocess.run([*cli, "report", "--storage", uri], env=env, capture_output=True,
                            text=True, timeout=600)  # no name: the newest in the bucket
    assert report.returncode == 0, report.stdout + report.stderr
    assert "Retest on the test sets" in (local / "s3exp" / "report" / "report.md").read_text()
    keys = _keys(endpoint, creds, "vpr/s3exp/")
    assert {"vpr/s3exp/retest.csv", "vpr/s3exp/report/report.md", "vpr/s3exp/optuna.db"} <= keys
    # compare reads both from the bucket (the second: a copy of the first's tables)
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **_creds(creds))
    for table in ("trials.csv", "metrics.csv", "space.yaml"):
        client.copy_object(Bucket=BUCKET, Key=f"vpr/s3copy/{table}",
                           CopySource={"Bucket": BUCKET, "Key": f"vpr/s3exp/{table}"})
    both = subprocess.run([*cli, "compare", "s3exp", "s3copy", "--storage", uri, "--json"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert both.returncode == 0, both.stdout + both.stderr
    assert (local / "s3copy" / "trials.csv").exists()
    # a missing experiment in the bucket is one line, not a traceback
    missing = subprocess.run([*cli, "best", "ghost", "--storage", uri], env=env,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no vpr-tune experiment there" in missing.stderr
    assert Path(local).exists()
