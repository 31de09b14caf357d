"""What a test set's recall was measured under: its protocol.

Two Recall@N figures are comparable only when they come from the same queries and
database, the same positive radius and the same test image size. ``best --retest`` records
one protocol per test set (``retest_sets.json`` next to ``retest.csv``, and in ``--json``);
``compare`` says when two experiments' sets of one name differ::

    from vpr_tune.protocol import split_protocol, protocol_differences

    p = split_protocol(split, image_size=322)   # queries, database, files_sha1, ...
    protocol_differences(p, other)              # [] or ["image_size 322 vs 224", ...]

Test sets beyond the config's ``data.test`` are named by path (``--test-set NAME=PATH``,
or an absolute path as a ``data.test`` value): any folder in the common VPR layout
(``database/`` and ``queries/`` of ``@UTM-east@UTM-north@...jpg`` files).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from vpr_tune.atomic import write_text
from vpr_tune.errors import UserError

PROTOCOL_FILE = "retest_sets.json"
# The fields that make two measurements comparable (the path may differ between machines).
COMPARED = ("queries", "database", "files_sha1", "positive_radius_m", "image_size")
SET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
RESERVED = ("val",)  # the val split's columns are val_R@N


def files_sha1(split: Any) -> str:
    """A short sha1 of the split's file lists (``database/NAME`` and ``queries/NAME``,
    sorted): the file names carry the UTM positions, so equal hashes mean equal ground
    truth."""
    names = sorted([f"database/{Path(p).name}" for p in split.db_paths]
                   + [f"queries/{Path(p).name}" for p in split.q_paths])
    return hashlib.sha1("\n".join(names).encode()).hexdigest()[:12]


def split_protocol(split: Any, image_size: Any) -> dict[str, Any]:
    """The protocol of one evaluation of ``split`` (a :class:`~vpr_tune.data.splits.EvalSplit`)
    at ``image_size`` (the model's test size: an int or ``[h, w]``)."""
    return {"path": str(split.root), "queries": len(split.q_paths),
            "database": len(split.db_paths), "files_sha1": files_sha1(split),
            "positive_radius_m": float(split.radius),
            "image_size": list(image_size) if isinstance(image_size, (list, tuple))
            else int(image_size)}


def merged(protocols: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """One set's protocol over several retested trials: the common fields, and
    ``image_size`` as a list when the trials were tested at different sizes."""
    given = [p for p in protocols if p]
    if not given:
        return None
    out = dict(given[0])
    sizes = []
    for p in given:
        if p["image_size"] not in sizes:
            sizes.append(p["image_size"])
    out["image_size"] = sizes[0] if len(sizes) == 1 else sizes
    return out


def protocol_differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """What differs between two protocols of one test set, in words (empty: comparable;
    a missing protocol is unknown, not different)."""
    if not a or not b:
        return []
    return [f"{key} {a.get(key)} vs {b.get(key)}" for key in COMPARED
            if a.get(key) != b.get(key)]


def describe(protocol: dict[str, Any]) -> str:
    """One line: ``/data/x/test: 100 queries, 500 database, files sha1 ..., ...``."""
    size = protocol["image_size"]
    shown = ("x".join(map(str, size)) if size and isinstance(size[0], int)
             else " / ".join(map(str, size))) if isinstance(size, list) else str(size)
    return (f"{protocol['path']}: {protocol['queries']} queries, {protocol['database']} "
            f"database images, file lists sha1 {protocol['files_sha1']}, positives within "
            f"{protocol['positive_radius_m']:g} m, image size {shown} px")


def write_protocols(folder: Path, protocols: dict[str, dict[str, Any] | None]) -> Path:
    """Write ``retest_sets.json`` (set name -> protocol) atomically."""
    path = folder / PROTOCOL_FILE
    write_text(path, json.dumps(protocols, indent=1, sort_keys=True) + "\n")
    return path


def read_protocols(folder: Path) -> dict[str, dict[str, Any] | None]:
    """The experiment's recorded protocols ({} before its first retest, or from a version
    that did not record them)."""
    try:
        return json.loads((folder / PROTOCOL_FILE).read_text())
    except (OSError, ValueError):
        return {}


def parse_test_sets(values: list[str] | None) -> dict[str, str]:
    """``["pitts30k=/data/pitts30k/images/test", ...]`` -> {name: absolute path} (a relative
    path is the working directory's); one clear error per bad entry (the name becomes a
    column prefix: ``pitts30k_R@1``)."""
    out: dict[str, str] = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not path:
            raise UserError(f"--test-set {value!r}: expected NAME=PATH (for example "
                            "pitts30k=/data/pitts30k/images/test)")
        if not SET_NAME.match(name) or name in RESERVED:
            raise UserError(f"--test-set {value!r}: the name must start with a letter and "
                            "hold only letters, digits and _ (it prefixes the columns, "
                            f"NAME_R@1), and not be {' or '.join(RESERVED)}")
        if name in out:
            raise UserError(f"--test-set {name} is given twice")
        out[name] = str(Path(path).expanduser().absolute())  # from the command line: cwd's
    return out


def is_path(rel: str) -> bool:
    """True when a ``data.test`` value names a folder by path (absolute, or from ``~``)
    rather than a split under the data root (``sf_xs/test``)."""
    return rel.startswith("~") or Path(rel).is_absolute()
