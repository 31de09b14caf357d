"""DINOv2 vision transformers from timm: the last ``train_blocks`` blocks train, the patch
tokens (as a map) and the class token go to the aggregator.

The YAML names them as the DINOv2 repository does (``dinov2_vitb14``, ``dinov2_vits14_reg``,
...; the registry, ``vpr_tune.components.BACKBONES``, maps each to timm's architecture).
timm rather than ``torch.hub.load("facebookresearch/dinov2")`` (what SALAD and BoQ call):
timm is a package on the index with versioned releases, builds the same architecture
(LayerScale, the register variants) without fetching code at run time, and converts the
original DINOv2 checkpoint files on load.

The positional embeddings are kept on DINOv2's 37 x 37 grid (518 px) and resampled to the
input's grid at every forward, as the DINOv2 hub models do, so one model takes any image
size whose sides are multiples of the patch size (14): a train size and another eval size.

``pretrained``:

- ``none``: random init (timm's);
- one of the architecture's pretrained tags in timm (``lvd142m``, DINOv2's weights):
  downloaded by timm from the Hugging Face hub where the machine is online;
- a local file: a timm or original DINOv2 state_dict (``dinov2_vitb14_pretrain.pth``), or a
  vpr-tune ``best.pt`` whose backbone is then fine-tuned.

>>> backbone = build_vit("dinov2_vits14", "none", train_blocks=2)
>>> fmap, token = backbone(torch.zeros(1, 3, 28, 42))
>>> fmap.shape, token.shape
(torch.Size([1, 384, 2, 3]), torch.Size([1, 384]))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vpr_tune.components import BACKBONES, VisionTransformer, image_size_problem
from vpr_tune.errors import UserError

# The grid of DINOv2's pretrained positional embeddings: 37 x 37 patches of 14 px.
PRETRAINED_GRID_PX = 518


class ViTBackbone(nn.Module):
    """``forward(x) -> (patch map (B, C, H/p, W/p), class token (B, C))``; frozen blocks have
    ``requires_grad=False`` (autograd then keeps none of their activations)."""

    def __init__(self, vit: nn.Module, patch: int) -> None:
        super().__init__()
        self.vit = vit
        self.patch = int(patch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        tokens = self.vit.forward_features(x)  # (B, prefix + h*w, C), after the final norm
        patches = tokens[:, self.vit.num_prefix_tokens:]
        fmap = patches.transpose(1, 2).reshape(b, -1, h // self.patch, w // self.patch)
        return fmap, tokens[:, 0]


def _spec(name: str) -> VisionTransformer:
    spec = BACKBONES.get(name)
    if not isinstance(spec, VisionTransformer):
        raise UserError(f"model.backbone: {name!r} is not a vision transformer")
    return spec


def _create(spec: VisionTransformer, tag: str | None = None) -> nn.Module:
    import timm

    arch = f"{spec.timm_name}.{tag}" if tag else spec.timm_name
    return timm.create_model(arch, pretrained=tag is not None, num_classes=0,
                             img_size=PRETRAINED_GRID_PX, dynamic_img_size=True,
                             **dict(spec.timm_kwargs))


def _read_state(path: Path) -> dict[str, Any]:
    from vpr_tune.model.weights import read_state_dict

    state = read_state_dict(path, "none, a pretrained tag or a .pth")
    if any(k.startswith("backbone.vit.") for k in state):  # a vpr-tune model
        state = {k.removeprefix("backbone.vit."): v for k, v in state.items()
                 if k.startswith("backbone.vit.")}
    return state


def load_vit_weights(vit: nn.Module, path: Path, name: str) -> None:
    """Load a local timm / DINOv2 / vpr-tune state_dict into ``vit`` (positional embeddings
    resampled to its grid); anything missing or left over is a :class:`UserError`."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = _read_state(path)
    try:
        state = checkpoint_filter_fn(state, vit)
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        missing, unexpected = vit.load_state_dict(state, strict=False)
    except Exception as exc:  # shapes of another architecture
        first = str(exc).strip().splitlines()[-1].strip()
        raise UserError(f"model.pretrained: {path} is not a {name} state_dict ({first})"
                        ) from exc
    if missing or unexpected:
        raise UserError(f"model.pretrained: {path} is not a {name} state_dict "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def _vit(name: str, pretrained: str | None) -> nn.Module:
    spec = _spec(name)
    choice = str(pretrained or "none")
    if choice.lower() == "none":
        return _create(spec)
    if choice in spec.tags:
        try:
            return _create(spec, choice)
        except Exception as exc:  # no network, no hub access, corrupt download ...
            raise UserError(
                f"model.pretrained: {choice}: could not get timm's {spec.timm_name}.{choice} "
                f"weights ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                f". Download them where the machine is online (the Hugging Face hub: timm/"
                f"{spec.timm_name}.{choice}, or DINOv2's {name}_pretrain.pth) and set "
                f"`pretrained: /path/to/weights.pth`, or use `pretrained: none`.") from exc
    if choice.lower() == "imagenet":
        raise UserError(f"model.pretrained: imagenet is for the ResNets; {name} takes none, "
                        f"{', '.join(spec.tags)} (timm's DINOv2 weights) or a local file")
    vit = _create(spec)
    load_vit_weights(vit, Path(choice).expanduser(), name)
    return vit


def check_vit_weights_file(path: Path | str, name: str) -> None:
    """Raise :class:`UserError` unless ``path`` loads as ``name`` weights; a pretrained tag
    (``lvd142m``) must be in the Hugging Face cache timm downloads to (``vpr-tune doctor``)."""
    spec = _spec(name)
    if str(path) in spec.tags:
        cached = hub_cached_weights(spec, str(path))
        if cached is None:
            raise UserError(f"model.pretrained: {path}: timm's {spec.timm_name}.{path} is not "
                            "in the Hugging Face cache; timm downloads it on first use where "
                            "the machine is online (offline: pretrained: /path/to/weights.pth)")
        return
    load_vit_weights(_create(spec), Path(path).expanduser(), name)


def hub_cached_weights(spec: VisionTransformer, tag: str) -> str | None:
    """The cached file of timm's ``tag`` weights for ``spec`` (None when not downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    repo = f"timm/{spec.timm_name}.{tag}"
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return found
    return None


def build_vit(name: str, pretrained: str | None, train_blocks: int) -> ViTBackbone:
    """The ViT of ``name`` with all but its last ``train_blocks`` blocks frozen (the final
    norm trains when any block does)."""
    spec = _spec(name)
    vit = _vit(name, pretrained)
    depth = len(vit.blocks)
    if isinstance(train_blocks, bool) or not isinstance(train_blocks, int) or not (
            0 <= train_blocks <= depth):
        raise UserError(f"model.train_blocks: {train_blocks!r} must be an int in 0..{depth} "
                        f"({name} has {depth} blocks; SALAD trains 4, BoQ 2)")
    vit.requires_grad_(False)
    if train_blocks:
        for block in vit.blocks[depth - train_blocks:]:
            block.requires_grad_(True)
        vit.norm.requires_grad_(True)
    return ViTBackbone(vit, spec.patch)


def vit_feature_size(name: str, image_size: tuple[int, int]) -> tuple[int, int]:
    """The patch grid at ``image_size``; a side that is no multiple of the patch size is a
    :class:`UserError` naming ``data.image_size``."""
    problem = image_size_problem(name, image_size)
    if problem:
        raise UserError(problem)
    patch = _spec(name).patch
    return image_size[0] // patch, image_size[1] // patch
