"""Prediction pictures of a search's trial (``vpr-tune best NAME --save-preds N``).

Evaluates the trial's best checkpoint (default: the best trial) on the val split and every
test set, and writes what ``vpr-tune eval --save-preds`` writes for each, under
``results/<name>/preds/<trial>/<set>/``: ``predictions.csv`` (top N per query) and
``preds/*.png`` (query beside its top N, positives outlined green)::

    from vpr_tune.analysis import load_experiment
    from vpr_tune.preds import save_trial_predictions

    written = save_trial_predictions(load_experiment("demo"), top=5)  # {set: predictions.csv}
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vpr_tune.analysis import Experiment
from vpr_tune.errors import UserError


def save_trial_predictions(exp: Experiment, top: int, trial_id: str | None = None,
                           data: str | None = None, metric: str | None = None,
                           log: Callable[[str], Any] = print) -> dict[str, Path]:
    """Write predictions of one trial on val and each test set; ``{set: predictions.csv}``."""
    import torch

    from vpr_tune.checkpoint import load_model_from_checkpoint
    from vpr_tune.config import eval_image_size, normalize_config
    from vpr_tune.data.splits import load_eval_split
    from vpr_tune.evaluate import evaluate_split, save_predictions
    from vpr_tune.export import pick_trial
    from vpr_tune.retest import _test_splits, checkpoint_of, find_test_split, resolve_root

    if top < 1:
        raise UserError(f"--save-preds must be at least 1, got {top}")
    row = pick_trial(exp, trial_id, metric)
    ckpt = checkpoint_of(exp, row)
    root = resolve_root(exp, data, log)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, cfg = load_model_from_checkpoint(ckpt, device)
    cfg = normalize_config(cfg)
    sets = {"val": str(cfg["data"]["val"]), **_test_splits(cfg)}
    out: dict[str, Path] = {}
    for name, rel in sets.items():
        split = load_eval_split(find_test_split(root, rel),
                                skip_bad_files=bool(cfg["data"].get("skip_bad_files")))
        with torch.no_grad():
            result, predictions = evaluate_split(
                model, split, eval_image_size(cfg), int(cfg["budget"]["eval_batch_size"]),
                device, cache=bool(cfg["data"].get("cache", True)),
                precision=str(cfg["resources"].get("precision", "auto")))
        folder = exp.path / "preds" / str(row["trial_id"]) / name
        out[name] = save_predictions(split, predictions, folder, top)
        log(f"{name}: R@1 {result['R@1']:.2f}, {result['queries']} queries "
            f"({result['queries_without_positive']} without a positive) -> {folder}")
    return out
