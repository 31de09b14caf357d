"""Where a search is logged besides ``trials.csv``: TensorBoard always, MLflow on request.

``vpr-tune run SPACE --mlflow URI`` (or ``tracking: {mlflow: URI}`` in the YAML) logs one
MLflow run per trial into an MLflow experiment named after the search: the sampled
hyperparameters as params, every epoch's metrics (step = epoch), and at the end tags
``status`` (TERMINATED, STOPPED_EARLY, ERROR, DIVERGED as in ``trials.csv``), ``checkpoint``
(the trial's best model) and ``error``, plus ``best/<metric>`` metrics. A resumed search
continues the same MLflow runs (found by their ``trial_id`` tag).

MLflow names may hold letters, digits, ``_ - . / :`` and spaces but no ``@``: every ``@``
becomes ``_at_`` (``val/R@1`` -> ``val/R_at_1``) and any other refused character ``_``
(:func:`mlflow_key`)::

    from mlflow import MlflowClient
    runs = MlflowClient("sqlite:///mlflow.db").search_runs(
        [MlflowClient("sqlite:///mlflow.db").get_experiment_by_name("demo").experiment_id])
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vpr_tune import metrics
from vpr_tune.config import Space
from vpr_tune.errors import UserError
from vpr_tune.tune.results import trial_record


def mlflow_key(name: str) -> str:
    """An MLflow-valid metric name: ``val/R@1`` -> ``val/R_at_1``.

    >>> mlflow_key("val/R@1"), mlflow_key("train/loss")
    ('val/R_at_1', 'train/loss')
    """
    return re.sub(r"[^/\w.\- :]", "_", name.replace("@", "_at_"))


def tracking_callbacks(space: Space, name: str, mlflow_uri: str | None = None) -> list[Any]:
    """Ray Tune callbacks: the TensorBoard logger, and the MLflow one when a URI is given."""
    from vpr_tune.tune.tensorboard_log import TensorBoardCallback

    callbacks: list[Any] = [TensorBoardCallback(space)]
    if mlflow_uri:
        callbacks.append(mlflow_callback(space, name, mlflow_uri))
    return callbacks


def tracking_uri_problem(uri: str, timeout_s: float = 5.0) -> str | None:
    """Why MLflow could not log to ``uri`` (None: it can), checked the way MLflow opens a
    store: its scheme must be one MLflow's tracking-store registry knows; a server must
    answer; a file or SQLite store's folder must exist. Nothing is created."""
    import urllib.error
    import urllib.parse
    import urllib.request

    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry
    except ImportError:
        return "MLflow is not installed; pip install 'vpr-tune[mlflow]'"
    uri = _store_uri(uri)
    scheme = urllib.parse.urlparse(uri).scheme
    known = sorted(s for s in _tracking_store_registry._registry if s)
    if scheme not in known:
        return f"MLflow has no tracking store for {scheme}:// (it knows {', '.join(known)})"
    if scheme in ("http", "https"):
        probe = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
        try:
            urllib.request.urlopen(probe, timeout=timeout_s).close()
        except urllib.error.HTTPError as exc:
            if exc.code >= 500 or exc.code == 404:
                return f"the server answered {exc.code} ({exc.reason}): not an MLflow server?"
        except (OSError, ValueError) as exc:
            return f"no MLflow server answers ({getattr(exc, 'reason', exc)})"
    elif scheme in ("file", "sqlite"):
        path = Path(urllib.parse.urlparse(uri).path if scheme == "file"
                    else uri.split(":///", 1)[-1] if ":///" in uri else "")
        folder = path if scheme == "file" and path.is_dir() else path.parent
        if str(path) and not folder.is_dir():
            return f"the folder {folder} does not exist"
    return None


def _store_uri(uri: str) -> str:
    """``uri`` as MLflow opens it: a bare path is a folder store (a ``file://`` URI)."""
    if "://" not in uri and ":" not in uri.split("/")[0]:
        return Path(uri).expanduser().resolve().as_uri()
    return uri


