"""VPR model = backbone (a ResNet cut and partly frozen, or a DINOv2 ViT with its last blocks
training) + aggregator -> L2-normalised descriptor.

>>> model = build_model({"backbone": "resnet18", "aggregator": {"name": "gem"}}, (64, 64))
>>> model(torch.zeros(2, 3, 64, 64)).shape == (2, model.dim)
True
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vpr_tune.components import AGGREGATORS, BACKBONES, VisionTransformer, resolve_params
from vpr_tune.config import DEFAULTS
from vpr_tune.model.backbones import build_backbone, feature_size

__all__ = ["VPRModel", "build_model"]


def _split(out: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
           ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A backbone's output as ``(feature map, class token or None)``: a ViT returns both."""
    return out if isinstance(out, tuple) else (out, None)


class VPRModel(nn.Module):
    """``model(x) -> (B, dim)`` L2-normalised descriptors; ``features(x)`` the local map."""

    def __init__(
        self, backbone: nn.Module, aggregator: nn.Module, image_size: tuple[int, int]
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.aggregator = aggregator
        self.dim: int = int(aggregator.dim)
        self.image_size = tuple(image_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone feature map (B, C, h, w) (a ViT's patch tokens as a map)."""
        return _split(self.backbone(x))[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Under autocast only the backbone runs in reduced precision: pooling (GeM's x^p
        # overflows float16) gets a float32 map, and normalising again in float32 keeps the
        # contract (unit norm). Aggregators with ``takes_token`` (SALAD) also get the ViT's
        # class token (None from a ResNet).
        fmap, token = _split(self.backbone(x))
        if getattr(self.aggregator, "takes_token", False):
            desc = self.aggregator(fmap.float(), None if token is None else token.float())
        else:
            desc = self.aggregator(fmap.float())
        return F.normalize(desc.float(), dim=1)


def build_model(model_cfg: dict[str, Any], image_size: tuple[int, int] | list[int]) -> VPRModel:
    """Build the model from the ``model`` config section for images of ``image_size`` (H, W);
    keys the section leaves out take their ``config.DEFAULTS``."""
    cfg = {**DEFAULTS["model"], **model_cfg}
    name, params = resolve_params("model.aggregator", cfg["aggregator"])
    image_size = (int(image_size[0]), int(image_size[1]))
    if isinstance(BACKBONES.get(cfg["backbone"]), VisionTransformer):
        from vpr_tune.model.vit import build_vit, vit_feature_size

        size = vit_feature_size(cfg["backbone"], image_size)  # before building: fail fast
        backbone = build_vit(cfg["backbone"], cfg["pretrained"], cfg["train_blocks"])
        channels = int(backbone.vit.embed_dim)
    else:
        backbone, channels, stride = build_backbone(
            cfg["backbone"], cfg["pretrained"], cfg["cut"], cfg["freeze_stages"])
        size = feature_size(image_size, stride)
    aggregator = AGGREGATORS[name].build(channels, size, **params)
    return VPRModel(backbone, aggregator, image_size)
