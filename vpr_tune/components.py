"""The named building blocks a YAML can choose, one registry per config section.

Each registry maps the YAML name to a ``Spec(target, defaults)``: ``defaults`` lists every
parameter the YAML may set for that name, with its default, so the registries are the only
place those names and parameters are written. The config validator reads them
(``allowed_params``), the builders read them (``resolve_params``). Adding a loss is one line::

    "lifted": Spec("pytorch_metric_learning.losses.LiftedStructureLoss", {"pos_margin": 0.0}),

A ``target`` given as ``"module.attr"`` is imported when first built, so importing this module
(and the validator with it) imports neither torch nor PML.

>>> name, params = resolve_params("miner", {"name": "multisimilarity"})
>>> name, params
('multisimilarity', {'epsilon': 0.1})
>>> miner = build_miner({"name": "multisimilarity", "epsilon": 0.2})  # a PML miner
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vpr_tune.errors import UserError


@dataclass(frozen=True)
class Spec:
    """A registry entry: what builds it and every parameter the YAML may set, with defaults."""

    target: str | Callable[..., Any]  # a callable, or "module.attr" imported when first built
    defaults: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Callable[..., Any]:
        """The callable (imports its module on first use)."""
        if callable(self.target):
            return self.target
        module, _, attr = self.target.rpartition(".")
        return getattr(importlib.import_module(module), attr)

    def build(self, *args: Any, **params: Any) -> Any:
        return self.load()(*args, **params)


# ------------------------------------------------------------------------ losses, miners
_PML_LOSS = "pytorch_metric_learning.losses."
_PML_MINER = "pytorch_metric_learning.miners."
# Classifier losses (ArcFace/CosFace) also get num_classes and embedding_size, and `lr` for
# their own param group (None -> optimizer.lr); `lr` is not passed to the loss.
LOSSES: dict[str, Spec] = {
    "contrastive": Spec(_PML_LOSS + "ContrastiveLoss", {"pos_margin": 0.0, "neg_margin": 1.0}),
    "triplet": Spec(_PML_LOSS + "TripletMarginLoss",
                    {"margin": 0.05, "swap": False, "smooth_loss": False}),
    "multisimilarity": Spec(_PML_LOSS + "MultiSimilarityLoss",
                            {"alpha": 2.0, "beta": 50.0, "base": 0.5}),
    "circle": Spec(_PML_LOSS + "CircleLoss", {"m": 0.4, "gamma": 80.0}),
    "arcface": Spec(_PML_LOSS + "ArcFaceLoss", {"margin": 28.6, "scale": 64.0, "lr": None}),
    "cosface": Spec(_PML_LOSS + "CosFaceLoss", {"margin": 0.35, "scale": 64.0, "lr": None}),
}
CLASSIFIER_LOSSES = ("arcface", "cosface")
# The unit of each loss parameter whose scale differs between losses, and the range a value
# in that unit plausibly takes (embeddings are L2-normalised: distances in [0, 2], cosines in
# [-1, 1]). The config validator refuses a value outside it, naming the unit and the
# registry default: an ArcFace margin of 0.3 is a CosFace-style value, not 0.3 degrees.
LOSS_UNITS: dict[tuple[str, str], tuple[str, float, float]] = {
    ("arcface", "margin"): ("degrees", 5.0, 90.0),
    ("cosface", "margin"): ("cosine units", 0.0, 1.0),
    ("triplet", "margin"): ("distance units", 0.0, 2.0),
    ("contrastive", "pos_margin"): ("distance units", 0.0, 2.0),
    ("contrastive", "neg_margin"): ("distance units", 0.0, 2.0),
    ("multisimilarity", "base"): ("cosine units", -1.0, 1.0),
    ("circle", "m"): ("cosine units", 0.0, 1.0),
    ("arcface", "scale"): ("logit scale", 1.0, 256.0),
    ("cosface", "scale"): ("logit scale", 1.0, 256.0),
}

MINERS: dict[str, Spec] = {
    "none": Spec(lambda: None),
    "multisimilarity": Spec(_PML_MINER + "MultiSimilarityMiner", {"epsilon": 0.1}),
    "batchhard": Spec(_PML_MINER + "BatchHardMiner"),
    "tripletmargin": Spec(_PML_MINER + "TripletMarginMiner",
                          {"margin": 0.2, "type_of_triplets": "all"}),
    "pairmargin": Spec(_PML_MINER + "PairMarginMiner", {"pos_margin": 0.2, "neg_margin": 0.8}),
}


# ---------------------------------------------------------------- optimizers, schedulers
def _sgd(params: Any, lr: float, weight_decay: float, momentum: float, nesterov: bool) -> Any:
    import torch

    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum,
                           nesterov=bool(nesterov) and momentum > 0)


def _adam(cls: str) -> Callable[..., Any]:
    """Adam-style builder taking ``beta1``/``beta2`` as two searchable numbers."""

    def build(params: Any, lr: float, weight_decay: float, beta1: float, beta2: float,
              eps: float) -> Any:
        import torch

        return getattr(torch.optim, cls)(params, lr=lr, weight_decay=weight_decay,
                                         betas=(beta1, beta2), eps=eps)

    return build


# Every optimizer also takes backbone_lr_scale: the backbone's lr is lr x this (BoQ trains
# its DINOv2 at 0.2x); build_optimizer gives the backbone a param group of its own.
_BACKBONE_LR = {"backbone_lr_scale": 1.0}
_ADAM = {"lr": 1e-3, "weight_decay": 0.0, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
         **_BACKBONE_LR}
OPTIMIZERS: dict[str, Spec] = {
    "sgd": Spec(_sgd, {"lr": 0.0025, "weight_decay": 0.001, "momentum": 0.9, "nesterov": False,
                       **_BACKBONE_LR}),
    "adam": Spec(_adam("Adam"), _ADAM),
    "adamw": Spec(_adam("AdamW"), {**_ADAM, "weight_decay": 0.01}),
    "asgd": Spec("torch.optim.ASGD", {"lr": 0.01, "weight_decay": 0.0, "lambd": 1e-4,
                                      "alpha": 0.75, "t0": 1e6, **_BACKBONE_LR}),
}


# Scheduler builders get (optimizer, epochs after warm-up, warm-up epochs, **params); every
# scheduler also takes the warm-up parameters (vpr_tune.schedule.LRSchedule uses them).
def _no_scheduler(opt: Any, epochs: int, warmup: int) -> None:
    return None


def _cosine(opt: Any, epochs: int, warmup: int, eta_min: float) -> Any:
    from torch.optim.lr_scheduler import CosineAnnealingLR

    return CosineAnnealingLR(opt, T_max=max(1, epochs), eta_min=eta_min)


def _plateau(opt: Any, epochs: int, warmup: int, factor: float, patience: int,
             threshold: float, min_lr: float) -> Any:
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    # watches val R@1, so higher is better
    return ReduceLROnPlateau(opt, mode="max", factor=factor, patience=patience,
                             threshold=threshold, min_lr=min_lr)


def _multistep(opt: Any, epochs: int, warmup: int, milestones: list[int], gamma: float) -> Any:
    from torch.optim.lr_scheduler import MultiStepLR

    # milestones count epochs from the start of training, warm-up included
    return MultiStepLR(opt, milestones=[max(1, int(m) - warmup) for m in milestones],
                       gamma=gamma)


def _linear(opt: Any, epochs: int, warmup: int, end_factor: float) -> Any:
    from torch.optim.lr_scheduler import LinearLR

    # from the base lr down to end_factor x it after the last epoch (SALAD: 0.2), per epoch
    return LinearLR(opt, start_factor=1.0, end_factor=end_factor, total_iters=max(1, epochs))


WARMUP = {"warmup_epochs": 0, "warmup_per_batch": True}
SCHEDULERS: dict[str, Spec] = {
    "none": Spec(_no_scheduler, WARMUP),
    "cosine": Spec(_cosine, {**WARMUP, "eta_min": 0.0}),
    "plateau": Spec(_plateau, {**WARMUP, "factor": 0.1, "patience": 2, "threshold": 1e-4,
                               "min_lr": 0.0}),
    "multistep": Spec(_multistep, {**WARMUP, "milestones": [6, 8], "gamma": 0.1}),
    "linear": Spec(_linear, {**WARMUP, "end_factor": 0.0}),
}


# ------------------------------------------------------------------- model (vpr_tune.model)
# Aggregators are built as target(in_channels, feature_size, **params) and set ``.dim``.
_AGG = "vpr_tune.model.aggregators."
AGGREGATORS: dict[str, Spec] = {
    "avg": Spec(_AGG + "Avg"),
    "gem": Spec(_AGG + "GeM", {"p": 3.0, "learn_p": True}),
    "cosplace": Spec(_AGG + "CosPlace", {"dim": 512, "p": 3.0}),
    "convap": Spec(_AGG + "ConvAP", {"out_channels": 512, "s1": 2, "s2": 2}),
    "mixvpr": Spec(_AGG + "MixVPR", {"out_channels": 512, "mix_depth": 4, "mlp_ratio": 1,
                                     "out_rows": 4}),
    # alpha None: from the k-means margin (model/aggregators.py:NetVLAD)
    "netvlad": Spec(_AGG + "NetVLAD", {"clusters": 64, "alpha": None}),
    # SALAD (Izquierdo & Civera, CVPR 2024): 64 x 128 + 256 = 8,448-d at these defaults
    "salad": Spec("vpr_tune.model.salad.SALAD", {"clusters": 64, "cluster_dim": 128,
                                                 "token_dim": 256, "sinkhorn_iters": 3,
                                                 "dropout": 0.3}),
    # BoQ (Ali-bey et al., CVPR 2024): DINOv2-BoQ's 12,288-d (384 x 32) at these defaults
    "boq": Spec("vpr_tune.model.boq.BoQ", {"proj_channels": 384, "queries": 64, "layers": 2,
                                           "output_dim": 12288}),
}


@dataclass(frozen=True)
class Backbone:
    """A torchvision ResNet: its factory, its weights enum, out channels after each cut."""

    factory: str  # torchvision.models.<factory>
    weights: str  # torchvision.models.<weights>.IMAGENET1K_V1
    channels: dict[str, int]


@dataclass(frozen=True)
class VisionTransformer:
    """A DINOv2 ViT in timm (vpr_tune/model/vit.py): its timm architecture, its width (the
    channels an aggregator gets), patch size, and timm's pretrained tags for it
    (``model.pretrained``)."""

    timm_name: str
    width: int
    patch: int = 14
    tags: tuple[str, ...] = ("lvd142m",)
    timm_kwargs: tuple[tuple[str, Any], ...] = ()  # extra create_model arguments (tests)


# model.backbone is a plain name (no section of parameters). ResNets: model.cut one of CUTS
# and model.freeze_stages; ViTs (the DINOv2 repository's names): model.train_blocks.
CUTS = ("layer3", "layer4")
BACKBONES: dict[str, Backbone | VisionTransformer] = {
    "resnet18": Backbone("resnet18", "ResNet18_Weights", {"layer3": 256, "layer4": 512}),
    "resnet50": Backbone("resnet50", "ResNet50_Weights", {"layer3": 1024, "layer4": 2048}),
    "dinov2_vits14": VisionTransformer("vit_small_patch14_dinov2", 384),
    "dinov2_vits14_reg": VisionTransformer("vit_small_patch14_reg4_dinov2", 384),
    "dinov2_vitb14": VisionTransformer("vit_base_patch14_dinov2", 768),
    "dinov2_vitb14_reg": VisionTransformer("vit_base_patch14_reg4_dinov2", 768),
    "dinov2_vitl14": VisionTransformer("vit_large_patch14_dinov2", 1024),
    "dinov2_vitl14_reg": VisionTransformer("vit_large_patch14_reg4_dinov2", 1024),
}


def image_size_problem(backbone: str, image_size: Any, key: str = "data.image_size"
                       ) -> str | None:
    """Why the image size at ``key`` cannot feed ``backbone`` (None when it can): a ViT
    needs sides that are multiples of its patch size.

    >>> image_size_problem("dinov2_vitb14", [224, 224]) is None
    True
    >>> image_size_problem("dinov2_vitb14", 230)[:72]
    'data.image_size: 230x230 does not fit dinov2_vitb14: each side must be a'
    """
    spec = BACKBONES.get(backbone)
    if not isinstance(spec, VisionTransformer):
        return None
    h, w = _hw(image_size)
    if h % spec.patch == 0 and w % spec.patch == 0:
        return None
    nearest = "x".join(str(max(1, round(s / spec.patch)) * spec.patch) for s in dict.fromkeys(
        (h, w)))
    return (f"{key}: {h}x{w} does not fit {backbone}: each side must be a multiple "
            f"of its patch size {spec.patch} (nearest: {nearest}; SALAD trains at 224, BoQ at "
            "280 and tests at 322)")


# Aggregators whose layers are sized for the feature map at data.image_size: MixVPR's
# mixers and row projection are H*W wide (vpr_tune/model/aggregators.py resizes any other
# map back to that one, so a larger eval size would only cost time). The others pool or
# attend over any number of positions: avg, GeM, CosPlace (GeM), ConvAP (adaptive pooling
# to s1 x s2), NetVLAD (soft assignment per position), SALAD (optimal transport over the
# tokens), BoQ (attention over the tokens).
SIZE_BOUND_AGGREGATORS = ("mixvpr",)


def eval_image_size_problem(backbone: str, aggregator: str, image_size: Any,
                            eval_size: Any) -> str | None:
    """Why ``data.eval_image_size`` cannot be used with this model (None when it can, or
    when it is null): a ViT needs multiples of its patch size, and an aggregator in
    ``SIZE_BOUND_AGGREGATORS`` evaluates at ``data.image_size`` only.

    >>> eval_image_size_problem("dinov2_vitb14", "boq", [280, 280], [322, 322]) is None
    True
    >>> eval_image_size_problem("resnet50", "mixvpr", 320, 384)[:66]
    'data.eval_image_size: 384x384 differs from data.image_size 320x320'
    """
    if eval_size is None:
        return None
    problem = image_size_problem(backbone, eval_size, key="data.eval_image_size")
    if problem or aggregator not in SIZE_BOUND_AGGREGATORS or _hw(eval_size) == _hw(image_size):
        return problem
    (h, w), (th, tw) = _hw(eval_size), _hw(image_size)
    return (f"data.eval_image_size: {h}x{w} differs from data.image_size {th}x{tw}, but "
            f"{aggregator}'s layers are sized for the feature map at data.image_size; leave "
            "eval_image_size null or set it to data.image_size (aggregators that take another "
            f"eval size: {', '.join(a for a in AGGREGATORS if a not in SIZE_BOUND_AGGREGATORS)})")


def _hw(size: Any) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


# --------------------------------------------------------------------------- look-ups
# The YAML section each registry's name and parameters live in.
SECTIONS: dict[str, dict[str, Spec]] = {
    "loss": LOSSES, "miner": MINERS, "optimizer": OPTIMIZERS, "scheduler": SCHEDULERS,
    "model.aggregator": AGGREGATORS,
}


def unit_problem(name: str, key: str, value: Any) -> str | None:
    """Why ``value`` is not a plausible ``loss.<key>`` of loss ``name`` (None when it is).

    >>> unit_problem("arcface", "margin", 0.3)
    '0.3 is not a plausible arcface margin: it is in degrees (library default 28.6; plausible 5-90)'
    """
    if (name, key) not in LOSS_UNITS or not isinstance(value, int | float):
        return None
    unit, low, high = LOSS_UNITS[(name, key)]
    if low <= value <= high:
        return None
    return (f"{value:g} is not a plausible {name} {key}: it is in {unit} (library default "
            f"{LOSSES[name].defaults[key]:g}; plausible {low:g}-{high:g})")


def allowed_params(section: str, name: str) -> set[str]:
    """Parameter keys (besides ``name``) the YAML ``section`` may set for ``name``.

    >>> sorted(allowed_params("model.aggregator", "convap"))
    ['out_channels', 's1', 's2']
    """
    if section not in SECTIONS:
        raise UserError(f"unknown config section {section!r}; one of {', '.join(SECTIONS)}")
    registry = SECTIONS[section]
    if name not in registry:
        raise UserError(f"{section}.name: {name!r} is not one of {', '.join(registry)}")
    return set(registry[name].defaults)


def resolve_params(section: str, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, params)`` of a config section with defaults filled in; unknown keys ->
    UserError listing the allowed ones.

    >>> resolve_params("loss", {"name": "circle", "m": "0.3"})
    ('circle', {'m': 0.3, 'gamma': 80.0})
    """
    values = dict(values)
    name = values.pop("name", None)
    allowed = allowed_params(section, name)
    unknown = set(values) - allowed
    if unknown:
        raise UserError(f"{section}: {', '.join(sorted(unknown))} not a parameter of {name!r} "
                        f"(allowed: {', '.join(sorted(allowed)) or 'none'})")
    defaults = SECTIONS[section][name].defaults
    params = {**defaults, **values}
    for key, value in params.items():  # YAML 1.1 reads "1e-3" as a string
        if isinstance(defaults[key], float) and isinstance(value, str | int):
            try:
                params[key] = float(value)
            except ValueError as exc:
                raise UserError(f"{section}.{key}: {value!r} is not a number") from exc
    return name, params


