"""Model: backbones x cuts x aggregators give unit-norm descriptors of the reported dim."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vpr_tune.components import AGGREGATORS, allowed_params
from vpr_tune.errors import UserError
from vpr_tune.model import build_model
from vpr_tune.model.backbones import build_backbone, feature_size

SMALL = {  # keep descriptors small so resnet50 tests stay fast
    "cosplace": {"dim": 64},
    "convap": {"out_channels": 32, "s1": 2, "s2": 2},
    "mixvpr": {"out_channels": 32, "mix_depth": 2, "out_rows": 2},
    "netvlad": {"clusters": 4},
    "salad": {"clusters": 4, "cluster_dim": 8, "token_dim": 16},
    "boq": {"proj_channels": 64, "queries": 4, "layers": 1, "output_dim": 128},
}
EXPECTED_DIM = {"cosplace": 64, "convap": 128, "mixvpr": 64, "salad": 4 * 8 + 16, "boq": 128}


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
@pytest.mark.parametrize("cut", ["layer3", "layer4"])
@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_aggregator_shape_and_norm(backbone: str, cut: str, name: str) -> None:
    torch.manual_seed(0)
    cfg = {"backbone": backbone, "cut": cut, "freeze_stages": 1,
           "aggregator": {"name": name, **SMALL.get(name, {})}}
    model = build_model(cfg, (32, 48)).eval()
    channels = {"resnet18": {"layer3": 256, "layer4": 512},
                "resnet50": {"layer3": 1024, "layer4": 2048}}[backbone][cut]
    dim = EXPECTED_DIM.get(name, channels * 4 if name == "netvlad" else channels)
    assert model.dim == dim
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 48))
    assert out.shape == (2, dim)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("cut", ["layer3", "layer4"])
def test_mixvpr_other_eval_size(cut: str) -> None:
    """MixVPR is sized at build time; other input sizes are resized, never a crash."""
    model = build_model({"cut": cut, "aggregator": {"name": "mixvpr", **SMALL["mixvpr"]}},
                        (64, 64)).eval()
    with torch.no_grad():
        for size in [(64, 64), (48, 80), (97, 33)]:
            out = model(torch.randn(2, 3, *size))
            assert out.shape == (2, 64)
            assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_feature_size_matches_backbone() -> None:
    for cut in ["layer3", "layer4"]:
        backbone, _, stride = build_backbone("resnet18", "none", cut, 0)
        backbone.eval()
        for hw in [(32, 32), (45, 77), (224, 224)]:
            with torch.no_grad():
                got = backbone(torch.zeros(1, 3, *hw)).shape[-2:]
            assert tuple(got) == feature_size(hw, stride)


def test_freeze_stages() -> None:
    backbone, _, _ = build_backbone("resnet18", "none", "layer4", 2)
    frozen = [all(not p.requires_grad for p in s.parameters()) for s in backbone]
    assert frozen == [True, True, False, False, False]


def test_gem_p_learnable() -> None:
    model = build_model({"aggregator": {"name": "gem", "p": 3}}, (32, 32))
    assert model.aggregator.p.requires_grad and model.aggregator.p.detach().item() == 3.0
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.aggregator.p.grad is not None


def test_netvlad_init_from_descriptors() -> None:
    model = build_model({"cut": "layer3", "aggregator": {"name": "netvlad", "clusters": 4}},
                        (32, 32))
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 256)).astype(np.float32) * 5
    feats = np.concatenate([c + rng.normal(size=(50, 256)).astype(np.float32) for c in centers])
    model.aggregator.init_from_descriptors(feats, seed=0)
    found = model.aggregator.centroids.detach().numpy()
    found /= np.linalg.norm(found, axis=1, keepdims=True)
    true = centers / np.linalg.norm(centers, axis=1, keepdims=True)
    # every true cluster centre has a k-means centroid pointing the same way
    assert (true @ found.T).max(axis=1).min() > 0.95
    assert float(model.aggregator.alpha) > 0
    out = model(torch.randn(2, 3, 32, 32))
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_unknown_aggregator_param_lists_allowed() -> None:
    with pytest.raises(UserError, match="clusters"):
        build_model({"aggregator": {"name": "netvlad", "dim": 3}}, (32, 32))
    with pytest.raises(UserError, match="not one of"):
        build_model({"aggregator": {"name": "vlad"}}, (32, 32))
    assert allowed_params("model.aggregator", "gem") == {"p", "learn_p"}


def test_pretrained_local_file(tmp_path) -> None:
    torch.manual_seed(1)
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    model = build_model({"pretrained": str(tmp_path / "r18.pth"), "freeze_stages": 0},
                        (32, 32))
    assert torch.equal(model.backbone[0][0].weight, net.conv1.weight)
    (tmp_path / "bad.pth").write_text("not weights")
    with pytest.raises(UserError, match="model.pretrained"):
        build_model({"pretrained": str(tmp_path / "bad.pth")}, (32, 32))
    with pytest.raises(UserError, match="not a file"):
        build_model({"pretrained": str(tmp_path / "missing.pth")}, (32, 32))


def test_pretrained_from_a_vpr_tune_model(tmp_path) -> None:
    """A trained vpr-tune model (here cut after layer3) is a starting point for fine-tuning:
    its backbone loads, its aggregator does not; a layer4 cut still needs layer4 weights."""
    torch.manual_seed(2)
    source = build_model({"cut": "layer3", "aggregator": {"name": "gem"}}, (32, 32))
    torch.save({"format": "x", "model": source.state_dict()}, tmp_path / "best.pt")
    tuned = build_model({"pretrained": str(tmp_path / "best.pt"), "cut": "layer3",
                         "aggregator": {"name": "cosplace", "dim": 16}}, (32, 32))
    for ours, theirs in zip(tuned.backbone.state_dict().values(),
                            source.backbone.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs)
    with pytest.raises(UserError, match=r"missing \['layer4"):
        build_model({"pretrained": str(tmp_path / "best.pt"), "cut": "layer4"}, (32, 32))


def test_pretrained_imagenet_offline_error(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserError, match=r"pretrained: /path/to/resnet18.pth.*pretrained: none"):
        build_model({"pretrained": "imagenet"}, (32, 32))
