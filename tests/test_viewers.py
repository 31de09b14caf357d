"""Where users look at a search: TensorBoard HParams (read back with TensorBoard's readers),
the Optuna study in optuna.db (and optuna-dashboard's HTTP API), MLflow (MlflowClient).

One small Optuna search with a fake trainer (milliseconds per epoch, a curve that peaks at
epoch 2 so a trial's best and last differ) feeds every check."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import run_cli, use_trainer
from vpr_tune.tune.results import read_table

NAME = "viewers"


class PeakTrainer:
    """Trains nothing: R@N rises for two epochs then falls; lr scales it."""

    def __init__(self, cfg, data_root, device=None, num_threads=None, log=print):
        self.cfg, self.epoch, self.is_best = cfg, 0, True

    def run_epoch(self):
        time.sleep(0.2)
        self.epoch += 1
        r1 = 100 * self.cfg["optimizer"]["lr"] * (self.epoch if self.epoch <= 2 else 1)
        self.is_best = self.epoch <= 2
        return {"epoch": self.epoch, "train/loss": 1.0 / self.epoch, "lr": 0.01,
                "val/R@1": r1, "val/R@5": r1 + 1, "val/R@10": r1 + 2, "val/R@25": r1 + 3}

    def save_checkpoint(self, path):
        Path(path).write_text(json.dumps({"epoch": self.epoch}))
        return Path(path)

    save_model = save_checkpoint

    def load_checkpoint(self, path):
        self.epoch = json.loads(Path(path).read_text())["epoch"]


SPACE = """
    data: {image_size: [32, 32], cache: false}
    optimizer:
      name: {choice: [sgd, adam]}
      lr: {uniform: [0.1, 0.9]}
      momentum: {uniform: [0.5, 0.9], when: {name: sgd}}
    budget: {max_epochs: 3}
    search: {algorithm: optuna, num_samples: 4, max_concurrent: 2, scheduler: fifo, seed: 0}
    resources: {cpu: 1, gpu: 0}
