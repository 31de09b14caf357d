"""The P x K sampler, the train loader and eval batches: shapes, determinism, normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vpr_tune.data import loader as ld
from vpr_tune.data import splits as sp
from vpr_tune.data.cache import load_image
from vpr_tune.errors import UserError


# --------------------------------------------------------------------------- sampler
def test_pk_sampler_properties_and_determinism() -> None:
    labels = np.repeat(np.arange(23), np.random.default_rng(1).integers(4, 9, 23))
    s = ld.PKSampler(labels, places_per_batch=5, images_per_place=4, seed=3, batches_per_epoch=9)
    batches = list(s.batches(0))
    assert len(batches) == 9 == len(s)
    for b in batches:
        assert b.shape == (20,) and len(set(b.tolist())) == 20
        places = labels[b].reshape(5, 4)
        assert (places == places[:, :1]).all()  # grouped K per place
        assert len(set(places[:, 0].tolist())) == 5  # no place twice in a batch
    again = list(ld.PKSampler(labels, 5, 4, seed=3, batches_per_epoch=9).batches(0))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    other = list(s.batches(1))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other, strict=True))
    # one pass over 23 places in groups of 5 = 4 batches; every place at most once per pass
    first_pass = np.concatenate([labels[b] for b in batches[:4]])
    assert len(np.unique(first_pass)) == 20


def test_pk_sampler_rejects_impossible_batches() -> None:
    labels = np.repeat(np.arange(3), 4)
    with pytest.raises(UserError, match="places_per_batch"):
        ld.PKSampler(labels, 4, 2, seed=0)
    with pytest.raises(UserError, match="images_per_place"):
        ld.PKSampler(labels, 2, 5, seed=0)


# --------------------------------------------------------------------------- loaders
def test_train_loader_batches(street_world_tiny: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VPR_TUNE_CACHE", str(tmp_path))
    tr = sp.load_train_split(street_world_tiny)
    loader = ld.TrainLoader(tr, (32, 40), 4, 3, batches_per_epoch=3, seed=5)
    got = list(loader.epoch(0))
    assert len(got) == 3 == len(loader)
    x, y = got[0]
    assert x.shape == (12, 3, 32, 40) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.reshape(4, 3).unique(dim=1).shape == (4, 1)
    assert x.min() > -2.2 and x.max() < 2.7  # ImageNet-normalised range
    again = list(ld.TrainLoader(tr, (32, 40), 4, 3, 3, seed=5, cache=False).epoch(0))
    for (a, la), (b, lb) in zip(got, again, strict=True):  # cache == PIL, deterministic
        assert torch.equal(la, lb) and torch.allclose(a, b, atol=1e-5)
    x1, _ = next(iter(loader.epoch(1)))
    assert not torch.equal(x1, x)


def test_train_loader_without_augment_is_the_image(street_world_tiny: Path, tmp_path: Path,
                                                    monkeypatch) -> None:
    monkeypatch.setenv("VPR_TUNE_CACHE", str(tmp_path))
    tr = sp.load_train_split(street_world_tiny)
    loader = ld.TrainLoader(tr, 32, 2, 2, 1, seed=0, augment=False)
    x, _ = next(iter(loader.epoch(0)))
    idx = next(loader.sampler.batches(0))
    raw = torch.from_numpy(load_image(tr.paths[idx[0]], 32)).permute(2, 0, 1).float() / 255
    mean = torch.tensor(ld.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(ld.IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(x[0], (raw - mean) / std, atol=1e-5)


@pytest.mark.parametrize("cache", [True, False])
def test_eval_batches_in_order(street_world_tiny: Path, tmp_path: Path, monkeypatch,
                               cache: bool) -> None:
    monkeypatch.setenv("VPR_TUNE_CACHE", str(tmp_path))
    ev = sp.load_eval_split(sp.find_split(street_world_tiny, "tokyo_xs/test"))
    paths = ev.q_paths[:11]
    out = list(ld.eval_batches(paths, (24, 24), batch_size=4, cache=cache))
    assert [len(b) for b in out] == [4, 4, 3]
    x = torch.cat(out)
    for i in (0, 5, 10):
        raw = torch.from_numpy(load_image(paths[i], 24)).permute(2, 0, 1).float() / 255
        expected = (raw - torch.tensor(ld.IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(
            ld.IMAGENET_STD
        ).view(3, 1, 1)
        assert torch.allclose(x[i], expected, atol=1e-5)


def test_gpu_stage_matches_cpu_stage() -> None:
    """The CUDA finishing code (run here on CPU tensors) equals the CPU LUT path."""
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (5, 20, 26, 3), dtype=np.uint8)
    aug = ld.draw_augmentation(rng, 5, (24, 30))
    aug.crop_hw = (20, 26)
    cpu = ld._finish_cpu(crops, (24, 30), aug)
    gpu_code = ld._finish_cuda(torch.from_numpy(crops), (24, 30), aug)
    assert cpu.shape == gpu_code.shape == (5, 3, 24, 30)
    # only the uint8 rounding of the CPU resize differs (<= 1 grey level)
    assert (cpu - gpu_code).abs().max() < 1.01 / 255 / min(ld.IMAGENET_STD) * 1.3
    plain = rng.integers(0, 256, (3, 24, 26, 3), dtype=np.uint8)  # no augmentation
    got = ld._finish_cpu(plain, (24, 26), ld.identity(3, (24, 26)))
    mean = torch.tensor(ld.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(ld.IMAGENET_STD).view(1, 3, 1, 1)
    want = (torch.from_numpy(plain).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
    assert torch.allclose(got, want, atol=1e-5)
