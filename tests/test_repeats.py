"""best --repeat: the top configs retrained with new seeds as Ray trials, mean ± std."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tests.helpers import FakeTrainer, use_trainer, write_space
from vpr_tune.analysis import load_experiment
from vpr_tune.cli import main
from vpr_tune.repeats import display_table, repeat, repeat_seeds, summarize, verdict


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
    assert "8.50 ± 2.12" in md and "winner held" in md
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