"""


@pytest.fixture(scope="module")
def searched(tmp_path_factory, street_world_tiny):
    """(experiment folder, MLflow URI) of a finished fake search."""

    base = tmp_path_factory.mktemp("viewers")
    space = base / "space.yaml"
    space.write_text(textwrap.dedent(SPACE))
    mlflow_uri = f"sqlite:///{base / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp, use_trainer(mp, PeakTrainer):
        rc = run_cli(["run", str(space), "--data", str(street_world_tiny), "--name", NAME,
                      "--storage", str(base / "res"), "--mlflow", mlflow_uri])
    assert rc == 0
    return base / "res" / NAME, mlflow_uri


def params_of(row) -> dict:
    return {k: v for k, v in row.items() if k.startswith("optimizer.")
            and not (isinstance(v, float) and math.isnan(v))}


def trial_dir(exp: Path, trial_id: str) -> Path:
    (found,) = [p for p in exp.iterdir() if p.is_dir() and trial_id in p.name]
    return found


def accumulator(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_curves_and_hparams_with_best_metrics(searched):
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import metadata as hp

    exp, _ = searched
    trials = read_table(exp / "trials.csv")
    curves = read_table(exp / "metrics.csv")
    assert len(trials) == 4 and (trials["status"] == "TERMINATED").all()
    # The experiment (root run): every searched parameter, best metrics as HParams metrics.
    root = accumulator(exp).PluginTagToContent("hparams")
    experiment = hp.parse_experiment_plugin_data(root[hp.EXPERIMENT_TAG])
    infos = {i.name: i for i in experiment.hparam_infos}
    assert set(infos) == {"optimizer.name", "optimizer.lr", "optimizer.momentum"}
    assert list(infos["optimizer.name"].domain_discrete.values) != []
    assert infos["optimizer.lr"].domain_interval.max_value == pytest.approx(0.9)
    assert {m.name.tag for m in experiment.metric_infos} >= {"best/val/R@1", "best/val/R@5",
                                                             "best/train/loss"}
    for _, row in trials.iterrows():
        acc = accumulator(trial_dir(exp, row["trial_id"]))
        content = acc.PluginTagToContent("hparams")
        start = hp.parse_session_start_info_plugin_data(content[hp.SESSION_START_INFO_TAG])
        got = {k: (v.string_value or v.number_value) for k, v in start.hparams.items()}
        assert got == pytest.approx(params_of(row))  # absent momentum stays absent
        end = hp.parse_session_end_info_plugin_data(content[hp.SESSION_END_INFO_TAG])
        assert end.status == api_pb2.STATUS_SUCCESS
        tags = acc.Tags()["scalars"]
        assert not [t for t in tags if t.startswith("ray/")]  # Ray's logger was replaced
        r1 = acc.Scalars("val/R@1")
        curve = curves[curves["trial_id"] == row["trial_id"]]
        assert [s.step for s in r1] == [1, 2, 3]
        assert [s.value for s in r1] == pytest.approx(list(curve["val/R@1"]), rel=1e-6)
        # HParams shows a metric's last value: best/val/R@1 ends at the trial's best, not last
        best = acc.Scalars("best/val/R@1")[-1].value
        assert best == pytest.approx(row["best_val/R@1"], rel=1e-6)
        assert best > row["last_val/R@1"]
        assert acc.Scalars("best/train/loss")[-1].value == pytest.approx(1 / 3, rel=1e-6)


def test_optuna_study_holds_one_trial_per_ray_trial_with_best_values(searched):
    import optuna

    exp, _ = searched
    trials = read_table(exp / "trials.csv")
    study = optuna.load_study(study_name=NAME, storage=f"sqlite:///{exp / 'optuna.db'}")
    done = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(study.trials) == len(done) == len(trials)
    by_lr = {round(t.params["optimizer.lr"], 9): t for t in done}
    for _, row in trials.iterrows():
        t = by_lr[round(row["optimizer.lr"], 9)]
        assert t.params["optimizer.name"] == row["optimizer.name"]
        assert t.value == pytest.approx(row["best_val/R@1"])  # best epoch, not last
        assert t.value != pytest.approx(row["last_val/R@1"])
        assert sorted(t.intermediate_values) == [1, 2, 3]


def test_mlflow_one_run_per_trial_with_params_metrics_and_tags(searched):
    from mlflow import MlflowClient

    exp, uri = searched
    trials = read_table(exp / "trials.csv").set_index("trial_id")
    curves = read_table(exp / "metrics.csv")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(NAME)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["trial_id"] for r in runs) == sorted(trials.index)
    for run in runs:
        tid = run.data.tags["trial_id"]
        row = trials.loc[tid]
        assert run.info.status == "FINISHED"
        assert run.data.tags["status"] == row["status"] == "TERMINATED"
        assert run.data.tags["checkpoint"] == row["checkpoint"] != ""
        assert float(run.data.params["optimizer.lr"]) == pytest.approx(row["optimizer.lr"])
        assert ("optimizer.momentum" in run.data.params) == (row["optimizer.name"] == "sgd")
        history = client.get_metric_history(run.info.run_id, "val/R_at_1")
        curve = curves[curves["trial_id"] == tid]
        assert [m.step for m in history] == [1, 2, 3]
        assert [m.value for m in history] == pytest.approx(list(curve["val/R@1"]))
        assert run.data.metrics["best/val/R_at_1"] == pytest.approx(row["best_val/R@1"])
        assert "train/loss" in run.data.metrics and "lr" in run.data.metrics


def test_mlflow_uri_errors_are_one_line(tmp_path, capsys):
    from vpr_tune.cli import main

    space = tmp_path / "s.yaml"
    space.write_text("tracking: {mlflow: relative/dir}\n")
    assert main(["run", str(space), "--dry-run"]) == 2
    assert "tracking.mlflow: must be a URI" in capsys.readouterr().err
    space.write_text("optimizer: {lr: {uniform: [0.1, 0.9]}}\nsearch: {num_samples: 1}\n")
    assert main(["run", str(space), "--mlflow", "not-a-uri", "--dry-run"]) == 2
    assert "--mlflow: must be a URI" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_optuna_dashboard_serves_the_study(searched):
    exp, _ = searched
    port = _free_port()
    exe = Path(sys.executable).parent / "optuna-dashboard"
    proc = subprocess.Popen([str(exe), f"sqlite:///{exp / 'optuna.db'}", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        studies = None
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies",
                                            timeout=5) as r:
                    studies = json.loads(r.read())["study_summaries"]
                break
            except OSError:
                time.sleep(0.5)
        assert studies is not None, f"optuna-dashboard did not answer: {proc.poll()}"
        (summary,) = [s for s in studies if s["study_name"] == NAME]
        url = f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}"
        with urllib.request.urlopen(url, timeout=30) as r:
            detail = json.loads(r.read())
        values = sorted(t["values"][0] for t in detail["trials"])
        best = sorted(read_table(exp / "trials.csv")["best_val/R@1"])
        assert values == pytest.approx(best)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_tensorboard_logging_keeps_torch_out_of_the_driver(tmp_path):
    # tensorboardX imports torch: ~2 s of driver start-up before the first trial could run
    script = textwrap.dedent(f"""
        import sys
        from vpr_tune.config import space_from_dict
        from vpr_tune.tune.tensorboard_log import _EventWriter, experiment_summary
        from vpr_tune.tune.tensorboard_log import session_end_summary, session_start_summary
        from vpr_tune.tune.tracking import tracking_callbacks

        space = space_from_dict({{"optimizer": {{"lr": {{"uniform": [0.1, 0.9]}}}}}}, "s.yaml")
        tracking_callbacks(space, "x")
        writer = _EventWriter({str(tmp_path)!r})
        writer.add(experiment_summary(space))
        writer.add(session_start_summary({{"optimizer.lr": 0.5}}, "t"), step=1)
        writer.add(session_end_summary(False))
        writer.close()
        print(sorted(m for m in ("torch", "tensorboardX") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert list(tmp_path.glob("events.out.tfevents.*"))
