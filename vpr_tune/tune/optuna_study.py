"""The Optuna study of a search, kept in ``results/NAME/optuna.db`` (SQLite).

The study is named after the experiment and written as the search runs, so::

    optuna-dashboard sqlite:///results/NAME/optuna.db

shows history, parallel coordinates, importance and intermediate values live, and
``--resume`` continues the same study (Ray restores the searcher, which holds the storage;
a trial Ray restored that the saved searcher never saw, as a driver killed mid-upload can
leave, takes back its RUNNING Optuna trial; a trial the study already has the value of,
told just before the kill, keeps that value when Ray runs its last epochs again).
Each Optuna trial's value is its Ray trial's **best** epoch by ``search.metric`` (the
``best_`` column of ``trials.csv``, the epoch whose model ``best.pt`` keeps); Ray alone would
tell Optuna the last epoch's value. Diverged trials count with their best epoch before the
blow-up, failed ones are ``FAIL``::

    import optuna
    study = optuna.load_study(study_name="demo", storage="sqlite:///results/demo/optuna.db")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.search.optuna import OptunaSearch

STUDY_FILE = "optuna.db"


def storage_url(db: Path) -> str:
    """``sqlite:///ABSOLUTE/PATH`` of a study file (what optuna-dashboard takes)."""
    return f"sqlite:///{Path(db).resolve()}"


class BestValueOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells Optuna each trial's best value instead of its last."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._best: dict[str, float] = {}
        self._told_before: set[str] = set()  # trials the study has the final value of

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        import optuna

        from vpr_tune.metrics import is_better

        if not self._knows(trial_id, result) or trial_id in self._told_before:
            return
        if isinstance(self.metric, list):  # several objectives: Optuna takes the final ones
            return super().on_trial_result(trial_id, result)
        value = result.get(self.metric)
        if not result.get("diverged") and is_better(value, self._best.get(trial_id), self.mode):
            self._best[trial_id] = float(value)
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            # The killed driver told the study this trial's value (the study file is written
            # at once) after Ray last saved its state (every few seconds; to S3 every 10):
            # --resume runs the trial's last epochs again from its checkpoint. The study
            # keeps what it was told (the same curve, on CPU); seen in CI on S3.
            self._told_before.add(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if not self._knows(trial_id, result):
            return
        if trial_id in self._told_before:
            self._completed_trials.add(trial_id)  # Ray's own record of told trials
            return
        if result and not error and trial_id in self._best and isinstance(self.metric, str):
            result = {**result, self.metric: self._best[trial_id]}
        super().on_trial_complete(trial_id, result=result, error=error)

    def _knows(self, trial_id: str, result: dict | None) -> bool:
        """Whether this trial has an Optuna trial, adopting it first when it can.

        A driver killed while Ray uploads its state can leave the experiment state newer
        than the searcher's: ``--resume`` then runs a trial this searcher never saw. Its
        Optuna trial is in the study already (asked before the kill, left RUNNING): take
        that one back by its params, or ask a new one with the config the trial runs.
        """
        if trial_id in self._ot_trials:
            return True
        if not result or not hasattr(self._space, "params_of"):
            return False  # no config to match (an error before any result): nothing to tell
        import optuna

        from vpr_tune.metrics import is_better

        params = self._space.params_of(_config_of(result))
        claimed = {t.number for t in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False,
                                                states=(optuna.trial.TrialState.RUNNING,)):
            if frozen.number not in claimed and frozen.params == params:
                self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, frozen._trial_id)
                if isinstance(self.metric, str):  # its epochs before the kill count too
                    for value in frozen.intermediate_values.values():
                        if is_better(value, self._best.get(trial_id), self.mode):
                            self._best[trial_id] = float(value)
                return True
        self._ot_study.enqueue_trial(params)
        self._ot_trials[trial_id] = self._ot_study.ask()
        self._space(self._ot_trials[trial_id])  # suggests the enqueued values: they count
        return True


def _config_of(result: dict) -> dict[str, Any]:
    """A flat Ray result's trial config (``config/optimizer.lr`` -> ``optimizer.lr``)."""
    return {k[len("config/"):]: v for k, v in result.items() if k.startswith("config/")}


def rdb_storage(db: Path) -> Any:
    """The Optuna RDB storage of a study file (its folder is made if needed)."""
    import optuna

    Path(db).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(storage_url(db))
