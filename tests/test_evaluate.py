"""Evaluation: exact search and recall@N against brute force on hand-made descriptors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vpr_tune.evaluate import describe_batches, hits_matrix, recall_at_n, search


def brute_recall(db, q, positives, ns):
    """Reference: per query, full sort by L2 distance, then check the first N."""
    out = {}
    for n in ns:
        hit = 0
        for qi in range(len(q)):
            order = np.argsort(((db - q[qi]) ** 2).sum(1), kind="stable")[:n]
            hit += bool(set(order.tolist()) & set(positives[qi].tolist()))
        out[n] = 100.0 * hit / len(q)
    return out


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_recall_hand_made() -> None:
    # db on the unit circle at angles 0, 90, 180, 270 deg; queries near known db images
    db = unit(np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=np.float64))
    q = unit(np.array([[1, 0.1], [0.1, 1], [-1, -0.2]], dtype=np.float64))
    preds = search(db, q, k=4)
    assert preds[:, 0].tolist() == [0, 1, 2]
    positives = [np.array([0]), np.array([3]), np.array([], dtype=np.int64)]
    r = recall_at_n(preds, positives, ns=(1, 2, 3, 4))
    # q0 hits at rank 1; q1's positive (270 deg) is the farthest -> rank 4; q2 has none
    assert r == pytest.approx({1: 100 / 3, 2: 100 / 3, 3: 100 / 3, 4: 200 / 3})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    db = unit(rng.normal(size=(300, 16)))
    q = unit(db[rng.integers(0, 300, 80)] + 0.4 * rng.normal(size=(80, 16)))
    positives = [np.flatnonzero(rng.random(300) < 0.02) for _ in range(80)]
    positives[3] = np.zeros(0, dtype=np.int64)
    ns = (1, 5, 10, 25)
    got = recall_at_n(search(db, q, 25), positives, ns)
    assert got == pytest.approx(brute_recall(db, q, positives, ns))
    # cumulative in N
    assert got[1] <= got[5] <= got[10] <= got[25]


def test_small_database_and_edge_cases() -> None:
    db = unit(np.eye(3))
    q = unit(np.array([[1.0, 0.2, 0.0]]))
    preds = search(db, q, 25)
    assert preds.shape == (1, 3)  # k capped at the database size
    assert recall_at_n(preds, [np.array([2])], (1, 25)) == {1: 0.0, 25: 100.0}
    assert recall_at_n(np.zeros((0, 3), dtype=np.int64), [], (1,)) == {1: 0.0}
    # -1 (faiss "no result") never counts as a hit
    assert not hits_matrix(np.array([[-1, 0]]), [np.array([0])])[0, 0]


def test_describe_batches_in_order() -> None:
    class Flat(torch.nn.Module):
        dim = 4

        def forward(self, x):
            return torch.nn.functional.normalize(x.flatten(1)[:, :4], dim=1)

    data = torch.randn(10, 3, 2, 2)
    out = describe_batches(Flat(), iter(data.split(3)), 10, "cpu")
    assert np.allclose(out, torch.nn.functional.normalize(data.flatten(1)[:, :4], dim=1))
