"""DINOv2 backbones (timm), SALAD and BoQ: descriptor sizes of the papers, the trained
blocks, the patch-size rule, weights files, the backbone's own lr, and a trial of each
aggregator on street-world tiny.

Offline: the architectures are built with random weights (``dinov2_vitb14`` with one block
where only its width matters); the trials use the real ``dinov2_vits14`` at 28 px (2 x 2
patch tokens), a few batches.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vpr_tune import components
from vpr_tune.components import build_optimizer, image_size_problem, optimizer_hyperparams
from vpr_tune.errors import UserError
from vpr_tune.model import build_model


def _shallow(monkeypatch, name: str, depth: int = 1) -> None:
    """``name`` built with ``depth`` blocks (its width, patch and tokens unchanged)."""
    spec = components.BACKBONES[name]
    monkeypatch.setitem(components.BACKBONES, name,
                        dataclasses.replace(spec, timm_kwargs=(("depth", depth),)))


@pytest.mark.parametrize(("aggregator", "dim"), [("salad", 64 * 128 + 256), ("boq", 12288)])
def test_descriptor_sizes_of_the_papers(monkeypatch, aggregator: str, dim: int) -> None:
    """SALAD on DINOv2-B/14: 8,448-d; BoQ: 12,288-d (384 x 32), at the registry defaults."""
    _shallow(monkeypatch, "dinov2_vitb14")
    model = build_model({"backbone": "dinov2_vitb14", "train_blocks": 1,
                         "aggregator": {"name": aggregator}}, (224, 224)).eval()
    assert model.dim == dim
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, dim)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_boq_resnet50_size_and_any_eval_size() -> None:
    """BoQ's ResNet-50 variant (proj 512) is 16,384-d; a ViT model takes another eval size."""
    model = build_model({"backbone": "resnet50", "cut": "layer3",
                         "aggregator": {"name": "boq", "proj_channels": 512,
                                        "output_dim": 16384}}, (32, 32))
    assert model.dim == 16384
    with pytest.raises(UserError, match="output_dim: 1000 must be a multiple of proj_channels"):
        build_model({"aggregator": {"name": "boq", "output_dim": 1000}}, (32, 32))


def test_vit_tokens_and_other_sizes() -> None:
    """Patch tokens as a (C, H/14, W/14) map and the class token; any multiple of 14 works
    after building (the positional grid is resampled)."""
    model = build_model({"backbone": "dinov2_vits14", "train_blocks": 1,
                         "aggregator": {"name": "salad", "clusters": 4, "cluster_dim": 8,
                                        "token_dim": 8}}, (28, 28)).eval()
    with torch.no_grad():
        fmap, token = model.backbone(torch.randn(1, 3, 42, 70))
        assert fmap.shape == (1, 384, 3, 5) and token.shape == (1, 384)
        assert model.features(torch.randn(1, 3, 28, 28)).shape == (1, 384, 2, 2)
        assert model(torch.randn(2, 3, 56, 28)).shape == (2, 4 * 8 + 8)


def test_train_blocks_freeze_the_rest(monkeypatch) -> None:
    _shallow(monkeypatch, "dinov2_vits14_reg", depth=3)
    model = build_model({"backbone": "dinov2_vits14_reg", "train_blocks": 2,
                         "aggregator": {"name": "gem"}}, (28, 28))
    vit = model.backbone.vit
    assert vit.num_prefix_tokens == 5  # class token + 4 registers
    trains = [all(p.requires_grad for p in b.parameters()) for b in vit.blocks]
    assert trains == [False, True, True]
    assert not any(p.requires_grad for p in vit.patch_embed.parameters())
    assert not vit.pos_embed.requires_grad and not vit.cls_token.requires_grad
    assert all(p.requires_grad for p in vit.norm.parameters())
    frozen = build_model({"backbone": "dinov2_vits14_reg", "train_blocks": 0,
                          "aggregator": {"name": "gem"}}, (28, 28))
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    with pytest.raises(UserError, match=r"model.train_blocks: 4 must be an int in 0..3"):
        build_model({"backbone": "dinov2_vits14_reg", "train_blocks": 4,
                     "aggregator": {"name": "gem"}}, (28, 28))


