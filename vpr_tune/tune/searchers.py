"""The Ray search algorithm and the trial scheduler of a space, and the plan they follow.

- ``check_plan``: ``search_rules.SEARCH_RULES`` and the notes the run prints (a sampler's
  random fallbacks, a PBT population larger than what runs together); ``plan_line``.
- ``build_search_alg``: Optuna (``samplers.py``; ``optuna_study.py`` keeps the study),
  precomputed points (grid), or a fixed population for PBT/PB2, which take no searcher.
- ``trial_scheduler``: ASHA, multi-objective ASHA (``moasha.py``), FIFO, PBT/PB2 (``pbt.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vpr_tune import metrics
from vpr_tune.atomic import atomic_path
from vpr_tune.config import POPULATION_SCHEDULERS, Space, uses_points
from vpr_tune.search_rules import check_points, check_search
from vpr_tune.tune.sampling import (
    OptunaDefineByRun,
    draw_points,
    expand_points,
    possible_values,
    sampler_name,
)


def plan_line(space: Space, trials: int) -> str:
    """The plan in one line (``run``, ``--dry-run``, ``--estimate`` and ``doctor`` print it)."""
    sconf, res = space.base["search"], space.base["resources"]
    algorithm = sconf["algorithm"] + (f" ({sconf['sampler']})" if sconf["algorithm"] == "optuna"
                                       else "")
    return (f"{len(space.params)} searched parameter(s), {trials} trials, "
            f"{algorithm} + {sconf['scheduler']}, {sconf['max_concurrent']} at a time, "
            f"{res['cpu']} CPU / {res['gpu']} GPU per trial"
            + (", reproducible" if sconf.get("reproducible") else ""))


def check_plan(space: Space) -> list[str]:
    """Check what the searcher and scheduler need from the space before anything starts
    (UserError otherwise); returns the lines the run prints about fallbacks."""
    from vpr_tune.tune.samplers import sampler_note

    search = space.base["search"]
    notes = []
    check_search(space)
    if search["scheduler"] in POPULATION_SCHEDULERS:
        if int(search["max_concurrent"]) < int(search["num_samples"]):
            notes.append(f"{search['scheduler']}: {search['num_samples']} trials but "
                         f"{search['max_concurrent']} at a time; PBT compares the trials "
                         "that run together (raise search.max_concurrent)")
        if space.algorithm == "optuna" and search["sampler"] != "random":
            notes.append(f"{search['scheduler']}: the population is drawn at random from the "
                         f"declared distributions (search.sampler {search['sampler']} is not "
                         "used: Ray's PBT takes no searcher)")
    elif not uses_points(space):
        note = sampler_note(sampler_name(space), space)
        notes += [note] if note else []
    timed = [m for m, _ in metrics.objectives_of(search) if m == metrics.QUERY_MS]
    if search.get("reproducible") and timed:
        notes.append(f"search.reproducible: {timed[0]} is an objective, and it is measured on "
                     "this machine as the search runs: rung decisions and the Pareto front "
                     "on it can differ from run to run (docs/searches.md)")
    return notes


def build_search_alg(space: Space, num_samples: int, max_concurrent: int,
                     warm: list[tuple[dict[str, Any], float]] | None = None,
                     study_db: Path | None = None, study_name: str = "vpr-tune"
                     ) -> tuple[Any, int]:
    """(Ray search algorithm, number of trials). ``warm``: (params, value) of finished
    trials of an earlier search, given to the sampler before it proposes anything;
    ``study_db``: the SQLite file the Optuna study ``study_name`` is kept in."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    search = space.base["search"]
    first = check_points(space, search["points_to_evaluate"])
    if search["scheduler"] in POPULATION_SCHEDULERS:
        # Ray's PBT takes no searcher: the population is fixed before the search starts.
        points = (expand_points(space, num_samples, int(search["seed"])) if uses_points(space)
                  else draw_points(space, num_samples, int(search["seed"]), first))
        alg = BasicVariantGenerator(points_to_evaluate=points, max_concurrent=max_concurrent)
        alg._points = sorted({k for p in points for k in p})  # keys for run_tuner's param_space
        return alg, len(points)
    if not uses_points(space):
        reproducible = bool(search.get("reproducible"))
        optuna_search = _optuna_search(space, num_samples, first, warm,
                                       None if reproducible else study_db, study_name)
        if reproducible:  # told results in sampling order; the study mirrored to study_db
            from vpr_tune.tune.reproducible import (
                SamplingOrderSearcher,
                StudyMirror,
                history_free,
            )

            optuna_search = SamplingOrderSearcher(
                optuna_search, max_concurrent, num_samples,
                history_free(optuna_search._sampler, len(warm or [])),
                StudyMirror(study_db, study_name) if study_db else None)
        return ConcurrencyLimiter(optuna_search, max_concurrent=max_concurrent), num_samples
    points = expand_points(space, num_samples, int(search["seed"]))
    searcher = _points_searcher(points, search["metric"], search["mode"])
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent), len(points)


