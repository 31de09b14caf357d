"""Datasets: real-format readers, the street-world generator and the decode-once cache.

See docs/CONTRACTS.md ("vpr_tune/data") for the interfaces; torch is imported lazily.
"""

from vpr_tune.data.cache import cached_images, load_image
from vpr_tune.data.datasets import (
    EvalSplit,
    PKSampler,
    TrainLoader,
    TrainSplit,
    check_data,
    eval_batches,
    find_split,
    find_splits,
    is_synthetic,
    load_eval_split,
    load_train_split,
    resolve_data_root,
)
from vpr_tune.data.formats import ImageMeta, format_name, parse_name
from vpr_tune.data.street_world import make_preview, synthesize

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