def test_image_size_must_be_a_multiple_of_the_patch() -> None:
    with pytest.raises(UserError, match=r"data.image_size: 30x30 does not fit dinov2_vits14: "
                                        r"each side must be a multiple of its patch size 14 "
                                        r"\(nearest: 28"):
        build_model({"backbone": "dinov2_vits14", "aggregator": {"name": "gem"}}, (30, 30))
    assert image_size_problem("dinov2_vitb14", [280, 322]) is None
    assert "nearest: 224x294" in image_size_problem("dinov2_vitb14", [230, 300])
    assert image_size_problem("resnet18", 30) is None


def test_weights_file_round_trip(tmp_path, monkeypatch) -> None:
    """A timm state_dict, an original DINOv2 file (its mask_token) and a vpr-tune best.pt
    load; another architecture's file is one UserError."""
    from vpr_tune.model.backbones import check_weights_file

    _shallow(monkeypatch, "dinov2_vits14", depth=2)
    cfg = {"backbone": "dinov2_vits14", "train_blocks": 1, "aggregator": {"name": "gem"}}
    torch.manual_seed(3)
    source = build_model(cfg, (28, 28))
    state = source.backbone.vit.state_dict()
    torch.save(state, tmp_path / "vits14.pth")
    torch.save({**state, "mask_token": torch.zeros(1, 384)}, tmp_path / "dinov2_format.pth")
    torch.save({"model": source.state_dict()}, tmp_path / "best.pt")
    for name in ("vits14.pth", "dinov2_format.pth", "best.pt"):
        torch.manual_seed(4)
        loaded = build_model({**cfg, "pretrained": str(tmp_path / name)}, (28, 28))
        for key, value in loaded.backbone.vit.state_dict().items():
            assert torch.equal(value, state[key]), (name, key)
        check_weights_file(tmp_path / name, "dinov2_vits14")
    _shallow(monkeypatch, "dinov2_vitb14", depth=2)
    with pytest.raises(UserError, match="is not a dinov2_vitb14 state_dict"):
        build_model({**cfg, "backbone": "dinov2_vitb14",
                     "pretrained": str(tmp_path / "vits14.pth")}, (28, 28))
    with pytest.raises(UserError, match="imagenet is for the ResNets; dinov2_vits14 takes none, "
                                        "lvd142m"):
        build_model({**cfg, "pretrained": "imagenet"}, (28, 28))


def test_pretrained_tag_offline_error(monkeypatch) -> None:
    import timm

    from vpr_tune.model.backbones import check_weights_file

    with pytest.raises(UserError, match="not in the Hugging Face cache"):  # what doctor says
        check_weights_file("lvd142m", "dinov2_vits14")

    def offline(*args, pretrained=False, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(UserError, match=r"lvd142m: could not get timm's "
                                        r"vit_small_patch14_dinov2.lvd142m weights.*"
                                        r"pretrained: /path/to/weights.pth"):
        build_model({"backbone": "dinov2_vits14", "pretrained": "lvd142m",
                     "aggregator": {"name": "gem"}}, (28, 28))


def test_backbone_lr_scale_is_a_param_group(monkeypatch) -> None:
    """The head at lr, the backbone at lr x backbone_lr_scale, a classifier loss at its own;
    optimizer_hyperparams gives the same bases (what a PBT restore re-applies)."""
    from pytorch_metric_learning.losses import CosFaceLoss

    _shallow(monkeypatch, "dinov2_vits14")
    model = build_model({"backbone": "dinov2_vits14", "train_blocks": 1,
                         "aggregator": {"name": "gem"}}, (28, 28))
    section = {"name": "adamw", "lr": 1e-3, "backbone_lr_scale": 0.2}
    opt = build_optimizer(section, model)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, pytest.approx(2e-4)]
    backbone = {id(p) for p in model.backbone.parameters()}
    assert all(id(p) in backbone for p in opt.param_groups[1]["params"])
    assert not any(id(p) in backbone for p in opt.param_groups[0]["params"])
    assert optimizer_hyperparams(section, {"name": "multisimilarity"}, 2)[0] == [
        1e-3, pytest.approx(2e-4)]
    loss = CosFaceLoss(num_classes=4, embedding_size=model.dim)
    opt = build_optimizer(section, model, loss, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, pytest.approx(2e-4), 0.5]
    assert optimizer_hyperparams(section, {"name": "cosface", "lr": 0.5}, 3)[0] == [
        1e-3, pytest.approx(2e-4), 0.5]
    assert optimizer_hyperparams(section, {"name": "cosface", "lr": 0.5}, 2)[0] == [1e-3, 0.5]


