"""Search space -> Ray Tune search: samplers, Optuna define-by-run, the Tuner, resume.

- ``optuna`` (any ``search.sampler``, see ``samplers.py``) and ``random`` (Optuna's
  RandomSampler): ``OptunaSearch`` with a define-by-run function that walks
  ``Space.params`` in order and skips the ones whose ``when`` does not hold.
- ``grid`` (and ``random`` over ``grid`` leaves): every combination is drawn up front
  (seeded numpy) and handed to Ray as explicit points.
- ``pbt`` / ``pb2`` schedulers take no searcher: the population is drawn up front by the
  sampler and handed to Ray as points (``pbt.py`` explores from there).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from vpr_tune import metrics
from vpr_tune.atomic import atomic_path
from vpr_tune.config import POPULATION_SCHEDULERS, Param, Space, materialize, uses_points
from vpr_tune.errors import UserError
from vpr_tune.space_rules import check_points, check_search


# ------------------------------------------------------------------------------ sampling
def sample_param(p: Param, rng: np.random.Generator) -> Any:
    """One draw of a non-grid parameter (its distribution draws itself)."""
    return p.dist.sample(rng)


def expand_points(space: Space, num_samples: int, seed: int) -> list[dict[str, Any]]:
    """Trial configs for random/grid: cartesian product of grid leaves x ``num_samples``,
    other leaves sampled per point; leaves whose ``when`` fails are absent."""
    rng = np.random.default_rng(seed)
    # Grid leaves and the leaves conditions look at branch first; the rest are drawn per
    # point at the end of each branch (a subsequence of the dependency order stays valid).
    gating = {s for p in space.params.values() for s in p.when}
    params = sorted(space.params.values(),
                    key=lambda p: 0 if p.kind == "grid" or p.path in gating else 1)
    points: list[dict[str, Any]] = []

    def walk(i: int, partial: dict[str, Any]) -> None:
        if i == len(params):
            points.append(dict(partial))
            return
        p = params[i]
        if not p.applies(partial) or p.path in partial:  # or an earlier alternative applied
            walk(i + 1, partial)
        elif p.kind == "grid":
            for value in p.args:
                walk(i + 1, {**partial, p.path: value})
        else:
            walk(i + 1, {**partial, p.path: sample_param(p, rng)})

    for _ in range(num_samples):
        walk(0, {})
    return points


class OptunaDefineByRun:
    """Define-by-run function for ``OptunaSearch``: suggests only applicable parameters.

    A class (not a closure) because Ray pickles the searcher to save the experiment."""

    def __init__(self, space: Space) -> None:
        self.params = list(space.params.values())

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        chosen: dict[str, Any] = {}
        constants: dict[str, Any] = {}
        for p in self.params:
            if not p.applies(chosen) or p.path in chosen:  # or an earlier alternative applied
                continue
            name = p.id  # an alternative is suggested under its own name
            value = p.dist.suggest(trial, name)
            if p.dist.fixed or name != p.path:  # an alternative: its path holds it too
                constants[p.path] = value
            chosen[p.path] = value
        return constants or None

    def params_of(self, config: dict[str, Any]) -> dict[str, Any]:
        """The Optuna params behind a trial's flat config: ``__call__`` run backwards.

        >>> define.params_of({"optimizer.name": "adam", "optimizer.lr": 0.003})
        {'optimizer.name': 'adam', 'optimizer.lr': 0.003}
        """
        replay = _ReplayTrial(config, {p.id: p.path for p in self.params})
        self(replay)
        return replay.params


class _ReplayTrial:
    """Stands in for an Optuna trial: each suggestion is the value a known config holds."""

    def __init__(self, config: dict[str, Any], path_of: dict[str, str]) -> None:
        self.config, self.path_of, self.params = config, path_of, {}

    def _suggest(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.params[name] = self.config[self.path_of[name]]
        return self.params[name]

    suggest_categorical = suggest_float = suggest_int = _suggest


def sampler_name(space: Space) -> str:
    """The Optuna sampler of the search (``random`` for search.algorithm random)."""
    return "random" if space.algorithm == "random" else space.base["search"]["sampler"]


def count_trials(space: Space, num_samples: int) -> int:
    """How many trials the search will run."""
    if not uses_points(space):
        return num_samples
    return len(expand_points(space, num_samples, 0))


def draw_points(space: Space, n: int, seed: int,
                first: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """``n`` trial configs drawn now by Optuna's RandomSampler (``first`` partial configs
    enqueued first): the initial population of a PBT/PB2 search."""
    import optuna

    from vpr_tune.tune.samplers import build_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=build_sampler("random", seed))
    for point in first or []:
        study.enqueue_trial(point)
    define = OptunaDefineByRun(space)
    points = []
    for _ in range(n):
        trial = study.ask()
        constants = define(trial) or {}
        points.append({**trial.params, **constants})
    return points


def plan_line(space: Space, trials: int) -> str:
    """The plan in one line (``run``, ``--dry-run``, ``--estimate`` and ``doctor`` print it)."""
    sconf, res = space.base["search"], space.base["resources"]
    algorithm = sconf["algorithm"] + (f" ({sconf['sampler']})" if sconf["algorithm"] == "optuna"
                                       else "")
    return (f"{len(space.params)} searched parameter(s), {trials} trials, "
            f"{algorithm} + {sconf['scheduler']}, {sconf['max_concurrent']} at a time, "
            f"{res['cpu']} CPU / {res['gpu']} GPU per trial")


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
    return notes


def load_warm_start(space: Space, earlier: Path) -> list[tuple[dict[str, Any], float]]:
    """(params, last value of the metric) of each finished trial of the experiment at
    ``earlier``; refused when its searched keys differ from this space's."""
    import pandas as pd
    import yaml

    from vpr_tune.config import space_from_dict
    from vpr_tune.tune.results import read_table

    if uses_points(space) or space.base["search"]["scheduler"] in POPULATION_SCHEDULERS:
        raise UserError("--warm-start feeds a sampler: use search.algorithm random or optuna "
                        "with scheduler asha or fifo (grid and pbt/pb2 draw their trials up "
                        "front)")
    if space.base["search"].get("objectives"):
        raise UserError("--warm-start gives the sampler one value per earlier trial: not "
                        "with search.objectives (several objectives)")
    if not (earlier / "trials.csv").exists() or not (earlier / "space.yaml").exists():
        raise UserError(f"--warm-start: no experiment with trials.csv at {earlier}")
    raw = yaml.safe_load((earlier / "space.yaml").read_text()) or {}
    raw.pop("resolved", None)
    old = space_from_dict(raw, str(earlier / "space.yaml"))
    mine, theirs = set(space.searched()), set(old.searched())
    if mine != theirs:
        diff = sorted(mine ^ theirs)
        raise UserError(f"--warm-start {earlier.name}: it searched different keys "
                        f"({', '.join(diff)} in only one of the two spaces)")
    metric = space.base["search"]["metric"]
    trials = read_table(earlier / "trials.csv")
    curves = read_table(earlier / "metrics.csv")
    last = curves.sort_values("epoch").groupby("trial_id")[metric].last()
    out = []
    for row in trials[trials["status"].isin(["TERMINATED", "STOPPED_EARLY"])].itertuples():
        rec = row._asdict()
        params: dict[str, Any] | None = {}
        for k, p in space.params.items():  # parents before the keys that depend on them
            if k not in mine or not p.applies(params):
                continue
            # trials.csv has an alternative (loss.margin#arcface) under its path
            v = trials.loc[row.Index, p.path] if p.path in trials else None
            if v is None or pd.isna(v):
                continue
            v = p.dist.coerce(v)
            if not p.dist.contains(v):
                params = None  # outside this space's ranges: not a point the sampler knows
                break
            params[k] = v
        value = last.get(rec["trial_id"])
        if params and value is not None and not pd.isna(value):
            out.append((params, float(value)))
    return out


