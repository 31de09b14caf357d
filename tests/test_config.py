"""Search-space YAML: the valid schema and every bad-input case (one clear error, exit 2)."""

from __future__ import annotations

import contextlib
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpr_tune.cli import main
from vpr_tune.config import DEFAULTS, load_space, materialize, space_from_dict
from vpr_tune.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("name", ["demo", "optim", "losses", "aggregators", "train_demo"])
def test_shipped_spaces_are_valid(name):
    path = REPO / "search_spaces" / f"{name}.yaml"
    if not path.exists():
        pytest.fail(f"{path} is missing")
    space = load_space(path)
    assert space.base["data"]["image_size"]
    for p in space.params.values():
        assert p.path.count(".") >= 1


def test_fixed_values_and_conditionals(tmp_path):
    space = load_space(write(tmp_path, """
        optimizer:
          name: {choice: [sgd, adam]}
          lr: {loguniform: [1.0e-4, 1.0e-1]}
          momentum: {uniform: [0.8, 0.99], when: {name: [sgd, asgd]}}
          nesterov: {value: true, when: {name: sgd}}
        budget: {max_epochs: 3}
        loss: {name: triplet, margin: 0.2}
    """))
    assert space.base["budget"]["max_epochs"] == 3
    assert space.base["budget"]["batches_per_epoch"] == DEFAULTS["budget"]["batches_per_epoch"]
    assert space.base["loss"] == {"name": "triplet", "margin": 0.2}
    assert list(space.params) == ["optimizer.name", "optimizer.lr", "optimizer.momentum",
                                  "optimizer.nesterov"]
    assert space.params["optimizer.momentum"].when == {"optimizer.name": ("sgd", "asgd")}
    cfg = materialize(space.base, {"optimizer.name": "adam", "optimizer.lr": 0.01})
    assert cfg["optimizer"] == {"name": "adam", "lr": 0.01}  # other defaults: the registry


def test_when_on_a_fixed_sibling_is_decided_at_load(tmp_path):
    space = load_space(write(tmp_path, """
        optimizer:
          name: adam
          momentum: {uniform: [0.8, 0.99], when: {name: sgd}}
          beta1: {value: 0.8, when: {name: adam}}
    """))
    assert space.params == {}
    assert space.base["optimizer"]["beta1"] == 0.8
    assert "momentum" not in space.base["optimizer"]


BAD = [
    ("optimizer: {name: sgd\n", "YAML syntax error at line"),
    ("optimiser: {name: sgd}\n", "optimiser: unknown key (did you mean 'optimizer'?)"),
    ("budget: {max_epoch: 3}\n", "budget.max_epoch: unknown key (did you mean 'max_epochs'?)"),
    ("budget: {max_epochs: ten}\n", "budget.max_epochs: expected int"),
    ("budget: 5\n", "budget: expected a section"),
    ("optimizer: {name: sgdd}\n", "optimizer.name: 'sgdd' is not one of sgd, adam, adamw, asgd"),
    ("loss: {name: {choice: [contrastive, foo]}}\n", "loss.name: 'foo' is not one of"),
    ("miner: {name: hard}\n", "miner.name: 'hard' is not one of"),
    ("model: {aggregator: {name: vlad}}\n", "model.aggregator.name: 'vlad' is not one of"),
    ("scheduler: {name: step}\n", "scheduler.name: 'step' is not one of"),
    ("model: {backbone: vgg16}\n", "model.backbone: 'vgg16' is not one of resnet18, resnet50"),
    ("search: {algorithm: hyperopt}\n", "search.algorithm: 'hyperopt' is not one of"),
    ("search: {metric: val/R@3}\n", "search.metric: 'val/R@3' is not one of val/R@1, val/R@5"),
    ("optimizer: {lr: {uniform: [0.1, 0.01]}}\n", "optimizer.lr: uniform: low 0.1 > high 0.01"),
    ("optimizer: {lr: {loguniform: [0, 0.1]}}\n", "optimizer.lr: loguniform range must be > 0"),
    ("optimizer: {name: {choice: []}}\n", "optimizer.name: choice needs at least one value"),
    ("optimizer: {lr: {grid: [0.1, 0.01]}}\n", "grid cannot be used with search.algorithm optuna"),
    ("resources: {gpu: -1}\n", "resources.gpu: must not be negative"),
    ("resources: {cpu: -2}\n", "resources.cpu: must not be negative"),
    ("resources: {precision: fp64}\n",
     "resources.precision: 'fp64' is not one of auto, fp32, bf16, fp16"),
    ("resources: {precision: {choice: [fp32, bf16]}}\n", "resources.precision: cannot be searched"),
    ("optimizer: {lr: {normal: [0, 1]}}\n", "optimizer.lr: expected a value or a distribution"),
    ("optimizer: {name: adam, momentum: 0.9}\n", "optimizer.momentum: 'adam' takes no 'momentum'"),
    ("optimizer: {momentum: {uniform: [0.8, 0.9], when: {nam: sgd}}}\n",
     "optimizer.momentum.when: 'nam' is not a key"),
    ("search: {num_samples: {choice: [1, 2]}}\n", "search.num_samples: cannot be searched"),
    ("- a\n- b\n", "expected a mapping of sections at the top"),
    ("storage: relative/dir\n", "storage: must be an absolute path or a URI"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_bad_yaml_is_one_clear_error(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_space(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and str(path.name) in err and "Traceback" not in err


def test_missing_file_is_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_space(tmp_path / "nope.yaml")


# ------------------------------------------------------------------ property-based
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 500), st.floats(-1, 10), st.just(float("nan")),
    st.text(max_size=8), st.sampled_from(["sgd", "adam", "gem", "cosine", "asha", "optuna"]),
    st.lists(st.integers(-3, 300), max_size=3),
)
KEYS = st.sampled_from([*DEFAULTS, "optimizer", "name", "lr", "momentum", "choice", "uniform",
                        "loguniform", "grid", "when", "value", "image_size", "aggregator",
                        "max_epochs", "gpu", "cpu", "bogus"])
DOCS = st.recursive(LEAVES, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.dictionaries(KEYS, kids, max_size=4)), max_leaves=12)


def _mutations(doc):
    """Mutate one leaf of a valid shipped space."""
    return st.sampled_from(sorted(_paths(doc))).flatmap(
        lambda path: LEAVES.map(lambda v: _set(doc, path, v)))


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    yield prefix


def _set(doc, path, value):
    import copy

    doc = copy.deepcopy(doc)
    if not path:
        return value
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return doc


DEMO = yaml.safe_load((REPO / "search_spaces" / "demo.yaml").read_text())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(DOCS, st.dictionaries(KEYS, DOCS, max_size=5), _mutations(DEMO)))
def test_validator_gives_space_or_user_error(doc):
    try:
        space = space_from_dict(doc, "fuzz.yaml")
    except UserError as exc:
        assert str(exc).startswith("fuzz.yaml")
        return
    assert isinstance(space.base, dict) and isinstance(space.params, dict)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_any_text_file_gives_space_or_user_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "t.yaml"
    path.write_text(text)
    with contextlib.suppress(UserError):
        load_space(path)
