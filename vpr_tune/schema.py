"""The config schema: ``DEFAULTS`` (every key a YAML may set, with its default), the names
each fixed-name key may take, and the small facts about keys the walk, the rules and the
search share (``when`` paths, durations, tracking URIs, "did you mean").

Plain Python: the YAML reader (``config.py``) and its rules (``space_rules.py``) import it.
"""

from __future__ import annotations

import copy
import difflib
import math
from pathlib import Path
from typing import Any

from vpr_tune import components, metrics

SEARCH_ALGORITHMS = ("random", "grid", "optuna")
# Optuna samplers of search.algorithm optuna (registry: vpr_tune/tune/samplers.py).
SAMPLERS = ("tpe", "random", "qmc", "cmaes", "gp", "nsga2")
# Autocast of a trial (vpr_tune/precision.py): auto = fp16 on CUDA, bf16 on native-bf16 CPUs,
# else fp32.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TRIAL_SCHEDULERS = ("asha", "fifo", "pbt", "pb2")
# What can run a search with several objectives (search.objectives): asha then ranks by
# Pareto fronts; PBT/PB2 exploit one metric, Optuna's CMA-ES is single-objective.
MULTI_OBJECTIVE_SCHEDULERS = ("asha", "fifo")
MULTI_OBJECTIVE_SAMPLERS = ("tpe", "random", "qmc", "gp", "nsga2")

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
        "image_size": [224, 224],  # [H, W]; training resizes to this (the model is built for it)
        # [H, W] (or one int) val, eval, retest, --save-preds and --repeat resize to; None:
        # image_size (BoQ and SALAD train at 280 / 224 and test at 322). config.eval_image_size
        "eval_image_size": None,
        "min_images_per_place": 4,
        "cache": True,  # decode-once memory-mapped cache; False -> PIL every step
        "skip_bad_files": False,  # corrupt JPEGs: error (False) or warn and skip (True)
        # Training augmentation on the cached tensors (vpr_tune/data/augment.py); the YAML
        # may also say `augment: true/false` (= enabled).
        "augment": {
            "enabled": True,
            "crop_min": 0.8,  # crop side / image side, uniform(crop_min, crop_max)
            "crop_max": 1.0,
            "aspect": 0.05,  # crop aspect ratio 1 +- aspect
            "jitter": 0.25,  # brightness and contrast factors 1 +- jitter
            "white_balance": 0.07,  # per-channel gain 1 +- white_balance
            "perspective": 0.0,  # corners move up to this fraction of the side; 0 = off
        },
    },
    "model": {
        "backbone": "resnet18",
        "pretrained": "none",  # none | imagenet | /path/to/weights.pth
        "cut": "layer4",  # layer3 | layer4
        "freeze_stages": 2,  # first N of (stem, layer1, layer2, layer3) frozen
        "train_blocks": 4,  # ViT backbones (dinov2_*): the last N blocks train, the rest frozen
        "aggregator": {"name": "gem"},  # + per-aggregator params (p, dim, clusters, ...)
    },
    "loss": {"name": "contrastive"},  # + per-loss params (margins, scale, lr for arcface/cosface)
    "miner": {"name": "none"},  # + per-miner params (epsilon, margin, ...)
    # Registry-backed sections hold only their name here: each parameter's default lives in
    # its registry entry (vpr_tune/components.py), so `adam` without an lr gets Adam's 1e-3.
    "optimizer": {"name": "sgd"},  # + lr, weight_decay, momentum, ... (sgd: the course's)
    "scheduler": {"name": "none"},  # + warmup_epochs and per-scheduler params
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
        "metric": metrics.DEFAULT_METRIC,
        "mode": None,  # None -> the metric's direction (max for recalls, min for train/loss)
        # several objectives instead of metric/mode: [{metric, mode}, ...] (Pareto front)
        "objectives": None,
        "seed": 0,
        "max_concurrent": 2,
        "scheduler": "asha",
        "max_failures": 0,  # Ray retries of a failed trial
        "sampler": "tpe",  # one of SAMPLERS (search.algorithm optuna)
        "points_to_evaluate": [],  # partial configs {dotted key: value} tried first
        "time_budget": None,  # e.g. 90m, 6h, 3600 (seconds): then running trials end
        # finished trials that keep a checkpoint (best.pt for retest): the best by the
        # metric, plus the Pareto front; the others' are deleted as the search goes
        "keep_checkpoints": 5,
        # decisions in sampling order: the same YAML, seed, data, machine and precision give
        # the same trials.csv (vpr_tune/tune/reproducible.py; docs/searches.md)
        "reproducible": False,
    },
    # metric: what rungs are judged on (None: search.metric; the winner is always chosen by
    # search.metric). val/R@mean ranked pilot trials at the first rung most like their final
    # best R@1 (Spearman 0.72 vs R@1's 0.40, docs/performance.md "Rung signals")
    "asha": {"grace_period": 1, "reduction_factor": 3, "metric": metrics.MEAN_RECALL},
    # search.scheduler pbt / pb2: population-based training (vpr_tune/tune/pbt.py)
    "pbt": {"perturbation_interval": 2, "quantile_fraction": 0.25,
            "resample_probability": 0.25, "mutate": ["optimizer.lr"]},
    "resources": {"cpu": 1, "gpu": 0, "precision": "auto"},  # precision: see PRECISIONS
    # Where else the search is logged (TensorBoard and the Optuna study always are).
    "tracking": {"mlflow": None},  # MLflow tracking URI: sqlite:///..., http://..., a folder
    # A schedule to train with (`vpr-tune best --export` of a PBT/PB2 trial writes its
    # lineage here): [{epoch: N, optimizer.lr: x, ...}, ...], the values from epoch N on.
    "replay": [],
}


