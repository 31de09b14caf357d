"""A PBT/PB2 schedule in one process: what an exploit does to a trainer, without Ray.

A PBT trial's lineage (its lr, weight decay... per epoch) is exported as a ``replay`` list
in a train YAML (``vpr-tune best --export``): ``[{"epoch": 3, "optimizer.lr": 0.002}, ...]``.
The trainer applies the values in effect before each epoch (:func:`reconfigure`), as an
exploit applies them through a checkpoint; so ``vpr-tune train`` repeats the trial's curve.

- :func:`replayed_values`: the dotted values ``replay`` has set by an epoch.
- :func:`reconfigure`: a trainer trains on with new optimizer/loss/miner values.
- :func:`apply_optimizer_config`: the config's lr, weight decay... on a restored optimizer
  (after an exploit the checkpoint holds the source trial's values).

>>> replayed_values({"replay": [{"epoch": 3, "optimizer.lr": 0.002}]}, 4)
{'optimizer.lr': 0.002}
"""

from __future__ import annotations

from typing import Any

import torch

from vpr_tune.components import build_miner, optimizer_hyperparams
from vpr_tune.config import materialize
from vpr_tune.schedule import LRSchedule
from vpr_tune.train_setup import build_loss, build_optimizer


def replayed_values(cfg: dict[str, Any], epoch: int) -> dict[str, Any]:
    """The values ``cfg["replay"]`` has set by ``epoch`` (1-based; later entries win)."""
    values: dict[str, Any] = {}
    for entry in cfg.get("replay") or []:
        if int(entry["epoch"]) <= epoch:
            values.update({k: v for k, v in entry.items() if k != "epoch"})
    return values


def reconfigure(trainer: Any, values: dict[str, Any]) -> None:
    """``trainer`` (a :class:`vpr_tune.train.Trainer`) trains on with these dotted
    optimizer/loss/miner values (``{"optimizer.lr": x}``): in process what a PBT exploit
    does through a checkpoint. The loss and miner are rebuilt (keeping the loss's learned
    state), the optimizer's groups get the new values and the lr schedule is rebased on the
    new lr. Values equal to the config's change nothing."""
    changed = {k: v for k, v in values.items() if _dotted_get(trainer.cfg, k) != v}
    if not changed:
        return
    trainer.cfg = materialize(trainer.cfg, changed)
    if any(k.startswith("loss.") for k in changed):
        _rebuild_loss(trainer)
    if any(k.startswith("miner.") for k in changed):
        trainer.miner = build_miner(trainer.cfg["miner"])
    apply_optimizer_config(trainer.optimizer, trainer.schedule, trainer.cfg)
    trainer.log(f"epoch {trainer.epoch + 1}: replay sets "
                + ", ".join(f"{k}={v:g}" for k, v in changed.items()))


def _rebuild_loss(trainer: Any) -> None:
    """A new loss from ``trainer.cfg`` with the old one's learned state; the optimizer (a
    classifier loss's weights are a group of it) and schedule rebuilt around it, their
    state kept."""
    optimizer, schedule = trainer.optimizer.state_dict(), trainer.schedule.state_dict()
    loss_state = trainer.loss_fn.state_dict()
    trainer.loss_fn = build_loss(trainer.cfg, trainer.train_split.num_places, trainer.model,
                                 trainer.device)
    trainer.loss_fn.load_state_dict(loss_state)
    trainer.optimizer, trainer.schedule = build_optimizer(
        trainer.cfg, trainer.model, trainer.loss_fn, trainer.max_epochs,
        trainer.batches_per_epoch)
    trainer.optimizer.load_state_dict(optimizer)
    trainer.schedule.load_state_dict(schedule)


def apply_optimizer_config(optimizer: torch.optim.Optimizer, schedule: LRSchedule,
                           cfg: dict[str, Any]) -> None:
    """Set ``cfg``'s lr, weight decay, momentum... on a restored optimizer: after a PBT
    exploit the checkpoint holds the source trial's values. The same config -> no-op."""
    base, settings = optimizer_hyperparams(cfg["optimizer"], cfg["loss"],
                                           len(optimizer.param_groups))
    for group in optimizer.param_groups:
        group.update({k: v for k, v in settings.items() if k in group})
    if [round(b, 15) for b in base] != [round(b, 15) for b in schedule.base]:
        schedule.rebase(base)


def _dotted_get(cfg: dict[str, Any], key: str) -> Any:
    section, _, name = key.partition(".")
    return cfg.get(section, {}).get(name)
