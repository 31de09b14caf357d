"""resources.precision: which autocast dtype runs, and that reduced precision stays correct."""

from __future__ import annotations

import pytest
import torch

from vpr_tune import precision
from vpr_tune.model import build_model


@pytest.mark.parametrize(("setting", "device", "units", "want"), [
    ("fp32", "cpu", "AMX", None),
    ("bf16", "cpu", None, torch.bfloat16),
    ("fp16", "cuda", None, torch.float16),
    ("auto", "cuda", None, torch.float16),
    ("auto", "cpu", "AMX", torch.bfloat16),
    ("auto", "cpu", "AVX512-BF16", torch.bfloat16),
    ("auto", "cpu", None, None),  # bfloat16 without native units is emulated: slower
])
def test_autocast_dtype(monkeypatch, setting, device, units, want) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: units)
    assert precision.autocast_dtype(setting, device) is want
    assert precision.channels_last(device, want) == (device == "cuda" or want is not None)


def test_unknown_precision() -> None:
    with pytest.raises(ValueError, match="'fp64' is not one of auto, fp32, bf16, fp16"):
        precision.autocast_dtype("fp64", "cpu")


@pytest.mark.parametrize("aggregator", ["gem", "netvlad", "mixvpr"])
def test_bf16_descriptors_match_fp32(aggregator: str) -> None:
    torch.manual_seed(0)
    model = build_model({"backbone": "resnet18", "cut": "layer3",
                         "aggregator": {"name": aggregator}}, (48, 48)).eval()
    x = torch.rand(6, 3, 48, 48)
    with torch.inference_mode():
        ref = model(x)
        with precision.autocast("cpu", torch.bfloat16):
            low = model(x.contiguous(memory_format=torch.channels_last))
    assert low.dtype == torch.float32  # pooling and the L2 norm run in float32
    assert torch.allclose(low.norm(dim=1), torch.ones(6), atol=1e-5)
    assert torch.nn.functional.cosine_similarity(low, ref).min() > 0.98
