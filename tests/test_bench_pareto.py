"""bench pareto: its figures from the run outputs (a fake run stands in for two searches)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from vpr_tune.bench.pareto import PARETO_SIZE, bench_pareto, pareto_space
from vpr_tune.config import space_from_dict

# trial: (R@1, descriptor_dim); MO-ASHA stops t1 (dominated by t0) and t3 (by t2) at epoch 1
TRIALS = {"t0": (60.0, 256), "t1": (40.0, 256), "t2": (30.0, 16), "t3": (20.0, 128)}


def fake_run(space_path: Path, name: str, storage: str, **_kw) -> Path:
    space = yaml.safe_load(Path(space_path).read_text())
    moasha = space["search"]["scheduler"] == "asha"
    max_epochs = space["budget"]["max_epochs"]
    rows = []
    for i, (tid, (r1, dim)) in enumerate(TRIALS.items()):
        stopped = moasha and tid in ("t1", "t3")
        epochs = 1 if stopped else max_epochs
        # a stopped trial's recall is what it reached by epoch 1 (a bit lower)
        rows.append({"trial_id": tid, "status": "STOPPED_EARLY" if stopped else "TERMINATED",
                     "optimizer.lr": 1e-3 * (i + 1), "best_val/R@1": r1 - 5 * stopped,
                     "model.aggregator.name": "gem" if dim == 256 else "cosplace",
                     "model.aggregator.dim": None if dim == 256 else dim,
                     "descriptor_dim": dim, "epochs": epochs, "time_s": 1.0})
    folder = Path(storage) / name
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "trials.csv", index=False)
    pd.DataFrame(columns=["trial_id", "epoch"]).to_csv(folder / "metrics.csv", index=False)
    return folder


def test_pareto_space_is_valid_and_multi_objective() -> None:
    for sched in ("asha", "fifo"):
        space = space_from_dict(pareto_space(False, sched, *PARETO_SIZE), "bench.yaml")
        assert [o["metric"] for o in space.base["search"]["objectives"]] == [
            "val/R@1", "descriptor_dim"]
        assert space.base["search"]["algorithm"] == "random"


def test_figures_from_the_run_outputs(monkeypatch) -> None:
    import vpr_tune.tune

    monkeypatch.setattr(vpr_tune.tune, "run_experiment", fake_run)
    result = bench_pareto(quick=True, log=lambda _m: None)
    # FIFO: 4 x 3 epochs; MO-ASHA: 3 + 1 + 3 + 1
    assert (result["moasha_trial_epochs"], result["fifo_trial_epochs"]) == (8, 12)
    assert result["ratio"] == pytest.approx(8 / 12, abs=1e-4)
    # both fronts are {t0, t2}: the stopped trials were dominated; one reference point
    # from both runs (R@1 15..60 and dims 16..256, 10 % of the range further out)
    assert result["front_fifo"] == result["front_moasha"] == [[30.0, 16.0], [60.0, 256.0]]
    assert result["reference_point"] == [pytest.approx(10.5), pytest.approx(280.0)]
    assert result["hypervolume_ratio"] == 1.0
    assert result["hypervolume_fifo"] == pytest.approx(49.5 * 24 + 19.5 * 240)
    assert result["same_configs"] is True
    assert result["passed"] is False  # 0.67 trial-epochs is above the 0.5 bar