def mlflow_callback(space: Space, name: str, uri: str) -> Any:
    """Ray's ``MLflowLoggerCallback`` with our metric names, statuses and resume."""
    try:
        import mlflow  # noqa: F401
        from ray.air.integrations.mlflow import MLflowLoggerCallback
    except ImportError as exc:
        raise UserError(f"--mlflow {uri}: MLflow is not installed; "
                        "pip install 'vpr-tune[mlflow]'") from exc
    uri = _store_uri(uri)

    class VprMLflowCallback(MLflowLoggerCallback):
        def __init__(self) -> None:
            super().__init__(tracking_uri=uri, experiment_name=name,
                             tags={"vpr_tune.experiment": name})
            self.base = space.base

        def _client(self) -> Any:
            return self.mlflow_util._get_client()

        def setup(self, *args: Any, **kwargs: Any) -> None:
            try:
                super().setup(*args, **kwargs)
            except Exception as exc:  # unreachable server, bad URI, locked database
                raise UserError(f"--mlflow {uri}: cannot open ({exc})") from exc

        def log_trial_start(self, trial: Any) -> None:
            if trial not in self._trial_runs:
                self._trial_runs[trial] = _open_run(self, trial)

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            if trial not in self._trial_runs:
                self.log_trial_start(trial)
            if result.get("diverged") or "epoch" not in result:
                return  # the marker row of a diverged trial is no epoch
            values = {mlflow_key(m): result[m] for m in metrics.REPORTED
                      if isinstance(result.get(m), (int, float))}
            _log_metrics(self._client(), self._trial_runs[trial], values, int(result["epoch"]))

        def log_trial_end(self, trial: Any, failed: bool = False) -> None:
            run_id = self._trial_runs.pop(trial, None)
            if run_id is not None:
                _close_run(self._client(), run_id, trial, self.base, failed)

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            _end_experiment(self._client(), self.mlflow_util.experiment_id,
                            self._trial_runs, trials)

    return VprMLflowCallback()


def _open_run(callback: Any, trial: Any) -> str:
    """The MLflow run of ``trial``: the one a resumed search already has (found by its
    ``trial_id`` tag), else a new one with the trial's config as params."""
    client = callback._client()
    found = client.search_runs(
        [callback.mlflow_util.experiment_id],
        filter_string=f"tags.trial_id = '{trial.trial_id}'", max_results=1)
    if found:  # a resumed search: the same run goes on
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    run_id = client.create_run(
        callback.mlflow_util.experiment_id, run_name=str(trial),
        tags={**callback.tags, "trial_id": trial.trial_id, "status": "RUNNING"},
    ).info.run_id
    callback.mlflow_util.log_params(run_id=run_id, params_to_log=trial.config)
    return run_id


def _log_metrics(client: Any, run_id: str, values: dict[str, float], step: int) -> None:
    """One batch of metrics at ``step``, stamped now."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])


def _close_run(client: Any, run_id: str, trial: Any, base: dict[str, Any], failed: bool) -> None:
    """A finished trial's run: its ``status``, ``checkpoint`` and ``error`` tags, its
    ``best/<metric>`` values, FINISHED (FAILED for an error or a divergence)."""
    # Ray sets trial.status after the trial-end callbacks
    record = trial_record(trial, base, base["search"]["metric"],
                          status="ERROR" if failed else "TERMINATED")
    for key in ("status", "checkpoint", "error"):
        client.set_tag(run_id, key, str(record.get(key) or ""))
    best = {mlflow_key(c.replace("best_", "best/", 1)): float(v)
            for c, v in record.items() if c.startswith("best_") and v is not None}
    if best:
        _log_metrics(client, run_id, best, int(record["epochs"]))
    bad = failed or record["status"] in ("ERROR", "DIVERGED")
    client.set_terminated(run_id, status="FAILED" if bad else "FINISHED")


def _end_experiment(client: Any, experiment_id: str, open_runs: dict[Any, str],
                    trials: list) -> None:
    """The search's end: its still-open runs KILLED, and any RUNNING run of a trial the
    search no longer knows marked LOST."""
    # Ctrl-C: the unfinished trials continue with --resume; their runs are KILLED now.
    for run_id in open_runs.values():
        client.set_terminated(run_id, status="KILLED")
    open_runs.clear()
    # A trial started just before the driver died can be missing from the state Ray
    # resumed from (Ray ran a new trial instead): its run would stay RUNNING forever.
    known = {t.trial_id for t in trials}
    for run in client.search_runs([experiment_id],
                                  filter_string="attributes.status = 'RUNNING'"):
        if run.data.tags.get("trial_id") not in known:
            client.set_tag(run.info.run_id, "status", "LOST")
            client.set_terminated(run.info.run_id, status="KILLED")
