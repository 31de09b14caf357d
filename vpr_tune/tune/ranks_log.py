"""Keeps each trial's per-query val ranks: ``<experiment>/ranks/<trial_id>.npz``.

A trial reports its ranks every epoch (``metrics.RANKS``, text); this callback, on the
driver, stores them by epoch, atomically, so every interval and paired comparison later
(``best``, ``compare``, the report) is computed from them without a second forward pass.
One byte a query a trial-epoch: 8 KB for SF-XS val's ~8k queries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vpr_tune.metrics import RANKS
from vpr_tune.uncertainty import decode, load_ranks, ranks_path, save_ranks


def ranks_callback(exp_dir: Path) -> Any:
    """A Ray Tune callback writing the ranks each result carries (a resumed search adds
    to what the file holds)."""
    from ray.tune import Callback

    class RanksLog(Callback):
        def __init__(self) -> None:
            self.by_trial: dict[str, dict[int, Any]] = {}

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            text = result.get(RANKS)
            if not isinstance(text, str) or "epoch" not in result:
                return
            path = ranks_path(exp_dir, trial.trial_id)
            if trial.trial_id not in self.by_trial:
                self.by_trial[trial.trial_id] = load_ranks(path)
            by_epoch = self.by_trial[trial.trial_id]
            by_epoch[int(result["epoch"])] = decode(text)
            save_ranks(path, by_epoch)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                              **info: Any) -> None:
            self.by_trial.pop(trial.trial_id, None)  # on disk; keep the driver's memory flat

        on_trial_error = on_trial_complete

    return RanksLog()
