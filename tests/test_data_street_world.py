"""street-world: real-format layout, geometry behind the 25 m rule, determinism."""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vpr_tune.data import street_world as sw
from vpr_tune.data.formats import parse_name
from vpr_tune.data.preview import make_preview
from vpr_tune.data.splits import find_split, load_eval_split, load_train_split
from vpr_tune.errors import UserError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """Image cache and scan verdicts go to a temp folder, not the user's ~/.cache."""
    monkeypatch.setenv("VPR_TUNE_CACHE", str(tmp_path_factory.mktemp("cache")))



def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.jpg")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_and_marker(street_world_tiny: Path) -> None:
    root = street_world_tiny
    for rel in ("sf_xs/val", "sf_xs/test", "tokyo_xs/test"):
        assert any((root / rel / "database").glob("*.jpg"))
        assert any((root / rel / "queries").glob("*.jpg"))
    cities = sorted(p.name for p in (root / "gsv_xs" / "train").iterdir())
    assert len(cities) == 3 and any(c.islower() for c in cities) and any(
        c[0].isupper() for c in cities
    )  # city folder case varies, as in real copies
    marker = json.loads((root / sw.MARKER).read_text())
    assert marker["synthetic"] is True and marker["size"] == "tiny" and marker["seed"] == 0


def test_real_name_shapes(street_world_tiny: Path) -> None:
    root = street_world_tiny
    train = next((root / "gsv_xs" / "train").rglob("*.jpg")).name
    f = train.split("@")
    assert len(f) == 16 and f[-1] == ".jpg" and len(f[13]) == 6 and f[9] != ""
    assert f[-2].split("_")[1].lower() in {c[0].lower() for c in sw.TRAIN_CITIES}
    tokyo_q = next((root / "tokyo_xs" / "test" / "queries").glob("*.jpg")).name
    assert tokyo_q.split("@")[7].endswith(".jpg")  # like Tokyo-XS: 00685.jpg in a field
    flickr = next((root / "sf_xs" / "test" / "queries").glob("*.jpg")).name
    assert len(flickr.split("@")[13]) == 8 and flickr.split("@")[9] == ""
    m = parse_name(next((root / "sf_xs" / "val" / "database").glob("*.jpg")))
    assert m.utm_zone == "10" and m.utm_letter == "S" and 37 < m.lat < 38.5 and m.lon < -122


def test_train_places_are_compact_and_distinct(street_world_tiny: Path) -> None:
    tr = load_train_split(street_world_tiny)
    utm = np.array([(parse_name(p).utm_east, parse_name(p).utm_north) for p in tr.paths])
    centres = np.stack([utm[tr.labels == k].mean(0) for k in range(tr.num_places)])
    for k in range(tr.num_places):  # images of a place lie within a few metres
        assert np.linalg.norm(utm[tr.labels == k] - centres[k], axis=1).max() < 10
    d = np.linalg.norm(centres[:, None] - centres[None], axis=2) + np.eye(len(centres)) * 1e9
    assert d.min() > 20  # places are separate locations


def test_images_look_like_streets(street_world_tiny: Path) -> None:
    """Bright bluish sky on top, grey road at the bottom; no two views identical."""
    db = sorted((street_world_tiny / "sf_xs" / "val" / "database").glob("*.jpg"))
    arr = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) for p in db])
    top, bottom = arr[:, :6].mean((1, 2)), arr[:, -6:].mean((1, 2))
    assert (top[:, 2] >= top[:, 0]).mean() > 0.7
    assert (top.mean(1) > bottom.mean(1)).mean() > 0.7
    assert ((bottom.max(1) - bottom.min(1)) / bottom.max(1) < 0.25).mean() > 0.8
    assert len({hashlib.md5(a.tobytes()).hexdigest() for a in arr}) == len(arr)


def test_views_overlap_near_and_differ_far() -> None:
    """A camera moved a few metres sees much the same facades; 200 m away it does not."""
    rng = np.random.default_rng(0)
    street = sw.make_street(rng, sw.SF_STYLE, 600, (0.0, 0.0), 0.0, 10, "S")
    cond = sw.make_condition(np.random.default_rng(1), (2015, 2015))
    cond.haze = 1e9

    def view(s: float) -> np.ndarray:
        img = sw.render(street, s, 0, math.pi / 2, cond, np.random.default_rng(2), (48, 48),
                        occluders=0)
        return img.astype(np.float64)

    a, near, far = view(300), view(301.5), view(500)
    assert np.abs(a - near).mean() < np.abs(a - far).mean() * 0.6


