"""The environment Ray is started with, set in one place."""

from __future__ import annotations

import os


def set_ray_environment() -> None:
    """Set what Ray reads from the environment, unless the environment says otherwise
    already. Call it before Ray starts and before a trainable is built; workers inherit it.

    - ``RAY_CHDIR_TO_TRIAL_DIR=0``: trials run in the driver's working directory, not in
      their trial folder (Ray's default), so relative data roots and paths keep their
      meaning in every trial.
    - ``RAY_TQDM_PATCH_PRINT=0``: the first time the driver prints a worker's log line,
      Ray's distributed tqdm replaces ``builtins.print`` with its own for good; anything
      that holds the real ``print`` (a ``log=print`` default) can no longer be pickled to
      a worker, so a second search in the same process (a notebook, a test session)
      failed with "Can't pickle <built-in function print>". We draw no tqdm bars.
    """
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
