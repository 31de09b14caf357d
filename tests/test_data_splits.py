"""Split readers, positives at 25 m, root resolution, bad files, `data check`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vpr_tune.data import splits as sp
from vpr_tune.data.formats import format_name
from vpr_tune.data.street_world import MARKER, VERSION
from vpr_tune.errors import UserError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """Image cache and scan verdicts go to a temp folder, not the user's ~/.cache."""
    monkeypatch.setenv("VPR_TUNE_CACHE", str(tmp_path_factory.mktemp("cache")))



def _jpeg(path: Path, seed: int = 0, size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=90)
    return path


def _name(east: float, north: float, note: str = "") -> str:
    return format_name(east, north, 10, "S", 37.7, -122.5, f"p{east:.0f}x{north:.0f}", "", 0,
                       "201904", note)


def _train_tree(root: Path, counts: dict[str, int], folder: str = "bangkok") -> Path:
    i = 0
    for place, n in counts.items():
        for k in range(n):
            _jpeg(root / "gsv_xs" / "train" / folder / _name(1000 + i, 2000 + k, place), seed=i)
            i += 1
    return root


def _eval_tree(split: Path, n_db: int = 6, n_q: int = 3) -> Path:
    for i in range(n_db):
        _jpeg(split / "database" / _name(500000 + 10 * i, 4000000), seed=i)
    for i in range(n_q):
        _jpeg(split / "queries" / _name(500000 + 30 * i + 3, 4000000), seed=100 + i)
    return split


# --------------------------------------------------------------------------- positives
def test_positives_match_brute_force_on_random_points() -> None:
    rng = np.random.default_rng(0)
    db = rng.uniform(0, 300, size=(400, 2)) + [543000, 4180000]
    q = rng.uniform(-20, 320, size=(150, 2)) + [543000, 4180000]
    got = sp.compute_positives(db, q, 25.0)
    dist = np.linalg.norm(q[:, None, :] - db[None, :, :], axis=2)
    for i in range(len(q)):
        expected = np.flatnonzero(dist[i] <= 25.0)
        assert sorted(got[i].tolist()) == sorted(expected.tolist())
        assert np.all(np.diff(dist[i, got[i]]) >= 0)  # nearest first


def test_eval_split_on_street_world_matches_brute_force(street_world_tiny: Path) -> None:
    ev = sp.load_eval_split(sp.find_split(street_world_tiny, "sf_xs/test"))
    dist = np.linalg.norm(ev.q_utm[:, None] - ev.db_utm[None], axis=2)
    brute = [set(np.flatnonzero(row <= 25.0).tolist()) for row in dist]
    assert [set(p.tolist()) for p in ev.positives] == brute
    assert ev.queries_without_positive == sum(len(b) == 0 for b in brute)
    assert ev.queries_without_positive > 0  # street-world test has queries beyond the db
    assert ev.db_utm.dtype == np.float64 and ev.q_utm.shape == (len(ev.q_paths), 2)


def test_eval_split_counts_queries_without_positive(tmp_path: Path) -> None:
    ev = sp.load_eval_split(_eval_tree(tmp_path / "sf_xs" / "val", n_db=3, n_q=3))
    # db at 0, 10, 20 m; queries at 3, 33, 63 m -> positives for the first two only
    assert [len(p) for p in ev.positives] == [3, 2, 0]
    assert ev.queries_without_positive == 1


# --------------------------------------------------------------------------- roots
def test_find_split_layouts(tmp_path: Path) -> None:
    val = _eval_tree(tmp_path / "sf_xs" / "val")
    tokyo = _eval_tree(tmp_path / "Tokyo_XS")  # no test level, other case
    _train_tree(tmp_path, {"1_A": 4})
    assert sp.find_split(tmp_path, "sf_xs/val") == val
    assert sp.find_split(tmp_path, "tokyo_xs/test") == tokyo
    assert sp.find_split(val, "sf_xs/val") == val  # a split folder given directly
    assert sp.find_split(tmp_path / "sf_xs", "sf_xs/val") == val
    assert sp.find_split(tmp_path, "gsv_xs/train") == tmp_path / "gsv_xs" / "train"
    with pytest.raises(UserError, match="sf_xs/test"):
        sp.find_split(tmp_path, "sf_xs/test")
    assert set(sp.find_splits(tmp_path)) == {"gsv_xs/train", "sf_xs/val", "tokyo_xs/test"}


