"""``vpr-tune doctor``'s checks of the data and the disk: every split the space names is
there and readable, how finely val tells trials apart, and room for the checkpoints a
search keeps. Listed in :data:`vpr_tune.doctor.CHECKS` with the others.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vpr_tune.doctor_context import FAIL, OK, WARN, Check, Context
from vpr_tune.errors import UserError


def check_data(ctx: Context) -> list[Check]:
    """Every split the space names is there (train and val are needed, the test sets only
    by ``--retest``) and scans clean; sets ``ctx.data_root`` and the val query count."""
    from vpr_tune.config import DEFAULTS
    from vpr_tune.data.splits import check_data as scan
    from vpr_tune.data.splits import find_split, resolve_data_root

    data = (ctx.space.base if ctx.space else DEFAULTS)["data"]
    root = ctx.data or data.get("root") or os.environ.get("VPR_TUNE_DATA")
    if not root:
        ctx.data_root = resolve_data_root(None, data.get("synth_size", "demo"),
                                          log=lambda _m: None)
    else:
        ctx.data_root = Path(root).expanduser()
        if not ctx.data_root.is_dir():
            return [Check(FAIL, "data", f"{ctx.data_root} does not exist",
                          "Pass --data DIR holding gsv_xs/, sf_xs/ and tokyo_xs/.")]
    out = []
    needed = {"train": data["train"], "val": data["val"], **dict(data["test"])}
    for role, rel in needed.items():
        try:
            find_split(ctx.data_root, rel)
        except UserError as exc:
            status = FAIL if role in ("train", "val") else WARN
            why = "the search needs it" if status == FAIL else "only --retest needs it"
            out.append(Check(status, f"data {role}", str(exc),
                             f"Put the {rel} split under {ctx.data_root} ({why})."))
    if any(c.status == FAIL for c in out):
        return out
    try:
        info = scan(ctx.data_root, skip_bad_files=bool(data["skip_bad_files"]),
                    decode=ctx.decode)
    except UserError as exc:
        return [*out, Check(FAIL, "data", str(exc), "Replace or delete the file, or set "
                            "data.skip_bad_files: true to skip it with a warning.")]
    val_path = str(find_split(ctx.data_root, data["val"]))
    for rel, v in info.items():
        if v.get("path") == val_path and "queries" in v:
            ctx.notes["val_queries"] = int(v["queries"])  # for check_val_resolution
        if "images" in v:
            detail = f"{v['images']} images, {v['places']} places"
        else:
            detail = (f"{v['database']} database, {v['queries']} queries, "
                      f"{v['queries_without_positive']} without a positive within 25 m")
        synthetic = " (synthetic street-world)" if v.get("synthetic") else ""
        out.append(Check(OK, f"data {rel}", detail + synthetic))
    if not ctx.decode:
        out.append(Check(WARN, "data files", "quick scan (headers and end markers)",
                         "Add --decode to decode every image once (slow, thorough)."))
    return out


def check_val_resolution(ctx: Context) -> list[Check]:
    """How finely the val split tells trials apart: points of R@N per query and the 95 %
    half-width at R@1 = 20 % (``vpr_tune.noise.resolution``); ! when coarser than ±3."""
    from vpr_tune.metrics import ranking
    from vpr_tune.resolution import resolution

    queries = ctx.notes.get("val_queries")
    if queries is None:
        return []  # the data check failed: it says why
    r = resolution(queries, ranking(ctx.space.base["search"] if ctx.space else None)[0])
    if r.coarse:
        return [Check(WARN, "val resolution", r.detail, r.advice[:1].upper() + r.advice[1:]
                      + ".")]
    return [Check(OK, "val resolution", r.detail)]


def checkpoint_bytes(ctx: Context) -> int:
    """Disk a search keeps at most (vpr_tune/tune/checkpoints.py): the running trials' two
    newest folders and one folder of each kept finished trial (search.keep_checkpoints);
    PBT/PB2 keep every folder. A folder: checkpoint.pt (model + Adam's two moments, the
    largest optimizer state) and best.pt (the model)."""
    from vpr_tune.config import POPULATION_SCHEDULERS
    from vpr_tune.model import build_model
    from vpr_tune.tune.checkpoints import KEEP_LATEST

    cfg = ctx.largest()
    model = build_model({**cfg["model"], "pretrained": "none"}, cfg["data"]["image_size"])
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    search = cfg["search"]
    trials = int(search["num_samples"]) if ctx.space is None else ctx.notes.get(
        "trials", int(search["num_samples"]))
    if search["scheduler"] in POPULATION_SCHEDULERS:
        folders = trials * -(-int(cfg["budget"]["max_epochs"])
                             // int(cfg["pbt"]["perturbation_interval"]))
    else:
        folders = (min(trials, int(search["max_concurrent"])) * KEEP_LATEST
                   + min(trials, int(search["keep_checkpoints"])))
    return folders * (params * 3 + params)


def check_disk(ctx: Context) -> list[Check]:
    """Room for :func:`checkpoint_bytes` where the search writes (this disk or the store)."""
    from vpr_tune.tune.results import storage_root
    from vpr_tune.tune.storage import is_remote, public

    storage = ctx.space.base.get("storage") if ctx.space else None
    if is_remote(storage):  # checkpoints go to the object store, not this disk
        return [Check(OK, "disk", f"checkpoints go to {public(storage)}; about "
                      f"{checkpoint_bytes(ctx) / 2**30:.2f} GiB there at most")]
    root = storage_root(storage)
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = checkpoint_bytes(ctx)
    detail = f"{free / 2**30:.1f} GiB free under {root}; checkpoints need about " \
             f"{need / 2**30:.2f} GiB"
    if free < need:
        return [Check(FAIL, "disk", detail, "Free space there or pass --storage on a "
                      "larger disk.")]
    return [Check(OK, "disk", detail)]