# --------------------------------------------------------------------------- builders
def build_loss(section: dict[str, Any], num_places: int, dim: int) -> Any:
    """PML loss module; classifier losses get a (num_places x dim) weight matrix."""
    name, params = resolve_params("loss", section)
    params.pop("lr", None)  # the param group's lr, see build_optimizer
    if name in CLASSIFIER_LOSSES:
        params.update(num_classes=int(num_places), embedding_size=int(dim))
    return LOSSES[name].build(**params)


def build_miner(section: dict[str, Any]) -> Any:
    """PML miner, or None for ``none``."""
    name, params = resolve_params("miner", section)
    return MINERS[name].build(**params)


def build_optimizer(section: dict[str, Any], model: Any, loss_fn: Any = None,
                    loss_lr: float | None = None) -> Any:
    """Torch optimizer over the model's trainable parameters, in param groups: the head (the
    model less its ``backbone``; group 0, whose lr is the trial's ``lr``), the backbone's
    trainable parameters at ``lr x backbone_lr_scale`` (when the model has a backbone with
    any), and loss parameters (ArcFace/CosFace weights) at ``loss_lr`` (None: the lr)."""
    name, params = resolve_params("optimizer", section)
    scale = float(params.pop("backbone_lr_scale"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    backbone = getattr(model, "backbone", None)
    in_backbone = ({id(p) for p in backbone.parameters() if p.requires_grad}
                   if backbone is not None else set())
    groups: list[dict[str, Any]] = [{"params": [p for p in trainable
                                                if id(p) not in in_backbone]}]
    if in_backbone:
        groups.append({"params": [p for p in trainable if id(p) in in_backbone],
                       "lr": float(params["lr"]) * scale})
    loss_params = list(loss_fn.parameters()) if loss_fn is not None else []
    if loss_params:
        groups.append({"params": loss_params,
                       "lr": float(params["lr"] if loss_lr is None else loss_lr)})
    return OPTIMIZERS[name].build(groups, **params)


def optimizer_hyperparams(section: dict[str, Any], loss_section: dict[str, Any] | None,
                          groups: int) -> tuple[list[float], dict[str, Any]]:
    """(base lr per param group, other group settings) as :func:`build_optimizer` sets them:
    what a restored trial re-applies after PBT changed its config."""
    _, params = resolve_params("optimizer", section)
    loss_section = loss_section or {}
    loss_lr = loss_section.get("lr")
    has_loss = loss_section.get("name") in CLASSIFIER_LOSSES
    base = [float(params["lr"])]
    if groups - 1 - has_loss > 0:  # the backbone's group
        base.append(float(params["lr"]) * float(params["backbone_lr_scale"]))
    base += [float(params["lr"] if loss_lr is None else loss_lr)] * (groups - len(base))
    settings = {k: params[k] for k in ("weight_decay", "momentum", "eps", "lambd", "alpha", "t0")
                if k in params}
    if "beta1" in params:
        settings["betas"] = (params["beta1"], params["beta2"])
    return base, settings
