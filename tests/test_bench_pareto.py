"""bench pareto: its figures from the run outputs (a fake run stands in for two searches)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from vpr_tune.bench.pareto import PARETO_SIZE, bench_pareto, pareto_space
from vpr_tune.config import space_from_dict

# trial: (R@1, descriptor_dim); a seed shifts the recalls and the configs
TRIALS = {"t0": (60.0, 256), "t1": (40.0, 256), "t2": (30.0, 16), "t3": (20.0, 128),
          "t4": (10.0, 16), "t5": (35.0, 64)}


def fake_run(space_path: Path, name: str, storage: str, **_kw) -> Path:
    """space.yaml, trials.csv, metrics.csv and epochs.jsonl as `vpr-tune run` writes them;
    MO-ASHA (the scheduler a search builds) stops trials run one after another."""
    import json

    from vpr_tune.tune.searchers import rung_objectives, rung_scheduler

    space = yaml.safe_load(Path(space_path).read_text())
    seed, max_epochs = space.get("seed", 0), space["budget"]["max_epochs"]
    scheduler = None
    if space["search"]["scheduler"] == "asha":
        asha = space["asha"]
        scheduler = rung_scheduler(rung_objectives(space["search"], asha.get("metric")),
                                   max_epochs, asha["grace_period"], asha["reduction_factor"])
    rows, curves = [], []
    for i, (tid, (r1, dim)) in enumerate(TRIALS.items()):
        trial = type("T", (), {"trial_id": tid})()
        if scheduler is not None:
            scheduler.on_trial_add(None, trial)
        for e in range(1, max_epochs + 1):
            r1_now = r1 + 3 * seed - (max_epochs - e)
            row = {"trial_id": tid, "epoch": e, "training_iteration": e, "val/R@1": r1_now,
                   "val/R@mean": r1_now + 10, "descriptor_dim": dim}
            curves.append(row)
            if scheduler is not None and scheduler.on_trial_result(None, trial, row) == "STOP":
                break
        rows.append({"trial_id": tid, "status": "TERMINATED",
                     "optimizer.lr": 1e-3 * (i + 1) * (seed + 1),
                     "best_val/R@1": row["val/R@1"],
                     "model.aggregator.name": "gem" if dim == 256 else "cosplace",
                     "model.aggregator.dim": None if dim == 256 else dim,
                     "descriptor_dim": dim, "epochs": e, "time_s": 1.0})
    folder = Path(storage) / name
    folder.mkdir(parents=True)
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    pd.DataFrame(rows).to_csv(folder / "trials.csv", index=False)
    pd.DataFrame(curves).drop(columns="training_iteration").to_csv(folder / "metrics.csv",
                                                                   index=False)
    (folder / "epochs.jsonl").write_text("".join(
        json.dumps({k: v for k, v in r.items() if k != "training_iteration"}) + "\n"
        for r in curves))
    return folder


def test_pareto_space_is_valid_and_multi_objective() -> None:
    for sched in ("asha", "fifo"):
        space = space_from_dict(pareto_space(False, sched, *PARETO_SIZE), "bench.yaml")
        assert [o["metric"] for o in space.base["search"]["objectives"]] == [
            "val/R@1", "descriptor_dim"]
        assert space.base["search"]["algorithm"] == "random"


def test_figures_from_replays_of_the_run_outputs(monkeypatch) -> None:
    import vpr_tune.bench.pareto as mod
    import vpr_tune.tune

    monkeypatch.setattr(vpr_tune.tune, "run_experiment", fake_run)
    monkeypatch.setattr(mod, "PARETO_ORDERS_QUICK", 20)
    result = bench_pareto(quick=True, log=lambda _m: None)
    assert result["fifo_trial_epochs"] == {"0": 18, "1": 18}  # 6 trials x 3 epochs
    assert result["orders"] == 40 and len(result["replay_hypervolumes"]) == 40
    assert result["ratio"] == pytest.approx(float(np.median(result["replay_ratios"])),
                                            abs=1e-4)
    assert 0 < result["ratio_p10"] <= result["ratio"] <= result["ratio_p90"] < 1
    hv = np.array(result["replay_hypervolumes"])
    assert (hv <= 1 + 1e-9).all()  # a subset of FIFO's trials never adds volume
    assert result["p_hypervolume_ok"] == pytest.approx(float((hv >= 0.98).mean()), abs=1e-4)
    real = result["real_moasha"]
    assert result["replay_matches_real"] is True and min(real["epochs_real"]) == 1
    assert real["epochs_real"] == real["epochs_replayed"]
    assert result["same_configs"] is True
    kept = result["p_hypervolume_ok"] >= 0.9
    assert result["passed"] is bool(result["ratio"] <= 0.5 and kept)
