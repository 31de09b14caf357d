"""Split discovery and readers: GSV-XS train, SF-XS / Tokyo-XS eval, in the real formats.

- :func:`resolve_data_root` picks the data root: the given one, ``$VPR_TUNE_DATA``, or
  street-world generated once into the user cache.
- :func:`find_split` accepts a root holding ``gsv_xs/ sf_xs/ tokyo_xs/`` (Tokyo with or
  without its ``test`` level, folder names in any case) or a split folder given directly.
- :func:`load_train_split` / :func:`load_eval_split` read file names, check the images
  (a cheap scan that finds truncated/corrupt JPEGs) and compute positives at 25 m.

>>> root = resolve_data_root(None, size="tiny")          # street-world, cached
>>> train = load_train_split(root)                       # TrainSplit: paths, labels
>>> val = load_eval_split(root, rel="sf_xs/val")         # EvalSplit: positives per query

The batches made from these splits come from :mod:`vpr_tune.data.loader`.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vpr_tune.atomic import file_lock, write_text
from vpr_tune.data.cache import cache_key, default_cache_root
from vpr_tune.data.formats import is_image_file, parse_name
from vpr_tune.data.street_world import MARKER, SIZES, VERSION, synthesize
from vpr_tune.errors import UserError
from vpr_tune.progress import log_progress

EVAL_SPLITS = ("sf_xs/val", "sf_xs/test", "tokyo_xs/test")
TRAIN_SPLIT = "gsv_xs/train"


# ------------------------------------------------------------------------------ roots
def resolve_data_root(
    root: str | Path | None, size: str = "demo", log: Callable[[str], Any] = print
) -> Path:
    """The data root to use: ``root``, else ``$VPR_TUNE_DATA``, else street-world (cached).

    street-world is generated once into
    ``default_cache_root()/street-world-<size>-seed0-v<generator version>``
    (safe when several processes do it at once) and the choice is logged.
    """
    if root is None or str(root) == "":
        root = os.environ.get("VPR_TUNE_DATA") or None
    if root is not None:
        path = Path(root).expanduser()
        if not path.exists():
            raise UserError(
                f"data root {path} does not exist; expected a folder holding gsv_xs/, "
                "sf_xs/, tokyo_xs/ (or one split folder)"
            )
        return path.resolve()
    if size not in SIZES:
        raise UserError(f"data.synth_size: {size!r} is not one of {', '.join(SIZES)}")
    # The generator version is in the name, so an upgrade never reuses stale pictures.
    path = default_cache_root() / f"street-world-{size}-seed0-v{VERSION}"
    if not (path / MARKER).exists():
        # Trials starting together wait for one generator instead of each making a copy.
        with file_lock(path.parent / f".{path.name}.lock"):
            if not (path / MARKER).exists():
                log(f"generating synthetic street-world data ({size}) at {path} ...")
                synthesize(path, size=size, seed=0, log=lambda _msg: None,
                           progress=log_progress(log, f"street-world {size}"))
    log(f"using synthetic street-world data at {path}")
    return path


def synthetic_info(root_or_split: str | Path) -> dict[str, Any] | None:
    """The street-world marker of a root or of any split below it, or None for real data."""
    path = Path(root_or_split).resolve()
    for folder in (path, *list(path.parents)[:4]):
        marker = folder / MARKER
        if marker.is_file():
            try:
                return json.loads(marker.read_text())
            except (OSError, ValueError):
                return {"synthetic": True}
    return None


def is_synthetic(root_or_split: str | Path) -> bool:
    """True when the folder (or a parent up to 4 levels) is street-world."""
    return synthetic_info(root_or_split) is not None


def _child(folder: Path, name: str) -> Path | None:
    """``folder/name`` matched case-insensitively (city/split folder case varies)."""
    exact = folder / name
    if exact.is_dir():
        return exact
    if folder.is_dir():
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and entry.name.lower() == name.lower():
                return entry
    return None


def _walk(folder: Path, rel: str) -> Path | None:
    for part in rel.split("/"):
        if not part:
            continue
        nxt = _child(folder, part)
        if nxt is None:
            return None
        folder = nxt
    return folder


def _is_eval_split(folder: Path) -> bool:
    return _child(folder, "database") is not None and _child(folder, "queries") is not None


def _is_train_split(folder: Path) -> bool:
    return folder.is_dir() and any(
        sub.is_dir()
        and sub.name.lower() not in ("database", "queries")
        and any(is_image_file(f) for f in sub.iterdir())
        for sub in folder.iterdir()
    )


def find_split(root: str | Path, rel: str) -> Path:
    """The folder of split ``rel`` (``"gsv_xs/train"``, ``"sf_xs/val"``, ``"tokyo_xs/test"``).

    Tries ``root/rel``, then ``root/<dataset>`` without the val/test level, then ``root``
    itself when it is already such a split folder. Raises :class:`UserError` saying what
    was expected.
    """
    root = Path(root)
    if not root.exists():
        raise UserError(f"data root {root} does not exist")
    if not root.is_dir():
        raise UserError(f"data root {root} is a file; expected a folder (a data root or a "
                        "split folder)")
    is_train = rel.rstrip("/").endswith("train")
    ok = _is_train_split if is_train else _is_eval_split
    parts = [p for p in rel.split("/") if p]
    candidates = [_walk(root, rel)]
    if len(parts) == 2:
        candidates += [_walk(root, parts[0]), _walk(root, parts[1])]
    candidates.append(root)
    for cand in candidates:
        if cand is not None and ok(cand):
            return cand
    what = (
        "city folders of .jpg images"
        if is_train
        else "database/ and queries/ folders of .jpg images"
    )
    raise UserError(
        f"{root}: no split {rel!r} found; expected {root / rel} (or the split folder itself) "
        f"holding {what}"
    )


def find_splits(root: str | Path) -> dict[str, Path]:
    """Every known split under ``root`` (or ``root`` itself when it is one split folder)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data path {root} does not exist or is not a folder")
    if _child(root, "database") is not None or _child(root, "queries") is not None:
        return {f"{root.parent.name}/{root.name}": root}  # an eval split (maybe incomplete)
    found: dict[str, Path] = {}
    for rel in (TRAIN_SPLIT, *EVAL_SPLITS):
        ok = _is_train_split if rel == TRAIN_SPLIT else _is_eval_split
        parts = rel.split("/")
        # root/test is sf_xs/test only when root is not another dataset's folder (tokyo_xs)
        datasets = {r.split("/")[0] for r in (TRAIN_SPLIT, *EVAL_SPLITS)}
        own = root.name.lower() not in datasets - {parts[0]}
        for cand in (_walk(root, rel), _walk(root, parts[0]),
                     _walk(root, parts[1]) if own else None):
            if cand is not None and ok(cand) and cand not in found.values():
                found[rel] = cand
                break
    if not found and _is_train_split(root):
        found[TRAIN_SPLIT] = root
    if not found:
        raise UserError(
            f"{root}: no dataset split found; expected gsv_xs/train/<city>/*.jpg, "
            "sf_xs/{val,test}/{database,queries}/*.jpg, tokyo_xs/[test/]{database,queries}/*.jpg "
            "or one such split folder"
        )
    return found


