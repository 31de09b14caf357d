"""Search-space YAML as read: the shipped spaces load, defaults fill what a space leaves out,
fixed values and a ``when`` on a fixed sibling are decided at load, and the file means what it
says (duplicate keys, exponents without a dot, empty files, a missing file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import write_yaml
from vpr_tune.config import DEFAULTS, load_space, materialize
from vpr_tune.errors import UserError

REPO = Path(__file__).resolve().parents[1]


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
    space = load_space(write_yaml(tmp_path, """
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
    space = load_space(write_yaml(tmp_path, """
        optimizer:
          name: adam
          momentum: {uniform: [0.8, 0.99], when: {name: sgd}}
          beta1: {value: 0.8, when: {name: adam}}
    """))
    assert space.params == {}
    assert space.base["optimizer"]["beta1"] == 0.8
    assert "momentum" not in space.base["optimizer"]


def test_repeats_of_a_fixed_config_by_searching_the_seed_are_allowed(tmp_path):
    space = load_space(write_yaml(tmp_path, "seed: {choice: [0, 1, 2]}\n"))
    assert list(space.params) == ["seed"]


# ------------------------------------------------------------------ reading the file
@pytest.mark.parametrize("text", ["", "# only a comment\n\n# another\n"])
def test_empty_or_comment_only_space_is_an_error(tmp_path, text):
    with pytest.raises(UserError, match="has no content"):
        load_space(write_yaml(tmp_path, text))


def test_missing_file_is_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_space(tmp_path / "nope.yaml")


def test_duplicate_keys_name_both_lines(tmp_path):
    path = write_yaml(tmp_path, """
        optimizer: {name: sgd}
        seed: 1
        optimizer: {name: adam}
    """)
    with pytest.raises(UserError) as exc:
        load_space(path)
    assert str(path) in str(exc.value) and "'optimizer'" in str(exc.value)
    assert "lines 2 and 4" in str(exc.value)


def test_duplicate_nested_key(tmp_path):
    with pytest.raises(UserError, match=r"'lr' is given twice, at lines 3 and 4"):
        load_space(write_yaml(tmp_path, "optimizer:\n  name: sgd\n  lr: 0.1\n  lr: 0.2\n"))


def test_exponent_without_dot_is_the_number_it_means(tmp_path):
    space = load_space(write_yaml(tmp_path, """
        optimizer:
          lr: {loguniform: [1e-4, 1e-1]}
          weight_decay: 5e-4
    """))
    assert space.params["optimizer.lr"].args == [1e-4, 1e-1]
    assert space.base["optimizer"]["weight_decay"] == 5e-4
