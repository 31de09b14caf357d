"""A trial's scratch folder on its node: the best model so far and the checkpoint being
staged for Ray, outside the experiment folder.

Ray ends a stopped trial (an ASHA stop, a PBT pause, the end of a search) by killing its
worker process, so the trial's own ``finally`` never runs and a temporary folder it made
stays behind (11-45 MB a trial: a search of hundreds of trials filled a disk). Each
folder is therefore named after the process that owns it, and a folder whose process is
gone is garbage: every trial sweeps them as it starts, and so does the driver when it
stops Ray (:func:`vpr_tune.tune.ray_session.stop_ray`).

>>> folder = trial_scratch()   # <tmp>/vpr-tune-scratch/<pid>-<random>
>>> sweep_scratch()            # removes only the folders of processes that have ended
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def scratch_root() -> Path:
    """Where every trial on this node keeps its scratch folder."""
    return Path(tempfile.gettempdir()) / "vpr-tune-scratch"


def trial_scratch() -> Path:
    """A new scratch folder owned by this process (after sweeping the orphans)."""
    sweep_scratch()
    root = scratch_root()
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))


def sweep_scratch() -> list[Path]:
    """Remove the scratch folders whose owning process has ended; returns them."""
    gone = []
    root = scratch_root()
    for folder in root.glob("*-*") if root.is_dir() else ():
        pid = folder.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            gone.append(folder)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, not ours to judge
        return True
    return True
