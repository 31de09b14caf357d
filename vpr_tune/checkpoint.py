"""Checkpoint files of ``train``/``run`` and the random state a resumed run needs.

A checkpoint is a ``torch.save``d dict with ``format``/``version``, the run's ``config``,
``image_size``, ``epoch`` and ``model`` weights, plus (full checkpoints only) optimizer,
schedule, loss, scaler and RNG state (see ``vpr_tune.train.Trainer``).

>>> model, cfg = load_model_from_checkpoint("results/demo/best.pt")
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vpr_tune.atomic import atomic_path
from vpr_tune.errors import UserError
from vpr_tune.model import VPRModel, build_model

FORMAT = "vpr-tune-checkpoint"
VERSION = 1


def write_checkpoint(path: Path | str, state: dict[str, Any]) -> Path:
    """Save ``state`` with the format marker, atomically (a tmp file then ``os.replace``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
    return path


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load a vpr-tune checkpoint dict; anything else -> UserError."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a directory; expected a .pt file")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"checkpoint {path} is truncated or corrupt, or not a vpr-tune "
                        f"checkpoint (cannot load: {type(exc).__name__})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a vpr-tune checkpoint (written by train or run)")
    if state.get("version", 0) > VERSION:
        raise UserError(f"{path} was written by a newer vpr-tune (format "
                        f"{state['version']} > {VERSION})")
    return state


def load_model_from_checkpoint(
    path: Path | str, device: str | torch.device = "cpu"
) -> tuple[VPRModel, dict[str, Any]]:
    """``(model in eval mode, config)`` from a checkpoint written by ``Trainer``."""
    state = read_checkpoint(path)
    cfg = state["config"]
    model_cfg = {**cfg["model"], "pretrained": "none"}  # weights come from the checkpoint
    model = build_model(model_cfg, tuple(state["image_size"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every random generator's state (torch, CUDA, numpy, python) as checkpointable values."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(state["python"])
