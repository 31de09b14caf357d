"""The Ray session of a search: start or join Ray and stop it, check that a trial's
resources fit on a node, keep Ray's log lines short, and let SIGTERM stop a search as
Ctrl-C does."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vpr_tune.config import Space
from vpr_tune.errors import UserError


def init_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Join ``address`` (or ``$RAY_ADDRESS``), else start a local Ray on this machine.

    Returns True when this call connected (so the caller disconnects when done), False when
    Ray was already initialised by someone else (a test, a notebook) and stays theirs.
    """
    import ray

    from vpr_tune.tune.ray_env import set_ray_environment

    set_ray_environment()
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
    """``ray.shutdown()`` a second sooner, then remove the killed trials' scratch folders.

    Ray stops the GCS before its autoscaler monitor; the monitor then spends its whole 1 s
    SIGTERM grace trying to report its death to the gone GCS before Ray SIGKILLs it
    (ray/_private/node.py, ``_kill_process_impl``). A Ray of our own has nothing to
    autoscale, so the monitor goes first, at once. On a joined cluster the monitor is not
    ours (this node has none to kill) and this is a plain disconnect.
    """
    import ray

    from vpr_tune.tune.scratch import sweep_scratch

    node = getattr(ray._private.worker, "_global_node", None)  # no public handle
    if node is not None and hasattr(node, "kill_monitor"):
        node.kill_monitor(check_alive=False)
    ray.shutdown()
    sweep_scratch()  # the scratch folders of the trials Ray killed on this node


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
