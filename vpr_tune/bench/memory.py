"""``memory``: do concurrent trials share the decode-once cache or copy it?

Two trial processes (a search runs ``max_concurrent`` of them per node) each build a
``TrainLoader`` on the same train split and run one epoch that touches every image; then
the unique set size (USS: pages no other process maps) of one of them is read with psutil.
Done at two cache sizes (1x and 4x the images): the growth of per-trial USS divided by the
growth of the cache file is ~0 when the cache pages are shared (mmap of one file) and ~1
when each trial holds a private copy. The ``copy`` control (each trial copies the array into
its own memory, the naive way) shows the benchmark can tell the two apart.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
from pathlib import Path
from typing import Any

from vpr_tune.bench.common import Bar, image_cache_in, median_ratio, record, write_train_jpegs

MEMORY_BAR = Bar(0.10, higher=False,
                 figure="per-trial USS growth / cache file growth (1x -> 4x)")


def _trial(split: Any, size: int, cache_dir: str, copy: bool, ready: Any, stop: Any) -> None:
    """A trial's data path: loader over the cache, one epoch touching every image."""
    os.environ["VPR_TUNE_CACHE"] = cache_dir
    import numpy as np
    import torch

    from vpr_tune.data.loader import TrainLoader

    torch.set_num_threads(1)
    loader = TrainLoader(split, size, 4, 2, split.num_places // 4, seed=0, augment=True,
                         cache=True, device="cpu")
    if copy:  # the naive way: every trial holds its own decoded array
        source = loader.pipe.source  # data-layer internals; only the control needs them
        source.array = np.array(source.array)
    for _images, _labels in loader.epoch(0):
        pass
    ready.set()
    stop.wait(600)


def _uss_of_trials(split: Any, size: int, cache_dir: Path, copy: bool) -> int:
    """USS in bytes of the first of two concurrent trial processes, once both are warm."""
    import psutil

    ctx = mp.get_context("spawn")  # a fresh interpreter, like a Ray worker
    stop = ctx.Event()
    readies = [ctx.Event() for _ in range(2)]
    procs = [ctx.Process(target=_trial, args=(split, size, str(cache_dir), copy, r, stop))
             for r in readies]
    for p in procs:
        p.start()
    try:
        for r, p in zip(readies, procs, strict=True):
            while not r.wait(1.0):
                if not p.is_alive():
                    raise RuntimeError(f"memory benchmark trial exited with {p.exitcode}")
        return int(psutil.Process(procs[0].pid).memory_full_info().uss)
    finally:
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()


def bench_memory(quick: bool = False, log: Any = print) -> dict[str, Any]:
    """Per-trial USS growth / cache file growth between 1x and 4x images."""
    from vpr_tune.data.cache import cached_images
    from vpr_tune.data.splits import load_train_split

    places, jpeg, size, reps = (32, 64, 64, 1) if quick else (200, 64, 224, 2)
    with tempfile.TemporaryDirectory(prefix="vpr-bench-") as tmp, \
            image_cache_in(Path(tmp) / "cache") as cache_dir:
        log(f"memory: writing {places * 5 * 2} JPEGs ...")
        splits, nbytes = {}, {}
        for mult in (1, 4):
            folder = write_train_jpegs(Path(tmp) / f"x{mult}", places * mult, 2, jpeg, seed=mult)
            splits[mult] = load_train_split(folder, 2)
            nbytes[mult] = int(cached_images(splits[mult].paths, size).nbytes)  # built here
        uss: dict[int, list[int]] = {1: [], 4: []}
        for i in range(reps):
            for mult in ((1, 4) if i % 2 == 0 else (4, 1)):
                uss[mult].append(_uss_of_trials(splits[mult], size, cache_dir, False))
        growth = [u4 - u1 for u1, u4 in zip(uss[1], uss[4], strict=True)]
        file_growth = nbytes[4] - nbytes[1]
        ratio = median_ratio(growth, [file_growth] * reps)
        # The control costs two more process pairs; --quick skips it.
        copy_uss = {m: (0 if quick else _uss_of_trials(splits[m], size, cache_dir, True))
                    for m in (1, 4)}
    copy_ratio = None if quick else round((copy_uss[4] - copy_uss[1]) / file_growth, 4)
    return record("memory", ratio, MEMORY_BAR, quick, uss_1x=uss[1], uss_4x=uss[4],
                  cache_bytes_1x=nbytes[1], cache_bytes_4x=nbytes[4], image_size=size,
                  concurrent_trials=2, copy_control_ratio=copy_ratio,
                  copy_control_uss=[copy_uss[1], copy_uss[4]])