def check_data(
    path: str | Path,
    skip_bad_files: bool = False,
    min_images_per_place: int = 4,
    decode: bool = False,
) -> dict[str, dict[str, Any]]:
    """Scan every split under ``path``: counts per split name (what ``data check`` prints).

    ``decode=True`` fully decodes every image instead of the cheap header/end-marker scan.
    """
    out: dict[str, dict[str, Any]] = {}
    synthetic = is_synthetic(path)
    for rel, folder in find_splits(path).items():
        if rel == TRAIN_SPLIT:
            tr = load_train_split(folder, min_images_per_place, skip_bad_files, decode)
            info: dict[str, Any] = {
                "images": len(tr.paths),
                "places": tr.num_places,
                "dropped_places": tr.dropped_places,
            }
        else:
            ev = load_eval_split(folder, skip_bad_files=skip_bad_files, decode=decode)
            info = {
                "database": len(ev.db_paths),
                "queries": len(ev.q_paths),
                "queries_without_positive": ev.queries_without_positive,
            }
        out[rel] = {**info, "path": str(folder), "synthetic": synthetic}
    return out


# ------------------------------------------------------------------------------ scanning
def _bad_reason(path: Path) -> str | None:
    """Why an image file is unusable (cheap: header + JPEG end marker), or None."""
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file"
        with open(path, "rb") as fh:
            head = fh.read(3)
            if head[:2] == b"\xff\xd8":  # JPEG: a complete file ends with the EOI marker
                fh.seek(max(0, size - 1024))
                if b"\xff\xd9" not in fh.read():
                    return "truncated JPEG (no end-of-image marker)"
        with Image.open(path) as img:
            img.verify()
    except (OSError, ValueError, SyntaxError) as exc:
        return f"cannot read image ({exc})"
    return None


