"""NetVLAD's ``alpha`` does what the docs say: it sets the soft-assignment sharpness, in the
forward pass and after k-means; unset, k-means' margin decides it."""

from __future__ import annotations

import numpy as np
import torch

from vpr_tune.components import AGGREGATORS, resolve_params
from vpr_tune.model.aggregators import NetVLAD


def _vlad(alpha):
    torch.manual_seed(0)
    return NetVLAD(8, (4, 4), clusters=4, alpha=alpha).eval()


def test_alpha_changes_the_descriptor():
    x = torch.randn(2, 8, 4, 4)
    soft, sharp = _vlad(1.0)(x), _vlad(100.0)(x)
    assert not torch.allclose(soft, sharp, atol=1e-4)
    # the assignment weights are alpha times the unit centroids
    norms = _vlad(100.0).conv.weight.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 100.0), rtol=1e-4)


def test_kmeans_keeps_a_given_alpha_and_derives_one_otherwise():
    feats = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    given, derived = _vlad(7.0), _vlad(None)
    given.init_from_descriptors(feats)
    derived.init_from_descriptors(feats)
    assert float(given.alpha) == 7.0
    assert float(derived.alpha) != 7.0 and float(derived.alpha) > 0
    norms = given.conv.weight.flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 7.0), rtol=1e-4)


def test_the_yaml_alpha_reaches_the_module():
    name, params = resolve_params("model.aggregator", {"name": "netvlad", "clusters": 4,
                                                 "alpha": 3.0})
    assert float(AGGREGATORS[name].build(8, (4, 4), **params).alpha) == 3.0
    name, params = resolve_params("model.aggregator", {"name": "netvlad"})
    assert params["alpha"] is None  # default: from the k-means margin
