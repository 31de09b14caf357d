"""``run --estimate``: trial-epochs under FIFO and ASHA, the projection, and a real tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import write_space
from vpr_tune.config import DEFAULTS, space_from_dict
from vpr_tune.rungs import GRACE_PERIOD, REDUCTION_FACTOR, milestones, rung_epochs
from vpr_tune.tune.estimate_model import project, trial_epochs
from vpr_tune.tune.estimate_timing import extreme_config


def test_asha_rungs_match_ray() -> None:
    from ray.tune.schedulers.async_hyperband import _Bracket

    for grace, rf, max_t in [(1, 3, 4), (2, 3, 10), (1, 2, 8), (2, 4, 10), (1, 3, 9)]:
        ray_rungs = sorted(m for m, _ in _Bracket(grace, max_t, rf, 0)._rungs)
        assert milestones(grace, rf, max_t) == ray_rungs
    assert milestones(1, 3, 4) == [1, 3]  # the demo: cut after 1 or 3 of 4 epochs
    assert rung_epochs(1, 3, 9) == [1, 3]  # epochs below max_t where trials are cut
    assert milestones(5, 3, 4) == [] and rung_epochs(1, 1, 9) == []


def test_asha_defaults_are_the_configs() -> None:
    asha = DEFAULTS["asha"]  # (and asha.metric, the rungs' metric: not the estimate's)
    assert (asha["grace_period"], asha["reduction_factor"]) == (GRACE_PERIOD, REDUCTION_FACTOR)


def test_fifo_trial_epochs_is_trials_times_epochs() -> None:
    got = trial_epochs(10, 7, "fifo", grace_period=1, reduction_factor=3)
    assert got["trial_epochs"] == got["fifo"] == 70
    assert got["rungs"] == []


def test_asha_trial_epochs_by_hand() -> None:
    # one trial: nothing recorded at any rung, it always runs to max_t
    assert trial_epochs(1, 10, "asha", 2, 3)["trial_epochs"] == 10
    # two trials, rungs at 1 and 3 of 4: the first runs all 4 epochs; the second passes
    # epoch 1 when it beats the first (half the time) and then also passes epoch 3
    got = trial_epochs(2, 4, "asha", 1, 3, runs=2000)
    assert got["trial_epochs"] == pytest.approx(4 + 1 + 0.5 * 3, abs=0.15)
    assert [r["epoch"] for r in got["rungs"]] == [1, 3, 4]
    # many trials: each rung keeps about 1/rf of its arrivals
    n = 3000
    got = trial_epochs(n, 10, "asha", 2, 3, runs=5)["trial_epochs"]
    assert got == pytest.approx(n * (2 + (6 - 2) / 3 + (10 - 6) / 9), rel=0.03)
    assert got < trial_epochs(n, 10, "fifo")["trial_epochs"]


def test_asha_trial_epochs_agree_with_rays_bracket_on_random_results() -> None:
    """Ray's own async bracket, trials one after another, each keeping its rank."""
    from ray.tune.schedulers.async_hyperband import _Bracket

    class T:
        def __init__(self, i: int) -> None:
            self.trial_id = str(i)

    rng = np.random.default_rng(0)
    for n, grace, rf, max_t in [(12, 1, 3, 4), (24, 2, 3, 10), (30, 1, 2, 8)]:
        totals = []
        for _ in range(400):
            bracket, total = _Bracket(grace, max_t, rf, 0), 0
            for i in range(n):
                quality = rng.random()
                for epoch in range(1, max_t + 1):
                    total += 1
                    if bracket.on_result(T(i), epoch, quality + 0.01 * epoch) == "STOP":
                        break
            totals.append(total)
        assert trial_epochs(n, max_t, "asha", grace, rf)["trial_epochs"] == pytest.approx(
            np.mean(totals), rel=0.05), (n, grace, rf, max_t)


