"""Augmentation hyperparameters under data.augment: config, draws, the loader, perspective."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from vpr_tune.config import load_space
from vpr_tune.data import loader as ld
from vpr_tune.data import splits as sp
from vpr_tune.data.augment import draw_augmentation, perspective
from vpr_tune.errors import UserError


def space(tmp_path: Path, text: str):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return load_space(path)


def test_augment_true_false_and_searchable_strengths(tmp_path):
    assert space(tmp_path, "data: {augment: false}\n").base["data"]["augment"]["enabled"] is False
    on = space(tmp_path, "data: {augment: true}\n").base["data"]["augment"]
    assert on["enabled"] is True and on["crop_min"] == 0.8 and on["perspective"] == 0.0
    s = space(tmp_path, """
        data:
          augment:
            crop_min: {uniform: [0.5, 0.9]}
            jitter: {uniform: [0.0, 0.4]}
            perspective: 0.1
    """)
    assert {"data.augment.crop_min", "data.augment.jitter"} == set(s.params)
    assert s.base["data"]["augment"]["perspective"] == 0.1
    onoff = space(tmp_path, "data: {augment: {choice: [true, false]}}\n")
    assert list(onoff.params) == ["data.augment.enabled"]


@pytest.mark.parametrize("text, msg", [
    ("data: {augment: {perspective: 0.9}}\n", "data.augment.perspective: 0.9 is outside 0-0.4"),
    ("data: {augment: {crop_min: {uniform: [0.0, 0.5]}}}\n", "data.augment.crop_min: 0.0 is"),
    ("data: {augment: {blur: 1.0}}\n", "data.augment.blur: unknown key"),
])
def test_bad_augmentation_is_one_line(tmp_path, text, msg):
    with pytest.raises(UserError, match=None) as info:
        space(tmp_path, text)
    assert msg in str(info.value)


def old_draw(rng, b, hw):
    """The augmentation before it took parameters (what `augment: true` must still draw)."""
    h, w = hw
    scale = rng.uniform(0.8, 1.0)
    ch = max(1, round(h * scale))
    cw = max(1, min(w, round(w * scale * rng.uniform(0.95, 1.05))))
    offsets = np.stack([rng.integers(0, h - ch + 1, b), rng.integers(0, w - cw + 1, b)], 1)
    bright = rng.uniform(0.75, 1.25, (b, 1))
    contrast = rng.uniform(0.75, 1.25, (b, 1))
    gain = bright * rng.uniform(0.93, 1.07, (b, 3)) * contrast / 255.0
    return (ch, cw), offsets, gain


def test_defaults_draw_what_augment_true_always_drew():
    for seed in range(5):
        new = draw_augmentation(np.random.default_rng(seed), 6, (32, 40))
        hw, offsets, gain = old_draw(np.random.default_rng(seed), 6, (32, 40))
        assert new.crop_hw == hw and np.array_equal(new.offsets, offsets)
        assert np.allclose(new.gain, gain) and new.warp is None


def test_zero_strengths_are_the_plain_image(street_world_tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("VPR_TUNE_CACHE", str(tmp_path))
    tr = sp.load_train_split(street_world_tiny)
    none = {"crop_min": 1.0, "crop_max": 1.0, "aspect": 0.0, "jitter": 0.0,
            "white_balance": 0.0}
    plain, _ = next(iter(ld.TrainLoader(tr, 32, 2, 2, 1, seed=0, augment=False).epoch(0)))
    zero, _ = next(iter(ld.TrainLoader(tr, 32, 2, 2, 1, seed=0, augment=none).epoch(0)))
    assert torch.allclose(plain, zero, atol=1e-5)
    warped = list(ld.TrainLoader(tr, 32, 2, 2, 2, seed=0,
                                 augment={**none, "perspective": 0.2}).epoch(0))
    again = list(ld.TrainLoader(tr, 32, 2, 2, 2, seed=0,
                                augment={**none, "perspective": 0.2}).epoch(0))
    assert not torch.allclose(warped[0][0], plain, atol=1e-2)  # perspective did something
    for (a, la), (b, lb) in zip(warped, again, strict=True):  # and is seeded
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_perspective_with_no_shift_is_the_identity_and_moves_corners():
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(perspective(x, np.zeros((2, 4, 2), np.float32)), x, atol=1e-5)
    ramp = torch.arange(16.0).view(1, 1, 1, 16).expand(2, 1, 16, 16)  # value = column
    shift = np.zeros((2, 4, 2), np.float32)
    shift[:, 0] = [0.5, 0.5]  # top-left output corner samples (-0.5, -0.5): column 3.75
    out = perspective(ramp, shift)
    assert out[:, 0, 0, 0].tolist() == pytest.approx([3.75, 3.75], abs=1e-4)
    assert out[:, 0, -1, -1].tolist() == pytest.approx([15.0, 15.0], abs=1e-4)  # unmoved