# ----------------------------------------------------------------------------- the tuner
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
        return ConcurrencyLimiter(_optuna_search(space, num_samples, first, warm, study_db,
                                                 study_name),
                                  max_concurrent=max_concurrent), num_samples
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


def trial_scheduler(space: Space, tables_dir: Path | None = None) -> Any:
    """ASHA on the search metric (``time_attr=epoch``), multi-objective ASHA when the search
    has several objectives, FIFO, or PBT/PB2 (``pbt.py``; exploits go to
    ``tables_dir/perturbations.csv``)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    search, asha = space.base["search"], space.base["asha"]
    if search["scheduler"] in POPULATION_SCHEDULERS:
        from vpr_tune.tune.pbt import population_scheduler

        return population_scheduler(space, Path(tables_dir or ".") / "perturbations.csv")
    if search["scheduler"] == "fifo":
        return FIFOScheduler()
    max_t = max(int(v) for v in possible_values(space, "budget.max_epochs"))
    if search.get("objectives"):
        from vpr_tune.tune.moasha import MultiObjectiveASHA

        return MultiObjectiveASHA(metrics.objectives_of(search), time_attr="epoch", max_t=max_t,
                                  grace_period=int(asha["grace_period"]),
                                  reduction_factor=float(asha["reduction_factor"]))
    return ASHAScheduler(time_attr="epoch", metric=search["metric"], mode=search["mode"],
                         max_t=max_t, grace_period=int(asha["grace_period"]),
                         reduction_factor=float(asha["reduction_factor"]))


def possible_values(space: Space, dotted: str) -> list[Any]:
    p = space.params.get(dotted)
    if p is None:
        return [materialize(space.base, {})["budget"]["max_epochs"]] if dotted.startswith(
            "budget.") else []
    if p.dist.categorical:
        return list(p.args)
    return [p.args] if p.dist.fixed else [p.args[1]]


def init_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Join ``address`` (or ``$RAY_ADDRESS``), else start a local Ray on this machine.

    Returns True when this call connected (so the caller disconnects when done), False when
    Ray was already initialised by someone else (a test, a notebook) and stays theirs.
    """
    import ray

    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        else:
            # "local": always a fresh Ray of our own, even if `ray start` left a cluster
            # running on this machine (joining it needs --address or RAY_ADDRESS).
            for attempt in (1, 2):
                try:
                    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(),
                             include_dashboard=False, log_to_driver=False,
                             logging_level="ERROR")
                    break
                except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception here
                    # An overloaded machine: Ray gives its raylet 30 s to register.
                    if "timed out during startup" not in str(exc):
                        raise
                    ray.shutdown()
                    if attempt == 2:
                        raise UserError(f"Ray did not start on this machine in time ({exc}); "
                                        "the machine is overloaded: retry later") from exc
    except ConnectionError as exc:
        raise UserError(f"cannot reach a Ray cluster at {address}: {exc}") from exc
    return True


