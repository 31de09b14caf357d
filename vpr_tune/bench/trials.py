"""``trials``: what the search driver costs per trial, in time and in memory.

A FIFO search of 100 very short trials (2 batches of 4 x 2 images at 32 px on street-world
``tiny``, one epoch), 2 at a time on 1 CPU each, run as ``vpr-tune run`` does. Figures:

- driver overhead per trial = (wall x concurrency - sum of trial times) / trials: everything
  that is not a trial running (Ray start, actor start-up, scheduling, gaps, table writes);
- driver RSS growth per trial: the driver's resident memory at the first trial end and at
  the last, divided by the trials in between (Ray users report linear growth);
- the cost of each rewrite of trials.csv / metrics.csv against the number of trials in it
  (it must not grow quadratically: a write at every trial end of O(trials) file reads would).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vpr_tune.bench.common import Bar, record
from vpr_tune.bench.search import _run, _space

RSS_BAR_MB = 0.5  # driver RSS growth per trial
TRIALS_BAR = Bar(0.5, higher=False, figure=(  # seconds of driver overhead per trial
    "driver overhead per trial, s: (wall x concurrency - sum trial time) / trials; "
    f"driver RSS growth <= {RSS_BAR_MB} MB/trial"))
SIZE = (100, 1, 2)  # trials, epochs, batches per epoch
QUICK = (6, 1, 1)
DONE = re.compile(r"trials (\d+)/(\d+) done")


@contextlib.contextmanager
def _timed_table_writes() -> Iterator[list[tuple[int, float]]]:
    """(trials in the table, seconds) of every trials.csv/metrics.csv write during the block."""
    import vpr_tune.tune.results as results

    writes: list[tuple[int, float]] = []
    original = results.write_tables

    def timed(exp_dir: Any, trials: list, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        frame = original(exp_dir, trials, *args, **kwargs)
        writes.append((len(trials), time.perf_counter() - start))
        return frame

    results.write_tables = timed
    try:
        yield writes
    finally:
        results.write_tables = original


def bench_trials(quick: bool = False, log: Any = print) -> dict[str, Any]:
    """Driver overhead and driver memory growth per trial over a search of short trials."""
    import numpy as np
    import psutil

    samples, epochs, batches = QUICK if quick else SIZE
    space = _space(True, "fifo", samples, epochs, batches)  # tiny data, 32 px, 4 x 2 images
    space["budget"]["eval_batch_size"] = 64
    me = psutil.Process()
    rss: list[tuple[int, int]] = []  # (trials done, driver RSS bytes) at each trial end

    def watch(msg: str) -> None:
        m = DONE.search(str(msg))
        if m:
            rss.append((int(m.group(1)), me.memory_info().rss))
        if not m or int(m.group(1)) % 10 == 0 or int(m.group(1)) == samples:
            log(msg)

    cpu0 = time.process_time()
    with tempfile.TemporaryDirectory(prefix="vpr-bench-") as tmp, _timed_table_writes() as writes:
        wall, trials, _ = _run(space, "trials", Path(tmp), watch)
    driver_cpu = time.process_time() - cpu0
    concurrency = int(space["search"]["max_concurrent"])
    busy = float(trials["time_s"].sum())
    overhead = (wall * concurrency - busy) / samples
    ends = [r for r in rss if r[0] >= 1]
    first, last = ends[0], ends[-1]
    growth_mb = (last[1] - first[1]) / max(1, last[0] - first[0]) / 2**20
    # Cost of a table write against the trials it holds: slope (s per trial in the table)
    # of a least-squares line; quadratic total cost would show as a slope that matters.
    n, secs = np.array([w[0] for w in writes], float), np.array([w[1] for w in writes])
    slope = float(np.polyfit(n, secs, 1)[0]) if len(set(n)) > 1 else 0.0
    result = record("trials", overhead, TRIALS_BAR, quick, trials=samples,
                    concurrency=concurrency, wall_s=round(wall, 2), trial_time_s=round(busy, 2),
                    mean_trial_s=round(busy / samples, 3),
                    driver_rss_growth_mb_per_trial=round(growth_mb, 4),
                    rss_bar_mb=RSS_BAR_MB, driver_rss_mb=[round(r[1] / 2**20, 1) for r in rss],
                    driver_cpu_s_per_trial=round(driver_cpu / samples, 4),
                    table_writes=len(writes),
                    table_write_s_first_last=[round(float(secs[0]), 4), round(float(secs[-1]), 4)]
                    if len(secs) else [], table_write_s_total=round(float(secs.sum()), 3),
                    table_write_s_per_trial_in_table=round(slope, 6),
                    epochs=epochs, batches_per_epoch=batches,
                    image_size=space["data"]["image_size"][0])
    result["passed"] = bool(result["passed"] and growth_mb <= RSS_BAR_MB)
    return result
