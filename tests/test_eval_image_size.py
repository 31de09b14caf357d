"""data.eval_image_size: the size every evaluation resizes to (val each epoch and its
query_ms, eval, retest, --save-preds, --repeat) while training stays at data.image_size;
validated like data.image_size, refused for a ViT off its patch grid and for MixVPR at
another size than its train size."""

from __future__ import annotations

import pytest

from tests.helpers import error_line, run_cli, tiny_cfg, write_yaml
from vpr_tune.config import eval_image_size, materialize, space_from_dict
from vpr_tune.errors import UserError


# ------------------------------------------------------------------------ the config
def test_eval_image_size_validates_and_normalises() -> None:
    import doctest

    from vpr_tune import config

    assert doctest.testmod(config).failed == 0  # eval_image_size's examples
    space = space_from_dict({"data": {"image_size": 280, "eval_image_size": 322}})
    assert space.base["data"]["eval_image_size"] == [322, 322]
    assert eval_image_size(space.base) == [322, 322]
    unset = space_from_dict({"data": {"image_size": [280, 300]}}).base
    assert unset["data"]["eval_image_size"] is None and eval_image_size(unset) == [280, 300]
    assert eval_image_size({"data": {}}) == [224, 224]  # a read-back config without data keys
    searched = space_from_dict({"data": {"eval_image_size": {"choice": [None, 322, [322, 350]]}},
                                "search": {"algorithm": "random"}})
    assert "data.eval_image_size" in searched.params
    trial = materialize(searched.base, {"data.eval_image_size": 322})
    assert trial["data"]["eval_image_size"] == [322, 322]


@pytest.mark.parametrize("value, message", [
    ("big", r"data.eval_image_size: expected a positive int or \[H, W\] or null "
            r"\(= data.image_size\), got 'big'"),
    ([322, 0], r"expected a positive int or \[H, W\]"),
    ({"uniform": [224, 322]}, "uniform gives numbers; an image size is searched with choice"),
    ({"choice": [322, "x"]}, r"expected a positive int or \[H, W\]"),
])
def test_a_bad_eval_image_size_is_one_error(value, message) -> None:
    with pytest.raises(UserError, match=message):
        space_from_dict({"data": {"eval_image_size": value}})


# ------------------------------------------------------------ the model it must fit
VIT = """
data: {image_size: 280, eval_image_size: %s}
model: {backbone: dinov2_vits14, aggregator: {name: boq}}
seed: {choice: [0, 1]}
search: {algorithm: random, num_samples: 2}
resources: {cpu: 1, gpu: 0}
"""
MIXVPR = """
data: {image_size: 320, eval_image_size: %s}
model: {backbone: resnet50, cut: layer3, aggregator: {name: mixvpr}}
seed: {choice: [0, 1]}
search: {algorithm: random, num_samples: 2}
resources: {cpu: 1, gpu: 0}
"""


@pytest.mark.parametrize("text, value, message", [
    (VIT, "300", "data.eval_image_size: 300x300 does not fit dinov2_vits14: each side must "
                 "be a multiple of its patch size 14 (nearest: 294;"),
    (VIT, "{choice: [322, [322, 330]]}", "data.eval_image_size: 322x330 does not fit"),
    (MIXVPR, "384", "data.eval_image_size: 384x384 differs from data.image_size 320x320, but "
                    "mixvpr's layers are sized for the feature map at data.image_size; leave "
                    "eval_image_size null or set it to data.image_size"),
])
def test_an_eval_size_the_model_cannot_take_stops_run(tmp_path, capsys, text, value,
                                                      message) -> None:
    path = write_yaml(tmp_path, text % value)
    assert run_cli(["run", str(path), "--dry-run"]) == 2
    assert message in error_line(capsys)


def test_eval_sizes_the_model_takes_pass_the_check(tmp_path) -> None:
    from vpr_tune.tune import load_run_space

    for text, value in ((VIT, "322"), (VIT, "{choice: [null, 322, [322, 336]]}"),
                        (MIXVPR, "null"), (MIXVPR, "320"), (MIXVPR, "[320, 320]")):
        load_run_space(write_yaml(tmp_path, text % value))  # no error


def test_trainer_refuses_mixvpr_at_another_eval_size_before_the_data(tmp_path) -> None:
    from vpr_tune.train import Trainer

    cfg = tiny_cfg(data={"eval_image_size": [48, 48]},
                   model={"aggregator": {"name": "mixvpr"}})
    with pytest.raises(UserError, match=r"data.eval_image_size: 48x48 differs from "
                                        r"data.image_size 32x32, but mixvpr's layers"):
        Trainer(cfg, tmp_path / "no-data-here", device="cpu", log=lambda _m: None)


