"""A resumed search's ASHA / MO-ASHA keeps its rungs and the decisions already made.

Ray restores a scheduler as it was pickled when the search started, with none of its
state (ray#30838). A fresh ASHA then judges a restored trial's first report as if it were
the trial's first rung: a trial restored at epoch 1 that reports epoch 2 is measured
against an empty rung 1, at epoch 2, which is not a rung at all, and the winner can change.

:class:`ResumedRungs` gives the fresh scheduler back what it saw: every row the killed
search reported (``epochs.jsonl``, in arrival order) is fed to it once, so its rungs hold
the same results; a trial it stopped before stays stopped; a trial re-reporting an epoch it
had reported (restored from an older checkpoint) finds its rung already decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler


@dataclass(frozen=True)
class _Recorded:
    trial_id: str  # the schedulers read only the id of a trial


class ResumedRungs(FIFOScheduler):
    """``inner`` (ASHA or MO-ASHA) after replaying ``rows``: the reported results of a
    killed search, in the order they arrived (each with ``trial_id``)."""

    def __init__(self, inner: Any, rows: list[dict[str, Any]]) -> None:
        super().__init__()
        self.inner = inner
        self.stopped: dict[str, int] = {}  # trial id -> the epoch it was stopped at
        seen: set[str] = set()
        for row in rows:
            trial = _Recorded(str(row["trial_id"]))
            if trial.trial_id not in seen:
                seen.add(trial.trial_id)
                inner.on_trial_add(None, trial)
            if trial.trial_id in self.stopped or row.get("diverged"):
                continue
            if inner.on_trial_result(None, trial, row) == TrialScheduler.STOP:
                self.stopped[trial.trial_id] = int(row.get("epoch", 0))

    def set_search_properties(self, metric: Any, mode: Any, **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self.inner.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if trial.trial_id in self.stopped:
            return TrialScheduler.STOP
        return self.inner.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self.inner.on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.inner.on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self.inner.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"{self.inner.debug_string()} (resumed: {len(self.stopped)} stopped before)"
