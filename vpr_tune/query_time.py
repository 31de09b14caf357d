"""Query time: milliseconds to turn one query image into a descriptor and search a database.

What ``query_ms`` includes: the model's forward pass on one image (batch size 1, on the
trial's device, under its autocast precision, waiting for the device to finish) and the
exact faiss search (top 25, on the CPU as in evaluation) of that descriptor in a database
as large as the val database. What it leaves out: reading and resizing the image (the same
for every model) and building the index (once per trial). The database holds seeded random
unit vectors of the model's descriptor size: an exact search costs the same whatever the
vectors are, and the val descriptors need not be kept. It is the median of several repeats
after warm-up runs, so one slow run (another process on the core) does not decide it.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16))
>>> index = database_index(size=100, dim=16)
>>> query_ms(model, (8, 8), index, "cpu", precision="fp32") > 0
True
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def database_index(size: int, dim: int, seed: int = 0) -> Any:
    """An exact inner-product faiss index of ``size`` random unit vectors of ``dim``."""
    import faiss

    vectors = np.random.default_rng(seed).standard_normal((max(1, size), dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    return index


def query_ms(model: torch.nn.Module, image_size: Sequence[int], index: Any,
             device: str | torch.device, precision: str = "auto", repeats: int = 7,
             warmup: int = 2, k: int = 25) -> float:
    """Median milliseconds for one query: forward at batch 1 plus exact search of ``index``
    (from :func:`database_index`)."""
    from vpr_tune.precision import autocast, autocast_dtype, channels_last

    device = torch.device(device)
    dtype = autocast_dtype(precision, device)
    image = torch.rand(1, 3, int(image_size[0]), int(image_size[1]), device=device)
    if channels_last(device, dtype):
        image = image.contiguous(memory_format=torch.channels_last)
    k = max(1, min(k, index.ntotal))
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.inference_mode(), autocast(device, dtype):
            for i in range(warmup + repeats):
                _sync(device)
                start = time.perf_counter()
                desc = model(image).float().cpu().numpy()
                index.search(np.ascontiguousarray(desc, dtype=np.float32), k)
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1000.0)
    finally:
        model.train(was_training)
    return float(statistics.median(times))


def params_m(model: torch.nn.Module) -> float:
    """Model parameters in millions (trainable or not: what a deployment stores).

    >>> params_m(torch.nn.Linear(1000, 1000))
    1.001
    """
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 4)
