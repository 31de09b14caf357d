"""Registries: every name of every section builds and works; config accepts exactly them."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, NamedTuple

import pytest
import torch

from vpr_tune import components, config
from vpr_tune.components import (
    LOSSES,
    MINERS,
    OPTIMIZERS,
    SCHEDULERS,
    allowed_params,
    build_loss,
    build_miner,
    build_optimizer,
)
from vpr_tune.errors import UserError
from vpr_tune.schedule import LRSchedule


@pytest.mark.parametrize(("key", "registry"), [
    *[(f"{section}.name", registry) for section, registry in components.SECTIONS.items()],
    ("model.backbone", components.BACKBONES)])
def test_config_accepts_exactly_the_registry_names(key: str, registry: dict) -> None:
    assert config.NAMES[key] == tuple(registry)
    for name in registry:  # each name validates on its own
        node: dict = {}
        *parents, leaf = key.split(".")
        inner = node
        for part in parents:
            inner = inner.setdefault(part, {})
        inner[leaf] = name
        config.space_from_dict(node)
    with pytest.raises(UserError, match="is not one of"):
        config.space_from_dict({"loss": {"name": "no-such-loss"}})


def test_config_checks_params_against_the_registry() -> None:
    config.space_from_dict({"model": {"aggregator": {"name": "netvlad", "clusters": 8}}})
    with pytest.raises(UserError, match="'gem' takes no 'clusters'.*applies to netvlad"):
        config.space_from_dict({"model": {"aggregator": {"name": "gem", "clusters": 8}}})
    with pytest.raises(UserError, match="'contrastive' takes no 'epsilon'"):
        config.space_from_dict({"loss": {"name": "contrastive", "epsilon": 0.1}})


@pytest.mark.parametrize("name", sorted(components.AGGREGATORS))
def test_every_aggregator_builds_with_its_declared_params(name: str) -> None:
    """The table's parameters are exactly the class's keyword parameters (none forgotten)."""
    from vpr_tune.model import build_model

    spec = components.AGGREGATORS[name]
    sig = inspect.signature(spec.load())
    assert set(sig.parameters) - {"in_channels", "feature_size"} == set(spec.defaults)
    small = {"dim": 16, "out_channels": 8, "clusters": 4, "mix_depth": 1, "out_rows": 2}
    params = {k: v for k, v in small.items() if k in spec.defaults}
    model = build_model({"cut": "layer3", "aggregator": {"name": name, **params}},
                        (32, 32)).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, model.dim)


@pytest.mark.parametrize("name", sorted(components.BACKBONES))
def test_every_backbone_builds(name: str, monkeypatch) -> None:
    from vpr_tune.model import build_model
    from vpr_tune.model.backbones import build_backbone

    spec = components.BACKBONES[name]
    if isinstance(spec, components.VisionTransformer):  # one block: the width is what counts
        monkeypatch.setitem(components.BACKBONES, name,
                            dataclasses.replace(spec, timm_kwargs=(("depth", 1),)))
        model = build_model({"backbone": name, "train_blocks": 1,
                             "aggregator": {"name": "avg"}}, (28, 42)).eval()
        with torch.no_grad():
            assert model.features(torch.zeros(1, 3, 28, 42)).shape == (1, spec.width, 2, 3)
        return
    for cut in components.CUTS:
        backbone, channels, _ = build_backbone(name, "none", cut, 0)
        backbone.eval()
        with torch.no_grad():
            assert backbone(torch.zeros(1, 3, 32, 32)).shape[1] == channels


def _batch(places: int = 4, k: int = 4, dim: int = 8):
    torch.manual_seed(0)
    labels = torch.arange(places).repeat_interleave(k)
    x = torch.randn(places * k, 16)
    return x, labels


class Tiny(torch.nn.Module):
    dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16, 8)

    def forward(self, x):
        return torch.nn.functional.normalize(self.fc(x), dim=1)


class Step(NamedTuple):
    """One optimizer step of :func:`_step` and what it saw."""

    model: Tiny
    before: list[torch.Tensor]  # the model's parameters before the step
    loss_fn: torch.nn.Module
    opt: torch.optim.Optimizer
    labels: torch.Tensor
    tuples: Any  # what the miner returned (None without a miner)
    loss: torch.Tensor

    def changed(self) -> bool:
        """Whether the step moved any parameter of the model."""
        return any(not torch.equal(a, b)
                   for a, b in zip(self.before, self.model.parameters(), strict=True))


def _step(loss_cfg, miner_cfg, opt_cfg=None) -> Step:
    model = Tiny()
    x, labels = _batch()
    loss_fn = build_loss(loss_cfg, num_places=4, dim=8)
    miner = build_miner(miner_cfg)
    opt = build_optimizer(opt_cfg or {"name": "sgd", "lr": 0.1}, model, loss_fn,
                          loss_cfg.get("lr"))
    before = [p.detach().clone() for p in model.parameters()]
    desc = model(x)
    tuples = miner(desc, labels) if miner else None
    loss = loss_fn(desc, labels, tuples)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return Step(model, before, loss_fn, opt, labels, tuples, loss.detach())


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_steps(name: str) -> None:
    step = _step({"name": name}, {"name": "none"})
    assert step.changed()
    if name in ("arcface", "cosface"):
        assert len(step.opt.param_groups) == 2
        assert step.loss_fn.W.shape == (8, 4)  # (dim, num_places)


def test_classifier_loss_own_lr() -> None:
    step = _step({"name": "cosface", "lr": 0.5}, {"name": "none"})
    assert [g["lr"] for g in step.opt.param_groups] == [0.1, 0.5]


@pytest.mark.parametrize("name", sorted(MINERS))
@pytest.mark.parametrize("loss", ["contrastive", "triplet"])
def test_every_miner_steps(name: str, loss: str) -> None:
    """A step on the miner's tuples trains: the loss is finite and above 0, the weights move,
    and the miner returns index tuples into the batch (anchor and positive of one place,
    negative of another), pairs ``(a1, p, a2, n)`` or triplets ``(a, p, n)``."""
    step = _step({"name": loss}, {"name": name})
    assert torch.isfinite(step.loss) and step.loss > 0
    assert step.changed()
    if name == "none":
        assert step.tuples is None
        return
    labels = step.labels
    assert isinstance(step.tuples, tuple) and len(step.tuples) in (3, 4), step.tuples
    for index in step.tuples:
        assert index.dtype == torch.long and index.numel() > 0
        assert int(index.min()) >= 0 and int(index.max()) < len(labels)
    if len(step.tuples) == 3:
        anchor, positive, negative = step.tuples
        pos_anchor = neg_anchor = anchor
    else:
        pos_anchor, positive, neg_anchor, negative = step.tuples
    assert (labels[pos_anchor] == labels[positive]).all()
    assert (pos_anchor != positive).all()
    assert (labels[neg_anchor] != labels[negative]).all()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_steps(name: str) -> None:
    step = _step({"name": "contrastive"}, {"name": "none"}, {"name": name, "lr": 0.05})
    assert step.changed()


def test_params_reach_the_objects() -> None:
    assert build_loss({"name": "contrastive"}, 4, 8).neg_margin == 1.0
    assert build_loss({"name": "contrastive", "neg_margin": 0.7}, 4, 8).neg_margin == 0.7
    assert build_miner({"name": "multisimilarity"}).epsilon == 0.1
    opt = build_optimizer({"name": "sgd", "lr": 0.1, "nesterov": True}, Tiny())
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["nesterov"]
    assert build_miner({"name": "none"}) is None


def test_unknown_params_and_names() -> None:
    with pytest.raises(UserError, match="allowed: .*neg_margin.*pos_margin"):
        build_loss({"name": "contrastive", "margin": 1}, 4, 8)
    with pytest.raises(UserError, match="not one of"):
        build_miner({"name": "hardest"})
    assert allowed_params("miner", "multisimilarity") == {"epsilon"}
    assert "warmup_epochs" in allowed_params("scheduler", "cosine")
    assert "lr" in allowed_params("loss", "arcface") and "lr" not in allowed_params(
        "loss", "contrastive")
    assert allowed_params("model.aggregator", "convap") == {"out_channels", "s1", "s2"}
    with pytest.raises(UserError):
        allowed_params("optimiser", "sgd")


def _lrs(sched_cfg, epochs=6, batches=2, r1=None):
    model = Tiny()
    opt = build_optimizer({"name": "sgd", "lr": 1.0}, model)
    sched = LRSchedule(opt, sched_cfg, epochs, batches)
    seen = []
    for e in range(epochs):
        for b in range(batches):
            sched.before_batch(e, b)
            opt.step()
            seen.append(round(opt.param_groups[0]["lr"], 6))
        sched.after_epoch(e + 1, (r1 or [0] * epochs)[e])
    return seen


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_steps(name: str) -> None:
    cfg = {"name": name, **({"milestones": [2, 4]} if name == "multistep" else {})}
    seen = _lrs(cfg, r1=[1, 1, 1, 1, 1, 1])
    assert seen[0] == 1.0
    if name == "none":
        assert set(seen) == {1.0}
    else:
        assert seen[-1] < 1.0  # cosine decays, plateau reduces, multistep drops


def test_warmup_per_batch_and_epoch() -> None:
    seen = _lrs({"name": "none", "warmup_epochs": 2}, epochs=3, batches=2)
    assert seen == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    seen = _lrs({"name": "none", "warmup_epochs": 2, "warmup_per_batch": False}, 3, 2)
    assert seen == [0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    # cosine after warm-up starts from the base lr and spans the remaining epochs
    seen = _lrs({"name": "cosine", "warmup_epochs": 1}, epochs=3, batches=1)
    assert seen == [1.0, 1.0, 0.5]
    seen = _lrs({"name": "multistep", "milestones": [2], "gamma": 0.1}, epochs=4, batches=1)
    assert seen == [1.0, 1.0, 0.1, 0.1]
