"""The device a model runs on here, chosen in one place: the GPU when torch sees one."""

from __future__ import annotations


def pick_device(use_gpu: bool = True) -> str:
    """``"cuda"`` when ``use_gpu`` and torch sees a GPU, else ``"cpu"``.

    ``use_gpu=False`` for a run given no GPU (``resources.gpu: 0``): it stays on the CPU
    even on a GPU machine. Imports torch.
    """
    import torch

    return "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
