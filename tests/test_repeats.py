"""best --repeat: the top configs retrained with new seeds as Ray trials, mean ± std."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tests.helpers import FakeTrainer, use_trainer, write_space
from vpr_tune.analysis import load_experiment
from vpr_tune.cli import main
from vpr_tune.repeats import (
    compare_first_two,
    display_table,
    noise_line,
    repeat,
    repeat_seeds,
    summarize,
    verdict,
    winner_held,
)


class SeededFake(FakeTrainer):
    """R@1 = 100 * lr * epoch + 3 * seed: the seed moves a config by a known amount."""

    def run_epoch(self):
        row = super().run_epoch()
        shift = 3.0 * self.cfg["seed"] if self.cfg["optimizer"]["lr"] < 0.05 else 0.0
        return {**row, **{k: row[k] + shift for k in row if k.startswith("val/")}}


def fake_tests(checkpoint, root, tests):
    """Test recalls from the checkpoint's folder name (one number per run, no model)."""
    n = sum(map(ord, str(checkpoint))) % 50
    return {s: {"R@1": float(n), "R@5": n + 1.0, "R@10": n + 2.0, "R@25": n + 3.0,
                "queries": 10, "database": 20, "queries_without_positive": 1} for s in tests}


def test_seeds_and_summary_on_a_hand_table():
    assert repeat_seeds(4, 2) == [5, 6]
    runs = pd.DataFrame({"trial_id": ["a", "a", "b", "b"], "seed": [1, 2, 1, 2],
                         "val_R@1": [10.0, 12.0, 20.0, 30.0], "val_R@5": [1.0, 1, 1, 1]})
    summary = summarize(runs, ["a", "b"])
    assert list(summary["trial_id"]) == ["b", "a"] and list(summary["search_rank"]) == [2, 1]
    assert summary.loc[0, "val_R@1_mean"] == 25.0
    assert math.isclose(summary.loc[0, "val_R@1_std"], 7.0710678, rel_tol=1e-6)
    assert display_table(summary).loc[0, "val_R@1"] == "25.00 ± 7.07"
    assert "winner changed: b (search rank 2)" in verdict(summary, True)


def _ranks(hits: int, queries: int = 200):
    """Ranks with the first ``hits`` queries found at rank 1, the rest missed."""
    import numpy as np

    ranks = np.zeros(queries, dtype=np.uint8)
    ranks[:hits] = 1
    return ranks


