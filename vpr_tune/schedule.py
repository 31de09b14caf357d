"""Learning-rate schedule of a run: linear warm-up, then the registry's torch scheduler.

>>> schedule = LRSchedule(optimizer, {"name": "cosine", "warmup_epochs": 1}, 10, 100)
>>> for epoch in range(10):
...     for batch in range(100):
...         schedule.before_batch(epoch, batch)  # warm-up lr, if still warming up
...         ...  # forward, backward, optimizer.step()
...     schedule.after_epoch(epoch + 1, val_r1)
"""

from __future__ import annotations

from typing import Any

import torch

from vpr_tune.components import SCHEDULERS, resolve_params


class LRSchedule:
    """Linear warm-up (per batch or per epoch) then the torch scheduler, stepped per epoch.

    During warm-up the scheduler is not stepped; each group's lr is its base lr times the
    warm-up fraction. Cosine then spans the remaining epochs; plateau watches val R@1."""

    def __init__(self, optimizer: torch.optim.Optimizer, section: dict[str, Any],
                 max_epochs: int, batches_per_epoch: int) -> None:
        name, params = resolve_params("scheduler", section)
        self.name = name
        self.optimizer = optimizer
        self.warmup = int(params.pop("warmup_epochs"))
        self.per_batch = bool(params.pop("warmup_per_batch"))
        self.batches = max(1, int(batches_per_epoch))
        self.base = [float(g["lr"]) for g in optimizer.param_groups]
        self.scheduler = SCHEDULERS[name].build(
            optimizer, max(1, int(max_epochs) - self.warmup), self.warmup, **params)

    def _scale(self, factor: float) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * factor

    def before_batch(self, epoch: int, batch: int) -> None:
        """Set the warm-up lr for batch ``batch`` of epoch ``epoch`` (0-based)."""
        if epoch < self.warmup:
            done = epoch * self.batches + batch + 1 if self.per_batch else epoch + 1
            self._scale(done / (self.warmup * (self.batches if self.per_batch else 1)))

    def after_epoch(self, epochs_done: int, val_r1: float) -> None:
        """Step after ``epochs_done`` completed epochs with their val R@1."""
        if epochs_done < self.warmup:
            return
        if epochs_done == self.warmup and self.warmup > 0:
            self._scale(1.0)  # warm-up over: the scheduler starts from the base lr
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_r1)
        elif self.scheduler is not None:
            self.scheduler.step()

    def rebase(self, base: list[float]) -> None:
        """New base lr per group (a PBT exploit): the current lrs scale with the bases, so
        the schedule keeps its progress (cosine half-way stays half-way)."""
        for group, old, new in zip(self.optimizer.param_groups, self.base, base, strict=True):
            group["lr"] = group["lr"] * new / old if old > 0 else new
            group["initial_lr"] = new
        if self.scheduler is not None and hasattr(self.scheduler, "base_lrs"):
            self.scheduler.base_lrs = list(base)
        self.base = list(base)

    def state_dict(self) -> dict[str, Any]:
        return {"base": self.base,
                "scheduler": self.scheduler.state_dict() if self.scheduler else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base = list(state["base"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
