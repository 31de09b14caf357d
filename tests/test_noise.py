"""Intervals and within-noise marks where results are shown (vpr_tune/noise.py): `best`
(table and --json), `compare`, `run --dry-run`; a real search's ranks files, two runs of
one YAML (not separated) and a trained model against the untrained one (separated)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import write_hand_experiment, write_space
from vpr_tune import noise, resolution
from vpr_tune.analysis import load_experiment, read_table
from vpr_tune.cli import main
from vpr_tune.metrics import RECALL_NS
from vpr_tune.uncertainty import load_ranks, ranks_path, recall, save_ranks

QUERIES = 100


def hand_ranks(r1: float, r5: float) -> np.ndarray:
    """Ranks of QUERIES queries with R@1 = r1 and R@5 = r5 percent: the first r1 queries hit
    at rank 1, the next r5 - r1 at rank 3, the rest not in the top K (nested: a better
    model hits every query a worse one hits)."""
    ranks = np.zeros(QUERIES, dtype=np.uint8)
    ranks[: int(r1)] = 1
    ranks[int(r1): int(r5)] = 3
    return ranks


def add_ranks_files(folder) -> None:
    """Ranks files matching every epoch of a hand experiment's metrics.csv."""
    curves = read_table(folder / "metrics.csv")
    for tid, rows in curves.groupby("trial_id"):
        by_epoch = {int(r["epoch"]): hand_ranks(r["val/R@1"], r["val/R@5"])
                    for _, r in rows.iterrows()}
        save_ranks(ranks_path(folder, str(tid)), by_epoch)


