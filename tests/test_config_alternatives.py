"""Per-loss ranges: one key with conditional alternatives, searched under its own name."""

from __future__ import annotations

import textwrap

import optuna
import pytest

from vpr_tune.config import load_space, materialize
from vpr_tune.errors import UserError
from vpr_tune.tune.sampling import OptunaDefineByRun, count_trials, expand_points

RANGES = {"triplet": (0.02, 0.3), "arcface": (20.0, 40.0), "cosface": (0.2, 0.5)}
SPACE = """
    loss:
      name: {KIND: [triplet, arcface, cosface, contrastive]}
      margin:
        - {uniform: [0.02, 0.3], when: {name: triplet}}
        - {uniform: [20.0, 40.0], when: {name: arcface}}
        - {uniform: [0.2, 0.5], when: {name: cosface}}
    search: {algorithm: ALGO, num_samples: N, seed: 0}
"""


def load(tmp_path, algo: str, n: int = 20):
    kind = "grid" if algo == "grid" else "choice"
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SPACE.replace("KIND", kind).replace("ALGO", algo)
                                    .replace("N", str(n))))
    return load_space(path)


def assert_in_its_range(point: dict) -> None:
    name = point["loss.name"]
    assert ("loss.margin" in point) == (name in RANGES)
    if name in RANGES:
        low, high = RANGES[name]
        assert low <= point["loss.margin"] <= high
        assert materialize({}, point)["loss"]["margin"] == point["loss.margin"]


def test_each_alternative_is_a_param_with_its_own_search_name(tmp_path):
    space = load(tmp_path, "random")
    assert [k for k in space.params if k.startswith("loss.margin")] == [
        "loss.margin#triplet", "loss.margin#arcface", "loss.margin#cosface"]
    assert {p.path for p in space.params.values()} == {"loss.name", "loss.margin"}


def test_random_and_grid_draw_each_loss_in_its_range(tmp_path):
    points = expand_points(load(tmp_path, "random", 40), 40, seed=0)
    assert {p["loss.name"] for p in points} == {*RANGES, "contrastive"}
    for p in points:
        assert_in_its_range(p)
    grid = load(tmp_path, "grid", 2)
    assert count_trials(grid, 2) == 8
    for p in expand_points(grid, 2, seed=0):
        assert_in_its_range(p)


def test_optuna_suggests_each_alternative_under_its_own_name(tmp_path):
    space = load(tmp_path, "optuna")
    define = OptunaDefineByRun(space)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=4))
    for _ in range(20):
        trial = study.ask()
        constants = define(trial) or {}
        point = {**trial.params, **constants}
        assert_in_its_range(point)
        name = point["loss.name"]
        if name in RANGES:  # TPE models ArcFace degrees apart from triplet distances
            assert f"loss.margin#{name}" in trial.params
        study.tell(trial, 1.0)


def test_a_fixed_loss_leaves_one_alternative_under_its_plain_name(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent("""
        loss:
          name: arcface
          margin:
            - {uniform: [0.02, 0.3], when: {name: triplet}}
            - {uniform: [20.0, 40.0], when: {name: arcface}}
    """))
    space = load_space(path)
    assert list(space.params) == ["loss.margin"] and space.params["loss.margin"].args == [20, 40]


def test_an_alternative_without_when_is_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("loss:\n  name: triplet\n  margin:\n    - {uniform: [0.1, 0.2]}\n")
    with pytest.raises(UserError, match=r"loss.margin\[0\]: each alternative .* needs a when"):
        load_space(path)


def test_shipped_losses_yaml_loads_with_miners_only_for_pair_losses():
    space = load_space("search_spaces/losses.yaml")
    assert space.params["miner.name"].when == {
        "loss.name": ("contrastive", "triplet", "multisimilarity", "circle")}
    for p in expand_points(space, 60, seed=0):
        assert ("miner.name" in p) == (p["loss.name"] not in ("arcface", "cosface"))


def test_trials_csv_lists_the_plain_key_not_the_search_name(tmp_path):
    from types import SimpleNamespace

    from vpr_tune.config import defaults
    from vpr_tune.tune.results import trial_record

    trial = SimpleNamespace(trial_id="t1", status="TERMINATED", local_path=None, path=str(tmp_path),
                            config={"loss.name": "arcface", "loss.margin#arcface": 30.0,
                                    "loss.margin": 30.0})
    record = trial_record(trial, defaults())
    assert record["loss.margin"] == 30.0 and not any("#" in k for k in record)


@pytest.mark.parametrize("loss, text, msg", [
    ("arcface", "margin: 0.3",
     "loss.margin: 0.3 is not a plausible arcface margin: it is in degrees (library default "
     "28.6; plausible 5-90)"),
    ("arcface", "margin: {uniform: [0.05, 0.5]}", "it is in degrees (library default 28.6"),
    ("cosface", "margin: 28.6", "it is in cosine units (library default 0.35"),
    ("triplet", "margin: {choice: [0.1, 5.0]}", "5 is not a plausible triplet margin: it is "
     "in distance units (library default 0.05"),
])
def test_a_value_in_another_loss_unit_is_refused(tmp_path, loss, text, msg):
    path = tmp_path / "s.yaml"
    path.write_text(f"loss:\n  name: {loss}\n  {text}\n")
    with pytest.raises(UserError) as info:
        load_space(path)
    assert msg in str(info.value)


def test_units_are_checked_per_alternative_and_pass_in_their_own_unit(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent("""
        loss:
          name: {choice: [triplet, arcface]}
          margin:
            - {uniform: [0.02, 0.3], when: {name: triplet}}
            - {uniform: [0.2, 0.5], when: {name: arcface}}
    """))
    with pytest.raises(UserError, match="0.2 is not a plausible arcface margin"):
        load_space(path)
    for shipped in ("losses", "course"):
        load_space(f"search_spaces/{shipped}.yaml")  # every range in its own unit
