"""Cross-section ``when``: a miner only where the loss uses one, in every sampler."""

from __future__ import annotations

import textwrap

import optuna
import pytest

from vpr_tune.cli import main
from vpr_tune.config import load_space
from vpr_tune.errors import UserError
from vpr_tune.tune.sampling import OptunaDefineByRun, count_trials, expand_points

PAIR_LOSSES = ["contrastive", "triplet", "multisimilarity"]
SPACE = """
    loss:
      name: {KIND: [contrastive, triplet, multisimilarity, arcface]}
    miner:
      name: {KIND: [none, multisimilarity, batchhard], when: {loss.name: PAIRS}}
      epsilon: {uniform: [0.05, 0.2], when: {name: multisimilarity}}
    search: {algorithm: ALGO, num_samples: 30, seed: 1}
"""


def load(tmp_path, kind: str, algo: str):
    text = (SPACE.replace("KIND", kind).replace("ALGO", algo)
            .replace("num_samples: 30", "num_samples: 1" if algo == "grid" else "num_samples: 30")
            .replace("PAIRS", "[" + ", ".join(PAIR_LOSSES) + "]"))
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return load_space(path), path


def assert_applicable(point: dict) -> None:
    pair = point["loss.name"] in PAIR_LOSSES
    assert ("miner.name" in point) == pair
    assert ("miner.epsilon" in point) == (point.get("miner.name") == "multisimilarity")


def test_when_names_a_key_of_another_section(tmp_path):
    space, _ = load(tmp_path, "choice", "random")
    assert space.params["miner.name"].when == {"loss.name": tuple(PAIR_LOSSES)}
    # the gate comes before what it gates
    order = list(space.params)
    assert order.index("loss.name") < order.index("miner.name") < order.index("miner.epsilon")


def test_random_sampler_skips_miners_of_classifier_losses(tmp_path):
    space, _ = load(tmp_path, "choice", "random")
    points = expand_points(space, 30, seed=1)
    assert len(points) == 30
    for p in points:
        assert_applicable(p)
    assert {p["loss.name"] for p in points} == {*PAIR_LOSSES, "arcface"}


def test_grid_counts_only_applicable_crossings(tmp_path):
    space, _ = load(tmp_path, "grid", "grid")
    points = expand_points(space, 1, seed=0)
    # 3 pair losses x 3 miners + arcface alone (no miner)
    assert len(points) == count_trials(space, 1) == 10
    for p in points:
        assert_applicable(p)
    assert sum(p["loss.name"] == "arcface" for p in points) == 1


def test_optuna_suggests_a_miner_only_for_pair_losses(tmp_path):
    space, _ = load(tmp_path, "choice", "optuna")
    define = OptunaDefineByRun(space)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
                                direction="maximize")
    seen = set()
    for _ in range(30):
        trial = study.ask()
        constants = define(trial) or {}
        point = {**trial.params, **constants}
        assert_applicable(point)
        seen.add(point["loss.name"])
        study.tell(trial, float(len(point)))
    assert "arcface" in seen and seen & set(PAIR_LOSSES)


def test_dry_run_counts_the_pruned_grid(tmp_path, capsys, street_world_tiny, monkeypatch):
    monkeypatch.setenv("VPR_TUNE_RESULTS", str(tmp_path / "results"))
    _, path = load(tmp_path, "grid", "grid")
    rc = main(["run", str(path), "--data", str(street_world_tiny), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0 and "10 trials" in out and "loss.name" in out


def test_a_fixed_other_section_decides_at_load(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent("""
        loss: {name: arcface}
        miner:
          name: {choice: [none, batchhard], when: {loss.name: [contrastive]}}
    """))
    space = load_space(path)
    assert "miner.name" not in space.params and space.base["miner"]["name"] == "none"


@pytest.mark.parametrize("when, msg", [
    ("{loss.nam: [contrastive]}", "'nam' is not a key of loss"),
    ("{loss.name: [sgd]}", "'sgd' is not a value of loss.name; allowed: contrastive"),
])
def test_bad_cross_section_when_is_one_line(tmp_path, when, msg):
    path = tmp_path / "s.yaml"
    path.write_text(f"miner:\n  name: {{choice: [none, batchhard], when: {when}}}\n")
    with pytest.raises(UserError) as info:
        load_space(path)
    assert msg in str(info.value) and "miner.name.when" in str(info.value)
