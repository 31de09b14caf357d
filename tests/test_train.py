"""Training: every registry name builds and steps; Trainer determinism, resume, divergence."""

from __future__ import annotations

import pytest
import torch

from vpr_tune.errors import UserError
from vpr_tune.train import (
    LOSSES,
    MINERS,
    OPTIMIZERS,
    SCHEDULERS,
    LRSchedule,
    allowed_params,
    build_loss,
    build_miner,
    build_optimizer,
)


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


def _step(loss_cfg, miner_cfg, opt_cfg=None):
    model = Tiny()
    x, labels = _batch()
    loss_fn = build_loss(loss_cfg, num_places=4, dim=8)
    miner = build_miner(miner_cfg)
    opt = build_optimizer(opt_cfg or {"name": "sgd", "lr": 0.1}, model, loss_fn,
                          loss_cfg.get("lr"))
    before = [p.detach().clone() for p in model.parameters()]
    desc = model(x)
    loss = loss_fn(desc, labels, miner(desc, labels) if miner else None)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return model, before, loss_fn, opt


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_steps(name: str) -> None:
    model, before, loss_fn, opt = _step({"name": name}, {"name": "none"})
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert changed
    if name in ("arcface", "cosface"):
        assert len(opt.param_groups) == 2
        assert loss_fn.W.shape == (8, 4)  # (dim, num_places)


def test_classifier_loss_own_lr() -> None:
    _, _, _, opt = _step({"name": "cosface", "lr": 0.5}, {"name": "none"})
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]


@pytest.mark.parametrize("name", sorted(MINERS))
@pytest.mark.parametrize("loss", ["contrastive", "triplet"])
def test_every_miner_steps(name: str, loss: str) -> None:
    _step({"name": loss}, {"name": name})


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_steps(name: str) -> None:
    model, before, _, _ = _step({"name": "contrastive"}, {"name": "none"},
                                {"name": name, "lr": 0.05})
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


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
    assert allowed_params("aggregator", "convap") == {"out_channels", "s1", "s2"}
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