def _optuna_search(space: Space, num_samples: int, first: list[dict[str, Any]],
                   warm: list[tuple[dict[str, Any], float]] | None,
                   study_db: Path | None = None, study_name: str = "vpr-tune") -> Any:
    import optuna

    from vpr_tune.tune.optuna_study import BestValueOptunaSearch, rdb_storage
    from vpr_tune.tune.samplers import build_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = space.base["search"]
    sampler = build_sampler(sampler_name(space), int(search["seed"]), num_samples)
    # Our own study so earlier trials can be added before the first proposal;
    # OptunaSearch loads it by name.
    # Several objectives: a study with one direction each, and Ray hands Optuna lists of
    # metrics and modes (the default sampler, TPE, is multi-objective TPE then).
    objectives = metrics.objectives_of(search)
    metric: Any = [m for m, _ in objectives] if len(objectives) > 1 else search["metric"]
    mode: Any = [md for _, md in objectives] if len(objectives) > 1 else search["mode"]
    # (in results/NAME/optuna.db when given: what optuna-dashboard reads)
    storage = rdb_storage(study_db) if study_db else optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name=study_name, sampler=sampler,
                                directions=["minimize" if md == "min" else "maximize"
                                            for _, md in objectives], load_if_exists=True)
    for params, value in warm or []:
        dists = {k: space.params[k].dist.optuna() for k in params}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  value=value))
    # metric/mode live on the searcher and the scheduler (Ray refuses them twice)
    return BestValueOptunaSearch(space=OptunaDefineByRun(space), metric=metric, mode=mode,
                                 sampler=sampler, storage=storage, study_name=study_name,
                                 points_to_evaluate=first or None)


def _points_searcher(points: list[dict[str, Any]], metric: str, mode: str) -> Any:
    """A Ray ``Searcher`` that hands out our precomputed points in order (flat dotted keys;
    Ray's BasicVariantGenerator would read the dots as nested paths)."""
    import pickle

    from ray.tune.search import Searcher

    class PointsSearcher(Searcher):
        def __init__(self) -> None:
            super().__init__(metric=metric, mode=mode)
            self.points, self.next = list(points), 0

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            if self.next >= len(self.points):
                return Searcher.FINISHED
            self.next += 1
            return dict(self.points[self.next - 1])

        def on_trial_complete(self, trial_id: str, result: dict | None = None,
                              error: bool = False) -> None:
            pass

        def save(self, checkpoint_path: str) -> None:
            with atomic_path(Path(checkpoint_path)) as tmp, open(tmp, "wb") as fh:
                pickle.dump({"points": self.points, "next": self.next}, fh)

        def restore(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "rb") as fh:
                self.__dict__.update(pickle.load(fh))

    return PointsSearcher()


def trial_scheduler(space: Space, tables_dir: Path | None = None, resume: bool = False) -> Any:
    """ASHA on the search metric (``time_attr=epoch``), multi-objective ASHA when the search
    has several objectives, FIFO, or PBT/PB2 (``pbt.py``; exploits go to
    ``tables_dir/perturbations.csv``). ``search.reproducible``: ASHA and MO-ASHA decide in
    sampling order (``reproducible.py``; ``resume``: their rungs rebuilt from
    ``tables_dir/epochs.jsonl``), PBT/PB2 run synchronously with seeded choices."""
    from ray.tune.schedulers import FIFOScheduler

    search, asha = space.base["search"], space.base["asha"]
    if search["scheduler"] in POPULATION_SCHEDULERS:
        from vpr_tune.tune.pbt import population_scheduler

        return population_scheduler(space, Path(tables_dir or ".") / "perturbations.csv")
    if search["scheduler"] == "fifo":
        return FIFOScheduler()
    max_t = max(int(v) for v in possible_values(space, "budget.max_epochs"))
    grace, factor = int(asha["grace_period"]), float(asha["reduction_factor"])
    scheduler = rung_scheduler(rung_objectives(search, asha.get("metric")), max_t, grace,
                               factor)
    if not search.get("reproducible"):
        if not (resume and tables_dir):
            return scheduler
        from vpr_tune.tune.reproducible import load_history
        from vpr_tune.tune.resumed_rungs import ResumedRungs

        arrived = sorted((row for rows in load_history(tables_dir).values() for row in rows),
                         key=lambda r: r.get("arrived", r.get("timestamp", 0)))
        return ResumedRungs(scheduler, arrived)  # its rungs and stops as before the kill
    from vpr_tune.rungs import milestones
    from vpr_tune.tune.reproducible import SamplingOrderRungs, load_history

    return SamplingOrderRungs(scheduler, milestones(grace, factor, max_t), max_t,
                              history=load_history(tables_dir) if resume and tables_dir
                              else None)


def rung_objectives(search: dict[str, Any], rung_metric: str | None) -> list[tuple[str, str]]:
    """What rungs are judged on: the search's objectives, with ``asha.metric`` (when set)
    in place of the first searchable one (a recall or the loss; costs stay).

    >>> rung_objectives({"metric": "val/R@1", "mode": "max"}, "val/MRR")
    [('val/MRR', 'max')]
    """
    objectives = metrics.objectives_of(search)
    if not rung_metric:
        return objectives
    first = next(i for i, (m, _) in enumerate(objectives) if m in metrics.SEARCHABLE)
    objectives[first] = (rung_metric, metrics.direction(rung_metric))
    return objectives


def rung_scheduler(objectives: list[tuple[str, str]], max_t: int, grace_period: int,
                   reduction_factor: float) -> Any:
    """ASHA on one objective, multi-objective ASHA on several (``time_attr=epoch``): what a
    search stops trials with, and what ``vpr-tune replay`` simulates."""
    if len(objectives) > 1:
        from vpr_tune.tune.moasha import MultiObjectiveASHA

        return MultiObjectiveASHA(objectives, time_attr="epoch", max_t=max_t,
                                  grace_period=grace_period, reduction_factor=reduction_factor)
    from ray.tune.schedulers import ASHAScheduler

    (metric, mode), = objectives
    return ASHAScheduler(time_attr="epoch", metric=metric, mode=mode, max_t=max_t,
                         grace_period=grace_period, reduction_factor=reduction_factor)
