"""``pareto``: multi-objective ASHA against FIFO, replayed over many arrival orders.

Random search over the learning rate and the descriptor size (GeM 256-d, or GeM + FC to 16,
64 or 128), on street-world ``bench``, objectives val R@1 and descriptor size. FIFO searches
with each of ``PARETO_SEEDS`` (``seed`` and ``search.seed``) record every trial's curve;
MO-ASHA (``scheduler: asha`` with ``search.objectives``; grace 1, factor 3: rungs at epochs
1, 3 and 9) is replayed on each over ``PARETO_ORDERS`` random arrival orders
(``replay.outcomes``). Figure: the median over all orders of trial-epochs MO-ASHA / FIFO,
passing at <= 0.5 when the kept front's hypervolume is >= 0.98 of FIFO's in >= 90 % of the
orders (``p_hypervolume_ok``; one reference point per pilot, FIFO's worst finished value of
each objective 10 % of its range further out). One real MO-ASHA run (seed 0, two trials at
a time) proves the replay: its own arrivals (``epochs.jsonl``) fed to ``replay_arrivals``
must stop every trial where it stopped (``replay_matches_real``), and it must sample the
configs of the FIFO run of its seed.

Sizes: 12 trials x 9 epochs x 30 batches per seed: the first rung after 30 batches, the
shortest run where a random-init network on street-world has started to learn (with
15-batch epochs the first rung judged noise; docs/performance.md). Two FIFO pilots cost
~11 min of the 45-minute ``bench all`` on 2 cores, the real MO-ASHA run ~2 min; 12 trials
(not fewer) because a two-objective front needs trials at several descriptor sizes.

Query time stays out of the objectives: measured on a shared 2-core machine it varies
between two runs by more than the models differ, so a hypervolume with it would measure
the machine's load, not the scheduler.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from vpr_tune.bench.common import Bar, record
from vpr_tune.bench.search import P_KEPT, _params, _run, _space, replay_check, replayed
from vpr_tune.config import DEFAULTS
from vpr_tune.replay import HYPERVOLUME_OK

PARETO_BAR = Bar(0.5, higher=False, figure=(
    "median over replayed arrival orders of trial-epochs MO-ASHA / FIFO (hypervolume >= "
    f"{HYPERVOLUME_OK} of FIFO's in >= {P_KEPT:.0%} of orders)"))
OBJECTIVES = [{"metric": "val/R@1", "mode": "max"}, {"metric": "descriptor_dim", "mode": "min"}]
PARETO_ASHA = {"grace_period": 1, "reduction_factor": 3}
PARETO_SIZE = (12, 9, 30)  # trials, max epochs, batches per epoch
PARETO_QUICK = (3, 3, 1)
PARETO_SEEDS = (0, 1)
PARETO_ORDERS = 200  # per seed
PARETO_ORDERS_QUICK = 5


def pareto_space(quick: bool, scheduler: str, samples: int, epochs: int, batches: int,
                 seed: int = 0) -> dict:
    """The search benchmarks' street-world space with descriptor sizes and two objectives."""
    space = _space(quick, scheduler, samples, epochs, batches, "bench", seed)
    space["model"]["aggregator"] = {"name": {"choice": ["gem", "cosplace"]},
                                    "dim": {"choice": [16, 64, 128], "when": {"name": "cosplace"}}}
    space["optimizer"]["lr"] = {"loguniform": [3.0e-4, 1.0e-2]}
    search = space["search"]
    del search["metric"], search["mode"]
    search["objectives"] = [dict(o) for o in OBJECTIVES]
    space["asha"] = {**PARETO_ASHA, "metric": DEFAULTS["asha"]["metric"]}  # what replays read
    return space


def bench_pareto(quick: bool = False, log: Any = print) -> dict[str, Any]:
    """MO-ASHA's trial-epochs / FIFO's and how often its front keeps FIFO's hypervolume,
    replayed over arrival orders on FIFO curves of several seeds; one real run checks it."""
    samples, epochs, batches = PARETO_QUICK if quick else PARETO_SIZE
    orders = PARETO_ORDERS_QUICK if quick else PARETO_ORDERS
    fifo_spaces = {seed: pareto_space(quick, "fifo", samples, epochs, batches, seed)
                   for seed in PARETO_SEEDS}
    real_space = pareto_space(quick, "asha", samples, epochs, batches, PARETO_SEEDS[0])
    asha = dict(real_space["asha"])  # the real run's settings and rung metric
    with tempfile.TemporaryDirectory(prefix="vpr-bench-") as tmp:
        fifo = {seed: _run(space, f"pareto-fifo-seed{seed}", Path(tmp), log)
                for seed, space in fifo_spaces.items()}
        real_wall, real, _ = _run(real_space, "pareto-moasha", Path(tmp), log)
        runs, summary = replayed({seed: Path(tmp) / f"pareto-fifo-seed{seed}" for seed in fifo},
                                 "moasha", asha, orders)
        check = replay_check(Path(tmp) / "pareto-moasha", "moasha", asha)
    fifo0 = fifo[PARETO_SEEDS[0]][1]
    same_configs = _params(real) == _params(fifo0)
    real_epochs, fifo0_epochs = int(real["epochs"].sum()), int(fifo0["epochs"].sum())
    kept = summary["p_hypervolume_ok"] >= P_KEPT
    result = record(
        "pareto", summary["ratio_median"], PARETO_BAR, quick,
        ratio_p10=summary["ratio_p10"], ratio_p90=summary["ratio_p90"],
        p_hypervolume_ok=summary["p_hypervolume_ok"], hypervolume_ok=HYPERVOLUME_OK,
        p_hypervolume_ok_bar=P_KEPT, hypervolume_median=summary["hypervolume_median"],
        hypervolume_p10=summary["hypervolume_p10"], p_best_kept=summary["p_best_kept"],
        orders=summary["orders"], orders_per_seed=orders, seeds=list(PARETO_SEEDS),
        per_seed=summary["per_seed"], objectives=OBJECTIVES, trials=samples,
        max_epochs=epochs, batches_per_epoch=batches,
        grace_period=PARETO_ASHA["grace_period"],
        reduction_factor=PARETO_ASHA["reduction_factor"], asha_metric=asha.get("metric"),
        fifo_trial_epochs={str(s): int(f[1]["epochs"].sum()) for s, f in fifo.items()},
        fifo_wall_s={str(s): round(f[0], 2) for s, f in fifo.items()},
        replay_matches_real=check["matches"], real_moasha={
            "seed": PARETO_SEEDS[0], "max_concurrent": real_space["search"]["max_concurrent"],
            "trial_epochs": real_epochs,
            "ratio": round(real_epochs / fifo0_epochs, 4) if fifo0_epochs else None,
            "wall_s": round(real_wall, 2), **check},
        same_configs=same_configs,
        replay_ratios=[round(float(r), 4) for r in runs["ratio"]],
        replay_hypervolumes=[round(float(h), 4) for h in runs["hypervolume"]])
    # The saving only counts when the front is (nearly) always as good as FIFO's and the
    # replay is the scheduler a real run uses.
    result["passed"] = bool(result["passed"] and kept and check["matches"] and same_configs)
    return result