def _best(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["best", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


# ------------------------------------------------------------------------ pure parts
def test_resolution_of_a_val_split() -> None:
    r = resolution.resolution(150)
    assert round(r.step, 2) == 0.67 and round(r.half_width, 1) == 6.4 and r.coarse
    assert r.needed == 683 and "683" in r.advice and "val/MRR" in r.advice
    assert "val/MRR" not in resolution.resolution(150, "val/MRR").advice  # already ranks by it
    fine = resolution.resolution(8000)
    assert not fine.coarse and fine.advice == "" and round(fine.half_width, 1) == 0.9
    assert resolution.resolution_lines(8000) == [f"val resolution: {fine.detail}"]


def test_within_noise_marks_and_words() -> None:
    winner, close, far = hand_ranks(60, 75), hand_ranks(58, 73), hand_ranks(30, 45)
    assert noise.within_noise([winner, close, far, None], 1) == [True, True, False, None]
    assert noise.within_noise([winner, hand_ranks(50, 60)[:50]], 1) == [True, None]  # other Q
    # two models with the very same hits: (0, 0), where BCa alone gives NaN
    assert noise.paired_difference(winner, winner.copy(), 1) == (0.0, 0.0)
    same = noise.paired(winner, winner.copy(), 1)
    assert not same.separated and "not separated" in same.words("a", "b")
    assert noise.paired(winner, far, 1).separated
    assert noise.compared_n("val/R@5") == 5 and noise.compared_n("val/MRR") == 1


def test_display_cells() -> None:
    frame = pd.DataFrame({"trial_id": ["a", "b", "c"], "val_R@1": [16.0, 14.0, 8.0],
                          "val_R@1_lo": [10.7, np.nan, 4.0], "val_R@1_hi": [22.0, np.nan, 13.3],
                          "within_noise": [True, None, False]})
    frame.attrs["noise"] = [{"column": "within_noise", "winner": "a"}]
    shown = noise.display(frame)
    assert list(shown.columns) == ["trial_id", "val_R@1", "within_noise"]
    assert list(shown["val_R@1"]) == ["16.00 (10.7–22.0)", "14.00", "8.00 (4.0–13.3)"]
    assert list(shown["within_noise"]) == ["winner", "", "no"]
    # read back from a CSV (no attrs): val's winner is the first row, a set's its best R@1
    frame = pd.DataFrame({"trial_id": ["a", "b"], "within_noise": [True, True],
                          "tokyo_R@1": [10.0, 20.0], "tokyo_within_noise": [True, True]})
    shown = noise.display(frame)
    assert list(shown["within_noise"]) == ["winner", "yes"]
    assert list(shown["tokyo_within_noise"]) == ["yes", "winner"]


# ------------------------------------------------------------------------ best
def test_best_marks_trials_within_noise_of_the_winner(hand_experiment, capsys) -> None:
    add_ranks_files(hand_experiment)
    storage = ["--storage", str(hand_experiment.parent)]
    rc, out, err = _best(capsys, "hand", "--json", *storage)
    assert rc == 0, err
    data = json.loads(out)
    trials = {t["trial_id"]: t for t in data["trials"]}
    assert list(trials) == ["t0", "t4", "t5", "t1"]
    for t in trials.values():
        for col in ("val_R@1", "val_R@5"):
            assert t[f"{col}_lo"] <= t[col] <= t[f"{col}_hi"]
        assert isinstance(t["within_noise"], bool)
    # t4 (58) differs from t0 (60) on 2 of 100 queries; t5 (30) and t1 (10) are far below
    assert [t["within_noise"] for t in trials.values()] == [True, True, False, False]
    assert data["noise"][0]["queries"] == QUERIES and data["noise"][0]["winner"] == "t0"
    assert "paired bootstrap" in data["noise"][0]["method"]

    rc, out, _ = _best(capsys, "hand", *storage)
    assert rc == 0
    assert "60.00 (" in out and "winner" in out
    assert ("1 trial is within noise of the winner t0 (t4): 95 % paired bootstrap of R@1 "
            "over 100 val queries") in out.replace("\n", " ")


def test_best_without_ranks_says_intervals_are_unavailable(hand_experiment, capsys) -> None:
    storage = ["--storage", str(hand_experiment.parent)]
    rc, out, _ = _best(capsys, "hand", *storage)
    assert rc == 0 and "intervals unavailable" in out
    rc, out, _ = _best(capsys, "hand", "--json", *storage)
    data = json.loads(out)
    assert rc == 0 and "unavailable" in data["noise"][0]
    assert all(t["within_noise"] is None and t["val_R@1_lo"] is None for t in data["trials"])


# ------------------------------------------------------------------------ compare
def test_compare_separates_a_better_winner_on_the_same_queries(tmp_path, monkeypatch,
                                                               capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VPR_TUNE_DATA", raising=False)
    a = write_hand_experiment(tmp_path / "results" / "a")
    b = write_hand_experiment(tmp_path / "results" / "b", trials=[
        ("u0", "TERMINATED", "adam", 2e-3, 1e-4, "none", [30.0, 35.0])])
    for folder in (a, b):
        add_ranks_files(folder)
    shutil.copytree(a, tmp_path / "results" / "a2")  # the same results under another name
    assert main(["compare", "a", "b", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["separated"] is True
    pair = data["comparisons"][0]
    assert (pair["trial_a"], pair["trial_b"], pair["queries"]) == ("t0", "u0", QUERIES)
    assert pair["difference"] == 25.0 and 0 < pair["difference_lo"] <= pair["difference_hi"]
    row = data["experiments"][0]
    assert row["val_R@1_lo"] <= row["val_R@1"] <= row["val_R@1_hi"]
    assert main(["compare", "a", "a2"]) == 0
    out = capsys.readouterr().out.replace("\n", " ")
    assert "not separated: the data cannot tell them apart" in out

    curves = read_table(b / "metrics.csv")  # b measured on fewer val queries: no pairing
    save_ranks(ranks_path(b, "u0"), {e: hand_ranks(35, 50)[:80] for e in curves["epoch"]})
    assert main(["compare", "a", "b", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["separated"] is None and "different val queries (100 vs 80)" in \
        data["comparisons"][0]["reason"]


# ------------------------------------------------------------------------ run --dry-run
def test_dry_run_states_the_val_resolution(tmp_path, street_world_tiny, capsys) -> None:
    space = write_space(tmp_path / "s.yaml")
    assert main(["run", str(space), "--dry-run", "--data", str(street_world_tiny),
                 "--storage", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out.replace("\n", " ")
    assert "val resolution: 20 val queries: one query moves R@N by 5.00 points" in out
    assert "warning: trials closer than about ±17.5 points" in out
    assert "more val queries" in out and "val/MRR" in out


# ------------------------------------------------------------------------ a real search
def test_best_json_on_a_real_search_recomputes_from_its_ranks(searched_experiment,
                                                              capsys) -> None:
    rc, out, err = _best(capsys, str(searched_experiment), "--json", "--top", "all")
    assert rc == 0, err
    data = json.loads(out)
    exp = load_experiment(searched_experiment)
    assert data["noise"][0]["queries"] == 20 and data["trials"][0]["within_noise"] is True
    for t in data["trials"]:
        assert t["val_R@1_lo"] <= t["val_R@1"] <= t["val_R@1_hi"]
        assert isinstance(t["within_noise"], bool)
        by_epoch = load_ranks(ranks_path(searched_experiment, t["trial_id"]))
        rows = exp.curves[exp.curves["trial_id"] == t["trial_id"]]
        assert sorted(by_epoch) == sorted(rows["epoch"])
        for _, row in rows.iterrows():  # every epoch's R@N, exactly, from one byte a query
            for n in RECALL_NS:
                assert recall(by_epoch[int(row["epoch"])], n) == pytest.approx(
                    row[f"val/R@{n}"], abs=1e-9)


@pytest.mark.slow  # a second real tiny search (~1 min on 2 cores)
def test_two_runs_of_one_yaml_are_not_separated(searched_experiment, street_world_tiny,
                                                capsys) -> None:
    space = searched_experiment.parent.parent / "tiny.yaml"  # what the fixture ran
    storage = searched_experiment.parent
    assert main(["run", str(space), "--name", "tiny-again", "--storage", str(storage),
                 "--data", str(street_world_tiny)]) == 0
    capsys.readouterr()
    assert main(["compare", "tiny", "tiny-again", "--storage", str(storage), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["separated"] is False, data["comparisons"]
    assert data["comparisons"][0]["queries"] == 20


@pytest.mark.slow  # street-world demo (made once, ~1 min) and 3 epochs of training (~1 min)
def test_a_trained_model_is_separated_from_the_untrained_one() -> None:
    """The demo's epoch-0 model (6.7 % val R@1 on 150 queries) against the same model after
    a few epochs (train_demo.yaml): a paired bootstrap over the val queries separates them."""
    from vpr_tune.data.splits import resolve_data_root
    from vpr_tune.train import Trainer, load_train_config

    cfg = load_train_config(Path(__file__).resolve().parents[1] / "search_spaces"
                            / "train_demo.yaml")
    cfg["budget"]["max_epochs"] = 3
    root = resolve_data_root(None, size="demo", log=lambda _m: None)
    trainer = Trainer(cfg, root, device="cpu", num_threads=2, log=lambda _m: None)
    untrained = trainer.validate()
    before = trainer.val_ranks.copy()
    assert len(before) == 150 and recall(before, 1) == pytest.approx(untrained["val/R@1"], abs=1e-4)
    best = before
    for _ in range(3):
        row = trainer.run_epoch()
        if row["val/R@1"] > recall(best, 1):
            best = trainer.val_ranks.copy()
    result = noise.paired(best, before, 1)
    assert result.separated and result.lo > 0, result
