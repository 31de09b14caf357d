"""The search section's settings for several objectives and for PBT: ``search.objectives``
(the multi-objective form of search.metric/mode) and ``pbt.mutate`` (which searched keys PBT
and PB2 may change during training), each with its errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from vpr_tune import metrics
from vpr_tune.cli import main
from vpr_tune.config import load_space, space_from_dict
from vpr_tune.errors import UserError
from vpr_tune.search_rules import mutated_params

REPO = Path(__file__).resolve().parent.parent
R1 = {"metric": "val/R@1", "mode": "max"}
DIM = {"metric": "descriptor_dim", "mode": "min"}
MS = {"metric": "query_ms", "mode": "min"}


def space(objectives, **search):
    return space_from_dict({"search": {"objectives": objectives, **search}}, "s.yaml")


@pytest.mark.parametrize("name", ["pareto_demo", "pareto"])
def test_shipped_pareto_spaces_are_valid(name: str) -> None:
    loaded = load_space(REPO / "search_spaces" / f"{name}.yaml")
    assert metrics.objectives_of(loaded.base["search"]) == [
        ("val/R@1", "max"), ("descriptor_dim", "min"), ("query_ms", "min")]


def test_objectives_set_the_ranking_metric_and_modes_default_to_direction() -> None:
    s = space([{"metric": "query_ms"}, {"metric": "val/R@5"}])
    assert s.base["search"]["objectives"] == [MS, {"metric": "val/R@5", "mode": "max"}]
    # best.pt and the single-metric tables follow the first searchable objective
    assert (s.base["search"]["metric"], s.base["search"]["mode"]) == ("val/R@5", "max")
    assert metrics.objectives_of(space_from_dict({}, "s.yaml").base["search"]) == [
        ("val/R@1", "max")]


BAD = [
    ([R1, {"metric": "recall", "mode": "max"}], {},
     "search.objectives[1].metric: 'recall' is not one of val/R@1"),
    ([R1, {"metric": "query_ms", "mode": "fastest"}], {},
     "search.objectives[1].mode: 'fastest' is not one of max, min"),
    ([R1, {"metric": "query_ms", "mode": "max"}], {},
     "search.objectives[1].mode: 'max' contradicts query_ms"),
    ([R1, DIM, R1], {}, "search.objectives[2].metric: val/R@1 is listed twice"),
    ([R1], {}, "search.objectives: expected a list of 2 to 3"),
    ([R1, DIM, MS, {"metric": "params_m"}], {}, "search.objectives: expected a list of 2 to 3"),
    ({"metric": "val/R@1"}, {}, "search.objectives: expected a list"),
    ([R1, "query_ms"], {}, "search.objectives[1]: expected {metric: ..., mode: min|max}"),
    ([R1, {"metric": "query_ms", "goal": "min"}], {},
     "search.objectives[1].goal: unknown key; allowed: metric, mode"),
    ([DIM, MS], {}, "search.objectives: needs one of val/R@1"),
    ([R1, DIM], {"metric": "val/R@5"}, "search.metric: give either search.objectives"),
    ([R1, DIM], {"mode": "max"}, "search.mode: give either search.objectives"),
    ([R1, DIM], {"algorithm": "optuna", "sampler": "cmaes"},
     "search.sampler: cmaes cannot rank several objectives (search.objectives); use one of "
     "tpe, random, qmc, gp, nsga2"),
    ([R1, DIM], {"scheduler": "pbt"},
     "search.scheduler: pbt cannot rank several objectives (search.objectives); use one of "
     "asha, fifo"),
    ([R1, DIM], {"scheduler": "pb2"}, "search.scheduler: pb2 cannot rank several objectives"),
]


@pytest.mark.parametrize(("objectives", "search", "message"), BAD, ids=[b[2][:50] for b in BAD])
def test_bad_objectives_are_one_clear_error(objectives, search, message) -> None:
    with pytest.raises(UserError) as info:
        space(objectives, **search)
    assert message in str(info.value)
    assert "s.yaml" in str(info.value) and "\n" not in str(info.value)


def test_sampler_only_matters_with_optuna_and_nsga2_is_allowed() -> None:
    assert space([R1, DIM], algorithm="grid", sampler="cmaes").base["search"]["sampler"] == "cmaes"
    assert space([R1, DIM], algorithm="optuna", sampler="nsga2").base["search"]["objectives"]


def test_cli_exit_2_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"search": {"objectives": [R1, {"metric": "speed"}]}}))
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "search.objectives[1].metric" in err and "query_ms" in err
    assert "Traceback" not in err


# -------------------------------------------------------------------- pbt.mutate
def _space(text: str):
    import yaml

    return space_from_dict(yaml.safe_load(textwrap.dedent(text)), "p.yaml")


BASE = """
    optimizer:
      name: {choice: [sgd, adam]}
      lr: {loguniform: [1.0e-4, 1.0e-1]}
      momentum: {uniform: [0.8, 0.99], when: {name: sgd}}
      weight_decay: {quniform: [0.0, 0.01, 0.001]}
    model: {aggregator: {name: gem, p: {uniform: [2.0, 4.0]}}}
    search: {scheduler: SCHED}
    pbt: {mutate: MUTATE}
"""


@pytest.mark.parametrize("sched, mutate, message", [
    ("pbt", "[optimizer.beta1]", "pbt.mutate: optimizer.beta1 is not searched in this space"),
    ("pbt", "[optimizer.name]", "pbt.mutate: optimizer.name cannot change during training"),
    ("pbt", "[model.aggregator.p]", "pbt.mutate: model.aggregator.p cannot change during training"),
    ("pbt", "[optimizer.momentum]", "pbt.mutate: optimizer.momentum applies only to some trials"),
    ("pbt", "[]", "pbt.mutate: expected a list of searched keys"),
    ("pb2", "[optimizer.lr, optimizer.weight_decay]",
     "pbt.mutate: optimizer.weight_decay is quniform; pb2 takes continuous parameters only"),
])
def test_unusable_mutate_keys_are_refused(sched, mutate, message):
    space = _space(BASE.replace("SCHED", sched).replace("MUTATE", mutate))
    with pytest.raises(UserError, match="p.yaml: " + message):
        mutated_params(space)


def test_pb2_takes_continuous_keys():
    space = _space(BASE.replace("SCHED", "pb2").replace("MUTATE", "[optimizer.lr]"))
    assert [p.path for p in mutated_params(space)] == ["optimizer.lr"]
