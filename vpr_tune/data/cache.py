"""Decode-once image cache: every image decoded and resized once per (file list, size).

JPEG decoding and resizing dominate the input pipeline, so the first user of a
(file list, image size) pair decodes everything into one uint8 ``.npy`` file of shape
(N, H, W, 3); every later epoch, trial and process on the node memory-maps it
(``np.load(mmap_mode="r")``) and shares the page cache.

- Key: a hash of the paths, their mtimes and sizes, and the image size, so a changed or
  replaced file gives a new cache file (the old one is simply not used again).
- Concurrency: the builder holds :func:`vpr_tune.atomic.file_lock` on ``<key>.lock`` and
  writes through :func:`vpr_tune.atomic.atomic_path`, so a second builder waits and then
  reuses the file; a reader never sees a half-written array.
- Where: :func:`default_cache_root` (``$VPR_TUNE_CACHE`` or ``~/.cache/vpr-tune``) holds
  every cache of the package: ``images/``, ``scans/`` and the generated street-world data.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from vpr_tune.atomic import atomic_path, file_lock
from vpr_tune.errors import UserError
from vpr_tune.progress import Progress

CHUNK_BYTES = 8 << 20  # decoded images a cache builder holds at once


def as_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``224`` or ``[224, 224]`` -> ``(H, W)``."""
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = (int(v) for v in image_size)
    return h, w


def load_image(path: str | Path, image_size: int | Sequence[int]) -> np.ndarray:
    """Decode one image to RGB and resize it (bilinear) to ``(H, W, 3)`` uint8.

    Raises :class:`UserError` naming the file when it cannot be decoded. The cache and the
    PIL fallback both use this function, so they give identical arrays.
    """
    h, w = as_hw(image_size)
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (w, h):
                img = img.resize((w, h), Image.BILINEAR)
            return np.array(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"{path}: cannot decode image ({exc}); expected a valid JPEG") from exc


def default_cache_root() -> Path:
    """``$VPR_TUNE_CACHE`` or ``~/.cache/vpr-tune``: the one folder of every cache."""
    return Path(os.environ.get("VPR_TUNE_CACHE") or Path.home() / ".cache" / "vpr-tune")


def default_cache_dir() -> Path:
    """The decoded-image cache: ``default_cache_root() / "images"``."""
    return default_cache_root() / "images"


def cache_key(paths: Sequence[str | Path], image_size: int | Sequence[int]) -> str:
    """Hash of (path, mtime, size) of every file plus the image size."""
    h, w = as_hw(image_size)
    digest = hashlib.sha1(f"v1 {h}x{w} {len(paths)}\n".encode())
    for p in paths:
        st = os.stat(p)
        digest.update(f"{os.path.abspath(p)}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    return digest.hexdigest()[:20]


def _write(
    fh: BinaryIO, paths: Sequence[str | Path], hw: tuple[int, int], skip_bad_files: bool,
    progress: Progress | None,
) -> None:
    """Decode ``paths`` chunk by chunk and append them to ``fh`` (just after the .npy
    header): the builder holds one chunk (~8 MB), never the whole array, so its memory does
    not grow with the dataset (a memmap being filled would keep every dirty page resident)."""
    def one(i: int) -> np.ndarray:
        try:
            return load_image(paths[i], hw)
        except UserError as exc:
            if not skip_bad_files:
                raise
            warnings.warn(f"skipping bad image (black in the cache): {exc}", stacklevel=2)
            return np.zeros((*hw, 3), np.uint8)

    n = len(paths)
    chunk = max(16, CHUNK_BYTES // (hw[0] * hw[1] * 3))
    # PIL releases the GIL while decoding and resizing, so threads scale.
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        if progress:
            progress(0, n)
        for start in range(0, n, chunk):
            block = np.stack(list(pool.map(one, range(start, min(n, start + chunk)))))
            fh.write(block.tobytes())
            if progress:
                progress(start + len(block), n)


def cached_images(
    paths: Sequence[str | Path],
    image_size: int | Sequence[int],
    cache_dir: str | Path | None = None,
    skip_bad_files: bool = False,
    progress: Progress | None = None,
) -> np.ndarray:
    """All ``paths`` decoded and resized, as a read-only memory-mapped (N, H, W, 3) uint8 array.

    Built on first use (decode-once), reused while no file changes, safe when several
    processes ask at once. A build calls ``progress(images decoded, total)`` after each chunk.
    """
    hw = as_hw(image_size)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{cache_key(paths, hw)}-{hw[0]}x{hw[1]}.npy"
    if not final.exists():
        with file_lock(folder / (final.stem + ".lock")):  # a concurrent builder waits here
            if not final.exists():
                with atomic_path(final) as tmp, open(tmp, "wb") as fh:
                    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                              "fortran_order": False, "shape": (len(paths), *hw, 3)}
                    np.lib.format.write_array_header_1_0(fh, header)
                    _write(fh, paths, hw, skip_bad_files, progress)
    return np.load(final, mmap_mode="r")