def _runs(values: dict[str, list[float]], half_width: float) -> pd.DataFrame:
    rows = [{"trial_id": t, "seed": i + 1, "val_R@1": v, "val_R@1_lo": v - half_width,
             "val_R@1_hi": v + half_width} for t, vs in values.items() for i, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_seeds_next_to_queries_and_a_verdict_on_both():
    # a: 30 % on 200 queries in every seed, b: 20-21 %: far apart on seeds and on queries
    runs = _runs({"a": [30.0, 30.0, 30.0], "b": [20.0, 21.0, 20.0]}, half_width=6.0)
    ranks = {("a", s): _ranks(60) for s in (1, 2, 3)}
    ranks.update({("b", 1): _ranks(40), ("b", 2): _ranks(42), ("b", 3): _ranks(40)})
    summary = summarize(runs, ["a", "b"])
    assert summary.loc[0, "val_R@1_query_sd"] == pytest.approx(6.0 / 1.96)
    assert list(summary["noise"]) == ["queries", "queries"]  # sd over seeds 0 and 0.58
    assert display_table(summary).loc[0, "val_R@1"] == "30.00 ± 0.00 seeds, ± 3.06 queries"
    summary.attrs["comparison"] = cmp = compare_first_two(runs, summary, ranks)
    assert (cmp["first"], cmp["second"], cmp["val_queries"]) == ("a", "b", 200)
    assert cmp["seeds"][0] > 0 and cmp["queries"][0] > 0 and cmp["separated"]
    assert winner_held(summary, False)
    assert verdict(summary, False).startswith("the winner held: a is still first")
    assert "val queries dominate" in noise_line(summary)

    # a lead of 1 point over 200 queries: separated on seeds, not on queries -> not held
    close = _runs({"a": [30.0, 30.0, 30.0], "b": [29.0, 29.0, 29.0]}, half_width=6.0)
    near = {("a", s): _ranks(60) for s in (1, 2, 3)}
    near.update({("b", s): _ranks(58) for s in (1, 2, 3)})
    summary = summarize(close, ["a", "b"])
    summary.attrs["comparison"] = cmp = compare_first_two(close, summary, near)
    assert cmp["seeds"] == [1.0, 1.0] and cmp["queries"][0] <= 0 and not cmp["separated"]
    assert not winner_held(summary, False)
    assert verdict(summary, False).startswith("the winner is not confirmed: a is still first")
    assert "within noise of b" in verdict(summary, False)
    assert "but within noise of b" in verdict(summary, True)  # b was the search's winner

    # without ranks only the seeds decide; with one run each neither can: not separated
    one = _runs({"a": [30.0], "b": [20.0]}, half_width=6.0)
    cmp = compare_first_two(one, summarize(one, ["a", "b"]), None)
    assert cmp["seeds"] is None and cmp["queries"] is None and not cmp["separated"]


@pytest.mark.slow  # Ray: a search then six repeated runs, ~1-3 min on 2 shared cores
def test_repeat_with_a_fake_trainer_writes_csv_md_and_resumes(tmp_path, street_world_tiny,
                                                              monkeypatch, capsys):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # one Ray for all
    try:
        fake_search_and_repeats(tmp_path, street_world_tiny, monkeypatch)
    finally:
        ray.shutdown()


def fake_search_and_repeats(tmp_path, street_world_tiny, monkeypatch):
    logs = tmp_path / "logs"
    logs.mkdir()
    space = write_space(tmp_path / "s.yaml", data={"root": str(logs)},
                        optimizer={"lr": {"grid": [0.01, 0.02, 0.09]}},
                        search={"algorithm": "grid", "num_samples": 1, "max_concurrent": 2})
    storage = tmp_path / "results"
    with use_trainer(monkeypatch, SeededFake):
        assert main(["run", str(space), "--name", "rep", "--storage", str(storage),
                     "--data", str(street_world_tiny)]) == 0
        exp = load_experiment(storage / "rep")
        runs, summary, changed = repeat(exp, seeds=2, top=2, data=str(street_world_tiny),
                                        evaluate_fn=fake_tests)
    # top 2 by val R@1: lr 0.09 (R@1 18 at epoch 2, seed-independent) then lr 0.02 (4 + 3 seed)
    assert sorted(runs["seed"].unique()) == [1, 2] and len(runs) == 4
    by = runs.set_index(["trial_id", "seed"])["val_R@1"]
    first, second = ranked_ids(exp)
    assert by[(first, 1)] == by[(first, 2)] == pytest.approx(18.0)
    assert by[(second, 1)] == pytest.approx(7.0) and by[(second, 2)] == pytest.approx(10.0)
    assert {"sf_test_R@1", "tokyo_R@25"} <= set(runs.columns)
    assert not changed and summary.iloc[0]["trial_id"] == first
    md = (exp.path / "repeats.md").read_text()
    # 18, 18 against 7, 10: first, but two seeds leave Welch's interval wide (t = 12.7)
    assert "8.50 ± 2.12" in md and "winner is not confirmed" in md and "Welch" in md
    assert summary.attrs["comparison"]["queries"] is None  # the fake reports no ranks
    assert (exp.path / "repeats.csv").exists()
    # the same command again continues the Ray experiment: nothing is retrained
    before = len(list(logs.iterdir()))
    with use_trainer(monkeypatch, SeededFake):
        runs2, _, _ = repeat(load_experiment(storage / "rep"), seeds=2, top=2,
                             data=str(street_world_tiny), evaluate_fn=fake_tests)
    assert len(list(logs.iterdir())) == before
    pd.testing.assert_frame_equal(runs, runs2)


def ranked_ids(exp):
    from vpr_tune.analysis import ranked

    return list(ranked(exp)["trial_id"][:2])


@pytest.mark.slow
def test_repeat_a_real_tiny_search(searched_experiment, capsys):
    rc = main(["best", str(searched_experiment), "--repeat", "2", "--top", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    runs = pd.read_csv(searched_experiment / "repeats.csv", dtype={"trial_id": str})
    assert len(runs) == 2 and list(runs["seed"]) == [1, 2]
    assert runs["val_R@1"].notna().all() and runs["tokyo_R@1"].notna().all()
    assert "±" in out and "winner" in out