def test_resolve_data_root_explicit_env_and_missing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VPR_TUNE_DATA", str(tmp_path))
    assert sp.resolve_data_root(None, log=lambda _m: None) == tmp_path.resolve()
    assert sp.resolve_data_root(str(tmp_path)) == tmp_path.resolve()
    with pytest.raises(UserError, match="does not exist") as err:
        sp.resolve_data_root(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)


def test_resolve_data_root_generates_street_world_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("VPR_TUNE_DATA", raising=False)
    monkeypatch.setenv("VPR_TUNE_CACHE", str(tmp_path / "cache"))
    logs: list[str] = []
    root = sp.resolve_data_root(None, size="tiny", log=logs.append)
    assert root == tmp_path / "cache" / f"street-world-tiny-seed0-v{VERSION}"
    assert any("synthetic street-world" in m and str(root) in m for m in logs)
    assert sp.is_synthetic(root) and sp.is_synthetic(root / "sf_xs" / "val" / "queries")
    mtime = (root / MARKER).stat().st_mtime_ns
    logs.clear()
    assert sp.resolve_data_root(None, size="tiny", log=logs.append) == root
    assert (root / MARKER).stat().st_mtime_ns == mtime  # reused, not regenerated
    assert any("using synthetic" in m for m in logs)
    with pytest.raises(UserError, match="huge"):
        sp.resolve_data_root(None, size="huge")


def test_is_synthetic_false_for_real_layout(tmp_path: Path) -> None:
    assert not sp.is_synthetic(_eval_tree(tmp_path / "sf_xs" / "val"))


# --------------------------------------------------------------------------- train split
def test_train_split_drops_small_places_and_labels_are_contiguous(tmp_path: Path) -> None:
    _train_tree(tmp_path, {"7_A": 4, "3_A": 2, "9_A": 5}, folder="Bangkok")
    tr = sp.load_train_split(tmp_path, min_images_per_place=4)
    assert tr.num_places == 2 and tr.dropped_places == 1
    assert sorted(set(tr.labels.tolist())) == [0, 1] and tr.labels.dtype == np.int64
    assert len(tr.paths) == 9 == len(tr.labels)
    for path, label in zip(tr.paths, tr.labels, strict=True):
        assert path.name.split("@")[-2] == tr.place_names[label]
    assert sp.load_train_split(tmp_path, min_images_per_place=2).num_places == 3


def test_train_split_street_world(street_world_tiny: Path) -> None:
    tr = sp.load_train_split(street_world_tiny / "gsv_xs" / "train")
    assert tr.num_places == 30 and len(tr.paths) >= 4 * 30
    assert np.array_equal(np.unique(tr.labels), np.arange(tr.num_places))


# --------------------------------------------------------------------------- bad data
def test_missing_database_folder(tmp_path: Path) -> None:
    split = _eval_tree(tmp_path / "sf_xs" / "val")
    shutil.rmtree(split / "database")
    with pytest.raises(UserError, match="database"):
        sp.load_eval_split(split)


def test_empty_split(tmp_path: Path) -> None:
    split = tmp_path / "sf_xs" / "val"
    (split / "database").mkdir(parents=True)
    (split / "queries").mkdir()
    with pytest.raises(UserError, match="empty") as err:
        sp.load_eval_split(split)
    assert str(split / "database") in str(err.value)
    (tmp_path / "gsv_xs" / "train" / "rome").mkdir(parents=True)
    with pytest.raises(UserError, match="train"):
        sp.load_train_split(tmp_path / "gsv_xs" / "train")


def test_unparseable_utm_in_a_file_name(tmp_path: Path) -> None:
    split = _eval_tree(tmp_path / "sf_xs" / "val")
    bad = _jpeg(split / "queries" / "IMG_0001.jpg")
    with pytest.raises(UserError, match="UTM") as err:
        sp.load_eval_split(split)
    assert str(bad) in str(err.value)


