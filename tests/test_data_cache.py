"""Decode-once cache: same arrays as PIL, rebuilt on change, one valid file when built twice."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vpr_tune.data.cache import cache_key, cached_images, load_image
from vpr_tune.errors import UserError


def _images(folder: Path, n: int, sizes=((50, 40), (64, 64), (30, 45))) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]  # real photos come in several sizes and aspect ratios
        arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        paths.append(folder / f"{i:03d}.jpg")
        Image.fromarray(arr).save(paths[-1], quality=90)
    return paths


def test_cache_equals_pil(tmp_path: Path) -> None:
    paths = _images(tmp_path / "img", 7)
    arr = cached_images(paths, (24, 32), cache_dir=tmp_path / "cache")
    assert isinstance(arr, np.memmap) and arr.dtype == np.uint8 and arr.shape == (7, 24, 32, 3)
    expected = np.stack([load_image(p, (24, 32)) for p in paths])
    assert np.array_equal(np.asarray(arr), expected)
    assert not arr.flags.writeable


def test_cache_build_reports_progress_in_chunks(tmp_path: Path, monkeypatch) -> None:
    import vpr_tune.data.cache as cache_mod

    paths = _images(tmp_path / "img", 40)
    # 16 x 16 x 3 bytes per image: chunks of 16 images -> 16, 32, 40
    monkeypatch.setattr(cache_mod, "CHUNK_BYTES", 16 * 16 * 16 * 3)
    calls: list[tuple[int, int]] = []
    arr = cached_images(paths, 16, cache_dir=tmp_path / "cache",
                        progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 40), (16, 40), (32, 40), (40, 40)]
    assert np.array_equal(np.asarray(arr), np.stack([load_image(p, 16) for p in paths]))
    calls.clear()
    cached_images(paths, 16, cache_dir=tmp_path / "cache", progress=lambda d, t: calls.append(
        (d, t)))
    assert calls == []  # reused: nothing to build


def test_cache_reused_and_rebuilt_when_a_file_changes(tmp_path: Path) -> None:
    paths = _images(tmp_path / "img", 4)
    cdir = tmp_path / "cache"
    cached_images(paths, 16, cache_dir=cdir)
    files = sorted(cdir.glob("*.npy"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    cached_images(paths, 16, cache_dir=cdir)
    assert files[0].stat().st_mtime_ns == mtime  # decode-once: not rebuilt
    key = cache_key(paths, 16)
    time.sleep(0.01)
    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(paths[2])
    assert cache_key(paths, 16) != key
    arr = cached_images(paths, 16, cache_dir=cdir)
    assert np.array_equal(arr[2], load_image(paths[2], 16))
    assert len(list(cdir.glob("*.npy"))) == 2
    assert cache_key(paths, 16) != cache_key(paths, 17)


def _build(paths: list[str], cdir: str, start, out) -> None:
    start.wait()  # both processes start building at the same moment
    arr = cached_images(paths, (20, 20), cache_dir=cdir)
    out.put(int(arr.sum()))


def test_concurrent_builders_give_one_valid_file(tmp_path: Path) -> None:
    paths = [str(p) for p in _images(tmp_path / "img", 40)]
    cdir = str(tmp_path / "cache")
    ctx = mp.get_context("spawn")  # fresh interpreters, as two Ray trials would be
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_build, args=(paths, cdir, start, out)) for _ in range(2)]
    for p in procs:
        p.start()
    time.sleep(0.5)
    start.set()
    sums = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    files = sorted(Path(cdir).iterdir())
    assert len([f for f in files if f.suffix == ".npy"]) == 1
    assert not [f for f in files if f.name.endswith(".tmp")]  # no half-written litter
    expected = np.stack([load_image(p, 20) for p in paths])
    assert sums == [int(expected.sum())] * 2


def test_corrupt_image_in_cache_build(tmp_path: Path) -> None:
    paths = _images(tmp_path / "img", 3)
    paths[1].write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(UserError, match="001.jpg"):
        cached_images(paths, 16, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.tmp"))
    with pytest.warns(UserWarning, match="skipping"):
        arr = cached_images(paths, 16, cache_dir=tmp_path / "cache", skip_bad_files=True)
    assert arr[1].max() == 0 and arr[0].max() > 0
