"""A local weights file (``model.pretrained: PATH``) read into a plain state_dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vpr_tune.errors import UserError


def read_state_dict(path: Path, allowed: str) -> dict[str, Any]:
    """The state_dict in ``path``: unwrapped from ``{"state_dict": ...}`` / ``{"model":
    ...}`` and DataParallel's ``module.`` prefix; one :class:`UserError` naming the file
    when it is missing or not torch weights (``allowed``: what the key accepts instead)."""
    import torch

    if not path.is_file():
        raise UserError(f"model.pretrained: {path} is not a file (use {allowed})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise UserError(f"model.pretrained: cannot read {path} as torch weights: {exc}") from exc
    for key in ("state_dict", "model"):  # common wrappers around a state_dict
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"model.pretrained: {path} does not hold a state_dict")
    return {k.removeprefix("module."): v for k, v in state.items()}
