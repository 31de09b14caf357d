"""``scale``: how evaluation and the image cache grow with the database.

Evaluation (``evaluate_split``: descriptors of every image through ResNet-18, exact faiss
search, Recall@N) of a fixed set of queries against databases of ~1 k to ~27 k images (the
size of SF-XS test), on street-world ``full`` at 48 px: the SF-XS-test-like database first,
then Tokyo database and train images of other cities as distractors (no positives among
them, as in a real database). Figure: the exponent b of wall ~ a x db^b (least squares in
log-log; 1.0 is linear). Each size is timed twice in interleaved order with a warm cache,
and the faster run counts (other users' load only ever adds time).

Also the decode-once cache build of each database: images/s, and the builder's peak memory
above its start, measured in a fresh process: it must not grow with the number of images
(the builder streams chunks to the file instead of holding the array):
``builder_peak_growth_per_cache_growth`` is ~0 when it streams, ~1 when it holds the array.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

from vpr_tune.bench.common import Bar, device, image_cache_in, record

SCALE_BAR = Bar(1.1, higher=False,
                figure="exponent b of eval wall ~ database^b (fixed queries)")
DB_SIZES = (1000, 3000, 9000, 27000)
QUERIES = 500
QUICK = {"sizes": (40, 80, 160), "queries": 8, "data": "tiny"}
IMAGE_SIZE = 48


def _pool(root: Path, queries: int) -> tuple[list[Path], list[Path]]:
    """(database pool in order: SF-XS-test database, Tokyo database, train images; queries)."""
    from vpr_tune.data.splits import find_split, load_eval_split, load_train_split

    test = load_eval_split(find_split(root, "sf_xs/test"))
    tokyo = load_eval_split(find_split(root, "tokyo_xs/test"))
    train = load_train_split(find_split(root, "gsv_xs/train"))
    return [*test.db_paths, *tokyo.db_paths, *train.paths], list(test.q_paths)[:queries]


def _split(root: Path, db: list[Path], q: list[Path]) -> Any:
    """An SF-XS-style eval split of these database and query files (25 m positives)."""
    import numpy as np

    from vpr_tune.data.formats import parse_name
    from vpr_tune.data.splits import EvalSplit

    def utm(paths: list[Path]) -> Any:
        return np.array([(m.utm_east, m.utm_north) for m in map(parse_name, paths)])

    split = EvalSplit(root=root, db_paths=db, q_paths=q, db_utm=utm(db), q_utm=utm(q))
    split.positives  # noqa: B018 - computed here, outside the timed evaluations
    return split


def _peak_rss() -> int:
    """This process's peak resident memory in bytes: VmHWM (ru_maxrss would carry over the
    parent's peak across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _build(paths: list[str], size: int, cache_dir: str, out: Any) -> None:
    """In a fresh process: build the cache, report (seconds, peak RSS above start, bytes)."""
    import os

    import psutil

    os.environ["VPR_TUNE_CACHE"] = cache_dir
    from vpr_tune.data.cache import cached_images

    start_rss = psutil.Process().memory_info().rss
    start = time.perf_counter()
    arr = cached_images(paths, size)
    seconds = time.perf_counter() - start
    peak = _peak_rss()
    out.put((seconds, max(0, peak - start_rss), int(arr.nbytes)))


def _build_in_child(paths: list[Path], size: int, cache_dir: Path) -> tuple[float, int, int]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_build, args=([str(p) for p in paths], size, str(cache_dir),
                                            out))
    proc.start()
    try:
        result = out.get(timeout=3600)
    finally:
        proc.join(60)
    if proc.exitcode != 0:
        raise RuntimeError(f"scale benchmark: cache builder exited with {proc.exitcode}")
    return result