def defaults() -> dict[str, Any]:
    """A fresh deep copy of ``DEFAULTS`` (callers may mutate it)."""
    return copy.deepcopy(DEFAULTS)


# Sections whose keys depend on the chosen ``name``: the registries say which keys each
# name takes (vpr_tune.components).
FREE_SECTIONS = tuple(components.SECTIONS)
# Fixed-name leaves and what they may be.
NAMES = {
    **{f"{section}.name": tuple(registry) for section, registry in components.SECTIONS.items()},
    "model.backbone": tuple(components.BACKBONES),
    "search.algorithm": SEARCH_ALGORITHMS, "search.scheduler": TRIAL_SCHEDULERS,
    "search.sampler": SAMPLERS,
    "search.metric": metrics.SEARCHABLE, "search.mode": metrics.MODES,
    "asha.metric": metrics.SEARCHABLE,
    "data.synth_size": ("tiny", "demo", "bench", "full"), "model.cut": components.CUTS,
    "resources.precision": PRECISIONS,
}
# Keys that describe the run itself, never searched over.
NOT_SEARCHABLE = ("name", "storage", "search", "resources", "asha", "pbt", "data.root",
                  "data.train", "data.val", "data.test", "tracking", "replay")
# Sections a replayed schedule may change during training (what PBT may mutate).
REPLAY_SECTIONS = ("optimizer", "loss", "miner")
# What each data.augment strength may be (fractions of the side, or of the brightness).
AUGMENT_RANGES = {"crop_min": (0.1, 1.0), "crop_max": (0.1, 1.0), "aspect": (0.0, 0.5),
                  "jitter": (0.0, 0.9), "white_balance": (0.0, 0.5), "perspective": (0.0, 0.4)}
# Keys holding an image size: one positive int or [H, W], searched by choice or grid.
SIZE_KEYS = ("data.image_size", "data.eval_image_size")
# Marks an alternative's search name: ``loss.margin#arcface`` (see Param.alias).
ALIAS_MARK = "#"
# Schedulers that train a population (pbt.py): the trials are drawn up front.
POPULATION_SCHEDULERS = ("pbt", "pb2")
# Keys a PBT trial can change between two epochs without rebuilding its model.
MUTABLE = ("optimizer.", "loss.", "miner.")


def parse_duration(value: Any) -> float | None:
    """Seconds in ``90m``, ``6h``, ``45s`` or a plain number of seconds (None stays None).

    >>> parse_duration("1.5h")
    5400.0
    """
    if value is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600}
    text = str(value).strip().lower()
    number = text[:-1] if text[-1:] in units else text
    try:
        seconds = float(number) * units.get(text[-1:], 1)
    except ValueError:
        raise ValueError(f"{value!r} is not a duration (a number with s, m or h: 90m, 6h, "
                         "3600s)") from None
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be a positive number of s, m or h")
    return seconds


TRACKING_URI_HELP = ("must be a URI (sqlite:///FILE, http://HOST:PORT, file:///DIR) or an "
                     "absolute folder")


def is_tracking_uri(uri: str) -> bool:
    """An MLflow tracking URI vpr-tune accepts: ``scheme:...`` or an absolute folder."""
    import re

    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", uri)) or Path(uri).expanduser().is_absolute()


def when_path(parent: str, key: str) -> str:
    """The dotted path a ``when`` key names: a key whose first part is a top-level section
    (``loss.name``) is absolute, any other is a sibling in ``parent``.

    >>> when_path("miner", "loss.name"), when_path("miner", "name")
    ('loss.name', 'miner.name')
    >>> when_path("model", "aggregator.name")
    'model.aggregator.name'
    """
    head = key.split(".")[0]
    if "." in key and isinstance(DEFAULTS.get(head), dict):
        return key
    return f"{parent}.{key}" if parent else key


def default_of(dotted: str) -> Any:
    """The ``DEFAULTS`` value at a dotted path ({} when the schema has no such key)."""
    node: Any = DEFAULTS
    for key in dotted.split("."):
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return node


def did_you_mean(word: Any, options: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options``, or '' when none is close.

    >>> did_you_mean("adamm", ["sgd", "adam"])
    " (did you mean 'adam'?)"
    """
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def searchable(dotted: str) -> bool:
    """False for the keys that describe the run itself (``NOT_SEARCHABLE``)."""
    return not any(dotted == n or dotted.startswith(n + ".") for n in NOT_SEARCHABLE)


def type_name(value: Any) -> str:
    """How an error names the YAML type of ``value``."""
    return {dict: "a mapping", list: "a list", str: "text", bool: "true/false",
            type(None): "nothing"}.get(type(value), type(value).__name__)
