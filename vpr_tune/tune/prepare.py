"""The data of a search, prepared before Ray starts: the train/val file lists checked,
and the decode-once image caches built (train: one per image size the space can choose;
val: one per eval size)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vpr_tune.config import Space
from vpr_tune.tune.sampling import possible_values


def prepare_data(space: Space, data_root: Path, build_cache: bool,
                 log: Callable[[str], Any]) -> dict[str, int]:
    """Load the train/val file lists (validates the data); with ``build_cache`` decode the
    images once into the memmap caches the trials then only map (same keys as the loaders)."""
    from vpr_tune.data import cached_images
    from vpr_tune.data.cache import as_hw
    from vpr_tune.data.splits import find_split, load_eval_split, load_train_split
    from vpr_tune.progress import log_progress

    data = space.base["data"]
    skip = bool(data["skip_bad_files"])
    train = load_train_split(find_split(data_root, data["train"]),
                             min_images_per_place=int(data["min_images_per_place"]),
                             skip_bad_files=skip)
    val = load_eval_split(find_split(data_root, data["val"]), skip_bad_files=skip)
    if build_cache and data["cache"]:
        sizes = possible_values(space, "data.image_size") or [data["image_size"]]
        # val at every eval size (config.eval_image_size): null ones are the train sizes
        eval_sizes = possible_values(space, "data.eval_image_size") or [data["eval_image_size"]]
        eval_sizes = [s for e in eval_sizes for s in ([e] if e is not None else sizes)]
        for what, paths, each in (("train", train.paths, sizes),
                                  ("val", [*val.db_paths, *val.q_paths], eval_sizes)):
            for h, w in dict.fromkeys(as_hw(size) for size in each):  # each size once
                cached_images(paths, (h, w), skip_bad_files=skip,
                              progress=log_progress(log, f"image cache ({what}, {h}x{w})"))
    return {"train images": len(train.paths), "train places": int(train.num_places),
            "val database": len(val.db_paths), "val queries": len(val.q_paths)}

