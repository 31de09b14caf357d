"""Datasets: real-format readers, the street-world generator and the decode-once cache.

Modules, bottom up: ``formats`` (file-name parser), ``cache`` (decode-once images, the cache
root), ``street_world`` (the generator), ``splits`` (split discovery and readers),
``loader`` (P x K sampler, train/eval batches), ``preview`` (query/positives picture).
torch is imported lazily, so ``vpr-tune data check`` stays fast.
"""

from vpr_tune.data.cache import cached_images, load_image
from vpr_tune.data.formats import ImageMeta, format_name, parse_name
from vpr_tune.data.loader import PKSampler, TrainLoader, eval_batches
from vpr_tune.data.preview import make_preview
from vpr_tune.data.splits import (
    EvalSplit,
    TrainSplit,
    check_data,
    find_split,
    find_splits,
    is_synthetic,
    load_eval_split,
    load_train_split,
    resolve_data_root,
)
from vpr_tune.data.street_world import synthesize

__all__ = [
    "EvalSplit",
    "ImageMeta",
    "PKSampler",
    "TrainLoader",
    "TrainSplit",
    "cached_images",
    "check_data",
    "eval_batches",
    "find_split",
    "find_splits",
    "format_name",
    "is_synthetic",
    "load_eval_split",
    "load_image",
    "load_train_split",
    "make_preview",
    "parse_name",
    "resolve_data_root",
    "synthesize",
]
