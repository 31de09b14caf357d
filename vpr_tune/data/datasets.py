"""Split readers (GSV-XS train, SF-XS / Tokyo-XS eval), the P x K sampler and the loaders.

- :func:`resolve_data_root` picks the data root: the given one, ``$VPR_TUNE_DATA``, or
  street-world generated once into the user cache.
- :func:`find_split` accepts a root holding ``gsv_xs/ sf_xs/ tokyo_xs/`` (Tokyo with or
  without its ``test`` level, folder names in any case) or a split folder given directly.
- :func:`load_train_split` / :func:`load_eval_split` read file names, check the images
  (a cheap scan that finds truncated/corrupt JPEGs) and compute positives at 25 m.
- :class:`TrainLoader` serves P x K batches from the decode-once cache (or PIL each step),
  augmenting on tensors; :func:`eval_batches` serves eval images in order.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vpr_tune.data.cache import as_hw, cache_key, cached_images, load_image
from vpr_tune.data.formats import is_image_file, parse_name
from vpr_tune.errors import UserError

MARKER = "STREET_WORLD.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_SPLITS = ("sf_xs/val", "sf_xs/test", "tokyo_xs/test")
TRAIN_SPLIT = "gsv_xs/train"


# ------------------------------------------------------------------------------ roots
def default_cache_root() -> Path:
    """``$VPR_TUNE_CACHE`` or ``~/.cache/vpr-tune``."""
    return Path(os.environ.get("VPR_TUNE_CACHE") or Path.home() / ".cache" / "vpr-tune")


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
    from vpr_tune.data.street_world import SIZES, VERSION, synthesize

    if size not in SIZES:
        raise UserError(f"data.synth_size: {size!r} is not one of {', '.join(SIZES)}")
    # The generator version is in the name, so an upgrade never reuses stale pictures.
    path = default_cache_root() / f"street-world-{size}-seed0-v{VERSION}"
    if not (path / MARKER).exists():
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        # Trials starting together wait for one generator instead of each making a copy.
        with open(path.parent / f".{path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (path / MARKER).exists():
                log(f"generating synthetic street-world data ({size}) at {path} ...")
                synthesize(path, size=size, seed=0, log=lambda _msg: None)
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
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_name(f"{memo.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps({"reasons": reasons}))
            os.replace(tmp, memo)
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
    positives: list[np.ndarray]  # per query: db indices within radius, nearest first
    queries_without_positive: int
    radius: float = 25.0

    @property
    def name(self) -> str:
        return f"{self.root.parent.name}/{self.root.name}"


def _utm(paths: Sequence[Path]) -> np.ndarray:
    return np.array(
        [(m.utm_east, m.utm_north) for m in map(parse_name, paths)], dtype=np.float64
    ).reshape(-1, 2)


def compute_positives(db_utm: np.ndarray, q_utm: np.ndarray, radius: float) -> list[np.ndarray]:
    """Database indices within ``radius`` metres of each query (KD-tree), nearest first."""
    from sklearn.neighbors import NearestNeighbors

    if len(db_utm) == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(len(q_utm))]
    knn = NearestNeighbors(algorithm="kd_tree").fit(db_utm)
    _, idx = knn.radius_neighbors(q_utm, radius=radius, sort_results=True)
    return [np.asarray(i, dtype=np.int64) for i in idx]


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
    db_utm, q_utm = _utm(db), _utm(q)
    positives = compute_positives(db_utm, q_utm, radius)
    return EvalSplit(
        root=split,
        db_paths=db,
        q_paths=q,
        db_utm=db_utm,
        q_utm=q_utm,
        positives=positives,
        queries_without_positive=int(sum(len(p) == 0 for p in positives)),
        radius=radius,
    )


# ------------------------------------------------------------------------------ sampler
class PKSampler:
    """P places x K images per batch; no place twice in a batch; deterministic per seed.

    Each pass shuffles the places and cuts them into groups of P; every place contributes
    K distinct images drawn at random (places must have at least K images). An epoch has
    ``batches_per_epoch`` batches (default: one pass, ``num_places // P``).
    ``iter(sampler)`` yields the batches of the current epoch (``set_epoch``).
    """

    def __init__(
        self,
        labels: np.ndarray | Sequence[int],
        places_per_batch: int,
        images_per_place: int,
        seed: int = 0,
        batches_per_epoch: int | None = None,
    ) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.P, self.K, self.seed = int(places_per_batch), int(images_per_place), int(seed)
        self.places, counts = np.unique(self.labels, return_counts=True)
        if self.P < 1 or self.K < 1:
            raise UserError("budget.places_per_batch and images_per_place must be >= 1")
        if len(self.places) < self.P:
            raise UserError(
                f"budget.places_per_batch={self.P} but the train split has only "
                f"{len(self.places)} places"
            )
        if counts.min() < self.K:
            raise UserError(
                f"budget.images_per_place={self.K} but some places have only {counts.min()} "
                "images (raise data.min_images_per_place to at least K)"
            )
        self.batches_per_epoch = batches_per_epoch or len(self.places) // self.P
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.batches(self.epoch)

    def batches(self, epoch: int) -> Iterator[np.ndarray]:
        """The index arrays (length P*K, grouped by place) of one epoch."""
        rng = np.random.default_rng([self.seed, int(epoch), 7919])
        n_groups = len(self.places) // self.P
        made = 0
        while made < self.batches_per_epoch:
            # One pass: images of each place in random order, then places in random order.
            order = np.lexsort((rng.random(len(self.labels)), self.labels))
            starts = np.searchsorted(self.labels[order], self.places)
            perm = rng.permutation(len(self.places))
            for g in range(min(n_groups, self.batches_per_epoch - made)):
                chosen = perm[g * self.P : (g + 1) * self.P]
                idx = starts[chosen][:, None] + np.arange(self.K)[None, :]
                yield order[idx.reshape(-1)]
                made += 1


# ------------------------------------------------------------------------------ tensors
# The input pipeline keeps per-batch CPU work small: images stay uint8 until the last step,
# the random crop is taken while copying out of the memmap, the resize is one batched uint8
# interpolate, and colour jitter + ImageNet normalisation + uint8->float32 + NHWC->NCHW are
# one lookup table per (image, channel). On CUDA the uint8 crop is copied to the GPU
# (4x fewer bytes) and resize/colour run there. Augmentation parameters come from a numpy
# generator seeded by (seed, epoch, batch), so batches do not depend on thread timing.

def _torch() -> Any:
    import torch  # imported lazily: `vpr-tune data check` and --help stay fast

    return torch


_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32)
_STD = np.asarray(IMAGENET_STD, dtype=np.float32)


@dataclass
class _Aug:
    """Per-batch augmentation: one crop size, per-image offsets and colour affine."""

    crop_hw: tuple[int, int]
    offsets: np.ndarray  # (B, 2) top-left y, x
    gain: np.ndarray  # (B, 3): value = clip(pixel * gain + bias, 0, 1) before normalising
    bias: np.ndarray  # (B, 3)


def _identity(b: int, hw: tuple[int, int]) -> _Aug:
    return _Aug(
        hw,
        np.zeros((b, 2), np.int64),
        np.full((b, 3), 1 / 255, np.float32),
        np.zeros((b, 3), np.float32),
    )


def draw_augmentation(rng: np.random.Generator, b: int, hw: tuple[int, int]) -> _Aug:
    """Mild VPR-safe augmentation: a crop of 80-100 % of the side (aspect +-5 %) resized
    back, brightness/contrast and a small white-balance shift. No flips: a mirrored street
    is another place."""
    h, w = hw
    scale = rng.uniform(0.8, 1.0)
    ch = max(1, round(h * scale))
    cw = max(1, min(w, round(w * scale * rng.uniform(0.95, 1.05))))
    offsets = np.stack([rng.integers(0, h - ch + 1, b), rng.integers(0, w - cw + 1, b)], 1)
    bright = rng.uniform(0.75, 1.25, (b, 1))
    contrast = rng.uniform(0.75, 1.25, (b, 1))
    gain = bright * rng.uniform(0.93, 1.07, (b, 3)) * contrast / 255.0
    bias = np.repeat(0.5 * (1 - contrast), 3, axis=1)  # contrast pivots on mid-grey
    return _Aug((ch, cw), offsets, gain.astype(np.float32), bias.astype(np.float32))


def _crops(get: Callable[[int], np.ndarray], idx: np.ndarray, aug: _Aug) -> np.ndarray:
    """(B, ch, cw, 3) uint8: image ``idx[j]`` cropped at ``aug.offsets[j]`` (one copy)."""
    ch, cw = aug.crop_hw
    out = np.empty((len(idx), ch, cw, 3), dtype=np.uint8)
    for j, i in enumerate(idx):  # B slice copies; cheap next to any per-pixel work
        y, x = aug.offsets[j]
        out[j] = get(int(i))[y : y + ch, x : x + cw]
    return out


def _finish_cpu(crops: np.ndarray, hw: tuple[int, int], aug: _Aug) -> Any:
    """uint8 crops -> normalised float32 NCHW on the CPU (resize + one LUT pass)."""
    torch = _torch()
    import torch.nn.functional as F  # noqa: N812

    t = torch.from_numpy(crops).permute(0, 3, 1, 2)  # channels_last view, no copy
    if tuple(t.shape[2:]) != hw:
        t = F.interpolate(t, size=hw, mode="bilinear", align_corners=False)
    nhwc = t.permute(0, 2, 3, 1).contiguous().numpy()
    levels = np.arange(256, dtype=np.float32)
    lut = (levels[None, None, :] * aug.gain[:, :, None] + aug.bias[:, :, None]).clip(0, 1)
    lut = ((lut - _MEAN[None, :, None]) / _STD[None, :, None]).astype(np.float32)
    out = np.empty((len(nhwc), 3, *hw), dtype=np.float32)
    for b in range(len(nhwc)):
        for c in range(3):
            np.take(lut[b, c], nhwc[b, :, :, c], out=out[b, c])
    return torch.from_numpy(out)


def _finish_cuda(crops_dev: Any, hw: tuple[int, int], aug: _Aug) -> Any:
    """The same on the GPU: uint8 NHWC crops on device -> normalised channels_last float."""
    torch = _torch()
    import torch.nn.functional as F  # noqa: N812

    dev = crops_dev.device
    x = crops_dev.permute(0, 3, 1, 2).float()
    if tuple(x.shape[2:]) != hw:
        x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False)
    gain = torch.from_numpy(aug.gain).to(dev).view(-1, 3, 1, 1)
    bias = torch.from_numpy(aug.bias).to(dev).view(-1, 3, 1, 1)
    mean = torch.from_numpy(_MEAN).to(dev).view(1, 3, 1, 1)
    std = torch.from_numpy(_STD).to(dev).view(1, 3, 1, 1)
    x = x.mul_(gain).add_(bias).clamp_(0, 1).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last)


def _prefetched(make: Callable[[int], Any], n: int) -> Iterator[Any]:
    """``make(0..n-1)`` with the next item prepared in a background thread."""
    if n <= 0:
        return
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(make, 0)
        for i in range(n):
            cur = nxt.result()
            if i + 1 < n:
                nxt = pool.submit(make, i + 1)
            yield cur


class _Source:
    """Images by index: decode-once memmap (``cache=True``) or PIL per request."""

    def __init__(
        self, paths: Sequence[Path], image_size: Any, cache: bool, skip_bad_files: bool = False
    ) -> None:
        self.paths, self.hw = list(paths), as_hw(image_size)
        self.array = (
            cached_images(self.paths, self.hw, skip_bad_files=skip_bad_files) if cache else None
        )

    def get(self, i: int) -> np.ndarray:
        if self.array is not None:
            return self.array[i]
        return load_image(self.paths[i], self.hw)


class _Pipeline:
    """Host stage (background thread) + device stage shared by train and eval batches."""

    def __init__(self, source: _Source, device: str) -> None:
        self.source, self.device = source, str(device)
        self.cuda = self.device.startswith("cuda")

    def host(self, idx: np.ndarray, aug: _Aug) -> Any:
        crops = _crops(self.source.get, idx, aug)
        if not self.cuda:
            return _finish_cpu(crops, self.source.hw, aug)
        return _torch().from_numpy(crops).pin_memory().to(self.device, non_blocking=True)

    def device_stage(self, x: Any, aug: _Aug) -> Any:
        return _finish_cuda(x, self.source.hw, aug) if self.cuda else x


def normalize(x: Any) -> Any:
    """uint8 NHWC tensor -> float32 NCHW, ImageNet-normalised (no augmentation)."""
    torch = _torch()
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


class TrainLoader:
    """P x K training batches: ``for images, labels in loader.epoch(e)``.

    ``images`` float32 NCHW normalised with ImageNet mean/std on ``device`` (channels_last on
    CUDA), ``labels`` int64. Deterministic for (seed, epoch). With ``cache=True`` images come
    from the decode-once memmap; the next batch is prepared in a background thread.
    """

    def __init__(
        self,
        split: TrainSplit,
        image_size: int | Sequence[int],
        places_per_batch: int,
        images_per_place: int,
        batches_per_epoch: int | None,
        seed: int = 0,
        augment: bool = True,
        cache: bool = True,
        device: str = "cpu",
        skip_bad_files: bool = False,
    ) -> None:
        self.split, self.hw, self.seed = split, as_hw(image_size), int(seed)
        self.augment, self.device = augment, str(device)
        self.sampler = PKSampler(
            split.labels, places_per_batch, images_per_place, seed, batches_per_epoch
        )
        self.pipe = _Pipeline(_Source(split.paths, self.hw, cache, skip_bad_files), device)

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self, epoch: int) -> Iterator[tuple[Any, Any]]:
        torch = _torch()
        batches = list(self.sampler.batches(epoch))
        labels_all = torch.from_numpy(self.split.labels)

        def host(i: int) -> tuple[Any, Any, _Aug]:
            idx = batches[i]
            if self.augment:
                rng = np.random.default_rng([self.seed, int(epoch), i, 104729])
                aug = draw_augmentation(rng, len(idx), self.hw)
            else:
                aug = _identity(len(idx), self.hw)
            x = self.pipe.host(idx, aug)
            y = labels_all[torch.from_numpy(idx)].to(self.device, non_blocking=True)
            return x, y, aug

        for x, y, aug in _prefetched(host, len(batches)):
            yield self.pipe.device_stage(x, aug), y

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self.epoch(self.sampler.epoch)


def eval_batches(
    paths: Sequence[str | Path],
    image_size: int | Sequence[int],
    batch_size: int,
    cache: bool = True,
    device: str = "cpu",
    skip_bad_files: bool = False,
) -> Iterator[Any]:
    """Float32 NCHW normalised tensors of ``paths`` in order, ``batch_size`` at a time."""
    source = _Source([Path(p) for p in paths], image_size, cache, skip_bad_files)
    pipe = _Pipeline(source, device)
    n = len(source.paths)
    starts = list(range(0, n, batch_size))

    def host(i: int) -> tuple[Any, _Aug]:
        idx = np.arange(starts[i], min(n, starts[i] + batch_size))
        aug = _identity(len(idx), source.hw)
        return pipe.host(idx, aug), aug

    for x, aug in _prefetched(host, len(starts)):
        yield pipe.device_stage(x, aug)
