"""TensorBoard for a search: every trial's curves and an HParams entry with its best metrics.

``tensorboard --logdir results/NAME`` then shows each trial in the Scalars tab (``val/R@1``
... ``train/loss``, ``lr`` per epoch) and, in the HParams tab, one row per trial with the
searched hyperparameters and ``best/<metric>`` (best epoch so far, by the metric's
direction; the same numbers as the ``best_`` columns of ``trials.csv``). The entry is written
when the trial starts and its best metrics grow with every epoch, so the table is live.

Ray's own TensorBoard logger writes the *last* epoch's values, and only at trial end; this
callback replaces it (Ray adds its default only when no TensorBoard logger is given). It
writes with TensorBoard's own event writer and protos: tensorboardX would import torch into
the driver, ~2 s before the first trial can start::

    callbacks = [TensorBoardCallback(space)]   # in RunConfig(callbacks=...)

Layout: ``results/NAME/events.out.tfevents.*`` holds the HParams experiment (the searched
parameters with their domains, the metrics); each trial folder holds its session and curves.
"""

from __future__ import annotations

import glob
import os
import time
from typing import Any

from ray.tune.logger import LoggerCallback, TBXLoggerCallback

from vpr_tune import metrics
from vpr_tune.config import Space
from vpr_tune.tune.results import trial_rows

BEST_PREFIX = "best/"


def best_tag(metric: str) -> str:
    """The scalar tag (and HParams metric) of a metric's best value: ``best/val/R@1``."""
    return BEST_PREFIX + metric


def update_best(best: dict[str, float], row: dict[str, Any]) -> dict[str, float]:
    """Fold one reported epoch into ``best`` (per-metric best by its direction; lr has
    none), in place."""
    for metric, direction in metrics.DIRECTIONS.items():
        if metrics.is_better(row.get(metric), best.get(metric), direction):
            best[metric] = float(row[metric])
    return best


def _hparam_value(value: Any) -> tuple[str, Any] | None:
    """(proto field, value) of a hyperparameter value TensorBoard can show."""
    if isinstance(value, bool):
        return "bool_value", value
    if isinstance(value, (int, float)):
        return "number_value", float(value)
    if isinstance(value, str):
        return "string_value", value
    return None


def _summary(tag: str, plugin_data: Any) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata

    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
        plugin_name="hparams", content=plugin_data.SerializeToString()))
    return Summary(value=[Summary.Value(tag=tag, metadata=meta)])


def experiment_summary(space: Space) -> Any:
    """The HParams experiment: the searched parameters (with their domains) and metrics."""
    from google.protobuf import struct_pb2
    from tensorboard.plugins.hparams.api_pb2 import (
        DataType,
        Experiment,
        HParamInfo,
        Interval,
        MetricInfo,
        MetricName,
    )
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    infos = []
    for p in space.params.values():
        values = list(p.args) if p.kind in ("choice", "grid") else (
            [p.args] if p.kind == "value" else None)
        info = HParamInfo(name=p.path)
        if values is None:  # a numeric range
            info.type = DataType.Value("DATA_TYPE_FLOAT64")
            info.domain_interval.CopyFrom(Interval(min_value=float(p.args[0]),
                                                   max_value=float(p.args[1])))
        else:
            kinds = {_hparam_value(v)[0] for v in values if _hparam_value(v)}
            kind = kinds.pop() if len(kinds) == 1 else "string_value"
            info.type = DataType.Value({"bool_value": "DATA_TYPE_BOOL",
                                        "number_value": "DATA_TYPE_FLOAT64"}.get(
                                            kind, "DATA_TYPE_STRING"))
            domain = struct_pb2.ListValue()
            for v in values:
                pair = _hparam_value(v)
                domain.append(pair[1] if pair and pair[0] == kind else str(v))
            info.domain_discrete.CopyFrom(domain)
        infos.append(info)
    shown = [MetricInfo(name=MetricName(tag=best_tag(m)), display_name=best_tag(m))
             for m in metrics.DIRECTIONS]
    data = HParamsPluginData(version=0, experiment=Experiment(
        hparam_infos=infos, metric_infos=shown, time_created_secs=time.time()))
    return _summary("_hparams_/experiment", data)


def session_start_summary(config: dict[str, Any], group: str) -> Any:
    """A trial's HParams session: its sampled hyperparameters (absent ones stay blank)."""
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionStartInfo

    info = SessionStartInfo(group_name=group, start_time_secs=time.time())
    for key, value in sorted(config.items()):
        pair = _hparam_value(value)
        if pair:
            setattr(info.hparams[key], *pair)
    return _summary("_hparams_/session_start_info",
                    HParamsPluginData(version=0, session_start_info=info))


def session_end_summary(failed: bool) -> Any:
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo

    status = Status.Value("STATUS_FAILURE" if failed else "STATUS_SUCCESS")
    return _summary("_hparams_/session_end_info", HParamsPluginData(
        version=0, session_end_info=SessionEndInfo(status=status, end_time_secs=time.time())))


class _EventWriter:
    """One ``events.out.tfevents.*`` file: summaries at a step, flushed every 30 s and on
    demand (TensorBoard's own writer, no torch)."""

    def __init__(self, folder: str) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.file = EventFileWriter(folder, flush_secs=30)

    def add(self, summary: Any, step: int | None = None) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        event = Event(wall_time=time.time(), summary=summary)
        if step is not None:
            event.step = step
        self.file.add_event(event)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class TensorBoardCallback(TBXLoggerCallback):
    """Per-trial curves (tag = metric name, step = epoch) and HParams with best metrics.

    A ``TBXLoggerCallback`` only so that Ray adds no TensorBoard logger of its own; its
    ``__init__`` (which imports tensorboardX, hence torch) is not run.
    """

    def __init__(self, space: Space) -> None:
        LoggerCallback.__init__(self)
        self.space = space
        self.best: dict[str, dict[str, float]] = {}
        self._trial_writer: dict[Any, _EventWriter] = {}

    def _write_experiment(self, folder: str) -> None:
        """Once per experiment folder (a resumed search finds it there already)."""
        if glob.glob(os.path.join(folder, "events.out.tfevents.*")):
            return
        writer = _EventWriter(folder)
        writer.add(experiment_summary(self.space))
        writer.close()

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._trial_writer:  # a restarted trial (reused actor, PBT) goes on
            self._trial_writer.pop(trial).close()
        trial.init_local_path()
        writer = self._trial_writer[trial] = _EventWriter(trial.local_path)
        self._write_experiment(trial.local_experiment_path)
        # A resumed trial: its earlier epochs count towards its best.
        best: dict[str, float] = {}
        for row in trial_rows(trial):
            if not row.get("diverged"):
                update_best(best, row)
        self.best[trial.trial_id] = best
        writer.add(session_start_summary(trial.config, trial.trial_id))
        writer.flush()

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        if result.get("diverged") or "epoch" not in result:
            return  # the marker row of a diverged trial is no epoch
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = {m: float(result[m]) for m in metrics.REPORTED
                  if isinstance(result.get(m), (int, float)) and result[m] == result[m]}
        best = update_best(self.best.setdefault(trial.trial_id, {}), result)
        values.update({best_tag(m): v for m, v in best.items()})
        # The proto directly: a scalar-summary helper could rename val/R@1 to val/R_1.
        summary = Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
        writer = self._trial_writer[trial]
        writer.add(summary, step=int(result["epoch"]))
        writer.flush()

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        writer = self._trial_writer.pop(trial, None)
        if writer is not None:
            writer.add(session_end_summary(failed))
            writer.close()