def test_project_on_fake_timings() -> None:
    got = project(trial_epochs=20, trials=10, epoch_s=6.0, trial_start_s=3.0, ray_start_s=5.0,
                  concurrency=2, gpus_per_trial=0.5, max_epochs=4)
    assert got["trial_s"] == 20 * 6 + 10 * 3
    assert got["wall_s"] == 5 + 150 / 2
    assert got["gpu_hours"] == pytest.approx(150 * 0.5 / 3600)
    # more slots than work: the longest trial bounds the wall time
    one = project(trial_epochs=4, trials=1, epoch_s=6.0, trial_start_s=3.0, ray_start_s=5.0,
                  concurrency=8, gpus_per_trial=1, max_epochs=4)
    assert one["wall_s"] == 5 + 3 + 4 * 6


def test_extreme_configs_pick_cost_ends_and_respect_conditions() -> None:
    space = space_from_dict({
        "data": {"image_size": {"choice": [[64, 64], [32, 32]]}},
        "model": {"aggregator": {"name": {"grid": ["netvlad", "avg", "gem"]},
                                 "clusters": {"grid": [8, 16], "when": {"name": "netvlad"}}}},
        "budget": {"places_per_batch": {"int": [4, 8]}},
        "optimizer": {"lr": {"loguniform": [1e-4, 1e-2]}},
        "search": {"algorithm": "grid"},
    })
    small, chosen_small = extreme_config(space, largest=False)
    large, chosen_large = extreme_config(space, largest=True)
    assert small["data"]["image_size"] == [32, 32] and large["data"]["image_size"] == [64, 64]
    assert small["model"]["aggregator"] == {"name": "avg"}
    assert large["model"]["aggregator"] == {"name": "netvlad", "clusters": 16}
    assert (small["budget"]["places_per_batch"], large["budget"]["places_per_batch"]) == (4, 8)
    assert "optimizer.lr" not in chosen_small and "optimizer.lr" not in chosen_large
    assert 1e-4 <= small["optimizer"]["lr"] <= 1e-2


