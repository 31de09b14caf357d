"""Samplers by name, points_to_evaluate and warm starts, driven through the Ray searcher's
``suggest`` directly (no trials run)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from vpr_tune.cli import main
from vpr_tune.config import SAMPLERS, load_space, space_from_dict
from vpr_tune.errors import UserError
from vpr_tune.tune.samplers import sampler_note
from vpr_tune.tune.sampling import load_warm_start
from vpr_tune.tune.searchers import build_search_alg, check_plan

DEMO = Path(__file__).resolve().parents[1] / "search_spaces" / "demo.yaml"


def demo_space(**search):
    space = load_space(DEMO)
    space.base["search"].update(search)
    return space


def assert_valid(space, config):
    assert set(config) <= set(space.params), config
    for key, value in config.items():
        assert space.params[key].dist.contains(value), (key, value)
    # conditionals: momentum exactly for SGD
    assert ("optimizer.momentum" in config) == (config["optimizer.name"] == "sgd"), config
    assert {"optimizer.name", "optimizer.lr", "optimizer.weight_decay"} <= set(config)


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_proposes_valid_demo_configs(name):
    space = demo_space(sampler=name)
    alg, n = build_search_alg(space, 14, 14)
    assert n == 14
    names = set()
    for i in range(14):  # past every sampler's random start-up trials
        config = alg.suggest(f"t{i}")
        assert_valid(space, config)
        names.add(config["optimizer.name"])
        alg.on_trial_complete(f"t{i}", {"val/R@1": 1000 * config["optimizer.lr"], "epoch": 4})
    assert len(names) >= 2


def test_samplers_say_what_they_leave_to_random_draws():
    space = demo_space()
    assert sampler_note("tpe", space) == ""
    note = sampler_note("cmaes", space)
    assert "optimizer.name (choice)" in note and "optimizer.momentum (conditional)" in note
    assert "models optimizer.lr, optimizer.weight_decay" in note
    gp = sampler_note("gp", space)
    assert "optimizer.momentum (conditional)" in gp and "optimizer.name" not in gp.split(";")[0]
    only_choices = space_from_dict({"optimizer": {"name": {"choice": ["sgd", "adam"]}},
                                    "search": {"sampler": "cmaes"}}, "c.yaml")
    with pytest.raises(UserError, match="c.yaml: search.sampler: cmaes cannot model"):
        check_plan(only_choices)


def test_random_goes_through_optunas_random_sampler():
    import optuna

    alg, _ = build_search_alg(demo_space(algorithm="random"), 5, 2)
    optuna_search = alg.searcher
    # demo.yaml is reproducible: its Optuna searcher sits inside the sampling-order one
    optuna_search = getattr(optuna_search, "searcher", optuna_search)
    assert isinstance(optuna_search._ot_study.sampler, optuna.samplers.RandomSampler)


def test_unknown_sampler_is_an_error(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("search: {sampler: cmaess}\n")
    with pytest.raises(UserError, match="search.sampler: 'cmaess' is not one of .*cmaes"):
        load_space(path)


# ------------------------------------------------------------------ points_to_evaluate
POINTS = [{"optimizer.name": "sgd", "optimizer.lr": 0.0025, "optimizer.weight_decay": 0.001,
           "optimizer.momentum": 0.9},
          {"optimizer.name": "adam"}]


def test_points_to_evaluate_come_first_and_partial_ones_are_completed():
    space = demo_space(points_to_evaluate=POINTS)
    alg, _ = build_search_alg(space, 6, 6)
    first, second = alg.suggest("a"), alg.suggest("b")
    assert first == POINTS[0]
    assert second["optimizer.name"] == "adam" and "optimizer.momentum" not in second
    assert_valid(space, second)


@pytest.mark.parametrize("point, message", [
    ({"optimizer.lrr": 0.01}, r"optimizer.lrr is not searched .*did you mean 'optimizer.lr'"),
    ({"optimizer.lr": 0.5}, r"optimizer.lr: 0.5 is outside loguniform"),
    ({"optimizer.name": "rmsprop"}, r"optimizer.name: 'rmsprop' is outside choice"),
    ({"optimizer.name": "adam", "optimizer.momentum": 0.9},
     r"optimizer.momentum applies only when optimizer.name in \['sgd'\] "
     r"\(got optimizer.name 'adam'\)"),
    ({"optimizer.momentum": 0.9}, "optimizer.momentum applies only when .*give that too"),
    ({"loss.name": "triplet"}, "loss.name is not searched"),
])
def test_points_to_evaluate_are_checked_against_the_space(point, message):
    space = demo_space(points_to_evaluate=[point])
    with pytest.raises(UserError, match=r"points_to_evaluate\[0\]: " + message):
        check_plan(space)


# ------------------------------------------------------------------------- warm start
def test_warm_start_feeds_finished_trials_to_the_sampler(hand_experiment):
    space = space_from_dict(__import__("yaml").safe_load(
        (hand_experiment / "space.yaml").read_text()), "again.yaml")
    warm = load_warm_start(space, hand_experiment)
    # t0, t1, t4, t5 finished; t2 ERROR and t3 DIVERGED are left out
    assert len(warm) == 4
    params, value = warm[0]
    assert params["optimizer.name"] == "sgd" and value == 60.0
    assert "optimizer.momentum" not in warm[1][0]  # adam: the conditional key is absent
    alg, _ = build_search_alg(space, 3, 3, warm)
    study = alg.searcher._ot_study
    assert len(study.trials) == 4 and study.best_value == 60.0
    assert_valid_keys = set(alg.suggest("new"))
    assert assert_valid_keys <= set(space.params)


def test_warm_start_gives_the_best_epoch_as_the_study_does(tmp_path):
    """A trial that peaked before its last epoch warms the sampler with its peak, the value
    a search's own Optuna study records for it (optuna_study.py)."""
    from tests.helpers import write_hand_experiment

    folder = write_hand_experiment(tmp_path / "peaked", [
        ("p0", "TERMINATED", "sgd", 0.01, 1e-3, "none", [20.0, 60.0, 30.0, 25.0]),
        ("p1", "TERMINATED", "adam", 1e-3, 1e-4, "none", [10.0, 15.0, 40.0, 35.0])])
    space = space_from_dict(__import__("yaml").safe_load(
        (folder / "space.yaml").read_text()), "again.yaml")
    assert [value for _, value in load_warm_start(space, folder)] == [60.0, 40.0]


