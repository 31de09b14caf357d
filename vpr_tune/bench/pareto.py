"""``pareto``: multi-objective ASHA against FIFO on the same sampled configs and seeds.

Random search with a fixed seed (so both runs train the same configs; checked) over the
learning rate and the descriptor size (GeM 256-d, or GeM + FC to 16, 64 or 128), on
street-world ``bench``; run once with FIFO and once with ``scheduler: asha``, which with
``search.objectives`` is multi-objective ASHA. Figure: trial-epochs MO-ASHA / FIFO, valid
only when MO-ASHA's front keeps at least 0.98 of FIFO's hypervolume (one reference point
for both: the worst finished value of each objective over both runs, 10 % further out).

The objectives are val R@1 and descriptor size. Query time stays out of this benchmark:
measured on a shared 2-core machine it varies between the two runs by more than the models
differ, so a hypervolume with it would measure the machine's load, not the scheduler.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from vpr_tune.bench.common import Bar, record
from vpr_tune.bench.search import _params, _run, _space

HYPERVOLUME_BAR = 0.98
PARETO_BAR = Bar(0.5, higher=False, figure="trial-epochs MO-ASHA / FIFO (hypervolume >= "
                 f"{HYPERVOLUME_BAR} of FIFO's)")
OBJECTIVES = [{"metric": "val/R@1", "mode": "max"}, {"metric": "descriptor_dim", "mode": "min"}]
# 12 trials of up to 9 epochs of 30 batches; rungs at epochs 1 and 3 (reduction factor 3).
# The first rung comes after 30 batches, as in `asha`: the shortest run where a random-init
# network on street-world has started to learn. With 15-batch epochs the first rung judged
# noise and stopped ends of the front (docs/performance.md has both measurements).
PARETO_ASHA = {"grace_period": 1, "reduction_factor": 3}
PARETO_SIZE = (12, 9, 30)  # trials, max epochs, batches per epoch
PARETO_QUICK = (3, 3, 1)


def pareto_space(quick: bool, scheduler: str, samples: int, epochs: int, batches: int) -> dict:
    """The search benchmarks' street-world space with descriptor sizes and two objectives."""
    space = _space(quick, scheduler, samples, epochs, batches, "bench")
    space["model"]["aggregator"] = {"name": {"choice": ["gem", "cosplace"]},
                                    "dim": {"choice": [16, 64, 128], "when": {"name": "cosplace"}}}
    space["optimizer"]["lr"] = {"loguniform": [3.0e-4, 1.0e-2]}
    search = space["search"]
    del search["metric"], search["mode"]
    search["objectives"] = [dict(o) for o in OBJECTIVES]
    space["asha"] = dict(PARETO_ASHA)
    return space


def bench_pareto(quick: bool = False, log: Any = print) -> dict[str, Any]:
    """Trial-epochs MO-ASHA / FIFO and the hypervolume ratio of their fronts."""
    from vpr_tune import metrics
    from vpr_tune.tune.pareto import front_hypervolume, pareto_flags, reference_point

    samples, epochs, batches = PARETO_QUICK if quick else PARETO_SIZE
    spaces = {sched: pareto_space(quick, sched, samples, epochs, batches)
              for sched in ("asha", "fifo")}
    with tempfile.TemporaryDirectory(prefix="vpr-bench-") as tmp:
        runs = {sched: _run(space, f"pareto-{sched}", Path(tmp), log)
                for sched, space in spaces.items()}
    (mo_wall, mo, _), (fifo_wall, fifo, _) = runs["asha"], runs["fifo"]
    columns = [(metrics.objective_column(o["metric"]), o["mode"]) for o in OBJECTIVES]
    reference = reference_point([mo, fifo], columns)
    hv_mo = front_hypervolume(mo, columns, reference)
    hv_fifo = front_hypervolume(fifo, columns, reference)
    hv_ratio = hv_mo / hv_fifo if hv_fifo > 0 else math.nan
    mo_epochs, fifo_epochs = int(mo["epochs"].sum()), int(fifo["epochs"].sum())
    ratio = mo_epochs / fifo_epochs if fifo_epochs else math.inf
    same_configs = _params(mo) == _params(fifo)
    kept = bool(hv_ratio >= HYPERVOLUME_BAR)

    def front(frame: Any) -> list[list[float]]:
        rows = frame[pareto_flags(frame, columns)]
        return sorted([float(v) for v in r] for r in rows[[c for c, _ in columns]].values)

    result = record(
        "pareto", ratio, PARETO_BAR, quick, hypervolume_ratio=round(hv_ratio, 4),
        hypervolume_moasha=hv_mo, hypervolume_fifo=hv_fifo, reference_point=reference,
        objectives=OBJECTIVES, moasha_trial_epochs=mo_epochs, fifo_trial_epochs=fifo_epochs,
        trials=samples, max_epochs=epochs, batches_per_epoch=batches,
        grace_period=PARETO_ASHA["grace_period"],
        reduction_factor=PARETO_ASHA["reduction_factor"], same_configs=same_configs,
        front_moasha=front(mo), front_fifo=front(fifo),
        moasha_epochs_per_trial=[int(e) for e in mo["epochs"]],
        moasha_wall_s=round(mo_wall, 2), fifo_wall_s=round(fifo_wall, 2))
    # The budget saving only counts when the front is (nearly) as good as FIFO's.
    result["passed"] = bool(result["passed"] and kept and same_configs)
    return result
