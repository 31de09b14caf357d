"""``run --estimate`` against the real search it projects: both as a user runs them.

The estimate times this machine as it is (its load included) and the search runs right
after it, so the ratio should hold on any machine, busy or idle; what it cannot follow is
a load that changes between the two. Each case is a tiny space (street-world ``tiny``,
32 px), so most of the time is start-up (Ray, each worker's imports, building the trainer)
and, for PBT, the restarts of the exploiting trials: the parts the estimate models besides
the epochs.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers import CliRun, write_space

SPACES = {
    # 4 trials, 2 at a time on 1 CPU each, ASHA cutting at epoch 1 of 3
    "asha": dict(budget={"max_epochs": 3, "batches_per_epoch": 4},
                 search={"algorithm": "random", "num_samples": 4, "max_concurrent": 2,
                         "scheduler": "asha"},
                 asha={"grace_period": 1, "reduction_factor": 2}),
    # a population of 4 on half a CPU each, all at once; perturbations every epoch
    "pbt": dict(budget={"max_epochs": 4, "batches_per_epoch": 4},
                search={"algorithm": "random", "num_samples": 4, "max_concurrent": 4,
                        "scheduler": "pbt"},
                pbt={"perturbation_interval": 1, "quantile_fraction": 0.5,
                     "resample_probability": 0.25, "mutate": ["optimizer.lr"]},
                resources={"cpu": 0.5, "gpu": 0, "precision": "fp32"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", list(SPACES))
def test_real_search_takes_within_1_5x_of_the_estimate(tmp_path, street_world_tiny,
                                                       scheduler) -> None:
    space = write_space(tmp_path / f"{scheduler}.yaml", **SPACES[scheduler])
    data = ["--data", str(street_world_tiny)]
    with CliRun(["run", space, "--estimate", "--json", *data], tmp_path / "estimate.log") as run:
        assert run.wait(900) == 0, run.output()[-3000:]
    out = run.output()
    # progress lines (stderr), then the object (stdout, indented: "{" alone on its line)
    estimate, _ = json.JSONDecoder().raw_decode(out[out.index("\n{\n") + 1:])
    assert not (tmp_path / "results").exists()
    start = time.perf_counter()
    with CliRun(["run", space, "--name", scheduler, "--storage", tmp_path / "res", *data],
                tmp_path / "run.log") as run:
        assert run.wait(1800) == 0, run.output()[-3000:]
    real = time.perf_counter() - start
    ratio = real / estimate["wall_s"]
    detail = (f"{scheduler}: real {real:.0f}s, projected {estimate['wall_s']:.0f}s "
              f"(ratio {ratio:.2f}); estimate {json.dumps(estimate, default=str)[:1500]}")
    print(detail)
    assert 1 / 1.5 <= ratio <= 1.5, detail