def test_warm_start_gives_each_alternative_under_its_search_name(tmp_path):
    """``loss.margin`` searched in degrees for arcface and in cosine units for cosface: an
    earlier arcface trial's margin goes to the sampler as ``loss.margin#arcface``."""
    import pandas as pd
    import yaml

    raw = {"loss": {"name": {"choice": ["arcface", "cosface"]},
                    "margin": [{"uniform": [20.0, 40.0], "when": {"name": "arcface"}},
                               {"uniform": [0.2, 0.5], "when": {"name": "cosface"}}]},
           "search": {"scheduler": "fifo"}}
    earlier = tmp_path / "margins"
    earlier.mkdir()
    (earlier / "space.yaml").write_text(yaml.safe_dump(raw))
    pd.DataFrame([{"trial_id": "a", "status": "TERMINATED", "loss.name": "arcface",
                   "loss.margin": 28.6},
                  {"trial_id": "c", "status": "TERMINATED", "loss.name": "cosface",
                   "loss.margin": 0.35}]).to_csv(earlier / "trials.csv", index=False)
    pd.DataFrame([{"trial_id": t, "epoch": 1, "val/R@1": r} for t, r in [("a", 40.0),
                                                                        ("c", 30.0)]]
                 ).to_csv(earlier / "metrics.csv", index=False)
    space = space_from_dict(raw, "again.yaml")
    warm = load_warm_start(space, earlier)
    assert warm == [({"loss.name": "arcface", "loss.margin#arcface": 28.6}, 40.0),
                    ({"loss.name": "cosface", "loss.margin#cosface": 0.35}, 30.0)]
    alg, _ = build_search_alg(space, 3, 3, warm)  # Optuna accepts them as its own trials
    assert len(alg.searcher._ot_study.trials) == 2


def test_warm_start_refuses_a_space_with_other_keys(hand_experiment):
    space = demo_space()  # no scheduler.name, no budget: other searched keys
    with pytest.raises(UserError, match=r"--warm-start hand: it searched different keys "
                                        r"\(scheduler.name in only one"):
        load_warm_start(space, hand_experiment)


def test_warm_start_needs_a_sampler(hand_experiment):
    space = demo_space(scheduler="pbt")
    with pytest.raises(UserError, match="--warm-start feeds a sampler"):
        load_warm_start(space, hand_experiment)


def test_run_says_how_many_trials_it_warm_starts_with(hand_experiment, tmp_path, capsys,
                                                       monkeypatch, street_world_tiny):
    monkeypatch.setenv("VPR_TUNE_RESULTS", str(hand_experiment.parent))
    path = tmp_path / "again.yaml"
    path.write_text((hand_experiment / "space.yaml").read_text() + textwrap.dedent("""
        data: {image_size: [32, 32]}
    """))
    rc = main(["run", str(path), "--data", str(street_world_tiny), "--warm-start", "hand",
               "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "warm start: 4 finished trial(s) of hand given to the sampler" in out