def stop_ray() -> None:
    """``ray.shutdown()`` a second sooner.

    Ray stops the GCS before its autoscaler monitor; the monitor then spends its whole 1 s
    SIGTERM grace trying to report its death to the gone GCS before Ray SIGKILLs it
    (ray/_private/node.py, ``_kill_process_impl``). A Ray of our own has nothing to
    autoscale, so the monitor goes first, at once. On a joined cluster the monitor is not
    ours (this node has none to kill) and this is a plain disconnect.
    """
    import ray

    node = getattr(ray._private.worker, "_global_node", None)  # no public handle
    if node is not None and hasattr(node, "kill_monitor"):
        node.kill_monitor(check_alive=False)
    ray.shutdown()


def check_cluster_resources(space: Space, max_concurrent: int,
                            nodes: list[tuple[float, float]] | None = None) -> None:
    """Per-trial resources must fit on one node: ``nodes`` as (CPUs, GPUs), by default the
    live nodes of the Ray cluster we are connected to. The error names the file, the key
    and the largest node."""
    if nodes is None:
        import ray

        nodes = [(n["Resources"].get("CPU", 0), n["Resources"].get("GPU", 0))
                 for n in ray.nodes() if n.get("Alive")]
    res = space.base["resources"]
    best_cpu = max((c for c, _ in nodes), default=0)
    best_gpu = max((g for _, g in nodes), default=0)
    largest = f"the largest Ray node has {best_cpu:g} CPU, {best_gpu:g} GPU"
    if res["gpu"] > best_gpu:
        raise UserError(f"{space.source}: resources.gpu: {res['gpu']} GPUs per trial but "
                        f"{largest}")
    if res["cpu"] > best_cpu:
        raise UserError(f"{space.source}: resources.cpu: {res['cpu']} CPUs per trial but "
                        f"{largest}")


