"""Recall@N on an eval split (25 m rule): batched descriptors, exact faiss search.

- ``describe`` runs the model over images in batches under ``torch.inference_mode`` while a
  background thread prepares the next batch (so decoding overlaps the forward pass).
- ``search`` is exact nearest-neighbour search (``faiss.IndexFlatIP`` on unit vectors).
- ``recall_at_n`` is a pure, vectorised function of predictions and positive sets.
"""

from __future__ import annotations

import csv
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vpr_tune.atomic import atomic_path
from vpr_tune.metrics import RECALL_NS


def _prefetch(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Iterate ``items`` in a background thread, ``depth`` items ahead (torch releases
    the GIL in the forward pass, so the producer runs while the model computes)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce() -> None:
        try:
            for item in items:
                q.put(item)
        except BaseException as exc:  # re-raised in the consumer
            q.put(exc)
        q.put(done)

    threading.Thread(target=produce, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def describe_batches(
    model: torch.nn.Module, batches: Iterable[torch.Tensor], count: int,
    device: str | torch.device, precision: str = "auto",
) -> np.ndarray:
    """Descriptors (count, dim) float32 of an iterable of image batches, in order; the
    forward pass autocasts per ``precision`` (see vpr_tune/precision.py)."""
    from vpr_tune.precision import autocast, autocast_dtype, channels_last

    device = torch.device(device)
    dtype = autocast_dtype(precision, device)
    last = channels_last(device, dtype)
    was_training = model.training
    model.eval()
    out = np.empty((count, model.dim), dtype=np.float32)
    start = 0
    with torch.inference_mode(), autocast(device, dtype):
        for images in _prefetch(batches):
            images = images.to(device, non_blocking=True)
            if last:
                images = images.contiguous(memory_format=torch.channels_last)
            desc = model(images)
            out[start : start + len(desc)] = desc.float().cpu().numpy()
            start += len(desc)
    model.train(was_training)
    if start != count:
        raise RuntimeError(f"describe: got {start} descriptors for {count} images")
    return out


def describe(
    model: torch.nn.Module, paths: Sequence[Path], image_size: Sequence[int], batch_size: int,
    device: str | torch.device, cache: bool = True, precision: str = "auto",
) -> np.ndarray:
    """Descriptors of image files (normalised and resized by the data layer)."""
    from vpr_tune.data.loader import eval_batches

    size = (int(image_size[0]), int(image_size[1]))
    batches = eval_batches(list(paths), size, batch_size, cache=cache, device=str(device))
    return describe_batches(model, batches, len(paths), device, precision)


def search(db: np.ndarray, queries: np.ndarray, k: int = 25) -> np.ndarray:
    """Indices (Q, min(k, D)) of the nearest database descriptors, best first (exact)."""
    import faiss

    k = min(int(k), len(db))
    if k == 0 or len(queries) == 0:
        return np.zeros((len(queries), k), dtype=np.int64)
    index = faiss.IndexFlatIP(db.shape[1])  # unit vectors: max inner product == min L2
    index.add(np.ascontiguousarray(db, dtype=np.float32))
    _, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return idx.astype(np.int64)


def hits_matrix(predictions: np.ndarray, positives: Sequence[np.ndarray]) -> np.ndarray:
    """Boolean (Q, K): ``predictions[q, r]`` is a positive of query ``q``. Vectorised via
    (query, db) pair codes and ``np.isin``; no per-query Python loop."""
    predictions = np.asarray(predictions, dtype=np.int64)
    q_count = len(predictions)
    if q_count == 0 or predictions.shape[1] == 0:
        return np.zeros(predictions.shape, dtype=bool)
    lens = np.fromiter(map(len, positives), dtype=np.int64, count=q_count)
    pos = (
        np.concatenate([np.asarray(p, dtype=np.int64) for p in positives])
        if lens.sum()
        else np.zeros(0, dtype=np.int64)
    )
    width = int(max(predictions.max(initial=0), pos.max(initial=0))) + 1
    pos_codes = np.repeat(np.arange(q_count, dtype=np.int64), lens) * width + pos
    pred_codes = np.arange(q_count, dtype=np.int64)[:, None] * width + predictions
    return np.isin(pred_codes, pos_codes) & (predictions >= 0)


def recall_at_n(
    predictions: np.ndarray, positives: Sequence[np.ndarray], ns: Sequence[int] = RECALL_NS
) -> dict[int, float]:
    """Percent of queries with a positive among the first N predictions, for each N.
    Queries without any positive count as misses. N beyond the prediction width uses all."""
    hits = hits_matrix(predictions, positives)
    q_count, width = hits.shape
    if q_count == 0:
        return {int(n): 0.0 for n in ns}
    if width == 0:
        return {int(n): 0.0 for n in ns}
    cumulative = np.logical_or.accumulate(hits, axis=1)
    return {int(n): float(cumulative[:, min(int(n), width) - 1].mean() * 100.0) for n in ns}


def evaluate_split(
    model: torch.nn.Module, split: Any, image_size: Sequence[int], batch_size: int = 64,
    device: str | torch.device = "cpu", cache: bool = True, k: int = max(RECALL_NS),
    precision: str = "auto",
) -> tuple[dict[str, Any], np.ndarray]:
    """``(metrics, predictions)``; see :func:`evaluate` for the metrics."""
    paths = list(split.db_paths) + list(split.q_paths)
    desc = describe(model, paths, image_size, batch_size, device, cache=cache,
                    precision=precision)
    n_db = len(split.db_paths)
    predictions = search(desc[:n_db], desc[n_db:], k)
    recalls = recall_at_n(predictions, split.positives, RECALL_NS)
    metrics: dict[str, Any] = {f"R@{n}": round(r, 4) for n, r in recalls.items()}
    metrics.update(
        queries=len(split.q_paths),
        database=n_db,
        queries_without_positive=int(split.queries_without_positive),
    )
    return metrics, predictions


def evaluate(
    model: torch.nn.Module, split: Any, image_size: Sequence[int], batch_size: int = 64,
    device: str | torch.device = "cpu", cache: bool = True, precision: str = "auto",
) -> dict[str, Any]:
    """``R@N`` for each N of ``metrics.RECALL_NS`` (1, 5, 10, 25), in percent, plus
    ``queries``, ``database`` and ``queries_without_positive`` for an ``EvalSplit``;
    ``precision`` as in ``resources.precision``."""
    return evaluate_split(model, split, image_size, batch_size, device, cache,
                          precision=precision)[0]


def save_predictions(
    split: Any, predictions: np.ndarray, out_dir: Path, top: int, only_wrong: bool = False,
    pictures: int = 20, thumb: int = 160,
) -> Path:
    """Write ``predictions.csv`` (query, rank, database, correct; paths relative to the
    split folder) and, for the first ``pictures`` queries (wrong ones with ``only_wrong``),
    ``preds/NNNNN.png``: query, then its top predictions outlined green (positive) or red."""
    from PIL import Image, ImageDraw, ImageOps

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    top = max(1, min(int(top), predictions.shape[1]))
    preds = predictions[:, :top]
    hits = hits_matrix(preds, split.positives)
    root = Path(split.root)

    def rel(p: Path) -> str:
        p = Path(p)
        return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

    csv_path = out_dir / "predictions.csv"
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["query", "rank", "database", "correct"])
        for qi, qp in enumerate(split.q_paths):
            qrel = rel(qp)
            for r in range(top):
                writer.writerow([qrel, r + 1, rel(split.db_paths[preds[qi, r]]), int(hits[qi, r])])

    pic_dir = out_dir / "preds"
    pic_dir.mkdir(exist_ok=True)
    chosen = np.flatnonzero(~hits[:, 0]) if only_wrong else np.arange(len(preds))
    border = 6
    for qi in chosen[:pictures]:
        files = [split.q_paths[qi]] + [split.db_paths[j] for j in preds[qi]]
        colors = ["white"] + ["green" if h else "red" for h in hits[qi]]
        canvas = Image.new("RGB", ((thumb + 2 * border) * len(files), thumb + 2 * border))
        for i, (path, color) in enumerate(zip(files, colors, strict=True)):
            with Image.open(path) as im:
                tile = ImageOps.fit(im.convert("RGB"), (thumb, thumb))
            tile = ImageOps.expand(tile, border=border, fill=color)
            canvas.paste(tile, (i * (thumb + 2 * border), 0))
        ImageDraw.Draw(canvas).text((border + 2, border + 2), "query", fill="yellow")
        with atomic_path(pic_dir / f"{qi:05d}.png") as tmp:
            canvas.save(tmp, format="PNG")
    return csv_path
