"""ResNet backbones from torchvision, cut after layer3 or layer4, first stages frozen.

``pretrained`` is ``none`` (random init), ``imagenet`` (torchvision's weights; downloaded on
a user's machine) or a path to a local file: a torchvision ResNet state_dict, or a
vpr-tune checkpoint (``best.pt`` of ``train``/``run``), whose backbone is then fine-tuned.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torchvision
from torch import nn

from vpr_tune.components import BACKBONES, CUTS
from vpr_tune.errors import UserError

# Stages in order; ``freeze_stages: N`` freezes the first N of them.
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


# vpr-tune's backbone is nn.Sequential(stem, layer1, ...): map its names to torchvision's.
_OURS = re.compile(r"^backbone\.(0\.0|0\.1|[1-4])\.")
_TORCHVISION = {"0.0": "conv1.", "0.1": "bn1.", "1": "layer1.", "2": "layer2.", "3": "layer3.",
                "4": "layer4."}


def _load_local(net: nn.Module, path: Path, name: str, used: tuple[str, ...]) -> None:
    """Load a local state_dict; only the layers of the ``used`` stages must be in it, so a
    backbone saved after a layer3 cut loads into a layer3 cut."""
    from vpr_tune.model.weights import read_state_dict

    state = read_state_dict(path, "none, imagenet or a .pth")
    if any(k.startswith("backbone.0.0.") for k in state):  # a vpr-tune model: nn.Sequential
        state = {_OURS.sub(lambda m: _TORCHVISION[m.group(1)], k): v for k, v in state.items()
                 if k.startswith("backbone.")}
    state = {k.removeprefix("backbone."): v for k, v in state.items()
             if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    prefixes = tuple(("conv1.", "bn1.") if s == "stem" else (f"{s}.",) for s in used)
    missing = [k for k in missing if k.startswith(sum(prefixes, ()))]
    if missing or unexpected:
        raise UserError(
            f"model.pretrained: {path} is not a {name} state_dict "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def imagenet_weights_file(name: str) -> Path:
    """Where torchvision keeps backbone ``name``'s ImageNet weights once downloaded."""
    url = getattr(torchvision.models, BACKBONES[name].weights).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def check_weights_file(path: Path | str, name: str = "resnet18") -> None:
    """Raise :class:`UserError` unless ``path`` loads as ``name`` weights (what
    ``pretrained: PATH`` does at build time, without building the model)."""
    if not hasattr(BACKBONES[name], "factory"):  # a ViT (vpr_tune/model/vit.py)
        from vpr_tune.model.vit import check_vit_weights_file

        check_vit_weights_file(path, name)
        return
    net = getattr(torchvision.models, BACKBONES[name].factory)(weights=None)
    _load_local(net, Path(path).expanduser(), name, ("stem",))


def _resnet(name: str, pretrained: str | None, used: tuple[str, ...] = STAGES) -> nn.Module:
    factory = getattr(torchvision.models, BACKBONES[name].factory)
    weights_enum = BACKBONES[name].weights
    choice = str(pretrained or "none")
    if choice.lower() == "none":
        return factory(weights=None)
    if choice.lower() == "imagenet":
        weights = getattr(torchvision.models, weights_enum).IMAGENET1K_V1
        try:
            return factory(weights=weights)
        except Exception as exc:  # no network, proxy, corrupt download ...
            raise UserError(
                f"model.pretrained: imagenet: could not get torchvision's {name} weights "
                f"({type(exc).__name__}: {exc}). Download {weights.url} elsewhere and set "
                f"`pretrained: /path/to/{name}.pth`, or use `pretrained: none`."
            ) from exc
    net = factory(weights=None)
    _load_local(net, Path(choice).expanduser(), name, used)
    return net


def build_backbone(
    name: str, pretrained: str | None, cut: str, freeze_stages: int
) -> tuple[nn.Sequential, int, int]:
    """Return ``(backbone, out_channels, stride)``; frozen stages have ``requires_grad=False``."""
    if name not in BACKBONES:
        raise UserError(f"model.backbone: {name!r} is not one of {', '.join(BACKBONES)}")
    if cut not in CUTS:
        raise UserError(f"model.cut: {cut!r} is not one of {', '.join(CUTS)}")
    n_stages = STAGES.index(cut) + 1
    if not isinstance(freeze_stages, int) or not 0 <= freeze_stages <= n_stages:
        raise UserError(f"model.freeze_stages: {freeze_stages!r} must be an int in 0..{n_stages}")
    net = _resnet(name, pretrained, STAGES[:n_stages])
    stages = [nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)]
    stages += [getattr(net, s) for s in STAGES[1:n_stages]]
    for stage in stages[:freeze_stages]:
        for p in stage.parameters():
            p.requires_grad_(False)
    backbone = nn.Sequential(*stages)
    return backbone, BACKBONES[name].channels[cut], 2 ** (n_stages)


def feature_size(image_size: tuple[int, int], stride: int) -> tuple[int, int]:
    """Spatial size of the backbone output: every stride-2 layer rounds up."""
    h, w = image_size
    for _ in range(int(math.log2(stride))):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h, w
