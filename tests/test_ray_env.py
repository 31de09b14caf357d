"""The environment a search starts Ray with."""

from __future__ import annotations

import builtins
import os
import pickle

from vpr_tune.tune.ray_env import set_ray_environment


def test_ray_keeps_the_builtin_print(monkeypatch) -> None:
    """Ray's distributed tqdm, created the first time the driver prints a worker's log
    line, replaced builtins.print for good; a later search in the same process then could
    not pickle anything holding the real print (CI: 5 slow tests failed so)."""
    from ray.experimental import tqdm_ray

    monkeypatch.delenv("RAY_TQDM_PATCH_PRINT", raising=False)
    monkeypatch.setattr(tqdm_ray, "_manager", None)
    original = builtins.print
    set_ray_environment()
    try:
        tqdm_ray.instance()  # what Ray's log printer calls
        assert builtins.print is original
        assert pickle.loads(pickle.dumps(print)) is print
    finally:
        builtins.print = original
    assert os.environ["RAY_CHDIR_TO_TRIAL_DIR"] == "0"  # trials keep the working directory
