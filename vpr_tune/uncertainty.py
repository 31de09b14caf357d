"""How sure is a recall? Per-query ranks, bootstrap intervals and paired comparisons.

Every evaluation keeps, per query, the rank of its first true positive (1 = the nearest
database image is within 25 m) or 0 when none is in the top K. From these ranks come R@N
for any N <= K, the mean reciprocal rank, and the intervals below, with no second forward
pass::

    ranks = first_hit_ranks(predictions, split.positives)   # uint8, one byte a query
    recall(ranks, 1)                 # 16.0
    recall_interval(ranks, 1)        # (10.7, 22.0): 95 % bootstrap over queries
    paired_difference(a, b, 1)       # (-4.0, 6.7): R@1 of a minus b, same queries
    separated(a, b, 1)               # False: the data cannot tell a from b

Intervals are scipy's bootstrap over queries (BCa up to 2,000 queries, percentile beyond;
seeded: the same numbers twice); a paired comparison resamples the same queries for both
models, which is what makes two models evaluated on one split comparable at all.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
# BCa corrects the skew of a recall near 0 or 100 on a few hundred queries; its jackknife
# costs Q^2, and beyond a few thousand queries the percentile interval is as accurate.
BCA_UP_TO = 2000
NO_HIT = 0  # rank of a query whose positives are all beyond the top K


def first_hit_ranks(predictions: np.ndarray, positives: Sequence[np.ndarray]) -> np.ndarray:
    """(Q,) uint8: 1-based rank of each query's first positive in ``predictions`` (Q, K),
    0 when none of its top K is a positive (K <= 255)."""
    from vpr_tune.evaluate import hits_matrix

    hits = hits_matrix(predictions, positives)
    if hits.shape[1] > 255:
        raise ValueError(f"ranks are kept for the top 255 at most, got {hits.shape[1]}")
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, NO_HIT)
    return first.astype(np.uint8)


def hits_at(ranks: np.ndarray, n: int) -> np.ndarray:
    """(Q,) bool: the query has a positive among its first ``n`` predictions."""
    ranks = np.asarray(ranks)
    return (ranks > 0) & (ranks <= int(n))


def recall(ranks: np.ndarray, n: int) -> float:
    """R@n in percent (queries without a positive in the top K count as misses)."""
    return float(hits_at(ranks, n).mean() * 100.0) if len(ranks) else 0.0


def reciprocal_ranks(ranks: np.ndarray) -> np.ndarray:
    """(Q,) float: 1/rank of the first positive, 0 beyond the top K."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.divide(1.0, ranks, out=np.zeros_like(ranks), where=ranks > 0)


def mean_reciprocal_rank(ranks: np.ndarray) -> float:
    """Mean reciprocal rank in percent (100 = every query's nearest image is a positive)."""
    return float(reciprocal_ranks(ranks).mean() * 100.0) if len(ranks) else 0.0


def _interval(samples: tuple[np.ndarray, ...], statistic, paired: bool, seed: int,
              resamples: int) -> tuple[float, float]:
    from scipy import stats

    point = float(statistic(*samples, axis=-1))
    flat = samples[0] - samples[1] if paired else samples[0]  # what the resampling varies
    if len(samples[0]) < 2 or np.ptp(flat) == 0:
        return point, point  # no variation to resample (identical hits): the point
    res = stats.bootstrap(samples, statistic, paired=paired, vectorized=True,
                          confidence_level=CONFIDENCE, n_resamples=resamples,
                          method="BCa" if len(samples[0]) <= BCA_UP_TO else "percentile",
                          rng=np.random.default_rng(seed))
    lo, hi = res.confidence_interval
    if not (np.isfinite(lo) and np.isfinite(hi)):  # BCa undefined (a degenerate jackknife)
        lo, hi = stats.bootstrap(samples, statistic, paired=paired, vectorized=True,
                                 confidence_level=CONFIDENCE, n_resamples=resamples,
                                 method="percentile",
                                 rng=np.random.default_rng(seed)).confidence_interval
    return float(lo), float(hi)


def _mean_percent(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) * 100.0


def _mean_difference_percent(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return (np.mean(a, axis=axis) - np.mean(b, axis=axis)) * 100.0


def recall_interval(ranks: np.ndarray, n: int, seed: int = SEED,
                    resamples: int = RESAMPLES) -> tuple[float, float]:
    """95 % bootstrap interval (lo, hi) of R@n, in percent, over the queries."""
    return _interval((hits_at(ranks, n).astype(np.float64),), _mean_percent, False, seed,
                     resamples)


def paired_difference(a: np.ndarray, b: np.ndarray, n: int, seed: int = SEED,
                      resamples: int = RESAMPLES) -> tuple[float, float]:
    """95 % paired bootstrap interval of R@n(a) - R@n(b), in points, over the same queries
    (``a`` and ``b``: the ranks two models gave the same queries, in the same order)."""
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs the same queries: {len(a)} vs {len(b)}")
    return _interval((hits_at(a, n).astype(np.float64), hits_at(b, n).astype(np.float64)),
                     _mean_difference_percent, True, seed, resamples)


def separated(a: np.ndarray, b: np.ndarray, n: int, seed: int = SEED) -> bool:
    """True when the paired interval of R@n(a) - R@n(b) excludes 0: the data tell them
    apart. False: within noise of each other."""
    lo, hi = paired_difference(a, b, n, seed)
    return lo > 0 or hi < 0


def half_width(recall_percent: float, queries: int) -> float:
    """The 95 % interval's half-width, in points, of an R@N near ``recall_percent`` on
    ``queries`` queries (normal approximation; what ``run --dry-run`` and ``doctor`` say
    a val split can resolve)."""
    p = recall_percent / 100.0
    return 1.96 * float(np.sqrt(p * (1 - p) / max(int(queries), 1))) * 100.0


def encode(ranks: np.ndarray) -> str:
    """Ranks as text (base64 of the uint8 bytes): what a trial reports each epoch."""
    return base64.b64encode(np.asarray(ranks, dtype=np.uint8).tobytes()).decode("ascii")


def decode(text: str) -> np.ndarray:
    """The ranks :func:`encode` wrote."""
    return np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy()


# --------------------------------------------------------------------- the ranks on disk
RANKS_DIR = "ranks"  # <experiment>/ranks/<trial_id>.npz: one uint8 array per val epoch


def ranks_path(exp_dir: Path, trial_id: str) -> Path:
    """Where a trial's per-epoch val ranks live inside its experiment folder."""
    return Path(exp_dir) / RANKS_DIR / f"{trial_id}.npz"


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write named rank arrays (uint8) atomically: a kill never leaves half a file."""
    from vpr_tune.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **{k: np.asarray(v, dtype=np.uint8)
                                   for k, v in sorted(arrays.items())})


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The named arrays :func:`save_arrays` wrote; empty when there is no file."""
    path = Path(path)
    if not path.is_file():
        return {}
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def save_ranks(path: Path, by_epoch: dict[int, np.ndarray]) -> None:
    """Write a trial's ``{epoch: ranks}`` (:func:`save_arrays`)."""
    save_arrays(path, {f"epoch_{e}": r for e, r in by_epoch.items()})


def load_ranks(path: Path) -> dict[int, np.ndarray]:
    """``{epoch: ranks}`` of a file :func:`save_ranks` wrote; empty when there is none."""
    return {int(k.removeprefix("epoch_")): v for k, v in load_arrays(path).items()}
