"""Query time: milliseconds to turn one query image into a descriptor and search a database.

What ``query_ms`` includes: the model's forward pass on one image (batch size 1, on the
trial's device, under its autocast precision, waiting for the device to finish) and the
exact faiss search of that descriptor against the database descriptors (top 25). What it
leaves out: reading and resizing the image (the same for every model) and building the
index (done once per database). It is the median of several repeats after warm-up runs, so
one slow run (another process on the core) does not decide it.

>>> import numpy as np, torch
>>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16))
>>> model.dim = 16
>>> db = np.random.default_rng(0).standard_normal((100, 16)).astype("float32")
>>> query_ms(model, (8, 8), db, "cpu", precision="fp32") > 0
True
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def query_ms(model: torch.nn.Module, image_size: Sequence[int], db: np.ndarray,
             device: str | torch.device, precision: str = "auto", repeats: int = 7,
             warmup: int = 2, k: int = 25) -> float:
    """Median milliseconds for one query: forward at batch 1 plus exact search of ``db``."""
    import faiss

    from vpr_tune.precision import autocast, autocast_dtype, channels_last

    device = torch.device(device)
    dtype = autocast_dtype(precision, device)
    image = torch.rand(1, 3, int(image_size[0]), int(image_size[1]), device=device)
    if channels_last(device, dtype):
        image = image.contiguous(memory_format=torch.channels_last)
    index = faiss.IndexFlatIP(db.shape[1])
    index.add(np.ascontiguousarray(db, dtype=np.float32))
    k = max(1, min(k, len(db)))
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