def _bad_decode(path: Path) -> str | None:
    """The cheap checks, then a full decode (finds corrupt data inside a complete file)."""
    reason = _bad_reason(path)
    if reason is None:
        try:
            with Image.open(path) as img:
                img.load()
        except (OSError, ValueError, SyntaxError) as exc:
            return f"cannot decode image ({exc})"
    return reason


def scan_images(
    paths: Sequence[Path], skip_bad_files: bool = False, decode: bool = False
) -> list[Path]:
    """The usable ``paths``; a corrupt/truncated one raises :class:`UserError` or is skipped.

    ``decode=True`` also decodes every image (thorough, ~100x slower). The verdicts are
    remembered in ``default_cache_root()/scans/`` under the same (path, mtime, size) key as
    the image cache, so every later trial skips the file reads.
    """
    tag = "decode" if decode else "scan"
    memo = default_cache_root() / "scans" / f"{cache_key(paths, 0)}-{tag}.json"
    try:
        reasons = json.loads(memo.read_text())["reasons"]
    except (OSError, ValueError, KeyError):
        with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
            reasons = list(pool.map(_bad_decode if decode else _bad_reason, paths))
        with contextlib.suppress(OSError):  # a read-only cache only costs the rescan
            write_text(memo, json.dumps({"reasons": reasons}))
    good: list[Path] = []
    for path, reason in zip(paths, reasons, strict=True):
        if reason is None:
            good.append(path)
        elif skip_bad_files:
            warnings.warn(f"skipping {path}: {reason}", stacklevel=2)
        else:
            raise UserError(
                f"{path}: {reason}; expected a valid JPEG image "
                "(set data.skip_bad_files / --skip-bad-files to skip it with a warning)"
            )
    return good


def _list_images(folder: Path, recursive: bool) -> list[Path]:
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and is_image_file(p))


# ------------------------------------------------------------------------------ train
@dataclass
class TrainSplit:
    """GSV-XS-style training split: images grouped into places with contiguous labels."""

    root: Path
    paths: list[Path]
    labels: np.ndarray  # int64, contiguous 0..P-1, same order as paths
    num_places: int
    place_names: list[str] = field(default_factory=list)  # label -> note field
    dropped_places: int = 0  # places with fewer than min_images_per_place images

    def __len__(self) -> int:
        return len(self.paths)


