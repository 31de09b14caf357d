"""Datasets: real-format readers, the street-world generator and the decode-once cache."""

from vpr_tune.data.datasets import (
    EvalSplit,
    PKSampler,
    TrainLoader,
    TrainSplit,
    eval_batches,
    find_split,
    is_synthetic,
    load_eval_split,
    load_train_split,
    resolve_data_root,
)
from vpr_tune.data.formats import ImageMeta, parse_name

__all__ = [
    "EvalSplit",
    "ImageMeta",
    "PKSampler",
    "TrainLoader",
    "TrainSplit",
    "eval_batches",
    "find_split",
    "is_synthetic",
    "load_eval_split",
    "load_train_split",
    "parse_name",
    "resolve_data_root",
]