# ----------------------------------------------------------------- what evaluates at it
def test_trainer_trains_at_image_size_and_validates_at_eval_size(street_world_tiny,
                                                                 monkeypatch) -> None:
    import vpr_tune.query_time as query_time
    import vpr_tune.train as train

    seen: dict[str, list] = {"train": [], "val cache": [], "val": [], "query_ms": []}

    def spy(module, name: str, what: str, arg: int) -> None:
        real = getattr(module, name)

        def wrapped(*args, **kwargs):
            seen[what].append(tuple(args[arg]))
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)

    spy(train, "build_train_loader", "train", 2)
    spy(train, "warm_val_cache", "val cache", 1)
    spy(train, "evaluate_split", "val", 2)
    spy(query_time, "query_ms", "query_ms", 1)
    cfg = tiny_cfg(data={"eval_image_size": [48, 48], "augment": False},
                   resources={"cpu": 1, "gpu": 0, "precision": "fp32"})
    cfg["budget"].update(max_epochs=1, batches_per_epoch=1)
    trainer = train.Trainer(cfg, street_world_tiny, device="cpu", num_threads=1,
                            log=lambda _m: None)
    row = trainer.run_epoch()
    assert seen == {"train": [(32, 32)], "val cache": [(48, 48)], "val": [(48, 48)],
                    "query_ms": [(48, 48)]}
    assert 0 <= row["val/R@1"] <= 100
    assert trainer.model.image_size == (32, 32)  # the model is built for the train size
    assert trainer.eval_size == (48, 48)


def test_retest_records_the_eval_size_in_its_protocol(tiny_checkpoints, tmp_path) -> None:
    """A best.pt whose config says eval_image_size 48 (one int) is tested at 48 x 48, and
    each test set's protocol says so (what compare checks)."""
    from vpr_tune.checkpoint import read_checkpoint, write_checkpoint
    from vpr_tune.retest import PROTOCOL_KEY, make_evaluator

    root, checkpoints = tiny_checkpoints
    state = read_checkpoint(checkpoints[0])
    state["config"]["data"]["eval_image_size"] = 48
    path = write_checkpoint(tmp_path / "best.pt", state)
    out = make_evaluator(log=lambda _m: None)(path, root, {"sf_test": "sf_xs/test"})
    assert out["sf_test"][PROTOCOL_KEY]["image_size"] == [48, 48]
    del state["config"]["data"]["eval_image_size"]  # a checkpoint from before the key
    write_checkpoint(path, state)
    out = make_evaluator(log=lambda _m: None)(path, root, {"sf_test": "sf_xs/test"})
    assert out["sf_test"][PROTOCOL_KEY]["image_size"] == [32, 32]


def test_a_search_caches_val_at_each_eval_size(street_world_tiny, tmp_path) -> None:
    """Before Ray starts: train images at the train sizes, val at the eval sizes (null: the
    train size), each once (on a copy of the data: no cache built by another test)."""
    import shutil

    from vpr_tune.tune.prepare import prepare_data

    root = shutil.copytree(street_world_tiny, tmp_path / "tiny")

    space = space_from_dict({"data": {"image_size": 32,
                                      "eval_image_size": {"choice": [None, 48, [32, 32]]}},
                             "search": {"algorithm": "random"}})
    lines: list[str] = []
    prepare_data(space, root, build_cache=True, log=lines.append)
    assert [line.split(":")[0] for line in lines] == [
        "image cache (train, 32x32)", "image cache (val, 32x32)", "image cache (val, 48x48)"]


def test_eval_and_save_preds_evaluate_at_the_eval_size(hand_experiment, tiny_checkpoints,
                                                       tmp_path, monkeypatch) -> None:
    """`vpr-tune eval` and `best --save-preds` hand evaluate_split the config's eval size."""
    import shutil

    import yaml

    import vpr_tune.evaluate as evaluate
    from vpr_tune.analysis import read_table
    from vpr_tune.checkpoint import read_checkpoint, write_checkpoint
    from vpr_tune.cli import main

    root, checkpoints = tiny_checkpoints
    state = read_checkpoint(checkpoints[0])
    state["config"]["data"]["eval_image_size"] = [48, 48]
    checkpoint = write_checkpoint(tmp_path / "best.pt", state)
    sizes: list[tuple] = []
    real = evaluate.evaluate_split

    def spy(model, split, image_size, *args, **kwargs):
        sizes.append(tuple(image_size))
        return real(model, split, image_size, *args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_split", spy)
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(root), "--json"]) == 0
    assert sizes == [(48, 48)]
    space = yaml.safe_load((hand_experiment / "space.yaml").read_text())
    space["data"] = {"root": str(root)}
    (hand_experiment / "space.yaml").write_text(yaml.safe_dump(space))
    trials = read_table(hand_experiment / "trials.csv").set_index("trial_id")
    shutil.copy2(checkpoint, trials.loc["t0", "checkpoint"])
    sizes.clear()
    assert main(["best", "hand", "--storage", str(hand_experiment.parent), "--trial", "t0",
                 "--save-preds", "1"]) == 0
    assert sizes and set(sizes) == {(48, 48)}  # val and each test set