def test_train_image_without_place_note(tmp_path: Path) -> None:
    _jpeg(tmp_path / "gsv_xs" / "train" / "rome" / _name(1, 2, ""))
    with pytest.raises(UserError, match="note"):
        sp.load_train_split(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_jpeg_is_found_by_the_scan(tmp_path: Path, damage: str) -> None:
    split = _eval_tree(tmp_path / "sf_xs" / "val", n_db=4)
    victim = sorted((split / "database").iterdir())[1]
    data = victim.read_bytes()
    damaged = {"truncate": data[: len(data) // 2], "garbage": b"\x00not a jpeg" * 50, "empty": b""}
    victim.write_bytes(damaged[damage])
    with pytest.raises(UserError) as err:
        sp.load_eval_split(split)
    assert str(victim) in str(err.value) and "skip" in str(err.value)
    with pytest.warns(UserWarning, match="skipping"):
        ev = sp.load_eval_split(split, skip_bad_files=True)
    assert len(ev.db_paths) == 3 and victim not in ev.db_paths


def test_check_data_counts(street_world_tiny: Path) -> None:
    info = sp.check_data(street_world_tiny)
    assert set(info) == {"gsv_xs/train", "sf_xs/val", "sf_xs/test", "tokyo_xs/test"}
    assert info["gsv_xs/train"]["places"] == 30 and info["sf_xs/val"]["synthetic"] is True
    marker = sp.synthetic_info(street_world_tiny)
    for rel, counts in marker["counts"].items():
        if rel == "gsv_xs/train":
            assert info[rel]["images"] == counts
        else:
            assert info[rel]["database"] == counts["database"]
            assert info[rel]["queries"] == counts["queries"]


def test_scan_verdicts_are_remembered_until_a_file_changes(tmp_path: Path, monkeypatch) -> None:
    split = _eval_tree(tmp_path / "sf_xs" / "val", n_db=4)
    sp.load_eval_split(split)  # scans and remembers
    with monkeypatch.context() as m:
        m.setattr(sp, "_bad_reason", lambda _p: pytest.fail("rescanned unchanged files"))
        assert len(sp.load_eval_split(split).db_paths) == 4
    victim = sorted((split / "database").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(UserError, match="truncated"):
        sp.load_eval_split(split)


def test_decode_finds_corrupt_data_inside_a_complete_file(tmp_path: Path) -> None:
    split = _eval_tree(tmp_path / "sf_xs" / "val", n_db=4)
    victim = sorted((split / "database").iterdir())[2]
    data = victim.read_bytes()
    half = len(data) // 2  # a stray start-of-image marker mid-stream; the end marker stays
    victim.write_bytes(data[:half] + b"\xff\xd8\xff\xd8" + data[half + 4 :])
    assert len(sp.load_eval_split(split).db_paths) == 4  # the quick scan cannot see it
    with pytest.raises(UserError, match="cannot decode") as err:
        sp.load_eval_split(split, decode=True)
    assert str(victim) in str(err.value)
    with pytest.warns(UserWarning, match="skipping"):
        info = sp.check_data(split, skip_bad_files=True, decode=True)
    (only,) = info.values()
    assert only["database"] == 3


def _resolve(cache: str, start, out) -> None:
    import os

    os.environ["VPR_TUNE_CACHE"] = cache
    os.environ.pop("VPR_TUNE_DATA", None)
    logs: list[str] = []
    start.wait()
    root = sp.resolve_data_root(None, size="tiny", log=logs.append)
    out.put((str(root), sum("generating" in m for m in logs)))


def test_trials_starting_together_generate_street_world_once(tmp_path: Path) -> None:
    import multiprocessing as mp
    import time

    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_resolve, args=(str(tmp_path), start, out)) for _ in range(2)]
    for p in procs:
        p.start()
    time.sleep(0.5)
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len({r[0] for r in results}) == 1
    assert sum(r[1] for r in results) == 1  # one generated, the other waited and reused
    assert sp.is_synthetic(results[0][0])
