"""Data-path benchmarks: ``loader``, ``cache`` and ``eval``.

- loader: img/s of ``Trainer.train_epoch`` fed by the real ``TrainLoader`` (decode-once
  cache, P x K sampler, augmentation, copy to the device) / the same ``train_epoch`` fed one
  batch that is already in memory. 1.0 means the input pipeline costs nothing.
- cache: loader-only img/s (no model) of ``TrainLoader(cache=True)`` / ``cache=False``
  (PIL decode + resize every step), on 512 x 512 JPEGs resized to 224.
- eval: wall of ``evaluate_split`` (descriptors + faiss + Recall@N) / a bare forward pass
  over the same images already in memory, on a split shaped like SF-XS test.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vpr_tune.bench.common import (
    Bar,
    alternate,
    device,
    image_cache_in,
    median_ratio,
    record,
    timed,
    write_eval_jpegs,
    write_train_jpegs,
)

LOADER_BAR = Bar(0.90, higher=True, figure="train img/s, real loader / batch in memory")
CACHE_BAR = Bar(5.0, higher=True,
                figure="loader img/s, decode-once cache / PIL every step")
EVAL_BAR = Bar(1.15, higher=False,
               figure="eval wall (descriptors+faiss+recall) / bare forward")


def _sync(dev: str) -> None:
    import torch

    if dev.startswith("cuda"):
        torch.cuda.synchronize()


class _OneBatch:
    """Stands in for ``TrainLoader``: the same in-memory batch, ``n`` times per epoch."""

    def __init__(self, batch: tuple[Any, Any], n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def epoch(self, epoch: int) -> Iterator[tuple[Any, Any]]:
        for _ in range(self.n):
            yield self.batch


def bench_loader(quick: bool = False, log: Any = print) -> dict[str, Any]:
    """Training img/s with the real loader / with one batch already in memory."""
    from vpr_tune.config import defaults
    from vpr_tune.data.splits import resolve_data_root
    from vpr_tune.data.street_world import synthesize
    from vpr_tune.train import Trainer

    size, places, per, batches, reps = (32, 4, 2, 2, 2) if quick else (128, 8, 4, 3, 7)
    with tempfile.TemporaryDirectory(prefix="vpr-bench-") as tmp:
        if quick:
            root = synthesize(Path(tmp) / "street-world", size="tiny", log=lambda _m: None)
        else:
            root = resolve_data_root(None, "demo", log=log)
        with image_cache_in(Path(tmp) / "cache"):
            cfg = defaults()
            cfg["data"].update(image_size=[size, size])
            cfg["budget"].update(batches_per_epoch=batches, places_per_batch=places,
                                 images_per_place=per)
            dev = device()
            trainer = Trainer(cfg, root, device=dev, log=lambda _m: None)
            real = trainer.loader
            fake = _OneBatch(next(iter(real.epoch(0))), batches)
            n_images = batches * places * per

            cpu: dict[bool, list[float]] = {True: [], False: []}

            def side(loader: Any) -> float:
                trainer.loader = loader
                start = time.process_time()  # see bench_eval: a steadier companion figure
                seconds = timed(lambda: (trainer.train_epoch(), _sync(dev)))
                cpu[loader is real].append(n_images / (time.process_time() - start))
                return n_images / seconds

            real_ips, mem_ips = alternate(lambda: side(real), lambda: side(fake), reps)
    ratio = median_ratio(real_ips, mem_ips)
    real_cpu, mem_cpu = cpu[True][1:], cpu[False][1:]  # without the warm-up
    return record("loader", ratio, LOADER_BAR, quick, real_img_s=real_ips, in_memory_img_s=mem_ips,
                  cpu_ratio=round(median_ratio(real_cpu, mem_cpu), 4), image_size=size,
                  batch_size=places * per, batches_per_rep=batches, data=str(root))


def bench_cache(quick: bool = False, log: Any = print) -> dict[str, Any]:
    """Loader-only img/s: decode-once cache / PIL decode every step."""
    from vpr_tune.data.cache import cached_images
    from vpr_tune.data.loader import TrainLoader
    from vpr_tune.data.splits import load_train_split

    jpeg, size, places, per, p_batch, reps = (
        (128, 64, 8, 2, 4, 3) if quick else (512, 224, 64, 4, 16, 5))
    dev = device()
    with tempfile.TemporaryDirectory(prefix="vpr-bench-") as tmp, \
            image_cache_in(Path(tmp) / "cache"):
        log(f"cache: writing {places * per} JPEGs of {jpeg}x{jpeg} px ...")
        split = load_train_split(write_train_jpegs(Path(tmp) / "data", places, per, jpeg), per)
        build_s = timed(lambda: cached_images(split.paths, size))
        batches = places // p_batch
        loaders = {c: TrainLoader(split, size, p_batch, per, batches, seed=0, augment=True,
                                  cache=c, device=dev) for c in (True, False)}

        def side(cache: bool) -> float:
            def consume() -> None:
                for images, _labels in loaders[cache].epoch(0):
                    del images
                _sync(dev)

            return len(split.paths) / timed(consume)

        cached, pil = alternate(lambda: side(True), lambda: side(False), reps)
    ratio = median_ratio(cached, pil)
    return record("cache", ratio, CACHE_BAR, quick, cache_img_s=cached, pil_img_s=pil,
                  jpeg_size=jpeg, image_size=size, images=len(split.paths),
                  batch_size=p_batch * per, cache_build_s=round(build_s, 3))


def bench_eval(quick: bool = False, log: Any = print) -> dict[str, Any]:
    """Full eval wall / bare forward wall over the same images (SF-XS-test-shaped split)."""
    import torch

    from vpr_tune.data.loader import eval_batches
    from vpr_tune.data.splits import load_eval_split
    from vpr_tune.evaluate import evaluate_split
    from vpr_tune.model import build_model
    from vpr_tune.precision import autocast, autocast_dtype, channels_last

    queries, ratio_db, jpeg, size, bs, reps = (
        (4, 21, 64, 32, 32, 2) if quick else (15, 21, 128, 80, 64, 7))
    dev = device()
    with tempfile.TemporaryDirectory(prefix="vpr-bench-") as tmp, \
            image_cache_in(Path(tmp) / "cache"):
        log(f"eval: writing {queries * (ratio_db + 1)} JPEGs ...")
        folder = write_eval_jpegs(Path(tmp) / "sf_xs" / "test", queries, ratio_db, jpeg)
        load_s = timed(lambda: load_eval_split(folder))
        split = load_eval_split(folder)
        paths = list(split.db_paths) + list(split.q_paths)
        model = build_model({"backbone": "resnet18", "aggregator": {"name": "gem"}},
                            (size, size)).to(dev).eval()
        cold_s = timed(lambda: evaluate_split(model, split, (size, size), bs, dev))
        in_memory = list(eval_batches(paths, (size, size), bs, cache=True, device=dev))
        # The bare forward uses the precision evaluate_split picks by default ("auto").
        dtype = autocast_dtype("auto", dev)
        last = channels_last(dev, dtype)

        cpu: dict[str, list[float]] = {"full": [], "forward": []}

        def cpu_timed(side: str, fn: Any) -> float:
            # CPU seconds of this process too: other users' load moves wall time a lot
            # on a shared machine, our own CPU time much less.
            start = time.process_time()
            wall = timed(fn)
            cpu[side].append(time.process_time() - start)
            return wall

        def forward() -> float:
            def run() -> None:
                with torch.inference_mode(), autocast(dev, dtype):
                    for x in in_memory:
                        model(x.contiguous(memory_format=torch.channels_last) if last else x)
                _sync(dev)

            return cpu_timed("forward", run)

        def full() -> float:
            return cpu_timed("full", lambda: evaluate_split(model, split, (size, size), bs,
                                                            dev))

        forward()  # warm-up; the cold evaluation above warmed the full side
        cpu["forward"].clear()
        full_s, fwd_s = alternate(full, forward, reps, warmup=False)
    ratio = median_ratio(full_s, fwd_s)
    return record("eval", ratio, EVAL_BAR, quick, full_s=full_s, forward_s=fwd_s,
                  database=len(split.db_paths), queries=len(split.q_paths), image_size=size,
                  batch_size=bs,
                  full_cpu_s=cpu["full"], forward_cpu_s=cpu["forward"],
                  cpu_ratio=round(median_ratio(cpu["full"], cpu["forward"]), 4),
                  first_eval_with_cache_build_s=round(cold_s, 3),
                  load_split_s=round(load_s, 3))