def load_train_split(
    path: str | Path,
    min_images_per_place: int = 4,
    skip_bad_files: bool = False,
    decode: bool = False,
) -> TrainSplit:
    """Read ``<city>/*.jpg`` under ``path`` (or ``path/gsv_xs/train``); place id = note field."""
    split = find_split(path, TRAIN_SPLIT)
    files = _list_images(split, recursive=True)
    if not files:
        raise UserError(f"{split}: empty train split; expected <city>/*.jpg images")
    files = scan_images(files, skip_bad_files, decode)
    by_place: dict[str, list[Path]] = {}
    for f in files:
        note = parse_name(f).note
        if not note:
            raise UserError(
                f"{f}: train image has no place id in the note field "
                "(expected ...@YYYYMM@<placeid>_<City>@.jpg)"
            )
        by_place.setdefault(note, []).append(f)
    kept = sorted(k for k, v in by_place.items() if len(v) >= min_images_per_place)
    if not kept:
        raise UserError(
            f"{split}: no place has at least {min_images_per_place} images "
            f"({len(by_place)} places, {len(files)} images); lower data.min_images_per_place"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for label, key in enumerate(kept):
        paths += by_place[key]
        labels += [label] * len(by_place[key])
    return TrainSplit(
        root=split,
        paths=paths,
        labels=np.asarray(labels, dtype=np.int64),
        num_places=len(kept),
        place_names=kept,
        dropped_places=len(by_place) - len(kept),
    )


# ------------------------------------------------------------------------------ eval
@dataclass
class EvalSplit:
    """A database/queries split with UTM positions and the positives of each query."""

    root: Path
    db_paths: list[Path]
    q_paths: list[Path]
    db_utm: np.ndarray  # (N_db, 2) float64 east, north
    q_utm: np.ndarray  # (N_q, 2)
    radius: float = 25.0

    @property
    def name(self) -> str:
        return f"{self.root.parent.name}/{self.root.name}"

    @cached_property
    def positives(self) -> list[np.ndarray]:
        """Per query: database indices within ``radius``, nearest first. Computed on first
        use: a search's driver only checks the file lists (and skips the KD-tree import)."""
        return compute_positives(self.db_utm, self.q_utm, self.radius)

    @property
    def queries_without_positive(self) -> int:
        return sum(len(p) == 0 for p in self.positives)


def _utm(paths: Sequence[Path]) -> np.ndarray:
    return np.array(
        [(m.utm_east, m.utm_north) for m in map(parse_name, paths)], dtype=np.float64
    ).reshape(-1, 2)


def compute_positives(db_utm: np.ndarray, q_utm: np.ndarray, radius: float) -> list[np.ndarray]:
    """Database indices within ``radius`` metres of each query (KD-tree), nearest first."""
    # scipy's KD-tree, not scikit-learn's: importing sklearn cost every trial 1.3 s.
    from scipy.spatial import KDTree

    if len(db_utm) == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(len(q_utm))]
    found = KDTree(db_utm).query_ball_point(q_utm, r=radius, return_sorted=True)
    positives = []
    for q, idx in zip(q_utm, found, strict=True):
        idx = np.asarray(idx, dtype=np.int64)
        dist = np.linalg.norm(db_utm[idx] - q, axis=1)
        positives.append(idx[np.argsort(dist, kind="stable")])
    return positives


def load_eval_split(
    path: str | Path,
    radius: float = 25.0,
    skip_bad_files: bool = False,
    rel: str = "sf_xs/val",
    decode: bool = False,
) -> EvalSplit:
    """Read ``path/database`` and ``path/queries`` (``path`` may also be a root: ``rel``)."""
    path = Path(path)
    has_sub = _child(path, "database") is not None or _child(path, "queries") is not None
    split = path if has_sub else find_split(path, rel)
    lists = []
    for sub in ("database", "queries"):
        folder = _child(split, sub)
        if folder is None:
            raise UserError(f"{split}: missing {sub}/ folder; expected {split / sub}/*.jpg")
        files = _list_images(folder, recursive=False)
        if not files:
            raise UserError(f"{folder}: empty {sub} folder; expected .jpg images")
        lists.append(scan_images(files, skip_bad_files, decode))
    db, q = lists
    return EvalSplit(root=split, db_paths=db, q_paths=q, db_utm=_utm(db), q_utm=_utm(q),
                     radius=radius)
