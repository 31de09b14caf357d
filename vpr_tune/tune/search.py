"""Search space -> Ray Tune search: sampling, Optuna define-by-run, the Tuner, resume.

- ``random`` / ``grid``: we sample and expand the trial configs ourselves (seeded numpy) and
  hand them to Ray as explicit points, so conditionals and seeds are exact.
- ``optuna``: ``OptunaSearch`` (TPE, seeded) with a define-by-run function that walks
  ``Space.params`` in order and skips the ones whose ``when`` does not hold.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from vpr_tune.atomic import atomic_path
from vpr_tune.config import Param, Space, materialize
from vpr_tune.errors import UserError


# ------------------------------------------------------------------------------ sampling
def sample_param(p: Param, rng: np.random.Generator) -> Any:
    """One draw of a non-grid parameter."""
    a = p.args
    if p.kind == "value":
        return a
    if p.kind in ("choice", "grid"):
        return a[int(rng.integers(len(a)))]
    if p.kind == "uniform":
        return float(rng.uniform(a[0], a[1]))
    if p.kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(a[0]), math.log(a[1]))))
    if p.kind in ("int", "randint"):  # both ends included
        return int(rng.integers(a[0], a[1] + 1))
    if p.kind == "quniform":
        value = round(float(rng.uniform(a[0], a[1])) / a[2]) * a[2]
        return float(min(max(value, a[0]), a[1]))
    raise ValueError(p.kind)


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
            a, name = p.args, p.id  # an alternative is suggested under its own name
            if p.kind == "value":
                value = constants[p.path] = a
            elif p.kind == "choice":
                value = trial.suggest_categorical(name, a)
            elif p.kind == "uniform":
                value = trial.suggest_float(name, a[0], a[1])
            elif p.kind == "loguniform":
                value = trial.suggest_float(name, a[0], a[1], log=True)
            elif p.kind in ("int", "randint"):
                value = trial.suggest_int(name, a[0], a[1])
            elif p.kind == "quniform":
                value = trial.suggest_float(name, a[0], a[1], step=a[2])
            else:
                raise UserError(f"{p.path}: {p.kind} is not supported with optuna")
            if name != p.path:  # the trial config holds it under its path too
                constants[p.path] = value
            chosen[p.path] = value
        return constants or None


def count_trials(space: Space, num_samples: int) -> int:
    """How many trials the search will run."""
    if space.algorithm == "optuna":
        return num_samples
    return len(expand_points(space, num_samples, 0))


def plan_line(space: Space, trials: int) -> str:
    """The plan in one line (``run``, ``--dry-run``, ``--estimate`` and ``doctor`` print it)."""
    sconf, res = space.base["search"], space.base["resources"]
    return (f"{len(space.params)} searched parameter(s), {trials} trials, "
            f"{sconf['algorithm']} + {sconf['scheduler']}, {sconf['max_concurrent']} at a time, "
            f"{res['cpu']} CPU / {res['gpu']} GPU per trial")


# ----------------------------------------------------------------------------- the tuner
def build_search_alg(space: Space, num_samples: int, max_concurrent: int,
                     study_db: Path | None = None, study_name: str = "optuna") -> tuple[Any, int]:
    """(Ray search algorithm, number of trials); an Optuna study is kept in ``study_db``."""
    search = space.base["search"]
    if search["algorithm"] == "optuna":
        from ray.tune.search import ConcurrencyLimiter

        from vpr_tune.tune.optuna_study import optuna_searcher

        # metric/mode live on the searcher and the scheduler (Ray refuses them twice)
        alg = optuna_searcher(OptunaDefineByRun(space), search["metric"], search["mode"],
                              int(search["seed"]), study_db, study_name)
        return ConcurrencyLimiter(alg, max_concurrent=max_concurrent), num_samples
    from ray.tune.search import ConcurrencyLimiter

    points = expand_points(space, num_samples, int(search["seed"]))
    searcher = _points_searcher(points, search["metric"], search["mode"])
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent), len(points)


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


def trial_scheduler(space: Space) -> Any:
    """ASHA on the search metric (``time_attr=epoch``) or FIFO."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    search, asha = space.base["search"], space.base["asha"]
    if search["scheduler"] == "fifo":
        return FIFOScheduler()
    max_t = max(int(v) for v in possible_values(space, "budget.max_epochs"))
    return ASHAScheduler(time_attr="epoch", metric=search["metric"], mode=search["mode"],
                         max_t=max_t, grace_period=int(asha["grace_period"]),
                         reduction_factor=float(asha["reduction_factor"]))


