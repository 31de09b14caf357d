"""A fingerprint of a data folder: which images it holds, their sizes and times.

The search records it in ``space.yaml``; ``best --retest`` writes the one of the data it
evaluates on into ``retest.md`` and warns when they differ (files added, removed or
rewritten between the search and the retest). The image cache needs none of this: its key
already holds every file's mtime and size (``vpr_tune.data.cache.cache_key``).

>>> data_fingerprint("data/street-world")          # doctest: +SKIP
'2412 images, sha1 3f9c0a1b2c4d'
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def data_fingerprint(root: str | Path) -> str:
    """``N images, sha1 HEX`` over (relative path, size, mtime) of every image under root."""
    root = Path(root)
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.lower().endswith(IMAGE_SUFFIXES) and name != "preview.png":
                path = Path(folder) / name
                st = path.stat()
                entries.append(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}")
    digest = hashlib.sha1("\n".join(sorted(entries)).encode()).hexdigest()[:12]
    return f"{len(entries)} images, sha1 {digest}"