def test_salad_transport_plan() -> None:
    """Each token's mass over clusters + dustbin is 1; with more tokens than clusters each
    cluster receives about one token's mass (the paper's marginals); with fewer, finite."""
    from vpr_tune.model.salad import SALAD

    torch.manual_seed(0)
    salad = SALAD(16, (8, 8), clusters=4, cluster_dim=8, token_dim=8, sinkhorn_iters=50,
                  dropout=0.0).eval()
    with torch.no_grad():
        plan = salad.assignment(torch.randn(2, 16, 8, 8))  # 64 tokens, 4 clusters
        assert plan.shape == (2, 4, 64)
        assert (plan.sum(dim=1) <= 1 + 1e-5).all()
        assert torch.allclose(plan.sum(dim=2), torch.ones(2, 4), atol=1e-3)
        few = salad.assignment(torch.randn(2, 16, 1, 2))  # 2 tokens < 4 clusters
        assert torch.isfinite(few).all()
        assert torch.allclose(few.sum(dim=2), torch.full((2, 4), 2 / 5), atol=1e-3)


@pytest.mark.parametrize("aggregator", ["salad", "boq"])
def test_dinov2_trial_trains_and_evaluates(street_world_tiny, aggregator: str) -> None:
    """DINOv2-S/14 + SALAD / BoQ: a trial's epoch on street-world tiny (2 batches of 4 x 2 at
    28 px, the backbone at 0.2x lr) reports recalls and the Pareto costs, and moves the
    trained blocks only."""
    from tests.helpers import tiny_cfg
    from vpr_tune.metrics import DESCRIPTOR_DIM, PARAMS_M, QUERY_MS
    from vpr_tune.train import Trainer

    cfg = tiny_cfg(data={"image_size": [28, 28], "augment": False},
                   model={"backbone": "dinov2_vits14", "train_blocks": 1,
                          "aggregator": {"name": aggregator}},
                   loss={"name": "multisimilarity"}, miner={"name": "multisimilarity"},
                   optimizer={"name": "adamw", "lr": 1e-4, "backbone_lr_scale": 0.2},
                   budget={"max_epochs": 1, "batches_per_epoch": 2},
                   resources={"cpu": 1, "gpu": 0, "precision": "fp32"})
    trainer = Trainer(cfg, street_world_tiny, device="cpu", num_threads=1,
                      log=lambda _m: None)
    vit = trainer.model.backbone.vit
    frozen, trained = vit.blocks[0].mlp.fc1.weight.clone(), vit.blocks[-1].mlp.fc1.weight.clone()
    row = trainer.run_epoch()
    assert 0 <= row["val/R@1"] <= 100 and row["train/loss"] > 0
    assert row[DESCRIPTOR_DIM] == {"salad": 8448, "boq": 12288}[aggregator]
    assert row[QUERY_MS] > 0 and row[PARAMS_M] > 21  # ViT-S/14 is 22M parameters
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [1e-4, pytest.approx(2e-5)]
    assert torch.equal(vit.blocks[0].mlp.fc1.weight, frozen)
    assert not torch.equal(vit.blocks[-1].mlp.fc1.weight, trained)
