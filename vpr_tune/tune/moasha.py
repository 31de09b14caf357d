"""Multi-objective asynchronous successive halving (MO-ASHA) as a Ray Tune scheduler.

ASHA ranks the trials at a rung by one metric, so on a recall-versus-descriptor-size
search it stops the cheap, small-descriptor trials the front is made of. Here a trial
reaching a rung is ranked among every result recorded at that rung by non-dominated
sorting, ties within a front broken by crowding distance (ends of the front first), and
continues only when it ranks in the top ``1 / reduction_factor`` (rounded up; ties in its
favour, so the best trial on any one objective always continues). The idea is
from Schmucker et al., "Multi-objective asynchronous successive halving" (2021), and
Syne Tune's MOASHA; the code is ours and mirrors Ray's ``AsyncHyperBandScheduler`` API
(one bracket, rungs at ``grace_period * reduction_factor**k`` up to ``max_t``).

>>> from ray.tune.schedulers import TrialScheduler
>>> class Trial:  # Ray passes its Trial objects; only trial_id is read
...     def __init__(self, trial_id): self.trial_id = trial_id
>>> s = MultiObjectiveASHA([("val/R@1", "max"), ("descriptor_dim", "min")],
...                        max_t=8, grace_period=1, reduction_factor=2)
>>> big, small, bad = Trial("big"), Trial("small"), Trial("bad")
>>> for t in (big, small, bad):
...     s.on_trial_add(None, t)
>>> s.on_trial_result(None, big, {"epoch": 1, "val/R@1": 80.0, "descriptor_dim": 2048})
'CONTINUE'
>>> s.on_trial_result(None, small, {"epoch": 1, "val/R@1": 40.0, "descriptor_dim": 64})
'CONTINUE'
>>> s.on_trial_result(None, bad, {"epoch": 1, "val/R@1": 30.0, "descriptor_dim": 2048})
'STOP'
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler

from vpr_tune.rungs import REDUCTION_FACTOR, milestones
from vpr_tune.tune.pareto import Objective, front_and_crowding


class MultiObjectiveASHA(FIFOScheduler):
    """Stop trials that rank outside the top 1/reduction_factor at a rung on several objectives.

    Args:
        objectives: ``(metric, mode)`` pairs, mode ``"min"`` or ``"max"``; may instead come
            from ``set_search_properties`` with lists of metrics and modes.
        time_attr: the monotonic progress key in each result (vpr-tune reports ``epoch``).
        max_t: trials stop at this many time units (when ``stop_last_trials``).
        grace_period: the first rung; no trial stops before it.
        reduction_factor: rung spacing and the kept fraction (1 / reduction_factor).
    """

    def __init__(self, objectives: Sequence[Objective] | None = None, *,
                 time_attr: str = "epoch", max_t: int = 100, grace_period: int = 1,
                 reduction_factor: float = REDUCTION_FACTOR, stop_last_trials: bool = True):
        if max_t <= 0 or grace_period <= 0 or grace_period > max_t:
            raise ValueError("need 0 < grace_period <= max_t")
        if reduction_factor <= 1:
            raise ValueError("reduction_factor must be above 1")
        super().__init__()
        self._objectives: list[Objective] = []
        if objectives:
            self._set_objectives([m for m, _ in objectives], [m for _, m in objectives])
        self._time_attr = time_attr
        self._max_t = max_t
        self._rf = reduction_factor
        self._stop_last_trials = stop_last_trials
        # milestone -> {trial_id: loss vector}, highest milestone first as in Ray's bracket
        self._rungs: list[tuple[float, dict[str, np.ndarray]]] = [
            (m, {}) for m in reversed(milestones(grace_period, reduction_factor, max_t))]
        self._trials: set[str] = set()
        self._num_stopped = 0

    def _set_objectives(self, metrics: Sequence[str], modes: Sequence[str]) -> None:
        if len(metrics) != len(modes) or not metrics:
            raise ValueError("give one mode per metric")
        for metric, mode in zip(metrics, modes, strict=True):
            if mode not in ("min", "max"):
                raise ValueError(f"mode of {metric!r} must be 'min' or 'max', got {mode!r}")
        self._objectives = list(zip(metrics, modes, strict=True))
        self._metric = metrics[0]  # Ray's progress reporting reads one name
        self._signs = np.array([-1.0 if mode == "max" else 1.0 for mode in modes])

    @property
    def objectives(self) -> list[Objective]:
        return list(self._objectives)

    @property
    def milestones(self) -> list[float]:
        """Rung milestones, lowest first."""
        return sorted(m for m, _ in self._rungs)

    def set_search_properties(self, metric: Any, mode: Any, **spec: Any) -> bool:
        """Accept lists of metrics and modes from Ray unless objectives were given already."""
        if metric is None and mode is None:
            return True
        if self._objectives:
            return False  # Ray then refuses metric/mode given twice, as for its ASHA
        metrics = [metric] if isinstance(metric, str) else list(metric or [])
        modes = [mode] if isinstance(mode, str) else list(mode or [])
        self._set_objectives(metrics, modes)
        return True

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if not self._objectives:
            raise ValueError(f"{type(self).__name__} needs objectives: pass them when building "
                             "it or as lists of metrics and modes to the Tuner")
        self._trials.add(trial.trial_id)

    def _loss(self, result: dict[str, Any]) -> np.ndarray | None:
        try:
            values = np.array([float(result[m]) for m, _ in self._objectives])
        except (KeyError, TypeError, ValueError):
            return None
        # NaN/inf: a diverged trial's marker row (the trial stops itself); nothing to rank
        return self._signs * values if np.isfinite(values).all() else None

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if self._time_attr not in result:
            return TrialScheduler.CONTINUE
        if result[self._time_attr] >= self._max_t and self._stop_last_trials:
            action = TrialScheduler.STOP
        else:
            action = self._on_rung(trial.trial_id, result)
        if action == TrialScheduler.STOP:
            self._num_stopped += 1
        return action

    def _on_rung(self, trial_id: str, result: dict[str, Any]) -> str:
        """Record the result at the highest rung it reached and not yet recorded; decide."""
        loss = self._loss(result)
        if loss is None:
            return TrialScheduler.CONTINUE  # nothing to rank on: decide at the next report
        now = result[self._time_attr]
        for milestone, recorded in self._rungs:
            if now < milestone or trial_id in recorded:
                continue
            recorded[trial_id] = loss
            return TrialScheduler.CONTINUE if self.promotable(recorded, trial_id) \
                else TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def promotable(self, recorded: dict[str, np.ndarray], trial_id: str) -> bool:
        """Whether fewer than ceil(n / reduction_factor) results at the rung rank strictly
        above ``trial_id`` (an earlier front, or its front with a larger crowding distance).

        Ties count in the trial's favour, as a value equal to ASHA's cutoff continues there:
        the best trial on any single objective (a front end, infinite crowding) continues.
        """
        ids = list(recorded)
        front, crowd = front_and_crowding(np.stack([recorded[i] for i in ids]))
        me = ids.index(trial_id)
        above = np.sum((front < front[me]) | ((front == front[me]) & (crowd > crowd[me])))
        return bool(above < max(1, math.ceil(len(ids) / self._rf)))

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        if result and self._time_attr in result:
            self._on_rung(trial.trial_id, result)  # later arrivals are ranked against it
        self._trials.discard(trial.trial_id)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._trials.discard(trial.trial_id)

    def debug_string(self) -> str:
        rungs = ", ".join(f"{m:g}: {len(r)}" for m, r in reversed(self._rungs))
        return f"Using MultiObjectiveASHA: num_stopped={self._num_stopped}; trials per rung {rungs}"

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
