"""``replay``: a PBT schedule trained again in one process gives the curve the exploit gave
through a checkpoint, a resumed replay picks up the values in effect, and a bad ``replay``
in a YAML is one clear error."""

from __future__ import annotations

import textwrap

import pytest

from vpr_tune.config import defaults, space_from_dict
from vpr_tune.errors import UserError
from vpr_tune.train import Trainer, replayed_values

QUIET = {"log": lambda _m: None, "device": "cpu"}
NEW = {"optimizer.lr": 0.002, "optimizer.weight_decay": 5e-4, "loss.neg_margin": 0.8}


def _cfg(scheduler: str = "cosine") -> dict:
    cfg = defaults()
    cfg["data"].update(image_size=[32, 32], augment=False)
    cfg["budget"].update(max_epochs=4, batches_per_epoch=2, places_per_batch=4,
                         images_per_place=2, eval_batch_size=32)
    cfg["optimizer"].update(name="sgd", lr=0.01, weight_decay=1e-3, momentum=0.9)
    cfg["loss"].update(name="contrastive", pos_margin=0.0, neg_margin=1.0)
    cfg["scheduler"] = {"name": scheduler}
    return cfg


def _curve(rows: list[dict]) -> list[tuple]:
    return [(r["epoch"], r["lr"], r["train/loss"], r["val/R@1"], r["val/R@5"]) for r in rows]


@pytest.mark.parametrize("scheduler", ["none", "cosine"])
def test_replay_trains_the_curve_an_exploit_trains(tmp_path, street_world_tiny, scheduler):
    # the exploit as PBT does it: a checkpoint after epoch 2, a new trainer with the new
    # values restores it and trains on
    cfg = _cfg(scheduler)
    source = Trainer(cfg, street_world_tiny, **QUIET)
    first = [source.run_epoch(), source.run_epoch()]
    source.save_checkpoint(tmp_path / "c.pt")
    exploited = _cfg(scheduler)
    for key, value in NEW.items():
        section, _, name = key.partition(".")
        exploited[section][name] = value
    clone = Trainer(exploited, street_world_tiny, **QUIET)
    clone.load_checkpoint(tmp_path / "c.pt")
    after = [clone.run_epoch(), clone.run_epoch()]
    # the same schedule replayed in one run from scratch
    replay = _cfg(scheduler)
    replay["replay"] = [{"epoch": 3, **NEW}]
    replayed = Trainer(replay, street_world_tiny, **QUIET)
    rows = [replayed.run_epoch() for _ in range(4)]
    assert _curve(rows) == _curve(first + after)
    assert rows[2]["lr"] != first[1]["lr"]  # the replay changed something
    assert replayed.optimizer.param_groups[0]["weight_decay"] == 5e-4
    assert replayed.loss_fn.neg_margin == 0.8

    # resumed after epoch 3 (the replayed values in effect), epoch 4 is the same again
    replayed_3 = Trainer(replay, street_world_tiny, **QUIET)
    for _ in range(3):
        replayed_3.run_epoch()
    replayed_3.save_checkpoint(tmp_path / "r.pt")
    resumed = Trainer(replay, street_world_tiny, **QUIET)
    resumed.load_checkpoint(tmp_path / "r.pt")
    assert resumed.loss_fn.neg_margin == 0.8
    assert _curve([resumed.run_epoch()]) == _curve(rows[3:])


def test_replayed_values_take_the_latest_entry_by_epoch():
    cfg = {"replay": [{"epoch": 1, "optimizer.lr": 1.0}, {"epoch": 3, "optimizer.lr": 2.0,
                                                          "optimizer.weight_decay": 0.1},
                      {"epoch": 5, "optimizer.lr": 3.0}]}
    assert replayed_values(cfg, 2) == {"optimizer.lr": 1.0}
    assert replayed_values(cfg, 4) == {"optimizer.lr": 2.0, "optimizer.weight_decay": 0.1}
    assert replayed_values(cfg, 9) == {"optimizer.lr": 3.0, "optimizer.weight_decay": 0.1}
    assert replayed_values({}, 3) == {}


SPACE = """
    optimizer: {{name: adam, lr: 0.001, weight_decay: 0.0}}
    budget: {{max_epochs: 6}}
    replay: {replay}
"""


@pytest.mark.parametrize("replay, where, message", [
    ("[{epoch: 2, optimizer.lr: 0.01}, {epoch: 2, optimizer.lr: 0.02}]", "replay[1].epoch",
     "above 2"),
    ("[{epoch: 0, optimizer.lr: 0.01}]", "replay[0].epoch", "above 0"),
    ("[{epoch: 2, optimizer.momentum: 0.9}]", "replay[0].optimizer.momentum",
     "allowed: optimizer.lr, optimizer.weight_decay"),
    ("[{epoch: 2, optimizer.lr: fast}]", "replay[0].optimizer.lr", "expected a number"),
    ("[{epoch: 2}]", "replay[0]", "names no value"),
    ("[0.01]", "replay[0]", "expected a mapping"),
    ("[{epoch: 7, optimizer.lr: 0.01}]", "replay[0].epoch", "past budget.max_epochs 6"),
])
def test_bad_replay_is_one_error_naming_the_entry(replay, where, message):
    import yaml

    raw = yaml.safe_load(textwrap.dedent(SPACE.format(replay=replay)))
    with pytest.raises(UserError, match=r"t\.yaml: " + where.replace("[", r"\[").replace(
            "]", r"\]") + ": .*" + message):
        space_from_dict(raw, "t.yaml")


def test_a_good_replay_loads():
    import yaml

    raw = yaml.safe_load(textwrap.dedent(SPACE.format(
        replay="[{epoch: 3, optimizer.lr: 0.0005, optimizer.weight_decay: 1.0e-4}]")))
    space = space_from_dict(raw, "t.yaml")
    assert space.base["replay"] == [{"epoch": 3, "optimizer.lr": 0.0005,
                                     "optimizer.weight_decay": 1.0e-4}]
    assert not space.params