def bench_scale(quick: bool = False, log: Any = print, data_size: str = "full") -> dict[str, Any]:
    """Exponent of eval wall vs database size; cache build rate and builder peak memory."""
    import numpy as np

    from vpr_tune.data.splits import resolve_data_root
    from vpr_tune.evaluate import evaluate_split, search
    from vpr_tune.model import build_model

    sizes, queries = (QUICK["sizes"], QUICK["queries"]) if quick else (DB_SIZES, QUERIES)
    root = resolve_data_root(None, QUICK["data"] if quick else data_size, log=log)
    pool, q_paths = _pool(root, queries)
    sizes = tuple(n for n in sizes if n <= len(pool)) or (len(pool),)
    dev = device()
    hw = (IMAGE_SIZE, IMAGE_SIZE)
    model = build_model({"backbone": "resnet18", "cut": "layer3", "aggregator": {"name": "gem"},
                         "pretrained": "none"}, hw).to(dev).eval()
    builds: dict[int, tuple[float, int, int]] = {}
    walls: dict[int, list[float]] = {n: [] for n in sizes}
    faiss_s: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="vpr-bench-") as tmp, \
            image_cache_in(Path(tmp) / "cache") as cache_dir:
        splits = {n: _split(root, pool[:n], q_paths) for n in sizes}
        for n in sizes:
            paths = [*splits[n].db_paths, *splits[n].q_paths]
            builds[n] = _build_in_child(paths, IMAGE_SIZE, cache_dir)
            log(f"scale: cache of {len(paths):,} images built in {builds[n][0]:.1f} s "
                f"({len(paths) / builds[n][0]:,.0f} img/s, builder peak +"
                f"{builds[n][1] / 2**20:.0f} MB)")
        evaluate_split(model, splits[sizes[0]], hw, 128, dev)  # warm-up (threads, allocator)
        for order in (sizes, tuple(reversed(sizes))):
            for n in order:
                start = time.perf_counter()
                evaluate_split(model, splits[n], hw, 128, dev)
                walls[n].append(time.perf_counter() - start)
                log(f"scale: database {n:,} + {len(q_paths)} queries: eval "
                    f"{walls[n][-1]:.1f} s")
        rng = np.random.default_rng(0)
        for n in sizes:  # exact search alone, on descriptors of the same shape
            db = rng.standard_normal((n, model.dim)).astype(np.float32)
            q = rng.standard_normal((len(q_paths), model.dim)).astype(np.float32)
            db /= np.linalg.norm(db, axis=1, keepdims=True)
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            start = time.perf_counter()
            search(db, q, 25)
            faiss_s[n] = time.perf_counter() - start
    best = [min(walls[n]) for n in sizes]
    slope = float(np.polyfit(np.log(sizes), np.log(best), 1)[0]) if len(sizes) > 1 else 1.0
    build_rates = [round((n + len(q_paths)) / builds[n][0], 1) for n in sizes]
    peaks_mb = [round(builds[n][1] / 2**20, 1) for n in sizes]
    # ~0 when the builder streams the pixels (what grows is the list of paths), ~1 if it
    # held the array: builder peak growth / cache file growth, smallest to largest database
    small, large = builds[sizes[0]], builds[sizes[-1]]
    peak_vs_cache = (large[1] - small[1]) / (large[2] - small[2]) if large[2] > small[2] \
        else None
    return record("scale", slope, SCALE_BAR, quick, database_sizes=list(sizes),
                  queries=len(q_paths),
                  eval_s=[round(w, 3) for w in best], eval_s_all={str(n): walls[n]
                                                                for n in sizes},
                  ms_per_image=[round(1000 * w / (n + len(q_paths)), 3)
                                for w, n in zip(best, sizes, strict=True)],
                  faiss_search_s=[round(faiss_s[n], 4) for n in sizes],
                  cache_build_img_s=build_rates,
                  cache_build_s=[round(builds[n][0], 2) for n in sizes],
                  builder_peak_mb_above_start=peaks_mb,
                  builder_peak_growth_per_cache_growth=None if peak_vs_cache is None
                  else round(peak_vs_cache, 4),
                  cache_mb=[round(builds[n][2] / 2**20, 1) for n in sizes],
                  image_size=IMAGE_SIZE, batch_size=128, data=str(root),
                  pool_images=len(pool))