# ----------------------------------------------------------------------- Trainer on disk
def make_tiny_root(root, places: int = 8, views: int = 4, size: int = 40, seed: int = 0):
    """A tiny data root in the real on-disk format (GSV-XS train + SF-XS val): each place
    is a random colour pattern, its images noisy shifted copies; val queries look like
    their place and lie within 25 m of its database image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 256, size=(places, 5, 5, 3)).astype(np.float32)

    def view(i: int) -> Image.Image:
        img = np.kron(patterns[i], np.ones((size // 5 + 2, size // 5 + 2, 1)))
        dy, dx = rng.integers(0, 4, size=2)
        img = img[dy : dy + size, dx : dx + size] + rng.normal(0, 20, (size, size, 3))
        return Image.fromarray(img.clip(0, 255).astype(np.uint8))

    def name(i: int, j: int, note: str = "") -> str:
        east, north = 500000 + 200 * i + j, 4180000.0 + j
        return f"@{east:.2f}@{north:.2f}@10@S@37.7@-122.5@pano{i}x{j}@@@@@@201904@{note}@.jpg"

    for i in range(places):
        city = root / "gsv_xs" / "train" / "town"
        city.mkdir(parents=True, exist_ok=True)
        for j in range(views):
            view(i).save(city / name(i, j, f"{i}_Town"))
        for sub, j in (("database", 0), ("queries", 5)):
            folder = root / "sf_xs" / "val" / sub
            folder.mkdir(parents=True, exist_ok=True)
            view(i).save(folder / name(i, j))
    return root


@pytest.fixture
def tiny_root(tmp_path, monkeypatch):
    monkeypatch.setenv("VPR_TUNE_CACHE", str(tmp_path / "cache"))
    return make_tiny_root(tmp_path / "data")


def tiny_cfg(**over):
    from vpr_tune.config import defaults

    cfg = defaults()
    cfg["data"].update(image_size=[32, 32])
    cfg["model"].update(freeze_stages=0)
    cfg["optimizer"] = {"name": "sgd", "lr": 0.01, "weight_decay": 0.0}
    cfg["budget"].update(max_epochs=3, batches_per_epoch=2, places_per_batch=4,
                         images_per_place=2, eval_batch_size=8)
    for section, values in over.items():
        cfg[section] = {**cfg[section], **values} if isinstance(values, dict) else values
    return cfg


def _curve(cfg, root, epochs):
    from vpr_tune.train import Trainer

    t = Trainer(cfg, root, device="cpu", num_threads=1, log=lambda *_: None)
    return [t.run_epoch() for _ in range(epochs)], t


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_same_seed_same_curve(tiny_root, precision) -> None:
    cfg = tiny_cfg(scheduler={"name": "cosine"}, resources={"precision": precision})
    a, ta = _curve(cfg, tiny_root, 2)
    assert ta.amp_dtype == (torch.bfloat16 if precision == "bf16" else None)
    assert not ta.scaler.is_enabled()  # only float16 scales the loss
    b, tb = _curve(cfg, tiny_root, 2)
    assert a == b
    assert all(torch.equal(x, y) for x, y in zip(ta.model.state_dict().values(),
                                                 tb.model.state_dict().values(), strict=True))
    c, _ = _curve({**cfg, "seed": 1}, tiny_root, 1)
    assert c[0]["train/loss"] != a[0]["train/loss"]
    assert set(a[0]) == {"epoch", "train/loss", "lr", "val/R@1", "val/R@5", "val/R@10",
                         "val/R@25"}


@pytest.mark.parametrize("extra", [
    {"scheduler": {"name": "plateau", "patience": 0}},
    {"loss": {"name": "cosface", "lr": 0.1}, "optimizer": {"name": "adam", "lr": 1e-3}},
    {"model": {"aggregator": {"name": "netvlad", "clusters": 4}}},
])
def test_resume_equals_uninterrupted(tiny_root, tmp_path, extra) -> None:
    from vpr_tune.train import Trainer

    cfg = tiny_cfg(**extra)
    full, t_full = _curve(cfg, tiny_root, 3)
    part, t_part = _curve(cfg, tiny_root, 2)
    t_part.save_checkpoint(tmp_path / "ck" / "last.pt")
    assert not list((tmp_path / "ck").glob(".*tmp*"))  # atomic write leaves no tmp file
    resumed = Trainer(cfg, tiny_root, device="cpu", num_threads=1, log=lambda *_: None)
    resumed.load_checkpoint(tmp_path / "ck" / "last.pt")
    assert resumed.epoch == 2 and resumed.history == part
    assert resumed.run_epoch() == full[2]
    for x, y in zip(resumed.model.state_dict().values(), t_full.model.state_dict().values(),
                    strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize(("metric", "mode", "best_epoch"), [
    ("val/R@1", "max", 1), ("val/R@5", "max", 2), ("val/R@5", "min", 0)])
def test_best_follows_the_search_metric(tiny_root, monkeypatch, metric, mode,
                                        best_epoch) -> None:
    """best.pt is the best epoch by ``search.metric``/``mode``, not always by R@1."""
    from vpr_tune import train
    from vpr_tune.train import Trainer

    scripted = iter([{"R@1": 10, "R@5": 30, "R@10": 40, "R@25": 50},
                     {"R@1": 20, "R@5": 35, "R@10": 40, "R@25": 50},
                     {"R@1": 15, "R@5": 45, "R@10": 40, "R@25": 50}])
    monkeypatch.setattr(train, "evaluate", lambda *a, **k: next(scripted))
    cfg = tiny_cfg(search={"metric": metric, "mode": mode})
    t = Trainer(cfg, tiny_root, device="cpu", num_threads=1, log=lambda *_: None)
    marks = []
    for epoch in range(3):
        t.epoch = epoch
        t.validate()
        marks.append(t.is_best)
    assert t.best["metric"] == metric and t.best["epoch"] == best_epoch
    assert marks[0] and marks[best_epoch]


def test_diverged_on_absurd_lr(tiny_root) -> None:
    from vpr_tune.errors import DivergedError
    from vpr_tune.train import Trainer

    cfg = tiny_cfg(optimizer={"name": "sgd", "lr": 1e12, "momentum": 0.9},
                   loss={"name": "multisimilarity"},
                   budget={"batches_per_epoch": 8})
    t = Trainer(cfg, tiny_root, device="cpu", num_threads=1, log=lambda *_: None)
    with pytest.raises(DivergedError, match="loss is"):
        for _ in range(3):
            t.run_epoch()


def test_not_our_checkpoint(tmp_path) -> None:
    from vpr_tune.train import load_model_from_checkpoint

    (tmp_path / "x.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a vpr-tune checkpoint"):
        load_model_from_checkpoint(tmp_path / "x.pt")
    torch.save({"state_dict": {}}, tmp_path / "y.pt")
    with pytest.raises(UserError, match="not a vpr-tune checkpoint"):
        load_model_from_checkpoint(tmp_path / "y.pt")


def test_cli_train_writes_run_folder(tiny_root, tmp_path, capsys) -> None:
    import csv

    import yaml

    from vpr_tune.cli import main

    cfg_path = tmp_path / "t.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "data": {"image_size": [32, 32]}, "model": {"freeze_stages": 0},
        "miner": {"name": "multisimilarity"},
        "budget": {"max_epochs": 2, "batches_per_epoch": 2, "places_per_batch": 4,
                   "images_per_place": 2, "eval_batch_size": 8},
    }))
    out = tmp_path / "run"
    args = ["train", str(cfg_path), "--data", str(tiny_root), "--out", str(out)]
    assert main(args) == 0
    for name in ("metrics.csv", "config.yaml", "last.pt", "best.pt"):
        assert (out / name).is_file(), name
    assert list(out.glob("events.out.tfevents*"))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["train/loss"] == "" and float(rows[1]["train/loss"]) > 0
    assert yaml.safe_load((out / "config.yaml").read_text())["budget"]["max_epochs"] == 2
    assert main(args) == 2  # refuses to clobber a run without --resume / --overwrite
    assert "--resume" in capsys.readouterr().err
    # --resume on a finished run trains nothing more and keeps the rows
    assert main([*args, "--resume"]) == 0
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 3


def test_cli_train_bad_key(tmp_path, capsys) -> None:
    from vpr_tune.cli import main

    (tmp_path / "t.yaml").write_text("optimiser: {name: sgd}\n")
    assert main(["train", str(tmp_path / "t.yaml")]) == 2
    assert "optimiser" in capsys.readouterr().err
