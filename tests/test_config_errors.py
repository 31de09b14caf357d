"""Search-space YAML that is wrong: every bad value, key or combination is one clear error
that names the file and the key (exit 2 from ``run``), with a did-you-mean where one fits;
fuzzed documents and texts give a space or a UserError, never a traceback."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import error_line, write_yaml
from vpr_tune.cli import main
from vpr_tune.config import DEFAULTS, load_space, space_from_dict
from vpr_tune.errors import UserError

REPO = Path(__file__).resolve().parents[1]


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


def test_unknown_key_lists_the_allowed_keys(tmp_path):
    with pytest.raises(UserError, match=r"budget.max_epoch: unknown key \(did you mean "
                                        r"'max_epochs'\?\); allowed: max_epochs, "):
        load_space(write_yaml(tmp_path, "budget: {max_epoch: 3}\n"))


def test_when_value_typo_is_an_error_with_did_you_mean(tmp_path):
    # a fixed name (adam): the typo used to drop momentum from the search without a word
    for name in ("adam", "{choice: [sgd, adam]}"):
        with pytest.raises(UserError, match=r"'sgdd' is not a value of optimizer.name "
                                            r"\(did you mean 'sgd'\?\)") as exc:
            load_space(write_yaml(tmp_path, f"""
                optimizer:
                  name: {name}
                  momentum: {{uniform: [0.8, 0.99], when: {{name: sgdd}}}}
            """))
        assert "optimizer.momentum.when" in str(exc.value)


# ------------------------------------------------------------ rules across keys
def test_space_without_searched_parameter_points_to_train(tmp_path, capsys):
    space = write_yaml(tmp_path, "optimizer: {lr: 0.01}\nsearch: {num_samples: 4}\n")
    rc = main(["run", str(space), "--name", "x", "--storage", str(tmp_path / "res")])
    assert rc == 2
    line = error_line(capsys)
    assert "no searched parameter" in line and "vpr-tune train" in line
    assert not (tmp_path / "res" / "x").exists()


@pytest.mark.parametrize("budget", ["images_per_place: 1", "places_per_batch: 1",
                                    "images_per_place: {choice: [1, 4]}"])
def test_batch_that_cannot_form_pairs_is_refused(tmp_path, budget):
    with pytest.raises(UserError, match="cannot form (positives|negatives) for loss"):
        load_space(write_yaml(tmp_path, f"loss: {{name: triplet}}\nbudget: {{{budget}}}\n"))


def test_proxy_loss_needs_no_pairs(tmp_path):
    space = load_space(write_yaml(tmp_path,
                                  "loss: {name: arcface}\nbudget: {images_per_place: 1}\n"))
    assert space.base["budget"]["images_per_place"] == 1


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
