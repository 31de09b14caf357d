"""Atomic file writes: write a temporary file in the same folder, then ``os.replace`` it.

A kill at any moment leaves either the old file or the new one, never a half-written
``trials.csv``, ``retest.csv`` or checkpoint that would crash the next read.

>>> from vpr_tune.atomic import atomic_path, write_text
>>> write_text(Path("results/x/space.yaml"), "seed: 0\\n")
>>> with atomic_path(Path("last.pt")) as tmp:
...     torch.save(state, tmp)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(frame: Any, path: Path) -> None:
    """Write a pandas ``frame`` to ``path`` atomically (no index column)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