def possible_values(space: Space, dotted: str) -> list[Any]:
    p = space.params.get(dotted)
    if p is None:
        return [materialize(space.base, {})["budget"]["max_epochs"]] if dotted.startswith(
            "budget.") else []
    if p.kind in ("choice", "grid"):
        return list(p.args)
    return [p.args] if p.kind == "value" else [p.args[1]]


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
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(),
                     include_dashboard=False,
                     log_to_driver=False, logging_level="ERROR")
    except ConnectionError as exc:
        raise UserError(f"cannot reach a Ray cluster at {address}: {exc}") from exc
    return True


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
              study_db: Path | None = None) -> Any:
    """Start (or restore) the Ray Tune experiment at ``exp_dir`` (a path or a URI such as
    ``s3://bucket/vpr/<name>``); returns the ResultGrid. ``study_db``: the Optuna study file."""
    from ray import tune

    from vpr_tune.tune.trainable import make_trainable

    search, res = space.base["search"], space.base["resources"]
    trainable = make_trainable(space.base, data_root, res["cpu"], res["gpu"])
    if resume:
        if not tune.Tuner.can_restore(str(exp_dir)):
            raise UserError(f"{exp_dir}: no Ray experiment state to resume from")
        tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_unfinished=True,
                                   resume_errored=True)
        # Callbacks are not saved with the experiment: hand them over again.
        tuner._local_tuner._run_config.callbacks = callbacks
        return tuner.fit()
    from vpr_tune.tune.storage import split

    parent, name = split(str(exp_dir))  # a URI's parameters (endpoint) stay on the parent
    alg, n = build_search_alg(space, num_samples, max_concurrent, study_db, name)
    tuner = tune.Tuner(
        trainable,
        param_space={},
        tune_config=tune.TuneConfig(search_alg=alg, scheduler=trial_scheduler(space),
                                    num_samples=n),
        run_config=tune.RunConfig(
            name=name, storage_path=parent, callbacks=callbacks,
            verbose=0,
            # Keep the 2 newest folders (each also holds the best model so far). Not by
            # score: that deletes the folder a driver killed between two state saves would
            # resume from; Ray saves its state at least every num_to_keep checkpoints.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
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

    from vpr_tune.tune.results import write_tables

    metric, mode = space.base["search"]["metric"], space.base["search"]["mode"]

    class Progress(Callback):
        def __init__(self, log: Callable[[str], Any]) -> None:
            self.start = time.time()
            self.log = log

            self.started: set[str] = set()
            self.ended: set[str] = set()

        def __getstate__(self) -> dict[str, Any]:
            # Ray pickles the run config; the console behind ``log`` holds locks.
            return {"start": self.start, "started": set(), "ended": set()}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state, log=print)

        def _update(self, trials: list[Any], final: bool = False) -> None:
            # Ctrl-C: Ray marks the trials it stops TERMINATED, but they resume later.
            cut = {t.trial_id for t in trials if t.trial_id in self.started - self.ended
                   and str(t.status) == "TERMINATED"} if final else set()
            try:
                frame = write_tables(exp_dir, trials, space.base, metric, running=cut)
            except UserError as exc:  # a full disk: the search goes on, old tables stay
                self.log(f"warning: {exc}; the previous tables stay valid")
                return
            if cut:
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
            done = sum(counts.get(s, 0) for s in
                       ("TERMINATED", "STOPPED_EARLY", "ERROR", "DIVERGED"))
            spent = time.time() - self.start
            eta = ""
            if 0 < done < total and not final:
                eta = f" | ETA ~{elapsed(time.time() - spent * (total - done) / done)}"
            self.last_line = time.time()
            self.log(f"[{elapsed(self.start)}] trials {done}/{total} done "
                f"(finished {counts.get('TERMINATED', 0)}, stopped early "
                f"{counts.get('STOPPED_EARLY', 0)}, errors {counts.get('ERROR', 0)}, "
                f"diverged {counts.get('DIVERGED', 0)}), running {counts.get('RUNNING', 0)}"
                f"{best}{eta}")

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
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

    data = space.base["data"]
    skip = bool(data["skip_bad_files"])
    train = load_train_split(find_split(data_root, data["train"]),
                             min_images_per_place=int(data["min_images_per_place"]),
                             skip_bad_files=skip)
    val = load_eval_split(find_split(data_root, data["val"]), skip_bad_files=skip)
    if build_cache and data["cache"]:
        sizes = possible_values(space, "data.image_size") or [data["image_size"]]
        for size in sizes:
            log(f"image cache: {len(train.paths) + len(val.db_paths) + len(val.q_paths)} "
                f"images at {size} ...")
            cached_images(train.paths, size, skip_bad_files=skip)
            cached_images([*val.db_paths, *val.q_paths], size, skip_bad_files=skip)
    return {"train images": len(train.paths), "train places": int(train.num_places),
            "val database": len(val.db_paths), "val queries": len(val.q_paths)}
