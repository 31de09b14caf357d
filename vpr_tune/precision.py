"""Mixed precision: which autocast dtype a trial uses (``resources.precision``).

- ``auto`` (default): float16 on CUDA (with a gradient scaler); bfloat16 on CPUs that compute
  it natively, with AMX tiles (Intel Sapphire Rapids and later) or AVX-512 BF16 (AMD Zen 4
  and later, Intel Cooper Lake), where oneDNN runs bfloat16 convolutions about 1.9-2x faster
  than float32 (measured in docs/performance.md); float32 on other CPUs, where bfloat16 is
  emulated and slower.
- ``fp32``: no autocast. ``bf16`` / ``fp16``: autocast to that dtype on any device.

Losses, miners and the aggregators' pooling run in float32 whatever the setting (the model
casts the feature map back before aggregating), so only the convolutions change precision.

>>> dtype = autocast_dtype("auto", torch.device("cpu"))
>>> with autocast(torch.device("cpu"), dtype):
...     desc = model(images)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from vpr_tune.config import PRECISIONS

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_bf16_units() -> str | None:
    """The units this CPU computes bfloat16 with ("AMX", "AVX512-BF16"); None: emulated."""
    for name, probe in (("AMX", "_is_amx_tile_supported"),
                        ("AVX512-BF16", "_is_avx512_bf16_supported")):
        check = getattr(getattr(torch, "cpu", None), probe, None)
        try:
            if check is not None and check():
                return name
        except RuntimeError:  # pragma: no cover - builds without the check
            continue
    return None


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``None`` means float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return _DTYPES[precision]
    if torch.device(device).type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_bf16_units() else None


@contextlib.contextmanager
def autocast(device: torch.device | str, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` on ``device`` to ``dtype``; a no-op for ``None`` (float32)."""
    kind = torch.device(device).type
    with torch.autocast(kind, dtype=dtype, enabled=dtype is not None):
        yield


def channels_last(device: torch.device | str, dtype: torch.dtype | None) -> bool:
    """Whether to run convolutions channels-last: on CUDA, and for reduced precision on CPU
    (oneDNN's bfloat16 kernels are fastest in that layout; float32 on CPU gains little)."""
    return torch.device(device).type == "cuda" or dtype is not None