def local_node() -> list[tuple[float, float]]:
    """(CPUs, GPUs) of the local Ray a run without ``--address`` starts (for --dry-run)."""
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except ImportError:
        pass
    return [(float(os.cpu_count() or 1), float(gpus))]


class _NoTrialTraceback:
    """Logging filter: Ray's "Trial task failed" line without the worker's traceback (the
    trial's error.txt keeps it; trials.csv has its message)."""

    def filter(self, record: Any) -> bool:
        if record.exc_info and str(record.msg).startswith("Trial task failed"):
            record.exc_info = None
            record.msg = f"{record.msg} (traceback: error.txt in the trial folder)"
        return True


def quiet_trial_tracebacks() -> None:
    """Install :class:`_NoTrialTraceback` on Ray Tune's controller logger (once)."""
    import logging

    log = logging.getLogger("ray.tune.execution.tune_controller")
    if not any(isinstance(f, _NoTrialTraceback) for f in log.filters):
        log.addFilter(_NoTrialTraceback())


@contextmanager
def sigterm_stops_search() -> Iterator[dict[str, bool]]:
    """SIGTERM (pre-emption, ``timeout``, a job scheduler) stops the search as Ctrl-C does:
    Ray Tune saves the experiment state and returns. The yielded dict says ``terminated``."""
    state = {"terminated": False}

    def handler(signum: int, frame: Any) -> None:
        state["terminated"] = True
        current = signal.getsignal(signal.SIGINT)  # Ray Tune's graceful stop while it runs
        if callable(current) and current is not signal.default_int_handler:
            current(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (a notebook worker): leave signals alone
        yield state
        return
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_tuner(space: Space, exp_dir: Path | str, data_root: Path, num_samples: int,
              max_concurrent: int, resume: bool, callbacks: list[Any],
              tables_dir: Path | None = None,
              warm: list[tuple[dict[str, Any], float]] | None = None,
              study_db: Path | None = None) -> Any:
    """Start (or restore) the Ray Tune experiment at ``exp_dir`` (a path or a URI such as
    ``s3://bucket/vpr/<name>``); returns the ResultGrid. ``tables_dir``: where our tables
    go (default ``exp_dir``); ``warm``: earlier (params, value) pairs for the sampler;
    ``study_db``: the Optuna study file."""
    from ray import tune

    from vpr_tune.config import parse_duration
    from vpr_tune.tune.checkpoints import retention_callback
    from vpr_tune.tune.ranks_log import ranks_callback
    from vpr_tune.tune.trainable import make_trainable

    search, res = space.base["search"], space.base["resources"]
    trainable = make_trainable(space.base, data_root, res["cpu"], res["gpu"])
    population = search["scheduler"] in POPULATION_SCHEDULERS
    # Ray keeps every checkpoint folder; the retention callback deletes the ones no resume
    # can need (checkpoints.py says why not Ray's num_to_keep). PBT: all are kept, a trial
    # that cloned another restores from the other's folder.
    retention = [] if population else [retention_callback()]
    # first: the ranks a result carries are on disk before any table is written from it
    callbacks = [ranks_callback(Path(tables_dir or exp_dir)), *callbacks]
    if resume:
        if not tune.Tuner.can_restore(str(exp_dir)):
            raise UserError(f"{exp_dir}: no Ray experiment state to resume from")
        tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_unfinished=True,
                                   resume_errored=True)
        from vpr_tune.tune.ray_internals import set_callbacks

        set_callbacks(tuner, [*callbacks, *retention])
        return tuner.fit()
    from vpr_tune.tune.storage import split

    parent, name = split(str(exp_dir))  # a URI's parameters (endpoint) stay on the parent
    alg, n = build_search_alg(space, num_samples, max_concurrent, warm, study_db, name)
    tuner = tune.Tuner(
        trainable,
        # PBT's points: Ray checks every preset key against param_space; a key a point lacks
        # (a conditional one) stays None and is dropped by the trial.
        param_space={k: None for k in getattr(alg, "_points", ())},
        tune_config=tune.TuneConfig(
            search_alg=alg, num_samples=n,
            scheduler=trial_scheduler(space, Path(tables_dir or exp_dir)),
            time_budget_s=parse_duration(search["time_budget"]),
            # Reuse a worker process for the next trial (no process start, no imports): PBT
            # restarts a trial at every exploit; FIFO trials end by returning. Safe because
            # train_trial builds all its state (seeded trainer, threads, scratch) per call.
            # Not under ASHA: a stopped trial is still training its next epoch, Ray's reset
            # waits 2 s for it and then fails the *new* trial.
            reuse_actors=population or search["scheduler"] == "fifo"),
        run_config=tune.RunConfig(
            name=name, storage_path=parent, callbacks=[*callbacks, *retention],
            verbose=0, checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            failure_config=tune.FailureConfig(max_failures=int(search["max_failures"]))),
    )
    return tuner.fit()


