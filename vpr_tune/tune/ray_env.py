"""The environment Ray is started with, set in one place."""

from __future__ import annotations

import os


def keep_working_directory() -> None:
    """Trials run in the driver's working directory, not in their trial folder (Ray's
    default), so relative data roots and paths keep their meaning in every trial: sets
    ``RAY_CHDIR_TO_TRIAL_DIR=0`` unless the environment says otherwise already. Call it
    before Ray starts and before a trainable is built; workers inherit it."""
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