def _assert_progress(calls: list[tuple[int, int]], root: Path, size: str, seed: int) -> None:
    """Reported with counts that never go back, ending at the images actually written."""
    written = len(list(root.rglob("*.jpg")))
    assert written == sw.planned_images(size, seed)
    assert calls[0] == (0, written) and calls[-1] == (written, written)
    assert all(total == written for _done, total in calls)
    done = [d for d, _total in calls]
    assert done == sorted(done)


def test_deterministic_for_a_seed(street_world_tiny: Path, tmp_path: Path) -> None:
    calls: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
    again = sw.synthesize(tmp_path / "again", size="tiny", seed=0, log=lambda _m: None,
                          workers=2, progress=lambda d, t: calls[0].append((d, t)))
    assert _digest(again) == _digest(street_world_tiny)  # processes do not change a byte
    other = sw.synthesize(tmp_path / "other", size="tiny", seed=1, log=lambda _m: None,
                          progress=lambda d, t: calls[1].append((d, t)))
    assert _digest(other) != _digest(street_world_tiny)
    _assert_progress(calls[0], again, "tiny", 0)  # counted in worker processes
    _assert_progress(calls[1], other, "tiny", 1)  # counted in this process


def test_progress_is_logged_without_a_callback(tmp_path: Path) -> None:
    from vpr_tune.progress import progress_line

    lines: list[str] = []
    sw.synthesize(tmp_path / "w", size="tiny", seed=2, log=lines.append)
    last = [ln for ln in lines if "street-world:" in ln][-1]
    n = sw.planned_images("tiny", 2)
    assert f"{n:,}/{n:,} images" in last and "img/s, done in" in last
    assert progress_line("x", 50, 200, 10.0) == "x: 50/200 images (5 img/s, ~30.0 s left)"


def test_existing_folder_rules(street_world_tiny: Path, tmp_path: Path) -> None:
    logs: list[str] = []
    assert sw.synthesize(street_world_tiny, "tiny", 0, log=logs.append) == street_world_tiny
    assert any("already" in m for m in logs)  # reused, not regenerated
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        sw.synthesize(tmp_path / "full", "tiny", 0)
    (tmp_path / "empty").mkdir()
    made = sw.synthesize(tmp_path / "empty", "tiny", 0, log=lambda _m: None)
    assert (made / sw.MARKER).exists()
    with pytest.raises(UserError, match="size"):
        sw.synthesize(tmp_path / "x", "huge", 0)


def _synth(out: str, both_ready) -> None:
    both_ready.wait(timeout=120)  # neither starts before the other is ready
    sw.synthesize(out, size="tiny", seed=0, log=lambda _m: None)


def test_two_processes_generating_at_once(tmp_path: Path, street_world_tiny: Path) -> None:
    ctx = mp.get_context("spawn")
    both_ready = ctx.Barrier(2)
    out = str(tmp_path / "shared")
    procs = [ctx.Process(target=_synth, args=(out, both_ready)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert _digest(Path(out)) == _digest(street_world_tiny)
    assert [p.name for p in tmp_path.iterdir()] == ["shared"]  # no temp folder left


def test_eval_splits_have_positives(street_world_tiny: Path) -> None:
    for rel in ("sf_xs/val", "tokyo_xs/test"):
        ev = load_eval_split(find_split(street_world_tiny, rel))
        assert ev.queries_without_positive == 0
        # the database covers 4 headings per position, so a query has several positives
        assert min(len(p) for p in ev.positives) >= 4


def test_preview(street_world_tiny: Path, tmp_path: Path) -> None:
    png = make_preview(street_world_tiny, tmp_path / "p.png", per_split=2)
    img = Image.open(png)
    assert img.width >= 4 * 100 and img.height >= 6 * 100


def test_bench_size_is_demo_with_four_times_the_val_queries() -> None:
    """`bench` (used by `vpr-tune bench asha`) must train on exactly demo's cities."""
    demo, bench = sw.SIZES["demo"], sw.SIZES["bench"]
    assert {k: v for k, v in bench.items() if k != "val"} == {
        k: v for k, v in demo.items() if k != "val"}
    assert bench["val"] == {**demo["val"], "queries": 4 * demo["val"]["queries"]}
