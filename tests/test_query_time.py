"""Query time and parameter count: what the multi-objective metrics measure."""

from __future__ import annotations

import doctest
import math

import numpy as np
import torch

from vpr_tune import query_time
from vpr_tune.query_time import database_index, params_m, query_ms


class Tiny(torch.nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.calls: list[tuple[int, ...]] = []
        self.fc = torch.nn.Linear(3 * 8 * 8, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return torch.nn.functional.normalize(self.fc(x.flatten(1)), dim=1)


def test_query_ms_runs_batch_one_and_restores_training_mode() -> None:
    model = Tiny(32).train()
    ms = query_ms(model, (8, 8), database_index(50, 32), "cpu", precision="fp32", repeats=3,
                  warmup=1)
    assert math.isfinite(ms) and ms > 0
    assert model.calls == [(1, 3, 8, 8)] * 4  # warm-up + repeats, one image each
    assert model.training


def test_query_ms_with_a_database_smaller_than_k() -> None:
    index = database_index(3, 16)
    assert index.ntotal == 3
    assert query_ms(Tiny(16), (8, 8), index, "cpu", precision="fp32", repeats=1, warmup=0) > 0


def test_database_is_unit_vectors_and_seeded() -> None:
    a, b = database_index(20, 8), database_index(20, 8)
    vectors = a.reconstruct_n(0, 20)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vectors, b.reconstruct_n(0, 20))


def test_params_m_counts_frozen_parameters_too() -> None:
    model = Tiny(10)
    model.fc.weight.requires_grad_(False)
    assert params_m(model) == round((192 * 10 + 10) / 1e6, 4)


def test_docstring_examples() -> None:
    assert doctest.testmod(query_time).failed == 0
