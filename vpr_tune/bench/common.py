"""What every benchmark shares: alternating timing, median ratios, result records, test data.

A benchmark compares two sides in the same process. Noise on a shared machine (other
processes, CPU frequency, page cache) drifts over seconds, so the sides run interleaved
A B B A A B ... and each repetition gives one ratio from its adjacent pair; the figure is
the median of those ratios, which one disturbed repetition cannot move much.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# resources.precision of the searches the benchmarks run (``vpr-tune bench --precision``);
# the pipeline benchmarks measure evaluate_split's own default ("auto") whatever this says.
_PRECISION = ["auto"]


@contextlib.contextmanager
def search_precision(precision: str) -> Iterator[str]:
    """Run the block's benchmark searches at ``resources.precision: precision``."""
    from vpr_tune.config import PRECISIONS
    from vpr_tune.errors import UserError

    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: one of {', '.join(PRECISIONS)}")
    old, _PRECISION[0] = _PRECISION[0], precision
    try:
        yield precision
    finally:
        _PRECISION[0] = old


def precision() -> str:
    """The ``resources.precision`` benchmark searches use now (default ``auto``)."""
    return _PRECISION[0]


def precision_record() -> dict[str, str]:
    """What the record says about precision: the setting and the dtype it gives here."""
    import torch

    from vpr_tune.precision import autocast_dtype

    dtype = autocast_dtype(precision(), "cuda" if torch.cuda.is_available() else "cpu")
    return {"setting": precision(), "autocast": str(dtype).replace("torch.", "")
            if dtype is not None else "float32"}


@dataclass(frozen=True)
class Bar:
    """A pass threshold: ``ratio >= value`` (``higher=True``) or ``ratio <= value``, and
    ``figure``, what the ratio is (the record's ``figure``, the table's text)."""

    value: float
    higher: bool
    figure: str = ""

    def passed(self, ratio: float) -> bool:
        return math.isfinite(ratio) and (ratio >= self.value if self.higher else
                                         ratio <= self.value)

    @property
    def op(self) -> str:
        return ">=" if self.higher else "<="

    @property
    def text(self) -> str:
        """``"<figure> (<= 0.35)"``."""
        return f"{self.figure} ({self})"

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(
    side_a: Callable[[], float], side_b: Callable[[], float], reps: int, warmup: bool = True
) -> tuple[list[float], list[float]]:
    """Run both sides ``reps`` times each, interleaved A B, B A, A B, ...

    Each side returns its own measurement (seconds, images/s, ...). With ``warmup`` both run
    once first, unrecorded (allocator, thread pools, page cache).
    """
    if warmup:
        side_a()
        side_b()
    a: list[float] = []
    b: list[float] = []
    for i in range(reps):
        if i % 2 == 0:
            a.append(side_a())
            b.append(side_b())
        else:
            b.append(side_b())
            a.append(side_a())
    return a, b


def median_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over repetitions of ``num[i] / den[i]``."""
    return float(statistics.median(n / d for n, d in zip(num, den, strict=True)))


def record(name: str, ratio: float, bar: Bar, quick: bool, **raw: Any) -> dict[str, Any]:
    """The JSON record of one benchmark: name, what the ratio is (``bar.figure``), ratio,
    bar, passed, plus the raw numbers."""
    import torch

    return {
        "name": name,
        "figure": bar.figure,
        "ratio": round(float(ratio), 4),
        "bar": bar.value,
        "bar_op": bar.op,
        "passed": bool(bar.passed(ratio)),
        "quick": bool(quick),
        "machine": {
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            # other users' load when the record was made (1, 5, 15 min): wall-clock figures
            # on a shared machine mean little without it
            "load_avg": [round(x, 2) for x in os.getloadavg()],
        },
        "precision": precision_record(),
        **raw,
    }


def device() -> str:
    """CUDA when present (the benchmarks measure the path a trial would take)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def image_cache_in(folder: Path) -> Iterator[Path]:
    """Point the decode-once cache (``$VPR_TUNE_CACHE``) at ``folder`` for the block, so a
    benchmark neither reuses nor pollutes the user's cache."""
    old = os.environ.get("VPR_TUNE_CACHE")
    os.environ["VPR_TUNE_CACHE"] = str(folder)
    try:
        yield folder
    finally:
        if old is None:
            os.environ.pop("VPR_TUNE_CACHE", None)
        else:
            os.environ["VPR_TUNE_CACHE"] = old


def photo_like(rng: np.random.Generator, size: int) -> np.ndarray:
    """A ``size`` x ``size`` RGB uint8 image with photo-like statistics: smooth large-scale
    structure plus fine texture, so JPEG decode costs about what a street photo costs."""
    from PIL import Image

    coarse = rng.integers(0, 256, (size // 32, size // 32, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), np.int16)
    fine = rng.normal(0, 18, (size, size, 1))
    return np.clip(img + fine, 0, 255).astype(np.uint8)


def write_train_jpegs(root: Path, places: int, per_place: int, size: int,
                      seed: int = 0) -> Path:
    """A GSV-XS-format train split ``root/gsv_xs/train/bench/*.jpg`` of photo-like JPEGs."""
    from PIL import Image

    from vpr_tune.data.formats import format_name

    folder = root / "gsv_xs" / "train" / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for p in range(places):
        for k in range(per_place):
            name = format_name(600000 + 50 * p, 1500000 + k, 47, "P", 13.7, 100.5,
                               f"pano{p}x{k}", "", 0, "201705", f"{p}_Bench")
            Image.fromarray(photo_like(rng, size)).save(folder / name, quality=90)
    return root / "gsv_xs" / "train"


def write_eval_jpegs(split: Path, queries: int, db_per_query: int, size: int,
                     seed: int = 0) -> Path:
    """An SF-XS-format eval split: ``db_per_query`` database images every 5 m along a street
    per query, queries a few metres off; photo-like JPEGs of ``size`` px."""
    from PIL import Image

    from vpr_tune.data.formats import format_name

    rng = np.random.default_rng(seed)
    n_db = queries * db_per_query
    for sub, count in (("database", n_db), ("queries", queries)):
        (split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            east = 543000.0 + (5.0 * i if sub == "database" else 5.0 * db_per_query * i + 3.0)
            name = format_name(east, 4180000.0, 10, "S", 37.7, -122.5, f"{sub[0]}{i}", "", 0,
                               "201904", "")
            Image.fromarray(photo_like(rng, size)).save(split / sub / name, quality=90)
    return split