def elapsed(start: float) -> str:
    s = int(time.time() - start)
    return f"{s // 60}:{s % 60:02d}"


# -------------------------------------------------------------------------- progress
def progress_callback(exp_dir: Path, space: Space, total: int, log: Callable[[str], Any]) -> Any:
    """A Ray Tune callback: rewrites the tables and prints one progress line per trial end."""
    from ray.tune import Callback

    from vpr_tune.config import parse_duration
    from vpr_tune.tune.results import append_epoch_row, trial_tables, write_tables

    metric, mode = space.base["search"]["metric"], space.base["search"]["mode"]
    budget = parse_duration(space.base["search"]["time_budget"])

    class Progress(Callback):
        def __init__(self, log: Callable[[str], Any]) -> None:
            self.start = time.time()
            self.log = log

            self.started: set[str] = set()
            self.ended: set[str] = set()
            self.rows: dict[str, Any] = {}  # finished trials' table rows, built once
            self.written, self.write_cost = 0.0, 0.0

        def __getstate__(self) -> dict[str, Any]:
            # Ray pickles the run config; the console behind ``log`` holds locks.
            return {"start": self.start, "started": set(), "ended": set(), "rows": {},
                    "written": 0.0, "write_cost": 0.0}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state, log=print)

        def _update(self, trials: list[Any], final: bool = False) -> None:
            # Ctrl-C: Ray marks the trials it stops TERMINATED, but they resume later.
            cut = {t.trial_id for t in trials if t.trial_id in self.started - self.ended
                   and str(t.status) in ("TERMINATED", "PAUSED")} if final else set()
            out_of_time = final and budget is not None and time.time() - self.start >= budget
            # Rewrite the tables at a trial end unless writing would take more than ~5 % of
            # the driver's time (many short trials); the last write is always complete.
            now = time.time()
            try:
                if final or now - self.written >= 20 * self.write_cost:
                    frame = write_tables(exp_dir, trials, space.base, metric, running=cut,
                                         budget=out_of_time, cache=self.rows)
                    self.written, self.write_cost = time.time(), time.time() - now
                else:
                    frame = trial_tables(exp_dir, trials, space.base, metric,
                                         cache=self.rows)[0]
            except UserError as exc:  # a full disk: the search goes on, old tables stay
                self.log(f"warning: {exc}; the previous tables stay valid")
                return
            if out_of_time:
                ids = frame.loc[frame["status"] == "STOPPED_BUDGET", "trial_id"].tolist()
                self.log(f"time budget {space.base['search']['time_budget']} spent: "
                         f"{len(ids)} trial(s) cut (STOPPED_BUDGET){': ' if ids else ''}"
                         f"{', '.join(ids)}")
            elif cut:
                self.log(f"interrupted: {len(cut)} unfinished trial(s) continue from their last "
                         "checkpoint with --resume")
            if frame.empty:
                return
            counts = frame["status"].value_counts().to_dict()
            ok = frame[~frame["status"].isin(["ERROR", "DIVERGED"])]
            col = f"best_{metric}"
            best = ""
            if col in ok and ok[col].notna().any():
                row = ok.loc[ok[col].idxmax() if mode == "max" else ok[col].idxmin()]
                best = f" | best {metric} {row[col]:.1f} ({row['trial_id']})"
            if "pareto" in frame:
                best += f" | Pareto front {int(frame['pareto'].sum())} trial(s)"
            done = sum(counts.get(s, 0) for s in
                       ("TERMINATED", "STOPPED_EARLY", "STOPPED_BUDGET", "ERROR", "DIVERGED"))
            spent = time.time() - self.start
            eta = ""
            if 0 < done < total and not final:
                eta = f" | ETA ~{elapsed(time.time() - spent * (total - done) / done)}"
            self.last_line = time.time()
            self.log(f"[{elapsed(self.start)}] trials {done}/{total} done "
                f"(finished {counts.get('TERMINATED', 0)}, stopped early "
                f"{counts.get('STOPPED_EARLY', 0)}, "
                + (f"cut by budget {counts['STOPPED_BUDGET']}, " if "STOPPED_BUDGET" in counts
                   else "") + f"errors {counts.get('ERROR', 0)}, "
                f"diverged {counts.get('DIVERGED', 0)}), running {counts.get('RUNNING', 0)}"
                f"{best}{eta}")

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            append_epoch_row(exp_dir, result)
            # long epochs (real data): a line at most every 2 minutes between trial ends
            if time.time() - getattr(self, "last_line", self.start) > 120:
                self._update(trials)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.started.add(trial.trial_id)

        on_trial_restore = on_trial_start

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.ended.add(trial.trial_id)
            self._update(trials)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.ended.add(trial.trial_id)
            self._update(trials)

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            self._update(trials, final=True)

    return Progress(log)


def prepare_data(space: Space, data_root: Path, build_cache: bool,
                 log: Callable[[str], Any]) -> dict[str, int]:
    """Load the train/val file lists (validates the data); with ``build_cache`` decode the
    images once into the memmap caches the trials then only map (same keys as the loaders)."""
    from vpr_tune.data import cached_images
    from vpr_tune.data.splits import find_split, load_eval_split, load_train_split
    from vpr_tune.progress import log_progress

    data = space.base["data"]
    skip = bool(data["skip_bad_files"])
    train = load_train_split(find_split(data_root, data["train"]),
                             min_images_per_place=int(data["min_images_per_place"]),
                             skip_bad_files=skip)
    val = load_eval_split(find_split(data_root, data["val"]), skip_bad_files=skip)
    if build_cache and data["cache"]:
        sizes = possible_values(space, "data.image_size") or [data["image_size"]]
        for size in sizes:
            for what, paths in (("train", train.paths), ("val", [*val.db_paths, *val.q_paths])):
                cached_images(paths, size, skip_bad_files=skip,
                              progress=log_progress(log, f"image cache ({what}, {size})"))
    return {"train images": len(train.paths), "train places": int(train.num_places),
            "val database": len(val.db_paths), "val queries": len(val.q_paths)}
