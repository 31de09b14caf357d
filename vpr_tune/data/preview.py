"""A picture of the task: each eval query beside its database positives within 25 m.

Works on any data root (real or synthetic), so a person can see the task is real::

    from vpr_tune.data.preview import make_preview

    make_preview(root, "preview.png")      # also `vpr-tune data preview ROOT`
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vpr_tune.atomic import atomic_path
from vpr_tune.data.splits import find_splits, is_synthetic, load_eval_split
from vpr_tune.errors import UserError


def make_preview(
    root: str | Path, out_png: str | Path, per_split: int = 4, cell: int = 128
) -> Path:
    """A PNG strip per query: the query, then its nearest database positives (distance in m).

    Works on any data root (real or synthetic), so a person can see the task is real.
    """
    rows: list[Image.Image] = []
    n_pos = 4  # the database has 4 headings per spot: one of them faces like the query
    for rel, folder in find_splits(root).items():
        if rel.endswith("train"):
            continue
        ev = load_eval_split(folder)
        with_pos = [i for i, p in enumerate(ev.positives) if len(p)]
        pick = with_pos[:: max(1, len(with_pos) // per_split)][:per_split]
        for qi in pick:
            row = Image.new("RGB", ((n_pos + 1) * cell, cell + 14), "white")
            draw = ImageDraw.Draw(row)
            tiles = [(ev.q_paths[qi], f"{rel} query {qi}")]
            for di in ev.positives[qi][:n_pos]:
                dist = float(np.linalg.norm(ev.db_utm[di] - ev.q_utm[qi]))
                tiles.append((ev.db_paths[di], f"db {di}: {dist:.0f} m"))
            for j, (path, label) in enumerate(tiles):
                with Image.open(path) as img:
                    row.paste(img.convert("RGB").resize((cell, cell)), (j * cell, 14))
                draw.text((j * cell + 2, 1), label, fill="black")
            rows.append(row)
    if not rows:
        raise UserError(f"{root}: no eval split with positives to preview")
    title = Image.new("RGB", (rows[0].width, 16), "white")
    kind = "SYNTHETIC street-world" if is_synthetic(root) else "real data"
    ImageDraw.Draw(title).text(
        (2, 2), f"{kind}: each row = a query, then database images within 25 m", fill="black"
    )
    rows.insert(0, title)
    sheet = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    out = Path(out_png)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out