def test_estimate_on_a_tiny_space_writes_nothing(tmp_path, monkeypatch, capsys,
                                                 street_world_tiny) -> None:
    from vpr_tune.cli import main

    space = write_space(tmp_path / "tiny.yaml", search={"scheduler": "asha"})
    monkeypatch.chdir(tmp_path)
    rc = main(["run", str(space), "--estimate", "--json", "--data", str(street_world_tiny)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert not (tmp_path / "results").exists()
    expected = trial_epochs(3, 2, "asha", 1, 2)["trial_epochs"]
    assert out["trial_epochs"] == pytest.approx(expected)
    assert out["fifo_trial_epochs"] == 6
    assert out["gpu_hours"] == 0 and out["device"] == "cpu"
    assert out["wall_s"] > out["ray_start_s"] > 0
    (timed,) = out["configs"]  # nothing cost-relevant varies: one configuration timed
    assert timed["batch_s"] > 0 and timed["val_s"] > 0
    assert out["epoch_s"] == pytest.approx(2 * timed["batch_s"] + timed["val_s"]
                                           + timed["checkpoint_s"])


def test_json_needs_estimate(tmp_path) -> None:
    from vpr_tune.cli import main

    space = write_space(tmp_path / "tiny.yaml")
    assert main(["run", str(space), "--json"]) == 2


def test_ray_that_cannot_start_is_one_user_error(tmp_path, monkeypatch, street_world_tiny):
    from vpr_tune.config import load_space
    from vpr_tune.errors import UserError
    from vpr_tune.tune import ray_session
    from vpr_tune.tune.estimate import estimate_search

    def boom(*_a, **_k):
        raise Exception("The current node timed out during startup.")

    monkeypatch.setattr(ray_session, "init_ray", boom)
    space = load_space(write_space(tmp_path / "s.yaml"))
    with pytest.raises(UserError, match="could not start Ray here .*timed out"):
        estimate_search(space, street_world_tiny, log=lambda _m: None)


# ------------------------------------------------------------------ MO-ASHA and PBT
def test_moasha_trial_epochs_agree_with_the_real_scheduler_on_random_results() -> None:
    """MO-ASHA driven directly, trials one after another with random objective vectors;
    several objectives keep far more trials than ASHA's 1/rf."""
    from vpr_tune.tune.moasha import MultiObjectiveASHA

    class T:
        def __init__(self, i: int) -> None:
            self.trial_id = str(i)

    rng = np.random.default_rng(1)
    for n, k, grace, rf, max_t in [(12, 3, 1, 3, 4), (12, 2, 1, 3, 9)]:
        totals = []
        for _ in range(100):
            names = [f"m{j}" for j in range(k)]
            s = MultiObjectiveASHA([(m, "max") for m in names], max_t=max_t,
                                   grace_period=grace, reduction_factor=rf)
            total = 0
            for i in range(n):
                s.on_trial_add(None, T(i))
                values = dict(zip(names, rng.random(k), strict=True))
                for epoch in range(1, max_t + 1):
                    total += 1
                    r = {"epoch": epoch, **values}
                    if epoch == max_t or s.on_trial_result(None, T(i), r) == "STOP":
                        s.on_trial_complete(None, T(i), r)
                        break
            totals.append(total)
        got = trial_epochs(n, max_t, "asha", grace, rf, objectives=k)
        assert got["trial_epochs"] == pytest.approx(np.mean(totals), rel=0.07), (n, k)
        one = trial_epochs(n, max_t, "asha", grace, rf)
        assert got["trial_epochs"] > one["trial_epochs"] * 1.1
        assert got["rungs"][-1]["reach"] > one["rungs"][-1]["reach"] + 0.5
    # pareto_demo: 12 trials, 3 objectives, rungs 1 and 3 of 4; ASHA's 26.3 was the estimate
    demo = trial_epochs(12, 4, "asha", 1, 3, objectives=3)
    assert 30 < demo["trial_epochs"] < 36 and demo["rungs"][-1]["reach"] > 6


def test_one_objective_through_the_rung_scheduler_is_asha() -> None:
    from vpr_tune.tune.estimate_model import _rung_reach

    rng = np.random.default_rng(0)
    sims = [sum(_rung_reach(12, 1, 4, 1, 3, rng)) for _ in range(200)]
    assert np.mean(sims) == pytest.approx(trial_epochs(12, 4, "asha", 1, 3)["trial_epochs"],
                                          rel=0.05)


def test_pbt_rounds_exploits_and_restarts() -> None:
    from vpr_tune.tune.estimate_model import pbt_restarts

    # synchronous: each round the bottom ceil(n q) (at most n/2) clone, every trial pauses
    got = pbt_restarts(4, 8, 2, 0.5, synch=True, concurrency=4)
    assert got == {"rounds": 4, "exploits": 8.0, "restarts": 16.0}
    assert pbt_restarts(8, 8, 2, 0.25, synch=True, concurrency=8)["exploits"] == 4 * 2
    # asynchronous, the whole population at once: only the exploiting trials restart; fewer
    # than synchronous (the first trials of a round rank against few, a source that was not
    # in the top at its own report has no checkpoint); pbt_demo made 5 exploits in 4 rounds
    got = pbt_restarts(4, 8, 2, 0.5, synch=False, concurrency=4)
    assert got["restarts"] == got["exploits"] and 4 <= got["exploits"] <= 6.5
    # the population does not fit: Ray pauses every trial at each round
    assert pbt_restarts(4, 8, 2, 0.5, synch=False, concurrency=2)["restarts"] == 16
    # the last epoch is a round (Ray sees that report before the trial returns); none
    # before the first interval; a population of one never exploits
    assert pbt_restarts(4, 5, 2, 0.5, True, 4)["rounds"] == 2
    assert pbt_restarts(4, 1, 2, 0.5, True, 4)["rounds"] == 0
    assert pbt_restarts(1, 8, 2, 0.5, False, 1)["restarts"] == 0


def test_project_counts_restarts_in_the_trials_and_the_longest() -> None:
    got = project(trial_epochs=16, trials=4, epoch_s=10.0, trial_start_s=5.0, ray_start_s=2.0,
                  concurrency=4, gpus_per_trial=0, max_epochs=4, restarts=8, restart_s=3.0)
    assert got["trial_s"] == 160 + 20 + 24
    assert got["wall_s"] == 2 + 5 + 40 + 2 * 3  # the longest: its share of the restarts


def test_the_cost_model_examples_hold() -> None:
    import doctest

    from vpr_tune.tune import estimate_model

    assert doctest.testmod(estimate_model).failed == 0
