"""YAML search space -> validated config.

A config is a plain nested dict of plain values (nanoGPT style). ``DEFAULTS`` below is the
whole schema: every key a YAML may set, with its default. A YAML file overrides any part
of it; each leaf is either a fixed value or a *distribution*::

    optimizer:
      name: {choice: [sgd, adam, adamw, asgd]}
      lr: {loguniform: [1.0e-4, 1.0e-1]}
      momentum: {uniform: [0.8, 0.99], when: {name: [sgd, asgd]}}   # conditional

Distributions: ``choice``, ``uniform``, ``loguniform``, ``int``/``randint``, ``quniform``
([low, high, q]), ``grid``. ``when: {sibling: value-or-list}`` makes any leaf (fixed or
distribution) apply only when a sibling key in the same section has one of the values; a
leaf that does not apply is absent from the trial config and the factory default is used.

Public API (implemented below):

- ``load_space(path) -> Space``: parse + validate; raises ``UserError`` naming file & key.
- ``Space.base`` (nested dict: DEFAULTS overlaid with every fixed value that applies
  unconditionally), ``Space.params`` (the varying/conditional leaves, by dotted path).
- ``materialize(base, sampled) -> dict``: the nested config of one trial, given the sampled
  values keyed by dotted path (``{"optimizer.lr": 0.01}``); drops leaves whose ``when``
  does not hold.
"""

from __future__ import annotations

import copy
from typing import Any

# Names the YAML may use; each maps to one registry entry in its module.
OPTIMIZERS = ("sgd", "adam", "adamw", "asgd")
SCHEDULERS = ("none", "cosine", "plateau", "multistep")
LOSSES = ("contrastive", "triplet", "multisimilarity", "circle", "arcface", "cosface")
MINERS = ("none", "multisimilarity", "batchhard", "tripletmargin", "pairmargin")
AGGREGATORS = ("avg", "gem", "cosplace", "convap", "mixvpr", "netvlad")
BACKBONES = ("resnet18", "resnet50")
SEARCH_ALGORITHMS = ("random", "grid", "optuna")
TRIAL_SCHEDULERS = ("asha", "fifo")

DEFAULTS: dict[str, Any] = {
    "name": None,  # experiment name; CLI --name wins
    "seed": 0,  # seeds init, sampling and augmentation of every trial
    "storage": None,  # None -> <repo>/results; or an absolute path / URI (s3://...)
    "data": {
        "root": None,  # None -> $VPR_TUNE_DATA, else street-world in the user cache
        "synth_size": "demo",  # street-world size used when root is None
        "train": "gsv_xs/train",
        "val": "sf_xs/val",
        "test": {"sf_test": "sf_xs/test", "tokyo": "tokyo_xs/test"},
        "image_size": [224, 224],  # [H, W]; train and eval resize to this
        "min_images_per_place": 4,
        "cache": True,  # decode-once memory-mapped cache; False -> PIL every step
        "skip_bad_files": False,  # corrupt JPEGs: error (False) or warn and skip (True)
        "augment": True,  # crop/scale/colour jitter on tensors for training
    },
    "model": {
        "backbone": "resnet18",
        "pretrained": "none",  # none | imagenet | /path/to/weights.pth
        "cut": "layer4",  # layer3 | layer4
        "freeze_stages": 2,  # first N of (stem, layer1, layer2, layer3) frozen
        "aggregator": {"name": "gem"},  # + per-aggregator params (p, dim, clusters, ...)
    },
    "loss": {"name": "contrastive"},  # + per-loss params (margins, scale, lr for arcface/cosface)
    "miner": {"name": "none"},  # + per-miner params (epsilon, margin, ...)
    "optimizer": {"name": "sgd", "lr": 0.0025, "weight_decay": 0.001},  # + momentum, nesterov
    "scheduler": {"name": "none", "warmup_epochs": 0},  # + per-scheduler params
    "budget": {
        "max_epochs": 10,
        "batches_per_epoch": 100,
        "places_per_batch": 64,  # P
        "images_per_place": 4,  # K
        "eval_batch_size": 64,
    },
    "search": {
        "algorithm": "optuna",
        "num_samples": 16,
        "metric": "val/R@1",
        "mode": "max",
        "seed": 0,
        "max_concurrent": 2,
        "scheduler": "asha",
        "max_failures": 0,  # Ray retries of a failed trial
    },
    "asha": {"grace_period": 1, "reduction_factor": 3},
    "resources": {"cpu": 1, "gpu": 0},
}


def defaults() -> dict[str, Any]:
    """A fresh deep copy of ``DEFAULTS`` (callers may mutate it)."""
    return copy.deepcopy(DEFAULTS)
