"""Per-query ranks and the intervals built on them: ranks recompute Recall@N exactly; the
95 % bootstrap interval covers a known true recall in 93-97 % of seeded simulations; the
paired test flags equal models rarely and models 5 points apart on 8,000 queries almost
always."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_tune import uncertainty as u
from vpr_tune.evaluate import recall_at_n
from vpr_tune.metrics import RECALL_NS

SIMULATIONS = 1000


def _random_predictions(seed: int, queries: int = 300, db: int = 60, k: int = 25):
    rng = np.random.default_rng(seed)
    predictions = np.stack([rng.permutation(db)[:k] for _ in range(queries)])
    positives = [rng.choice(db, size=rng.integers(0, 4), replace=False) for _ in range(queries)]
    return predictions, positives


@pytest.mark.parametrize("seed", range(5))
def test_ranks_recompute_every_recall_exactly(seed):
    predictions, positives = _random_predictions(seed)
    ranks = u.first_hit_ranks(predictions, positives)
    assert ranks.dtype == np.uint8 and ranks.shape == (len(predictions),)
    expected = recall_at_n(predictions, positives, RECALL_NS)
    assert {n: u.recall(ranks, n) for n in RECALL_NS} == pytest.approx(expected, abs=1e-9)
    assert (u.decode(u.encode(ranks)) == ranks).all()


def test_mean_reciprocal_rank():
    ranks = np.array([1, 2, 0, 4], dtype=np.uint8)
    assert u.mean_reciprocal_rank(ranks) == pytest.approx((1 + 0.5 + 0 + 0.25) / 4 * 100)


def test_interval_is_seeded_and_contains_the_point():
    ranks = np.where(np.random.default_rng(0).random(150) < 0.16, 1, 0).astype(np.uint8)
    lo, hi = u.recall_interval(ranks, 1)
    assert u.recall_interval(ranks, 1) == (lo, hi)
    assert lo < u.recall(ranks, 1) < hi
    # about ±6 points at 150 queries near 16 % (what the brief says one query costs)
    assert 4 < (hi - lo) / 2 < 8 and u.half_width(16, 150) == pytest.approx(5.9, abs=0.1)


def test_no_variation_gives_a_point_interval():
    assert u.recall_interval(np.ones(50, dtype=np.uint8), 1) == (100.0, 100.0)
    same = np.zeros(50, dtype=np.uint8)
    assert not u.separated(same, same, 1)
    hits = np.array([1, 0, 2, 0, 1] * 10, dtype=np.uint8)  # varied, but the same for both
    assert u.paired_difference(hits, hits.copy(), 1) == (0.0, 0.0)


def _coverage(queries: int, truth: float, sims: int = SIMULATIONS) -> float:
    covered = 0
    for s in range(sims):
        hits = np.random.default_rng(s).random(queries) < truth
        lo, hi = u.recall_interval(hits.astype(np.uint8), 1, seed=s, resamples=1000)
        covered += lo <= truth * 100 <= hi
    return covered / sims


@pytest.mark.parametrize("truth", [0.05, 0.16, 0.5])
def test_interval_covers_the_true_recall_on_150_queries(truth):
    assert 0.93 <= _coverage(150, truth) <= 0.97


@pytest.mark.slow
@pytest.mark.parametrize("queries,truth", [(1000, 0.3), (8000, 0.16), (8000, 0.6)])
def test_interval_covers_the_true_recall_on_many_queries(queries, truth):
    assert 0.93 <= _coverage(queries, truth) <= 0.97


def _paired_flags(queries: int, a: float, b: float, sims: int) -> float:
    flagged = 0
    for s in range(sims):
        rng = np.random.default_rng(10_000 + s)
        x = (rng.random(queries) < a).astype(np.uint8)
        y = (rng.random(queries) < b).astype(np.uint8)
        flagged += u.separated(x, y, 1, seed=s)
    return flagged / sims


def test_paired_test_rarely_separates_equal_models():
    assert _paired_flags(150, 0.16, 0.16, SIMULATIONS) <= 0.06


@pytest.mark.slow
def test_paired_test_separates_models_5_points_apart_on_8000_queries():
    assert _paired_flags(8000, 0.55, 0.50, 300) >= 0.95


def test_paired_comparison_needs_the_same_queries():
    with pytest.raises(ValueError, match="same queries"):
        u.paired_difference(np.ones(3, dtype=np.uint8), np.ones(4, dtype=np.uint8), 1)


def test_ranks_round_trip_on_disk(tmp_path):
    by_epoch = {1: np.array([1, 0, 3], dtype=np.uint8), 2: np.array([1, 1, 2], dtype=np.uint8)}
    path = u.ranks_path(tmp_path, "abc")
    u.save_ranks(path, by_epoch)
    back = u.load_ranks(path)
    assert sorted(back) == [1, 2] and all((back[e] == by_epoch[e]).all() for e in by_epoch)
    assert u.load_ranks(tmp_path / "missing.npz") == {}


def test_a_real_search_keeps_ranks_that_recompute_every_recall(searched_experiment):
    """Each trial-epoch of a real tiny search left its per-query ranks; they give the
    reported R@1/5/10/25 and MRR exactly, and trials.csv holds each best value's interval."""
    from vpr_tune.metrics import MRR, interval_columns, summary_column
    from vpr_tune.tune.results import read_table

    trials = read_table(searched_experiment / "trials.csv")
    curves = read_table(searched_experiment / "metrics.csv")
    assert len(curves) and set(trials["trial_id"]) == set(curves["trial_id"])
    for row in curves.to_dict("records"):
        ranks = u.load_ranks(u.ranks_path(searched_experiment, row["trial_id"]))[row["epoch"]]
        for n in RECALL_NS:
            assert u.recall(ranks, n) == pytest.approx(row[f"val/R@{n}"], abs=1e-3)
        assert u.mean_reciprocal_rank(ranks) == pytest.approx(row[MRR], abs=1e-3)
    for n in RECALL_NS:
        best = summary_column(f"val/R@{n}")
        lo, hi = (trials[c] for c in interval_columns(best))
        inner = (trials[best] > 0) & (trials[best] < 100)  # else the interval is the point
        assert ((lo <= trials[best]) & (trials[best] <= hi)).all()
        assert ((hi - lo > 0) == inner).all()
