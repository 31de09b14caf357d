"""``search.reproducible``: decisions in the order trials were sampled, not the order their
results arrive, so the same YAML, seed, data, machine and precision give the same trials.

Two wrappers around what a search builds anyway (``searchers.py``); PBT/PB2 run Ray's
synchronous mode with seeded choices (``pbt.py``):

- :class:`SamplingOrderRungs` (ASHA, MO-ASHA): a trial reaching a rung waits (its report is
  not answered, so it holds its slot and does not train on) until every earlier-sampled trial
  has reported that rung or ended; the inner scheduler is then given the rung's results in
  sampling order, so each decision sees the same earlier results whatever arrived first.
  A resumed search rebuilds the rungs from ``epochs.jsonl`` (Ray does not restore a
  scheduler); a restored trial with a rung still to decide is kept PAUSED until it can be.
- :class:`SamplingOrderSearcher` (Optuna): trial ``k`` is proposed only once trials
  ``0..k-c`` ended (``c`` = ``search.max_concurrent``), and the study is told trials in
  sampling order, up to ``k-c``, so every proposal sees the same history. Proposals the
  sampler makes without history (the random start-up trials of TPE, GP and CMA-ES; every
  trial of ``random``) do not wait. The study then lives in memory (saved with Ray's searcher
  state, so a resume sees exactly the history the restored trials imply) and
  ``optuna.db`` is rewritten from it as the search goes (:func:`mirror_study`).

>>> from ray.tune.schedulers import ASHAScheduler
>>> rungs = SamplingOrderRungs(ASHAScheduler(time_attr="epoch", metric="val/R@1",
...                            mode="max", max_t=9, grace_period=1, reduction_factor=3),
...                            milestones=[1, 3, 9], max_t=9)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from vpr_tune.tune.ray_internals import execute_decision, hold_trial, sampling_index

CONTINUE, STOP, NOOP = TrialScheduler.CONTINUE, TrialScheduler.STOP, TrialScheduler.NOOP


class SamplingOrderRungs(FIFOScheduler):
    """A rung scheduler (Ray's ASHA, :class:`~vpr_tune.tune.moasha.MultiObjectiveASHA`)
    whose decisions are made in sampling order (see the module doc).

    Args:
        inner: the rung scheduler; it is given each trial's result at each rung once, in
            sampling order, and nothing else (no trial ends: they would record results at
            arrival time).
        milestones: the inner scheduler's rungs (``vpr_tune.rungs.milestones``).
        max_t: results at or past it go to ``inner`` at once (it stops the trial).
        history: trial id -> the rows it reported before (a resumed search's epochs.jsonl).
    """

    def __init__(self, inner: Any, milestones: list[float], max_t: float,
                 time_attr: str = "epoch",
                 history: dict[str, list[dict[str, Any]]] | None = None) -> None:
        super().__init__()
        self.inner, self._time_attr, self._max_t = inner, time_attr, max_t
        self._rungs = sorted(m for m in milestones if m < max_t)
        self._history = history or {}
        self._order: dict[str, int] = {}  # trial id -> sampling index
        self._trials: dict[str, Any] = {}
        self._values: dict[float, dict[str, dict[str, Any]]] = {m: {} for m in self._rungs}
        self._decided: dict[float, dict[str, str]] = {m: {} for m in self._rungs}
        self._ended: set[str] = set()
        self._waiting: dict[str, float] = {}  # running, report unanswered: id -> its epoch
        self._held: set[str] = set()  # restored, kept PAUSED until its rungs are decided
        self._controller: Any = None
        self._busy = self._again = False
        self._restored = False

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_controller": None}

    @property
    def metric(self) -> Any:  # what Ray checks each result for
        return self.inner.metric

    def set_search_properties(self, metric: Any, mode: Any, **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, **spec)

    # -- Ray's calls -------------------------------------------------------------------

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._controller = tune_controller or self._controller
        self.inner.on_trial_add(tune_controller, trial)
        tid = trial.trial_id
        index = sampling_index(trial)
        self._order[tid] = index if index is not None else len(self._order)
        self._trials[tid] = trial
        rows = self._history.pop(tid, [])
        latest = {int(r[self._time_attr]): r for r in rows if self._time_attr in r}
        for epoch in sorted(latest):  # a restored trial's rungs, as it reported them
            rung = self._rung_of(tid, epoch)
            if rung is not None:
                self._values[rung][tid] = latest[epoch]
        if str(trial.status) in ("TERMINATED", "ERROR"):
            self._ended.add(tid)
        elif any(tid in v for v in self._values.values()):
            hold_trial(trial)  # PAUSED: Ray starts PENDING trials without asking us
            self._held.add(tid)
            self._restored = True

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        self._controller = tune_controller
        tid, epoch = trial.trial_id, result.get(self._time_attr)
        if epoch is None:
            return CONTINUE
        if epoch >= self._max_t:
            return self.inner.on_trial_result(tune_controller, trial, result)
        rung = self._rung_of(tid, epoch)
        if rung is not None:
            self._values[rung][tid] = dict(result)
        self._settle()
        verdict = self._verdict(tid, epoch)
        if verdict is None:
            self._waiting[tid] = epoch
            return NOOP
        return verdict

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        # as ASHA does, a trial's last result counts at a rung it had not reported
        epoch = (result or {}).get(self._time_attr)
        if epoch is not None and epoch < self._max_t:
            rung = self._rung_of(trial.trial_id, epoch)
            if rung is not None:
                self._values[rung][trial.trial_id] = dict(result)
        self._end(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._end(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._end(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        self._controller = tune_controller
        if self._restored:  # restored trials: decide what the rebuilt rungs allow
            self._restored = False
            self._settle()
        waiting = [t for t in tune_controller.get_trials()
                   if str(t.status) in ("PENDING", "PAUSED") and t.trial_id not in self._held]
        return min(waiting, key=lambda t: self._order.get(t.trial_id, math.inf),
                   default=None)

    def debug_string(self) -> str:
        return (f"{self.inner.debug_string()}\nin sampling order: {len(self._waiting)} "
                f"waiting at a rung, {len(self._held)} held")

    # -- the decisions ---------------------------------------------------------------

    def _rung_of(self, tid: str, epoch: float) -> float | None:
        """The rung a result at ``epoch`` counts at, as the inner scheduler picks it: the
        highest one at or below ``epoch`` the trial has not reported yet."""
        if epoch >= self._max_t:
            return None
        return max((m for m in self._rungs if m <= epoch and tid not in self._values[m]),
                   default=None)

    def _verdict(self, tid: str, epoch: float) -> str | None:
        """STOP or CONTINUE from the trial's decided rungs up to ``epoch``; None while one
        is undecided."""
        for m in self._rungs:
            if m > epoch or tid not in self._values[m]:
                continue
            decision = self._decided[m].get(tid)
            if decision is None:
                return None
            if decision == STOP:
                return STOP
        return CONTINUE

    def _end(self, tune_controller: Any, trial: Any) -> None:
        self._controller = tune_controller or self._controller
        tid = trial.trial_id
        self._ended.add(tid)
        self._waiting.pop(tid, None)
        self._held.discard(tid)
        self._settle()

    def _settle(self) -> None:
        """Decide every rung result sampling order allows, then act on the trials that were
        waiting for it (acting can end trials, which can allow more: repeat)."""
        if self._busy:
            self._again = True
            return
        self._busy = True
        try:
            while True:
                self._again = False
                self._feed()
                for tid, epoch in list(self._waiting.items()):
                    verdict = self._verdict(tid, epoch)
                    if verdict is not None:
                        del self._waiting[tid]
                        execute_decision(self._controller, self._trials[tid], verdict)
                for tid in sorted(self._held, key=self._order.__getitem__):
                    verdict = self._verdict(tid, math.inf)
                    if verdict is not None:
                        self._held.discard(tid)
                        if verdict == STOP:
                            self._controller.stop_trial(self._trials[tid])
                if not self._again:
                    return
        finally:
            self._busy = False

    def _feed(self) -> None:
        """Give the inner scheduler each rung's results in sampling order, up to the first
        trial that may still report there."""
        order = sorted(self._order, key=self._order.__getitem__)
        for m in self._rungs:
            values, decided = self._values[m], self._decided[m]
            for tid in order:
                if tid in decided:
                    continue
                if tid in values:
                    decided[tid] = self._ask_inner(tid, values[tid])
                elif not (tid in self._ended or self._stopped_below(tid, m)):
                    break

    def _stopped_below(self, tid: str, rung: float) -> bool:
        return any(self._decided[m].get(tid) == STOP for m in self._rungs if m < rung)

    def _ask_inner(self, tid: str, result: dict[str, Any]) -> str:
        decision = self.inner.on_trial_result(self._controller, self._trials[tid], result)
        return STOP if decision == STOP else CONTINUE


def load_history(tables_dir: Path | str) -> dict[str, list[dict[str, Any]]]:
    """trial id -> its rows in ``epochs.jsonl`` (what a resumed search had reported)."""
    from vpr_tune.tune.results import EPOCH_LOG, read_result_rows

    rows = read_result_rows(Path(tables_dir), EPOCH_LOG)
    rows.sort(key=lambda r: r.get("timestamp", 0))  # a repeated epoch: the later row wins
    history: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if "trial_id" in row and "epoch" in row:
            history.setdefault(str(row["trial_id"]), []).append(row)
    return history


class SamplingOrderSearcher(Searcher):
    """A Ray searcher (Optuna's) told results in sampling order (see the module doc).

    Sits inside Ray's ``ConcurrencyLimiter`` (which keeps ``max_concurrent``); ``free``:
    how many first proposals the sampler makes without looking at results (they never
    wait); ``total``: the number of trials (after the last proposal every result is told);
    ``mirror``: called after the study changed (writes optuna.db)."""

    def __init__(self, searcher: Any, max_concurrent: int, total: int, free: float = 0,
                 mirror: Any = None) -> None:
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher
        self._c, self._total, self._free, self._mirror = max_concurrent, total, free, mirror
        self._index: dict[str, int] = {}  # trial id -> sampling index
        self._ids: list[str] = []  # sampling index -> trial id
        self._ended: dict[int, tuple[dict | None, bool]] = {}  # not told yet: index -> result
        self._told = 0  # trials 0.._told-1 are told

    def set_search_properties(self, metric: Any, mode: Any, config: dict, **spec: Any) -> bool:
        from ray.tune.search.util import _set_search_properties_backwards_compatible

        ok = _set_search_properties_backwards_compatible(
            self.searcher.set_search_properties, metric, mode, config, **spec)
        self._metric, self._mode = self.searcher.metric, self.searcher.mode
        return ok

    def _bound(self) -> float:
        """Trials below this index may be told now: up to ``k - c`` for the next trial ``k``."""
        k = len(self._index)
        return math.inf if k >= self._total else k - self._c + 1

    def _tell(self) -> bool:
        told = False
        while self._told < self._bound() and self._told in self._ended:
            result, error = self._ended.pop(self._told)
            self.searcher.on_trial_complete(self._ids[self._told], result=result, error=error)
            self._told += 1
            told = True
        return told

    def suggest(self, trial_id: str) -> dict | None:
        k = len(self._index)
        if self._tell():
            self._write_mirror()
        if k >= self._free and self._told < k - self._c + 1:
            return None  # trial k-c has not ended: Ray asks again later
        config = self.searcher.suggest(trial_id)
        if config is not None and config != Searcher.FINISHED:
            self._index[trial_id] = k
            self._ids.append(trial_id)
            self._write_mirror()
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id not in self._index:  # not proposed here (adopted on a resume)
            self.searcher.on_trial_complete(trial_id, result=result, error=error)
            return
        self._ended[self._index[trial_id]] = (result, error)
        if self._tell():
            self._write_mirror()

    def _write_mirror(self) -> None:
        if self._mirror is not None:
            self._mirror(self.searcher)

    def get_state(self) -> dict[str, Any]:
        import copy

        return copy.deepcopy({k: v for k, v in self.__dict__.items() if k != "searcher"})

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


def history_free(sampler: Any, warm: int = 0) -> float:
    """How many first proposals ``sampler`` makes without looking at any result: TPE, GP and
    CMA-ES draw their ``n_startup_trials`` at random (fewer after ``warm`` finished trials),
    random never looks; the others (QMC, NSGA-II) are taken to look from the start."""
    import optuna

    if isinstance(sampler, optuna.samplers.RandomSampler):
        return math.inf
    startup = getattr(sampler, "_n_startup_trials", None)
    known = (optuna.samplers.TPESampler, optuna.samplers.GPSampler,
             optuna.samplers.CmaEsSampler)
    if isinstance(sampler, known) and isinstance(startup, int):
        return max(0, startup - warm)
    return 0


class StudyMirror:
    """Keeps ``db`` (an Optuna SQLite file) equal to the in-memory study of a reproducible
    search: what optuna-dashboard reads. Written whole the first time in a process (a
    resumed search drops what the killed driver had written past its saved state), then
    trial by trial."""

    def __init__(self, db: Path | str, name: str) -> None:
        self.db, self.name = Path(db), name
        self._live: Any = None  # (storage, study id, {number: (db trial id, state)})

    def __getstate__(self) -> dict[str, Any]:
        return {"db": self.db, "name": self.name, "_live": None}

    def __call__(self, searcher: Any) -> None:
        study = searcher._ot_study
        if self._live is None:
            self._live = mirror_study(study, self.db, self.name)
            return
        storage, study_id, known = self._live
        for trial in study.get_trials(deepcopy=False):
            if trial.state.name == "WAITING":
                continue
            seen = known.get(trial.number)
            if seen is None:
                known[trial.number] = (storage.create_new_trial(study_id, trial), trial.state)
            elif seen[1] != trial.state:
                for step, value in trial.intermediate_values.items():
                    storage.set_trial_intermediate_value(seen[0], step, value)
                storage.set_trial_state_values(seen[0], trial.state, trial.values)
                known[trial.number] = (seen[0], trial.state)


def mirror_study(study: Any, db: Path, name: str) -> tuple[Any, int, dict[int, tuple]]:
    """Write ``study``'s trials as study ``name`` into a fresh ``db`` (atomic rename);
    returns (storage, study id, {number: (db trial id, state)}) to go on from."""
    import os

    import optuna

    from vpr_tune.tune.optuna_study import rdb_storage

    db = Path(db)
    tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    storage = rdb_storage(tmp)
    copy = optuna.create_study(storage=storage, study_name=name, directions=study.directions)
    for key, value in study.user_attrs.items():
        copy.set_user_attr(key, value)
    known = {}
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name != "WAITING":
            known[trial.number] = (storage.create_new_trial(copy._study_id, trial), trial.state)
    storage.remove_session()
    storage.engine.dispose()
    os.replace(tmp, db)
    storage = rdb_storage(db)
    return storage, storage.get_study_id_from_name(name), known
